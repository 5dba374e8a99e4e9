//! Starting sandbox helpers (`conductor __sandbox-init`), cold or ahead of time; shared by the
//! host and the namespace executor.
//!
//! A helper is spawned with one end of a socket as its stdin and then waits for its prelude and
//! spec. The [`WarmPool`] keeps a few helpers ready that have had their prelude: each is a member
//! of a cgroup of its own (created without limits; the execution's limits are written when it is
//! taken, see [`apply_limits`]) and has done what its [`HelperMode`] does ahead of time (in
//! namespace mode, created its sandbox's user, pid, uts, ipc and network namespaces; in host
//! mode, nothing more). An execution that takes one skips the helper's start-up (exec and dynamic
//! linking of a large binary), the cgroup's creation, the cgroup migration (which can wait for an
//! RCU grace period) and, in namespace mode, the namespaces' creation on its critical path.

use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use conductor_core::ExecutorError;

use crate::bridge::{read_reports, HelperReports};
use conductor_sandbox::cgroup::{Cgroup, CgroupLimits, CgroupManager};
use conductor_sandbox::spec::{HelperMode, PrebuiltRoot, Prelude};
use conductor_sandbox::HELPER_ARG;
use conductor_types::{ExecutionId, Mount};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A running helper waiting for its spec.
#[derive(Debug)]
pub(crate) struct Launched {
    /// The helper process (stdout and stderr still inside).
    pub child: Helper,
    /// Our end of the socket.
    pub channel: UnixStream,
    /// Its cgroup, which the helper is already a member of, when it came from the pool.
    pub cgroup: Option<Cgroup>,
    /// The mount point of the root its init built ahead of time (see [`RootTemplate`]).
    pub root_dir: Option<PathBuf>,
    /// When it was spawned.
    pub spawned: Instant,
}

impl Launched {
    /// Spawns a helper now; it joins its cgroup itself, from the spec.
    pub fn spawn(helper: &Path) -> Result<Self, ExecutorError> {
        let (channel, theirs) =
            UnixStream::pair().map_err(|e| ExecutorError::io("creating the helper socket", e))?;
        let child = spawn_helper(helper, theirs)?;
        Ok(Self {
            child,
            channel,
            cgroup: None,
            root_dir: None,
            spawned: Instant::now(),
        })
    }

    /// Writes the prelude (a cold helper's; a warm one has had it) and the encoded spec, shuts
    /// our sending side down (the helper reads to end-of-file) and returns a task that collects
    /// the helper's reports until every holder of its end has closed it.
    pub fn send_spec(
        channel: UnixStream,
        prelude: Option<&Prelude>,
        spec: &[u8],
    ) -> Result<HelperReports, ExecutorError> {
        send_spec(channel, prelude, spec)
    }
}

/// How long a helper with a prebuilt root may wait before it is not used: its binds of host
/// files are of the files as they were then (a `/etc/resolv.conf` replaced since, a rootfs
/// rebuilt at the same path), so it is recycled instead.
const PREBUILT_MAX_AGE: Duration = Duration::from_secs(30);

/// The sandbox root a namespace helper's init builds while it waits: the mounts every
/// execution the pool serves has, in an empty directory of its own under `run_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RootTemplate {
    /// Where the helpers' mount points are created.
    pub run_dir: PathBuf,
    /// Every mount but the workspace.
    pub mounts: Vec<Mount>,
    /// The workspace's place in the sandbox.
    pub workspace: PathBuf,
    /// Where a home may be attached too (its mount point is made ahead of time).
    pub home: Option<PathBuf>,
}

/// Helpers started ahead of time (see the module docs).
#[derive(Debug)]
pub(crate) struct WarmPool {
    helper: PathBuf,
    cgroups: Option<Arc<CgroupManager>>,
    mode: HelperMode,
    template: Option<RootTemplate>,
    size: usize,
    idle: Mutex<Vec<Launched>>,
    starting: AtomicUsize,
}

impl WarmPool {
    /// A pool of `size` helpers (0 disables it) started in `mode`, each in a cgroup of its own
    /// under `cgroups`, and in namespace mode with `template`'s root built ahead of time.
    /// Without cgroups the pool still saves the helper's start-up (and, in namespace mode, the
    /// namespaces and the root).
    pub fn new(
        helper: PathBuf,
        cgroups: Option<Arc<CgroupManager>>,
        mode: HelperMode,
        template: Option<RootTemplate>,
        size: usize,
    ) -> Self {
        Self {
            helper,
            cgroups,
            mode,
            template,
            size,
            idle: Mutex::new(Vec::new()),
            starting: AtomicUsize::new(0),
        }
    }

    /// A ready helper, if one is idle and started in the mode the execution needs (the
    /// namespace executor's warm helpers have a network namespace of their own: an execution on
    /// the host's network starts cold). Its cgroup, if any, has no limits yet.
    pub fn take(&self, mode: &HelperMode) -> Option<Launched> {
        if *mode != self.mode || self.size == 0 {
            return None;
        }
        let mut unusable = Vec::new();
        let mut taken = None;
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            while let Some(mut launched) = idle.pop() {
                let fresh =
                    self.template.is_none() || launched.spawned.elapsed() < PREBUILT_MAX_AGE;
                if fresh && launched.child.is_running() {
                    taken = Some(launched);
                    break;
                }
                unusable.push(launched);
            }
        }
        // One that died while idle (killed from outside) or is too old is cleaned up, off the
        // caller's path (removing a cgroup can take milliseconds).
        if !unusable.is_empty() {
            let clean = move || unusable.into_iter().for_each(discard);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(clean)),
                Err(_) => clean(),
            }
        }
        taken
    }

    /// The root this pool's helpers build ahead of time, if any.
    pub fn template(&self) -> Option<&RootTemplate> {
        self.template.as_ref()
    }

    /// Starts helpers in the background until the pool is full again.
    pub fn refill(self: &Arc<Self>) {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            let starting = self.starting.load(Ordering::Acquire);
            if idle + starting >= self.size {
                return;
            }
            if self
                .starting
                .compare_exchange(starting, starting + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                match pool.start_one().await {
                    Ok(launched) => pool
                        .idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(launched),
                    Err(e) => tracing::warn!(error = %e, "starting a warm sandbox helper"),
                }
                pool.starting.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    /// Creates a cgroup, spawns a helper, moves it into the cgroup (before it has read its
    /// prelude, so before it creates anything) and sends it a prelude that makes it do what its
    /// mode does ahead of time.
    async fn start_one(&self) -> Result<Launched, ExecutorError> {
        let cgroup = match self.cgroups.clone() {
            Some(manager) => {
                let prefix = match self.mode {
                    HelperMode::Host => "host-warm",
                    HelperMode::Namespaces { .. } => "ns-warm",
                };
                let name = format!("{prefix}-{}", ExecutionId::random());
                let created = tokio::task::spawn_blocking(move || {
                    manager.create(&name, &CgroupLimits::default())
                })
                .await
                .map_err(|e| ExecutorError::io("starting a warm helper", io::Error::other(e)))?
                .map_err(|e| ExecutorError::Setup {
                    stage: "creating a warm helper's cgroup".to_owned(),
                    reason: e.to_string(),
                })?;
                Some(created)
            }
            None => None,
        };
        let mut launched = Launched::spawn(&self.helper)?;
        // Moved into its cgroup from here, so the pool only ever offers a helper that is in it
        // (the migration can wait for an RCU grace period). Where this process may not move
        // another one, the helper joins from the prelude, as a cold one does.
        let (cgroup, cgroup_procs) = match cgroup {
            Some(cgroup) => {
                let pid = launched.child.id();
                let (cgroup, moved) = tokio::task::spawn_blocking(move || {
                    let moved = cgroup.add_pid(pid);
                    (cgroup, moved)
                })
                .await
                .map_err(|e| ExecutorError::io("starting a warm helper", io::Error::other(e)))?;
                let procs = match moved {
                    Ok(()) => Vec::new(),
                    Err(e) => {
                        tracing::debug!(error = %e, "moving a warm helper into its cgroup; it joins itself");
                        cgroup.procs_files()
                    }
                };
                (Some(cgroup), procs)
            }
            None => (None, Vec::new()),
        };
        let prebuilt = match &self.template {
            Some(template) => {
                let root_dir = template
                    .run_dir
                    .join(format!("warm-{}", ExecutionId::random()));
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&root_dir)
                    .map_err(|e| {
                        ExecutorError::io(
                            format!("creating the mount point {}", root_dir.display()),
                            e,
                        )
                    })?;
                launched.root_dir = Some(root_dir.clone());
                Some(PrebuiltRoot {
                    root_dir,
                    mounts: template.mounts.clone(),
                    workspace: template.workspace.clone(),
                    home: template.home.clone(),
                })
            }
            None => None,
        };
        let prelude = Prelude {
            mode: self.mode.clone(),
            cgroup_procs,
            prebuilt,
        };
        launched.cgroup = cgroup;
        prelude
            .write_to(&launched.channel)
            .map_err(|e| ExecutorError::Setup {
                stage: "sending a warm helper its prelude".to_owned(),
                reason: e.to_string(),
            })?;
        Ok(launched)
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        for launched in idle {
            discard(launched);
        }
    }
}

/// Kills and reaps a helper that will not be used (its Drop), which empties its cgroup; then
/// removes the cgroup and its mount point.
fn discard(launched: Launched) {
    let Launched {
        child,
        cgroup,
        root_dir,
        ..
    } = launched;
    drop(child);
    if let Some(cgroup) = cgroup {
        if let Err(e) = cgroup.destroy() {
            tracing::warn!(error = %e, "removing a warm helper's cgroup");
        }
    }
    if let Some(dir) = root_dir {
        if let Err(e) = std::fs::remove_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "removing a warm helper's mount point");
        }
    }
}

/// A helper process. It is spawned with std (not tokio) so that a warm one does not belong to the
/// runtime that happened to start it; its exit is awaited through a pidfd in whichever runtime
/// the execution runs. Dropping it kills and reaps it.
#[derive(Debug)]
pub(crate) struct Helper {
    child: std::process::Child,
    reaped: bool,
}

impl Helper {
    /// The helper's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Takes the helper's stdout and stderr pipes, registered with the current runtime.
    pub fn take_output(
        &mut self,
    ) -> io::Result<(tokio::process::ChildStdout, tokio::process::ChildStderr)> {
        match (self.child.stdout.take(), self.child.stderr.take()) {
            (Some(stdout), Some(stderr)) => Ok((
                tokio::process::ChildStdout::from_std(stdout)?,
                tokio::process::ChildStderr::from_std(stderr)?,
            )),
            _ => Err(io::Error::other("the helper's output was already taken")),
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Gives up ownership of the process: from now on the caller kills it and reaps it by pid
    /// (`wait4`), and dropping this no longer does. Returns the pid.
    pub fn disown(&mut self) -> u32 {
        self.reaped = true;
        self.child.id()
    }

    /// Sends SIGKILL (the helper is unreaped, so its pid is still its own).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for the helper to exit and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if raw >= 0 {
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
            // A pidfd becomes readable when the process exits.
            // SAFETY: the AsyncFd owns `pidfd`, which stays open and is not replaced while
            // registered.
            let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?;
            let _ = pidfd.readable().await?;
        } else {
            // No pidfd (Linux before 5.3): a blocking wait on the blocking pool.
            let pid = nix::unistd::Pid::from_raw(pid);
            tokio::task::spawn_blocking(move || {
                nix::sys::wait::waitid(
                    nix::sys::wait::Id::Pid(pid),
                    nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
                )
            })
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::from)?;
        }
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `<helper> __sandbox-init` with the socket as its stdin. Without `pre_exec`, std
/// spawns with `posix_spawn` (a vfork): this multi-threaded process is never forked.
fn spawn_helper(helper: &Path, channel: UnixStream) -> Result<Helper, ExecutorError> {
    std::process::Command::new(helper)
        .arg(HELPER_ARG)
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(channel)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|child| Helper {
            child,
            reaped: false,
        })
        .map_err(|e| {
            ExecutorError::io(
                format!("starting the sandbox helper {}", helper.display()),
                e,
            )
        })
}

fn send_spec(
    mut channel: UnixStream,
    prelude: Option<&Prelude>,
    spec: &[u8],
) -> Result<HelperReports, ExecutorError> {
    let mut bytes = Vec::new();
    if let Some(prelude) = prelude {
        prelude
            .write_to(&mut bytes)
            .map_err(|e| ExecutorError::Setup {
                stage: "encoding the helper's prelude".to_owned(),
                reason: e.to_string(),
            })?;
    }
    bytes.extend_from_slice(spec);
    let io_error = |e| ExecutorError::io("sending the sandbox spec to the helper", e);
    // A blocking write: the helper reads the spec as soon as it starts, and a spec larger than
    // the socket buffer only waits for that.
    channel.write_all(&bytes).map_err(io_error)?;
    channel
        .shutdown(std::net::Shutdown::Write)
        .map_err(io_error)?;
    read_reports(channel).map_err(io_error)
}

/// Gives a warm helper's cgroup the execution's limits. A helper whose cgroup refuses them (a
/// memory limit below what the idle helper already uses) is dropped, which kills it and removes
/// its cgroup; the execution then starts cold and gets the error, if any, from `create`.
pub(crate) fn apply_limits(
    warm: Launched,
    manager: Option<&CgroupManager>,
    limits: &CgroupLimits,
) -> Option<Launched> {
    let (Some(manager), Some(cgroup)) = (manager, &warm.cgroup) else {
        return Some(warm);
    };
    if *limits == CgroupLimits::default() {
        return Some(warm);
    }
    // A few small writes to cgroupfs, inline: a trip to the blocking pool costs as much.
    match manager.set_limits(cgroup, limits) {
        Ok(()) => Some(warm),
        Err(e) => {
            tracing::debug!(error = %e, "a warm helper's cgroup refused the limits; starting cold");
            discard(warm);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    /// A stand-in helper (`sleep`) with a mount point, spawned `age` ago.
    fn idle_helper(run_dir: &Path, age: Duration) -> Launched {
        let root_dir = run_dir.join(format!("warm-{}", ExecutionId::random()));
        std::fs::create_dir(&root_dir).unwrap();
        Launched {
            child: Helper {
                child: std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap(),
                reaped: false,
            },
            channel: UnixStream::pair().unwrap().0,
            cgroup: None,
            root_dir: Some(root_dir),
            spawned: Instant::now().checked_sub(age).unwrap(),
        }
    }

    #[test]
    fn a_prebuilt_helper_past_its_age_is_removed_not_taken() {
        let run_dir = tempfile::tempdir().unwrap();
        let mode = HelperMode::Namespaces {
            new_network: true,
            uid_base: 1,
        };
        let template = RootTemplate {
            run_dir: run_dir.path().to_owned(),
            mounts: Vec::new(),
            workspace: "/workspace".into(),
            home: None,
        };
        let pool = WarmPool::new("/nonexistent".into(), None, mode.clone(), Some(template), 2);
        let fresh = idle_helper(run_dir.path(), Duration::ZERO);
        let fresh_dir = fresh.root_dir.clone().unwrap();
        let stale = idle_helper(run_dir.path(), PREBUILT_MAX_AGE + Duration::from_secs(1));
        let stale_dir = stale.root_dir.clone().unwrap();
        // The stale one is on top (taken first), the fresh one under it.
        pool.idle.lock().unwrap().extend([fresh, stale]);
        let taken = pool.take(&mode).unwrap();
        assert_eq!(taken.root_dir.as_ref(), Some(&fresh_dir));
        assert!(
            !stale_dir.exists(),
            "the stale helper's mount point is left"
        );
        assert!(pool.take(&mode).is_none());
        discard(taken);
        assert!(!fresh_dir.exists());
    }
}
