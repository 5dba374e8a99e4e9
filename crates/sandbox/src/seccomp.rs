//! The default seccomp policy, in the spirit of Docker's default profile: allow everything except
//! the calls that administer the kernel or escape the sandbox's namespaces.
//!
//! seccompiler gives one match action per filter, so the policy is two filters: the main one
//! returns `EPERM`; the second returns `ENOSYS` for every `clone3` (its flags live in memory where
//! a filter cannot read them, so libc falls back to `clone`, whose flags the main filter checks).
//! The kernel runs both; each call matches at most one of them.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// System calls refused with `EPERM` whatever their arguments, by name for messages and tests.
pub const DENIED_SYSCALLS: &[(&str, i64)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("adjtimex", libc::SYS_adjtimex),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("delete_module", libc::SYS_delete_module),
    ("finit_module", libc::SYS_finit_module),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fsopen", libc::SYS_fsopen),
    ("fspick", libc::SYS_fspick),
    ("init_module", libc::SYS_init_module),
    // io_uring bypasses syscall filtering for the operations it queues, and has been a steady
    // source of kernel exploits; Docker's default profile refuses it too.
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("kcmp", libc::SYS_kcmp),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("mount", libc::SYS_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("move_mount", libc::SYS_move_mount),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("pivot_root", libc::SYS_pivot_root),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("ptrace", libc::SYS_ptrace),
    ("quotactl", libc::SYS_quotactl),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("setns", libc::SYS_setns),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("syslog", libc::SYS_syslog),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("vhangup", libc::SYS_vhangup),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
];

/// `clone` flags that create namespaces; `clone` with any of them is refused with `EPERM`.
/// (`CLONE_NEWTIME` shares its bit with the exit signal in `clone` and exists only for `clone3`.)
pub const CLONE_NAMESPACE_FLAGS: &[(&str, libc::c_int)] = &[
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    ("CLONE_NEWNET", libc::CLONE_NEWNET),
    ("CLONE_NEWNS", libc::CLONE_NEWNS),
    ("CLONE_NEWPID", libc::CLONE_NEWPID),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
];

/// `ioctl` requests refused with `EPERM`: both act on a terminal outside the sandbox.
// `TIOCSTI`'s type differs between libc targets (u64 on glibc x86_64, c_int on musl).
#[allow(clippy::unnecessary_cast)]
pub const DENIED_IOCTLS: &[(&str, u64)] =
    &[("TIOCSTI", libc::TIOCSTI as u64), ("TIOCLINUX", 0x541C)];

/// A filter that could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The architecture has no filter.
    #[error("no seccomp filter for architecture {0}")]
    UnsupportedArch(&'static str),
    /// seccompiler refused the rules.
    #[error("building the seccomp filter: {0}")]
    Build(String),
    /// The kernel refused the filter.
    #[error("installing the seccomp filter: {0}")]
    Install(String),
}

/// The main filter's rules: syscall number → rules (an empty list matches every call).
pub fn deny_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED_SYSCALLS
        .iter()
        .map(|(_, nr)| (*nr, Vec::new()))
        .collect();
    let clone_rules = CLONE_NAMESPACE_FLAGS
        .iter()
        .map(|(_, flag)| {
            let flag = *flag as u64;
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(build_error)?;
            SeccompRule::new(vec![condition]).map_err(build_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    // Typing into a terminal (TIOCSTI) or poking the console (TIOCLINUX) would let the sandbox
    // inject input into a shell outside it.
    let ioctl_rules = DENIED_IOCTLS
        .iter()
        .map(|(_, request)| {
            let condition =
                SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *request)
                    .map_err(build_error)?;
            SeccompRule::new(vec![condition]).map_err(build_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    Ok(rules)
}

/// Compiles the default policy for the native architecture, in installation order.
pub fn default_filters() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = native_arch()?;
    let deny = SeccompFilter::new(
        deny_rules()?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(build_error)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(build_error)?;
    [deny, clone3]
        .into_iter()
        .map(|filter| BpfProgram::try_from(filter).map_err(build_error))
        .collect()
}

/// Installs `filters` on the calling thread (seccompiler sets `no_new_privs` first).
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}

fn native_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
    }
}

fn build_error(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Build(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_the_docker_list_unconditionally_and_clone_on_namespace_flags() {
        let rules = deny_rules().unwrap();
        for name in [
            "mount",
            "ptrace",
            "bpf",
            "setns",
            "unshare",
            "keyctl",
            "pivot_root",
        ] {
            let nr = DENIED_SYSCALLS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, nr)| *nr)
                .unwrap();
            assert_eq!(rules.get(&nr), Some(&Vec::new()), "{name}");
        }
        let clone = &rules[&libc::SYS_clone];
        assert_eq!(clone.len(), CLONE_NAMESPACE_FLAGS.len());
        let newuser = libc::CLONE_NEWUSER as u64;
        assert!(clone.contains(
            &SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(newuser),
                newuser
            )
            .unwrap()])
            .unwrap()
        ));
        assert!(!rules.contains_key(&libc::SYS_clone3));
        let tiocsti = SeccompRule::new(vec![SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            DENIED_IOCTLS[0].1,
        )
        .unwrap()])
        .unwrap();
        assert_eq!(rules[&libc::SYS_ioctl].len(), DENIED_IOCTLS.len());
        assert!(rules[&libc::SYS_ioctl].contains(&tiocsti));
        assert_eq!(rules.len(), DENIED_SYSCALLS.len() + 2);
    }

    #[test]
    fn filters_compile_for_the_native_arch() {
        let filters = default_filters().unwrap();
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|f| !f.is_empty() && f.len() < 4096));
    }

    /// Installs the filters on a throwaway thread (seccomp filters are per thread) and checks
    /// what the kernel answers.
    #[test]
    fn installed_filters_refuse_namespace_escapes_and_allow_the_rest() {
        let filters = default_filters().unwrap();
        let results = std::thread::spawn(move || {
            install(&filters).unwrap();
            let errno = |rc: libc::c_long| {
                if rc == -1 {
                    std::io::Error::last_os_error().raw_os_error()
                } else {
                    None
                }
            };
            // SAFETY: raw system calls with scalar arguments; the denied ones fail before doing
            // anything, and getppid has no side effects.
            unsafe {
                (
                    errno(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)),
                    errno(libc::syscall(libc::SYS_clone3, 0usize, 0usize)),
                    errno(libc::syscall(
                        libc::SYS_clone,
                        libc::CLONE_NEWNS | libc::SIGCHLD,
                        0usize,
                        0usize,
                        0usize,
                        0usize,
                    )),
                    errno(libc::syscall(libc::SYS_getppid)),
                )
            }
        })
        .join()
        .unwrap();
        assert_eq!(
            results,
            (
                Some(libc::EPERM),
                Some(libc::ENOSYS),
                Some(libc::EPERM),
                None
            )
        );
    }
}
