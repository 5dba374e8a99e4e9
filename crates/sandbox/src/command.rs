//! The command process's last steps: rlimits, capabilities, `no_new_privs`, seccomp, `execve`
//! (the host-mode helper uses [`Executable`] and [`reset_signals`] alone).
//!
//! Everything that allocates is prepared by [`Prepared::new`] before the helper forks; the steps
//! after the fork only make system calls.

use std::ffi::CString;
use std::io;

use conductor_types::{Rlimit, RlimitResource};
use nix::errno::Errno;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::Pid;

use crate::mounts::StageError;
use crate::seccomp;
use crate::spec::SandboxSpec;

/// `PATH` searched when the environment has none.
const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A program, its arguments and environment as C strings, ready for `execve` (no allocation
/// left to do).
#[derive(Debug)]
pub struct Executable {
    /// `argv[0]` as given, for messages.
    pub program: String,
    /// Paths to try, in order.
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Executable {
    /// Converts `argv` and `env`; `argv[0]` is searched in `env`'s `PATH` when it has no `/`.
    pub fn new(argv: &[String], env: &[(String, String)]) -> Result<Self, StageError> {
        let stage = "preparing the command";
        let cstring = |s: &str| CString::new(s).map_err(|e| StageError::new(stage, e));
        let program = argv
            .first()
            .cloned()
            .ok_or_else(|| StageError::new(stage, "argv is empty"))?;
        let path = env
            .iter()
            .find(|(name, _)| name == "PATH")
            .map(|(_, value)| value.as_str());
        let candidates = search_candidates(&program, path.unwrap_or(FALLBACK_PATH))
            .iter()
            .map(|c| cstring(c))
            .collect::<Result<_, _>>()?;
        let argv = argv.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            program,
            candidates,
            argv,
            envp,
        })
    }

    /// Execs the command; returns only on failure, with the error of the most telling attempt
    /// (`EACCES` beats `ENOENT`, as in `execvp`).
    pub fn exec(&self) -> Errno {
        let mut result = Errno::ENOENT;
        for candidate in &self.candidates {
            let Err(errno) = nix::unistd::execve(candidate, &self.argv, &self.envp);
            match errno {
                Errno::ENOENT | Errno::ENOTDIR => {}
                Errno::EACCES => result = Errno::EACCES,
                other => return other,
            }
        }
        result
    }
}

/// The sandboxed command, ready to exec.
#[derive(Debug)]
pub struct Prepared {
    /// What to exec.
    pub executable: Executable,
    rlimits: Vec<Rlimit>,
    filter: Option<seccomp::Filter>,
    /// The CPU affinity to give the command back, when set-up pinned itself.
    affinity: Option<CpuSet>,
    /// The uid and gid to become (the sandbox's root when `None`).
    user: Option<u32>,
}

impl Prepared {
    /// Converts the spec's command into C strings. `filter` is the compiled seccomp filter
    /// (installed when the spec asks for seccomp); `affinity` is the CPU affinity to give the
    /// command (set-up may pin itself to one CPU, see [`pin_to_cpu`]).
    pub fn new(
        spec: &SandboxSpec,
        filter: &seccomp::Filter,
        affinity: Option<CpuSet>,
    ) -> Result<Self, StageError> {
        let filter = spec.seccomp.then(|| filter.clone());
        Ok(Self {
            executable: Executable::new(&spec.argv, &spec.env)?,
            rlimits: spec.rlimits.clone(),
            filter,
            affinity,
            user: spec.user,
        })
    }

    /// Restores the CPU affinity, applies rlimits, drops every capability (becoming the spec's
    /// user, if any, on the way), sets `no_new_privs` and installs seccomp.
    pub fn lock_down(&self) -> Result<(), StageError> {
        reset_signals();
        if let Some(affinity) = &self.affinity {
            sched_setaffinity(Pid::from_raw(0), affinity)
                .map_err(|e| StageError::new("restoring the CPU affinity", e))?;
        }
        for rlimit in &self.rlimits {
            lower_rlimit(rlimit)
                .map_err(|e| StageError::new(format!("setting rlimit {:?}", rlimit.resource), e))?;
        }
        drop_capabilities(self.user).map_err(|e| StageError::new("dropping capabilities", e))?;
        set_no_new_privs().map_err(|e| StageError::new("setting no_new_privs", e))?;
        if let Some(filter) = &self.filter {
            seccomp::install(filter)
                .map_err(|e| StageError::new("installing the seccomp filter", e))?;
        }
        Ok(())
    }
}

/// The calling process's CPU affinity, to hand to [`Prepared::new`].
pub fn current_affinity() -> Option<CpuSet> {
    sched_getaffinity(Pid::from_raw(0)).ok()
}

/// Keeps the helper, init and the command (until [`Prepared::lock_down`] gives it its affinity
/// back) on the CPU the caller runs on: each of them wakes the next, and a wake-up on an idle CPU
/// can cost milliseconds in a VM. Pins the caller and `others`; best effort.
pub fn pin_to_cpu(others: &[Pid]) {
    // SAFETY: sched_getcpu has no arguments and no preconditions.
    let Ok(cpu) = usize::try_from(unsafe { libc::sched_getcpu() }) else {
        return;
    };
    let mut one = CpuSet::new();
    if one.set(cpu).is_err() {
        return;
    }
    for pid in std::iter::once(Pid::from_raw(0)).chain(others.iter().copied()) {
        let _ = sched_setaffinity(pid, &one);
    }
}

/// The exit code for a failed exec, as shells use it.
pub fn exec_failure_code(errno: Errno) -> i32 {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR => 127,
        _ => 126,
    }
}

/// Where `execvp` would look for `program` given `path`.
pub fn search_candidates(program: &str, path: &str) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_owned()];
    }
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .collect()
}

/// Rust ignores `SIGPIPE` at start-up and ignored signals survive `execve`: restore the default,
/// and unblock everything.
pub fn reset_signals() {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn resource(r: RlimitResource) -> Resource {
    match r {
        RlimitResource::As => Resource::RLIMIT_AS,
        RlimitResource::Core => Resource::RLIMIT_CORE,
        RlimitResource::Cpu => Resource::RLIMIT_CPU,
        RlimitResource::Data => Resource::RLIMIT_DATA,
        RlimitResource::Fsize => Resource::RLIMIT_FSIZE,
        RlimitResource::Memlock => Resource::RLIMIT_MEMLOCK,
        RlimitResource::Nofile => Resource::RLIMIT_NOFILE,
        RlimitResource::Nproc => Resource::RLIMIT_NPROC,
        RlimitResource::Stack => Resource::RLIMIT_STACK,
    }
}

/// Only lowers: a hard limit above the current one cannot be raised without CAP_SYS_RESOURCE in
/// the initial namespace.
fn lower_rlimit(rlimit: &Rlimit) -> nix::Result<()> {
    let resource = resource(rlimit.resource);
    let (_, current_hard) = getrlimit(resource)?;
    let (soft, hard) = lowered(rlimit.soft, rlimit.hard, current_hard);
    setrlimit(resource, soft, hard)
}

/// Sets `rlimit` as given (the host executor's command: raising a hard limit needs root, as it
/// would for the command itself).
pub fn set_rlimit(rlimit: &Rlimit) -> nix::Result<()> {
    setrlimit(resource(rlimit.resource), rlimit.soft, rlimit.hard)
}

/// The (soft, hard) pair to set when asking for `soft`/`hard` under `current_hard`.
pub fn lowered(soft: u64, hard: u64, current_hard: u64) -> (u64, u64) {
    let hard = hard.min(current_hard);
    (soft.min(hard), hard)
}

/// Empties the bounding and ambient sets, then effective, permitted and inheritable: root in a
/// user namespace with an empty bounding set gains nothing on `execve`.
/// Empties the bounding and ambient sets (which needs `CAP_SETPCAP`), becomes `user` (which
/// needs `CAP_SETUID`/`CAP_SETGID`, and clears the permitted and effective sets by itself), then
/// clears every set.
fn drop_capabilities(user: Option<u32>) -> io::Result<()> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                break; // past the last capability this kernel knows
            }
            return Err(err);
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(id) = user {
        become_user(id)?;
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and two data structs, both alive and correctly
    // laid out (`struct __user_cap_header_struct` / `__user_cap_data_struct`).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// No supplementary groups, then gid and uid `id` (real, effective and saved).
fn become_user(id: u32) -> io::Result<()> {
    let gid = nix::unistd::Gid::from_raw(id);
    let uid = nix::unistd::Uid::from_raw(id);
    nix::unistd::setgroups(&[]).map_err(io::Error::from)?;
    nix::unistd::setresgid(gid, gid, gid).map_err(io::Error::from)?;
    nix::unistd::setresuid(uid, uid, uid).map_err(io::Error::from)
}

fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search_follows_execvp() {
        assert_eq!(
            search_candidates("ls", "/usr/bin:/bin/:"),
            ["/usr/bin/ls", "/bin/ls", "./ls"]
        );
        assert_eq!(search_candidates("./run.sh", "/usr/bin"), ["./run.sh"]);
        assert_eq!(search_candidates("/bin/true", "/usr/bin"), ["/bin/true"]);
    }

    #[test]
    fn rlimits_are_only_lowered() {
        assert_eq!(lowered(0, 0, u64::MAX), (0, 0));
        assert_eq!(lowered(2048, 4096, 1024), (1024, 1024));
        assert_eq!(lowered(100, 4096, 1024), (100, 1024));
    }

    #[test]
    fn failed_execs_map_to_shell_codes() {
        assert_eq!(exec_failure_code(Errno::ENOENT), 127);
        assert_eq!(exec_failure_code(Errno::EACCES), 126);
        assert_eq!(exec_failure_code(Errno::ENOEXEC), 126);
    }
}
