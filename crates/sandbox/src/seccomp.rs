//! The default seccomp policy, in the spirit of Docker's default profile: allow everything except
//! the calls that administer the kernel or escape the sandbox's namespaces, the old ones no task
//! needs, and sockets of families a task has no use for.
//!
//! One filter, generated here (see [`crate::bpf`]) rather than by a rule compiler, for two
//! reasons: on x86_64 it refuses the x32 ABI's syscall numbers (bit 30 set), which would
//! otherwise reach the same kernel functions under numbers no rule names; and it finds a denied
//! call by binary search rather than a linear chain, which matters because the kernel runs the
//! filter for every syscall number when it is installed (to build its action cache): a linear
//! filter of this size cost 0.3 ms per sandbox start, this one a few microseconds.
//!
//! The filter checks the architecture (another one kills the process), then: x32 numbers and
//! `clone3` get `ENOSYS` (`clone3`'s flags live in memory a filter cannot read, so libc falls
//! back to `clone`); `clone` with a namespace flag and `ioctl` with a denied request (compared
//! on the low 32 bits, as the kernel reads it) get `EPERM`; a call in [`ARGUMENT_ALLOW_LISTS`]
//! whose argument (low 32 bits) is not on its list gets that list's errno (`socket` and
//! `socketpair` of a family other than Unix, IPv4, IPv6 and netlink: `EAFNOSUPPORT`;
//! `personality` other than Docker's harmless values, `READ_IMPLIES_EXEC` among the refused:
//! `EPERM`); so does every call in [`DENIED_SYSCALLS`]; everything else is allowed.
//!
//! The lists ([`DENIED_SYSCALLS`], [`ENOSYS_SYSCALLS`], [`CLONE_NAMESPACE_FLAGS`],
//! [`DENIED_IOCTLS`], [`ARGUMENT_ALLOW_LISTS`]) are the policy; the container executors write
//! the same lists as an engine seccomp profile, so both kinds of sandbox refuse the same calls.

use crate::bpf::{self, Assembler, Instruction, Target};

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
    ("fanotify_init", libc::SYS_fanotify_init),
    ("get_mempolicy", libc::SYS_get_mempolicy),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("mbind", libc::SYS_mbind),
    ("move_pages", libc::SYS_move_pages),
    ("mount", libc::SYS_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("move_mount", libc::SYS_move_mount),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("nfsservctl", libc::SYS_nfsservctl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("pivot_root", libc::SYS_pivot_root),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("ptrace", libc::SYS_ptrace),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("set_mempolicy", libc::SYS_set_mempolicy),
    ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
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
    // Local descriptor tables are for 16-bit code, and have leaked kernel memory before.
    #[cfg(target_arch = "x86_64")]
    ("modify_ldt", libc::SYS_modify_ldt),
    // Obsolete calls that only reveal or configure the kernel.
    #[cfg(target_arch = "x86_64")]
    ("_sysctl", libc::SYS__sysctl),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("ustat", libc::SYS_ustat),
];

/// System calls refused with `ENOSYS`, as if the kernel lacked them: `clone3`, whose flags live in
/// memory a filter cannot read, so that libc falls back to `clone` (whose flags it can).
pub const ENOSYS_SYSCALLS: &[(&str, i64)] = &[("clone3", libc::SYS_clone3)];

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

/// A call allowed only with one of `allowed` (compared on the low 32 bits, as the kernel reads an
/// `int`) as its argument `index`; any other value fails with `errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgumentAllowList {
    /// The call's name, for messages and profiles.
    pub name: &'static str,
    /// Its number.
    pub nr: i64,
    /// Which argument (0-based).
    pub index: u32,
    /// The values that are allowed, by name.
    pub allowed: &'static [(&'static str, u32)],
    /// What any other value fails with.
    pub errno: i32,
}

/// The socket families a task may use: Unix sockets, IPv4, IPv6, and netlink (the route
/// queries `getifaddrs`, Node and iproute2 make). Others (`AF_VSOCK` to the hypervisor,
/// `AF_PACKET`, `AF_BLUETOOTH`, `AF_ALG`, …) are kernel surface no task needs.
pub const SOCKET_FAMILIES: &[(&str, u32)] = &[
    ("AF_UNIX", libc::AF_UNIX as u32),
    ("AF_INET", libc::AF_INET as u32),
    ("AF_INET6", libc::AF_INET6 as u32),
    ("AF_NETLINK", libc::AF_NETLINK as u32),
];

/// The `personality` values allowed, Docker's: plain Linux, its 32-bit flavour, the 2.6 uname
/// emulation, and the query. `READ_IMPLIES_EXEC` (every readable mapping executable),
/// `ADDR_NO_RANDOMIZE` and the rest are refused.
pub const PERSONALITIES: &[(&str, u32)] = &[
    ("PER_LINUX", 0),
    ("PER_LINUX32", 0x0008),
    ("UNAME26", 0x0002_0000),
    ("PER_LINUX32|UNAME26", 0x0002_0008),
    ("query", 0xffff_ffff),
];

/// Calls allowed only with some values of one argument.
pub const ARGUMENT_ALLOW_LISTS: &[ArgumentAllowList] = &[
    ArgumentAllowList {
        name: "socket",
        nr: libc::SYS_socket,
        index: 0,
        allowed: SOCKET_FAMILIES,
        errno: libc::EAFNOSUPPORT,
    },
    ArgumentAllowList {
        name: "socketpair",
        nr: libc::SYS_socketpair,
        index: 0,
        allowed: SOCKET_FAMILIES,
        errno: libc::EAFNOSUPPORT,
    },
    ArgumentAllowList {
        name: "personality",
        nr: libc::SYS_personality,
        index: 0,
        allowed: PERSONALITIES,
        errno: libc::EPERM,
    },
];

/// A filter that could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The architecture has no filter.
    #[error("no seccomp filter for architecture {0}")]
    UnsupportedArch(&'static str),
    /// The program could not be assembled.
    #[error("building the seccomp filter: {0}")]
    Build(#[from] bpf::AssembleError),
    /// The kernel refused the filter.
    #[error("installing the seccomp filter: {0}")]
    Install(std::io::Error),
}

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter(Vec<Instruction>);

/// What a filter answers to a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The call goes ahead.
    Allow,
    /// The call fails with this errno.
    Errno(i32),
    /// The process is killed.
    KillProcess,
}

impl Filter {
    /// The program's instructions.
    pub fn instructions(&self) -> &[Instruction] {
        &self.0
    }

    /// What the filter answers to system call `nr` of the native architecture with `args`,
    /// without installing it (the program runs on the data the kernel would hand it). `None`
    /// when the program does not end in one of the policy's actions.
    pub fn answer(&self, nr: i64, args: [u64; 6]) -> Option<Action> {
        let (arch, _) = native_arch().ok()?;
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&u32::try_from(nr).ok()?.to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes()); // instruction pointer
        for arg in args {
            data.extend_from_slice(&arg.to_ne_bytes());
        }
        match bpf::run(&self.0, &data)? {
            RET_ALLOW => Some(Action::Allow),
            RET_KILL_PROCESS => Some(Action::KillProcess),
            ret if ret & 0xffff_0000 == RET_ERRNO => {
                i32::try_from(ret & 0xffff).ok().map(Action::Errno)
            }
            _ => None,
        }
    }
}

const RET_ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
const RET_ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO | errno
const RET_KILL_PROCESS: u32 = 0x8000_0000; // SECCOMP_RET_KILL_PROCESS
/// x86_64's x32 ABI marks its syscall numbers with this bit.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets into the kernel's `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low 32 bits of argument `n` (both supported architectures are little-endian).
const fn data_arg_low(n: u32) -> u32 {
    16 + 8 * n
}

/// The architecture the filter is built for: its audit number, and whether it has the x32 ABI.
fn native_arch() -> Result<(u32, bool), SeccompError> {
    // AUDIT_ARCH_* = EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    const ARCH_64_LE: u32 = 0x8000_0000 | 0x4000_0000;
    if cfg!(target_arch = "x86_64") {
        Ok((62 | ARCH_64_LE, true))
    } else if cfg!(target_arch = "aarch64") {
        Ok((183 | ARCH_64_LE, false))
    } else {
        Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
    }
}

/// Compiles the default policy for the native architecture.
pub fn default_filter() -> Result<Filter, SeccompError> {
    let (arch, has_x32) = native_arch()?;
    let number = |nr: i64| u32::try_from(nr).unwrap_or(u32::MAX);
    let mut asm = Assembler::default();
    let [allow, eperm, enosys, kill, clone, ioctl] = [(); 6].map(|()| asm.new_label());

    asm.load(DATA_ARCH);
    asm.jump_eq(arch, Target::Next, Target::Label(kill));
    asm.load(DATA_NR);
    if has_x32 {
        asm.jump_ge(X32_SYSCALL_BIT, Target::Label(enosys), Target::Next);
    }
    asm.jump_eq(number(libc::SYS_clone), Target::Label(clone), Target::Next);
    asm.jump_eq(number(libc::SYS_ioctl), Target::Label(ioctl), Target::Next);
    let lists: Vec<usize> = ARGUMENT_ALLOW_LISTS
        .iter()
        .map(|list| {
            let label = asm.new_label();
            asm.jump_eq(number(list.nr), Target::Label(label), Target::Next);
            label
        })
        .collect();
    for (_, nr) in ENOSYS_SYSCALLS {
        asm.jump_eq(number(*nr), Target::Label(enosys), Target::Next);
    }
    let mut denied: Vec<u32> = DENIED_SYSCALLS.iter().map(|(_, nr)| number(*nr)).collect();
    denied.sort_unstable();
    denied.dedup();
    search(&mut asm, &denied, eperm, allow);

    asm.label(clone);
    asm.load(data_arg_low(0));
    let namespaces = CLONE_NAMESPACE_FLAGS
        .iter()
        .fold(0u32, |mask, (_, flag)| mask | flag.unsigned_abs());
    asm.jump_set(namespaces, Target::Label(eperm), Target::Label(allow));

    asm.label(ioctl);
    asm.load(data_arg_low(1));
    for (_, request) in DENIED_IOCTLS {
        let request = u32::try_from(*request).unwrap_or(u32::MAX);
        asm.jump_eq(request, Target::Label(eperm), Target::Next);
    }
    asm.jump(allow);

    for (list, label) in ARGUMENT_ALLOW_LISTS.iter().zip(lists) {
        asm.label(label);
        asm.load(data_arg_low(list.index));
        for (_, value) in list.allowed {
            asm.jump_eq(*value, Target::Label(allow), Target::Next);
        }
        asm.ret(RET_ERRNO | list.errno.unsigned_abs());
    }

    asm.label(allow);
    asm.ret(RET_ALLOW);
    asm.label(eperm);
    asm.ret(RET_ERRNO | libc::EPERM.unsigned_abs());
    asm.label(enosys);
    asm.ret(RET_ERRNO | libc::ENOSYS.unsigned_abs());
    asm.label(kill);
    asm.ret(RET_KILL_PROCESS);
    Ok(Filter(asm.finish()?))
}

/// Emits a binary search of the accumulator in `sorted`: to `found` when it is there, to
/// `missing` otherwise.
fn search(asm: &mut Assembler, sorted: &[u32], found: usize, missing: usize) {
    if sorted.len() <= 3 {
        for nr in sorted {
            asm.jump_eq(*nr, Target::Label(found), Target::Next);
        }
        asm.jump(missing);
        return;
    }
    let (low, high) = sorted.split_at(sorted.len() / 2);
    let upper = asm.new_label();
    asm.jump_ge(high[0], Target::Label(upper), Target::Next);
    search(asm, low, found, missing);
    asm.label(upper);
    search(asm, high, found, missing);
}

/// Installs `filter` on the calling thread. `no_new_privs` must be set already (the command's
/// lock-down does that first). Makes raw system calls only.
pub fn install(filter: &Filter) -> Result<(), SeccompError> {
    let program = libc::sock_fprog {
        len: u16::try_from(filter.0.len())
            .map_err(|_| SeccompError::Install(std::io::Error::from_raw_os_error(libc::E2BIG)))?,
        filter: filter.0.as_ptr().cast_mut(),
    };
    // SAFETY: the kernel copies the program out of `program`, which points into `filter` and
    // outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &program as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SeccompError::Install(std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel would hand the filter for one call.
    fn data(arch: u32, nr: u32, args: [u64; 6]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&nr.to_ne_bytes());
        bytes.extend_from_slice(&arch.to_ne_bytes());
        bytes.extend_from_slice(&0u64.to_ne_bytes());
        for arg in args {
            bytes.extend_from_slice(&arg.to_ne_bytes());
        }
        bytes
    }

    fn verdict(filter: &Filter, nr: i64, args: [u64; 6]) -> u32 {
        let (arch, _) = native_arch().unwrap();
        bpf::run(filter.instructions(), &data(arch, nr as u32, args)).unwrap()
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

    /// Every syscall number up to 1024 gets exactly what the policy says.
    #[test]
    fn every_syscall_number_gets_the_policys_answer() {
        let filter = default_filter().unwrap();
        let denied: Vec<i64> = DENIED_SYSCALLS.iter().map(|(_, nr)| *nr).collect();
        for nr in 0..1024i64 {
            let expected = if denied.contains(&nr) {
                EPERM
            } else if nr == libc::SYS_socket || nr == libc::SYS_socketpair {
                // Family 0 is AF_UNSPEC, which is not on the list.
                RET_ERRNO | libc::EAFNOSUPPORT as u32
            } else if nr == libc::SYS_clone3 {
                ENOSYS
            } else {
                RET_ALLOW
            };
            // Zero arguments: clone without namespace flags, ioctl request 0 and the PER_LINUX
            // personality are allowed.
            assert_eq!(verdict(&filter, nr, [0; 6]), expected, "syscall {nr}");
        }
    }

    #[test]
    fn clone_is_refused_with_any_namespace_flag_and_allowed_without() {
        let filter = default_filter().unwrap();
        for (name, flag) in CLONE_NAMESPACE_FLAGS {
            let flags = (*flag | libc::SIGCHLD) as u64;
            assert_eq!(
                verdict(&filter, libc::SYS_clone, [flags, 0, 0, 0, 0, 0]),
                EPERM,
                "{name}"
            );
        }
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(
            verdict(&filter, libc::SYS_clone, [thread, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
    }

    #[test]
    fn terminal_injection_ioctls_are_refused_whatever_the_high_bits() {
        let filter = default_filter().unwrap();
        for (name, request) in DENIED_IOCTLS {
            for high in [0u64, 0xdead_beef_0000_0000] {
                let args = [0, high | *request, 0, 0, 0, 0];
                assert_eq!(
                    verdict(&filter, libc::SYS_ioctl, args),
                    EPERM,
                    "{name} {high:x}"
                );
            }
        }
        // TCGETS: 0x5401 on both supported architectures.
        let tcgets = [0, 0x5401, 0, 0, 0, 0];
        assert_eq!(verdict(&filter, libc::SYS_ioctl, tcgets), RET_ALLOW);
    }

    #[test]
    fn sockets_of_unlisted_families_and_unlisted_personalities_are_refused() {
        let filter = default_filter().unwrap();
        let answer = |nr: i64, arg: u64| filter.answer(nr, [arg, 0, 0, 0, 0, 0]).unwrap();
        let refused = Action::Errno(libc::EAFNOSUPPORT);
        for nr in [libc::SYS_socket, libc::SYS_socketpair] {
            for family in [
                libc::AF_UNIX,
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_NETLINK,
            ] {
                assert_eq!(answer(nr, family as u64), Action::Allow, "{nr} {family}");
                // The kernel reads an int: the high bits do not matter.
                assert_eq!(
                    answer(nr, 0xffff_0000_0000_0000 | family as u64),
                    Action::Allow
                );
            }
            for family in [
                libc::AF_UNSPEC,
                libc::AF_PACKET,
                libc::AF_VSOCK,
                libc::AF_BLUETOOTH,
                libc::AF_ALG,
                libc::AF_KEY,
                libc::AF_CAN,
                libc::AF_XDP,
                libc::AF_TIPC,
                libc::AF_RDS,
                libc::AF_NETLINK + 1,
                -1,
            ] {
                assert_eq!(answer(nr, family as u32 as u64), refused, "{nr} {family}");
            }
        }
        for persona in [0u64, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff] {
            assert_eq!(
                answer(libc::SYS_personality, persona),
                Action::Allow,
                "{persona:x}"
            );
        }
        // READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, PER_BSD, and READ_IMPLIES_EXEC on top of 0.
        for persona in [0x0040_0000u64, 0x0004_0000, 0x0006, 0x0040_0008] {
            assert_eq!(
                answer(libc::SYS_personality, persona),
                Action::Errno(libc::EPERM),
                "{persona:x}"
            );
        }
    }

    #[test]
    fn another_architecture_is_killed_and_x32_numbers_do_not_exist() {
        let filter = default_filter().unwrap();
        let (arch, has_x32) = native_arch().unwrap();
        let foreign = data(arch ^ 0x1, libc::SYS_getpid as u32, [0; 6]);
        assert_eq!(
            bpf::run(filter.instructions(), &foreign),
            Some(RET_KILL_PROCESS)
        );
        if has_x32 {
            // x32's mount and unshare, which no rule names.
            for nr in [X32_SYSCALL_BIT | 165, X32_SYSCALL_BIT | 272] {
                assert_eq!(
                    bpf::run(filter.instructions(), &data(arch, nr, [0; 6])),
                    Some(ENOSYS)
                );
            }
        }
    }

    #[test]
    fn answers_in_the_policys_terms() {
        let filter = default_filter().unwrap();
        let newuser = (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64;
        assert_eq!(
            [
                filter.answer(libc::SYS_getpid, [0; 6]),
                filter.answer(libc::SYS_ptrace, [0; 6]),
                filter.answer(libc::SYS_clone3, [0; 6]),
                filter.answer(libc::SYS_clone, [newuser, 0, 0, 0, 0, 0]),
            ],
            [
                Some(Action::Allow),
                Some(Action::Errno(libc::EPERM)),
                Some(Action::Errno(libc::ENOSYS)),
                Some(Action::Errno(libc::EPERM)),
            ]
        );
    }

    #[test]
    fn the_filter_stays_short() {
        let filter = default_filter().unwrap();
        // A linear filter of the same policy was 266 instructions.
        assert!(
            filter.instructions().len() < 160,
            "{}",
            filter.instructions().len()
        );
    }

    /// Installs the filter on a throwaway thread (seccomp filters are per thread) and checks
    /// what the kernel answers.
    #[test]
    fn the_installed_filter_refuses_namespace_escapes_and_allows_the_rest() {
        let filter = default_filter().unwrap();
        let results = std::thread::spawn(move || {
            // SAFETY: prctl with integer arguments; no_new_privs on this thread only matters to
            // this test process, which execs nothing.
            let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            assert_eq!(rc, 0);
            install(&filter).unwrap();
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
                    errno(libc::syscall(
                        libc::SYS_socket,
                        libc::AF_VSOCK,
                        libc::SOCK_STREAM,
                        0,
                    )),
                    errno(libc::syscall(libc::SYS_personality, 0x0040_0000)),
                    errno(libc::syscall(libc::SYS_personality, 0xffff_ffffu32)),
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
                None,
                Some(libc::EAFNOSUPPORT),
                Some(libc::EPERM),
                None
            )
        );
    }
}
