//! The sandbox helper's entry point: a fresh, single-threaded copy of the binary
//! (`conductor __sandbox-init`) that builds the sandbox and execs the command. In host mode
//! ([`HelperMode::Host`], see [`host`]) it builds nothing: it joins its cgroup and becomes the
//! command.
//!
//! Process tree, all inside the execution's cgroup:
//!
//! ```text
//! helper (root in the initial namespaces; writes the id maps, passes the spec on to init, hands
//!  │      the workspace and the home to the sandbox's root or user uid while init builds the
//!  │      root ([`crate::handover`]: iterative, never following links, refusing files of
//!  │      several hard links), moves a
//!  │      `full` sandbox's veth into init's network namespace and configures it, then waits)
//!  └─ init: pid 1 of new user/pid/uts/ipc(/net) namespaces; once the spec comes, a new mount
//!     │     namespace, the root, pivot (a warm one with a [`PrebuiltRoot`] does that before,
//!     │     and then only attaches the workspace and the home the helper cloned, writes the
//!     │     hostname and /etc files, and makes the root read-only; it forks the command's
//!     │     process ahead of time too, which waits for the spec); listens on the bridged
//!     │     loopback ports and passes the listeners to the executor ([`crate::bridge`]),
//!     │     keeping no copy; reaps every orphan and reports the command's status
//!     └─ command: rlimits → drop capabilities (becoming the spec's user, if any) →
//!                 no_new_privs → seccomp → execve
//! ```
//!
//! The executor passes a socket as the helper's standard input (so the spawn needs no `pre_exec`
//! and can use `posix_spawn`): it writes the [`Prelude`], later the [`SandboxSpec`], and shuts its
//! side down. Everything up to the spec (joining the cgroup, compiling the seccomp filter,
//! creating init and its namespaces, the id maps, the loopback) depends on the prelude alone, so
//! a warm helper has done it before the execution arrives. The helper moves the socket to a
//! close-on-exec descriptor, puts `/dev/null` on stdin, and answers with [`Report`] lines. The
//! socket closes when the command execs and when init and the helper exit.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use conductor_types::SandboxLayout;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use nix::sched::CpuSet;

use crate::bridge::{listen_loopback, pass_listeners};
use crate::command::{current_affinity, exec_failure_code, pin_to_cpu, Prepared};
use crate::fds::{receive_fd, send_fd};
use crate::idmap::{id_maps, IdMaps};
use crate::mounts::{
    attach_tree, build_root, clone_tree, make_mount_point, write_files, LinuxRootFs, StageError,
};
use crate::net::loopback_up;
use crate::report::Report;
use crate::seccomp;
use crate::spec::{read_spec_bytes, HelperMode, PrebuiltRoot, Prelude, SandboxSpec};

mod host;

/// Exit status of the helper and init when the sandbox could not be built (the executor reads
/// the real reason from the report).
const SETUP_FAILED: i32 = 125;

/// Runs the helper. Never returns.
pub fn main() -> ! {
    let channel = match take_channel() {
        Ok(channel) => channel,
        Err(reason) => {
            eprintln!(
                "conductor: {} is internal to the host and namespace executors: {reason}",
                crate::HELPER_ARG
            );
            std::process::exit(2);
        }
    };
    let code = match run(&channel) {
        Ok(code) => code,
        Err(e) => {
            report(
                &channel,
                &Report::Failed {
                    stage: e.stage,
                    error: e.error,
                },
            );
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

/// Moves the executor's socket off stdin to a close-on-exec descriptor, closes every other
/// descriptor but the standard three, and puts `/dev/null` on stdin, which the command inherits.
fn take_channel() -> Result<File, String> {
    let stat = nix::sys::stat::fstat(libc::STDIN_FILENO).map_err(|e| format!("stdin: {e}"))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err("stdin is not the executor's socket".to_owned());
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates stdin into a new descriptor (>= 3) that we then own.
    let fd = unsafe { libc::fcntl(libc::STDIN_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(format!("moving the socket: {}", Errno::last()));
    }
    // SAFETY: `fd` was just returned by fcntl and nothing else owns it.
    let channel = unsafe { File::from_raw_fd(fd) };
    // Whatever else the executor's process inherited stays out of the sandbox.
    crate::fds::close_all_except(fd).map_err(|e| format!("closing inherited descriptors: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    nix::unistd::dup2(null.as_raw_fd(), libc::STDIN_FILENO)
        .map_err(|e| format!("replacing stdin: {e}"))?;
    Ok(channel)
}

pub(crate) fn report(channel: &File, report: &Report) {
    // Nobody to tell when the executor went away; the exit status still says enough.
    let _ = (&*channel).write_all(&report.to_line());
}

fn run(channel: &File) -> Result<i32, StageError> {
    let prelude = Prelude::read_from(channel)
        .map_err(|e| StageError::new("reading the sandbox prelude", e))?;
    for procs in &prelude.cgroup_procs {
        std::fs::write(procs, b"0")
            .map_err(|e| StageError::new(format!("joining the cgroup {}", procs.display()), e))?;
    }
    let (new_network, uid_base) = match prelude.mode {
        HelperMode::Host => return host::run(channel),
        HelperMode::Namespaces {
            new_network,
            uid_base,
        } => (new_network, uid_base),
    };
    // Nothing up to the spec depends on the execution: a warm helper does it all ahead of time.
    let filter =
        seccomp::default_filter().map_err(|e| StageError::new("building the seccomp filter", e))?;
    let affinity = current_affinity();
    let maps = id_maps(Uid::current().as_raw(), Gid::current().as_raw(), uid_base);
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| StageError::new("creating the helper's pipes", e))
    };
    let (go_read, go_write) = pipe()?;
    let (spec_read, spec_write) = pipe()?;
    // A root built ahead of time gets the workspace as a mount the helper clones: a descriptor,
    // passed over a socket.
    let prebuilt = prelude.prebuilt;
    let trees = match &prebuilt {
        Some(_) => Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| StageError::new("creating the helper's socket", e))?,
        ),
        None => None,
    };
    // No mount namespace yet: a copy made now would miss whatever the host mounts before the
    // execution comes (a workspace on a filesystem of its own). init unshares it then.
    let mut flags =
        libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if new_network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: clone without CLONE_VM and with a null stack behaves like fork: the child gets a
    // copy of this single-threaded process and continues on its copy of the stack. No locks
    // can be held by other threads because there are none.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        let err = Errno::last();
        return Err(StageError::new(
            "creating the namespaces",
            format!("{err} (are user namespaces enabled? see /proc/sys/user/max_user_namespaces)"),
        ));
    }
    if pid == 0 {
        drop(go_write);
        drop(spec_write);
        let init = Init {
            channel,
            new_network,
            maps: &maps,
            filter: &filter,
            affinity,
            prebuilt: prebuilt.as_ref().zip(trees.map(|(_, theirs)| theirs)),
        };
        init.main(File::from(go_read), File::from(spec_read))
    }
    drop(go_read);
    drop(spec_read);
    let trees = trees.map(|(ours, _)| ours);
    let child = Pid::from_raw(pid as i32);
    let fail = |e: StageError| {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        e
    };
    write_id_maps(child, &maps).map_err(fail)?;
    let _ = nix::unistd::write(&go_write, b"1");

    // Wait for the execution, and pass it on to init.
    let stage = "reading the sandbox spec";
    let spec_bytes = read_spec_bytes(channel).map_err(|e| fail(StageError::new(stage, e)))?;
    let spec = SandboxSpec::from_bytes(&spec_bytes).map_err(|e| fail(StageError::new(stage, e)))?;
    pin_to_cpu(&[child]);
    if let (Some(prebuilt), Some(trees)) = (&prebuilt, &trees) {
        send_late_mounts(prebuilt, &spec, trees).map_err(fail)?;
    }
    let mut spec_write = File::from(spec_write);
    // init reads to the end; if it died instead, its status says so.
    let _ = spec_write.write_all(&spec_bytes);
    drop(spec_write);
    // While init builds the sandbox, hand the workspace (and the home) to the sandbox's root or
    // the command's user; the byte lets it start the command.
    for owner in &spec.owners {
        // Iterative, never following links, and refusing files linked from elsewhere.
        crate::handover::hand_over(&owner.path, owner.uid, owner.uid).map_err(|e| {
            fail(StageError::new(
                format!(
                    "giving {} to the sandbox's uid {}",
                    owner.path.display(),
                    owner.uid
                ),
                e,
            ))
        })?;
    }
    // `full`: the veth the executor made goes into init's network namespace, configured,
    // before the command may start.
    if let Some(interface) = &spec.interface {
        crate::net::attach_interface(interface, child.as_raw()).map_err(|e| {
            fail(StageError::new(
                format!("attaching the network interface {}", interface.peer),
                e,
            ))
        })?;
    }
    let _ = nix::unistd::write(&go_write, b"2");
    drop(go_write);
    // Step back: init reports from here on.
    Ok(wait_for(child))
}

/// Clones the workspace's mount (and the home's, when the execution has one) on the host and
/// sends them to init, in that order, for a prebuilt root to attach.
fn send_late_mounts(
    prebuilt: &PrebuiltRoot,
    spec: &SandboxSpec,
    trees: &OwnedFd,
) -> Result<(), StageError> {
    let stage = "cloning the workspace's mount";
    let late = prebuilt
        .late_mounts_of(&spec.layout)
        .map_err(|e| StageError::new(stage, e))?;
    for source in std::iter::once(late.workspace).chain(late.home) {
        let tree = clone_tree(source).map_err(|e| {
            StageError::new(format!("cloning the mount of {}", source.display()), e)
        })?;
        send_fd(trees, &tree).map_err(|e| StageError::new(stage, e))?;
    }
    Ok(())
}

fn wait_for(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return SETUP_FAILED,
        }
    }
}

fn write_id_maps(child: Pid, maps: &IdMaps) -> Result<(), StageError> {
    let proc_dir = format!("/proc/{child}");
    let write = |file: &str, text: &str| {
        std::fs::write(format!("{proc_dir}/{file}"), text)
            .map_err(|e| StageError::new(format!("writing {file} of the sandbox"), e))
    };
    if maps.deny_setgroups {
        write("setgroups", "deny")?;
    }
    write("uid_map", &maps.uid_map)?;
    write("gid_map", &maps.gid_map)
}

/// pid 1 of the sandbox, before and after it knows the execution.
struct Init<'a> {
    channel: &'a File,
    new_network: bool,
    maps: &'a IdMaps,
    filter: &'a seccomp::Filter,
    affinity: Option<CpuSet>,
    /// The root to build before the spec comes, and where the workspace's mount will come from.
    prebuilt: Option<(&'a PrebuiltRoot, OwnedFd)>,
}

impl Init<'_> {
    fn main(self, mut go: File, spec: File) -> ! {
        // Die with the helper (it is killed on timeout and cancel when there is no cgroup).
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        let mut wait_for_go = || {
            let mut byte = [0u8; 1];
            if go.read(&mut byte).unwrap_or(0) != 1 {
                // The helper failed (and reported why) or died.
                std::process::exit(SETUP_FAILED);
            }
        };
        // The id maps are written.
        wait_for_go();
        // The network does not depend on the execution.
        if self.new_network {
            loopback_up().unwrap_or_else(|e| {
                self.fail(StageError::new("bringing up the loopback interface", e))
            });
        }
        if let Some((prebuilt, trees)) = &self.prebuilt {
            prebuild(prebuilt, self.maps).unwrap_or_else(|e| self.fail(e));
            self.run_prebuilt(prebuilt, trees, spec, wait_for_go)
        }
        let command = self.prepare(spec).unwrap_or_else(|e| self.fail(e));
        // The workspace is ready.
        wait_for_go();
        // SAFETY: this process is single-threaded (a clone of the single-threaded helper), so
        // the child may run arbitrary code after fork.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => command_main(self.channel, &command),
            Ok(ForkResult::Parent { child }) => reap(self.channel, child),
            Err(e) => self.fail(StageError::new("starting the command", e)),
        }
    }

    /// The spec, the command and the sandbox.
    fn prepare(&self, spec: File) -> Result<Prepared, StageError> {
        let spec = SandboxSpec::read_from(spec)
            .map_err(|e| StageError::new("receiving the sandbox spec", e))?;
        let command = Prepared::new(&spec, self.filter, self.affinity)?;
        build_sandbox(&spec, self.maps)?;
        self.open_bridges(&spec.bridges)?;
        Ok(command)
    }

    /// Listens on the bridges' ports in the sandbox's network namespace and passes the
    /// listeners to the executor; init keeps no copy, and the command never had one.
    fn open_bridges(&self, ports: &[u16]) -> Result<(), StageError> {
        if ports.is_empty() {
            return Ok(());
        }
        let stage = "listening on the bridged ports";
        let listeners = listen_loopback(ports).map_err(|e| StageError::new(stage, e))?;
        pass_listeners(self.channel, ports, &listeners).map_err(|e| StageError::new(stage, e))
    }

    /// With the root prebuilt, the command's process is forked ahead of time too: it waits for
    /// the spec, which init passes on once the sandbox is finished and the workspace is ready.
    fn run_prebuilt(
        &self,
        prebuilt: &PrebuiltRoot,
        trees: &OwnedFd,
        spec: File,
        mut wait_for_go: impl FnMut(),
    ) -> ! {
        let (for_command, to_command) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .unwrap_or_else(|e| self.fail(StageError::new("creating the command's pipe", e)));
        // SAFETY: this process is single-threaded (a clone of the single-threaded helper), so
        // the child may run arbitrary code after fork.
        let child = match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(to_command);
                waiting_command(
                    self.channel,
                    File::from(for_command),
                    self.filter,
                    self.affinity,
                )
            }
            Ok(ForkResult::Parent { child }) => child,
            Err(e) => self.fail(StageError::new("starting the command", e)),
        };
        drop(for_command);
        let stage = "receiving the sandbox spec";
        let bytes = read_spec_bytes(spec).unwrap_or_else(|e| self.fail(StageError::new(stage, e)));
        let parsed = SandboxSpec::from_bytes(&bytes)
            .unwrap_or_else(|e| self.fail(StageError::new(stage, e)));
        // The command process prepares the command itself (and reports it if it cannot).
        finish_prebuilt(&parsed, prebuilt, trees).unwrap_or_else(|e| self.fail(e));
        self.open_bridges(&parsed.bridges)
            .unwrap_or_else(|e| self.fail(e));
        // The command wakes on this CPU, as init did (see `pin_to_cpu`).
        pin_to_cpu(&[child]);
        // The workspace is ready.
        wait_for_go();
        let mut to_command = File::from(to_command);
        // If the command died meanwhile, reaping it says so.
        let _ = to_command.write_all(&bytes);
        drop(to_command);
        reap(self.channel, child)
    }

    fn fail(&self, e: StageError) -> ! {
        report(
            self.channel,
            &Report::Failed {
                stage: e.stage,
                error: e.error,
            },
        );
        std::process::exit(SETUP_FAILED)
    }
}

/// A mount namespace, identity and hostname, then the root filesystem.
fn build_sandbox(spec: &SandboxSpec, maps: &IdMaps) -> Result<(), StageError> {
    let mut fs = enter_mount_namespace(&spec.layout, maps)?;
    set_hostname(&spec.layout.hostname)?;
    build_root(&spec.layout, &spec.root_dir, &mut fs)?;
    drop(fs);
    pivot_into(&spec.root_dir)?;
    seal(&spec.cwd)
}

/// A warm init's root, before the execution comes: everything [`build_sandbox`] does but the
/// hostname, the `/etc` files, the workspace and making the root read-only.
fn prebuild(prebuilt: &PrebuiltRoot, maps: &IdMaps) -> Result<(), StageError> {
    let layout = SandboxLayout {
        hostname: String::new(),
        mounts: prebuilt.mounts.clone(),
        files: Vec::new(),
    };
    let mut fs = enter_mount_namespace(&layout, maps)?;
    build_root(&layout, &prebuilt.root_dir, &mut fs)?;
    make_mount_point(&prebuilt.root_dir, &prebuilt.workspace, &mut fs)?;
    if let Some(home) = &prebuilt.home {
        make_mount_point(&prebuilt.root_dir, home, &mut fs)?;
    }
    drop(fs);
    pivot_into(&prebuilt.root_dir)
}

/// The rest of a prebuilt root, once the spec came: the hostname, the `/etc` files, the
/// workspace and the home (the mounts the helper cloned on the host), then read-only.
fn finish_prebuilt(
    spec: &SandboxSpec,
    prebuilt: &PrebuiltRoot,
    trees: &OwnedFd,
) -> Result<(), StageError> {
    let stage = "mounting the workspace";
    let late = prebuilt
        .late_mounts_of(&spec.layout)
        .map_err(|e| StageError::new(stage, e))?;
    let tree = receive_fd(trees).map_err(|e| StageError::new(stage, e))?;
    let home = match (late.home, &prebuilt.home) {
        (Some(_), Some(target)) => Some((
            receive_fd(trees).map_err(|e| StageError::new("mounting the home", e))?,
            target,
        )),
        _ => None,
    };
    set_hostname(&spec.layout.hostname)?;
    write_files(
        &spec.layout.files,
        Path::new("/"),
        &mut LinuxRootFs::default(),
    )?;
    attach_tree(&tree, &prebuilt.workspace).map_err(|e| StageError::new(stage, e))?;
    if let Some((tree, target)) = home {
        attach_tree(&tree, target).map_err(|e| StageError::new("mounting the home", e))?;
    }
    seal(&spec.cwd)
}

/// A private copy of the host's mounts, the host paths `layout` binds looked up, a session of
/// its own, and root in the sandbox.
fn enter_mount_namespace(layout: &SandboxLayout, maps: &IdMaps) -> Result<LinuxRootFs, StageError> {
    // A copy of the host's mounts as they are now.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| StageError::new("creating the mount namespace", e))?;
    // Host paths are looked up while this process still has the helper's host uid, which owns
    // root's private directories (a workspace under a 0700 temp dir); after the switch below
    // it is the sandbox's unprivileged uid on the host.
    let fs = LinuxRootFs::resolve(layout);
    // A session of its own, without a controlling terminal: nothing in the sandbox can open the
    // caller's terminal through /dev/tty (and type into the caller's shell with TIOCSTI).
    nix::unistd::setsid().map_err(|e| StageError::new("starting a new session", e))?;
    let stage = "becoming root in the sandbox";
    let root = Gid::from_raw(0);
    nix::unistd::setresgid(root, root, root).map_err(|e| StageError::new(stage, e))?;
    if !maps.deny_setgroups {
        nix::unistd::setgroups(&[]).map_err(|e| StageError::new(stage, e))?;
    }
    let root = Uid::from_raw(0);
    nix::unistd::setresuid(root, root, root).map_err(|e| StageError::new(stage, e))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| StageError::new("making / private", e))?;
    Ok(fs)
}

fn set_hostname(hostname: &str) -> Result<(), StageError> {
    nix::unistd::sethostname(hostname).map_err(|e| StageError::new("setting the hostname", e))
}

/// Makes `root_dir` the root and drops the host's mounts.
fn pivot_into(root_dir: &Path) -> Result<(), StageError> {
    let stage = "pivoting into the new root";
    nix::unistd::chdir(root_dir).map_err(|e| StageError::new(stage, e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| StageError::new(stage, e))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(|e| StageError::new(stage, e))?;
    nix::unistd::chdir("/").map_err(|e| StageError::new(stage, e))
}

/// Makes the root read-only and changes to the command's working directory.
fn seal(cwd: &Path) -> Result<(), StageError> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| StageError::new("making the root read-only", e))?;
    nix::unistd::chdir(cwd).map_err(|e| {
        StageError::new(
            format!("changing to the working directory {}", cwd.display()),
            e,
        )
    })
}

/// Reaps every process that ends up here and reports the command's status. When init exits,
/// the kernel kills whatever is left in the pid namespace.
fn reap(channel: &File, command: Pid) -> ! {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => {
                report(channel, &Report::Exited { code });
                std::process::exit(0)
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == command => {
                report(
                    channel,
                    &Report::Signaled {
                        signal: signal as i32,
                    },
                );
                std::process::exit(0)
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                report(
                    channel,
                    &Report::Failed {
                        stage: "waiting for the command".into(),
                        error: e.to_string(),
                    },
                );
                std::process::exit(SETUP_FAILED)
            }
        }
    }
}

/// The command process forked ahead of time: waits for the spec from init, then changes to its
/// working directory and becomes the command. Without a spec (init gave up, and reported why;
/// the pid namespace is going away), it exits quietly.
fn waiting_command(
    channel: &File,
    spec: File,
    filter: &seccomp::Filter,
    affinity: Option<CpuSet>,
) -> ! {
    let fail = |e: StageError| -> ! {
        report(
            channel,
            &Report::Failed {
                stage: e.stage,
                error: e.error,
            },
        );
        std::process::exit(SETUP_FAILED)
    };
    let bytes = match read_spec_bytes(spec) {
        Ok(bytes) if !bytes.is_empty() => bytes,
        _ => std::process::exit(SETUP_FAILED),
    };
    let stage = "receiving the sandbox spec";
    let spec = SandboxSpec::from_bytes(&bytes).unwrap_or_else(|e| fail(StageError::new(stage, e)));
    let command = Prepared::new(&spec, filter, affinity).unwrap_or_else(|e| fail(e));
    nix::unistd::chdir(&spec.cwd).unwrap_or_else(|e| {
        fail(StageError::new(
            format!("changing to the working directory {}", spec.cwd.display()),
            e,
        ))
    });
    command_main(channel, &command)
}

/// The command process: lock down, exec.
fn command_main(channel: &File, command: &Prepared) -> ! {
    if let Err(e) = command.lock_down() {
        report(
            channel,
            &Report::Failed {
                stage: e.stage,
                error: e.error,
            },
        );
        std::process::exit(SETUP_FAILED);
    }
    let errno = command.executable.exec();
    let error = errno.desc().to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "conductor: cannot execute {}: {error}",
        command.executable.program
    );
    report(
        channel,
        &Report::ExecFailed {
            program: command.executable.program.clone(),
            error,
        },
    );
    std::process::exit(exec_failure_code(errno))
}
