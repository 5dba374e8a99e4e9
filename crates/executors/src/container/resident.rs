//! Reset-and-reuse warm containers: the opt-in (`warm_reuse` > 0) that keeps a warm container
//! for further executions instead of removing it after one (see `pool` for warm containers).
//!
//! **Why opt-in.** A reused container was used by an earlier execution: whatever the reset does
//! not undo is shared between the executions it serves. Environments whose tasks trust each
//! other (one user's test runs) gain the refill a fresh container costs; the default stays one
//! container per execution.
//!
//! **The agent.** A resident container's main process is `scripts::RESIDENT_AGENT`, a `sh` loop
//! running as root in the container (no capabilities but `SETUID` and `SETGID`,
//! `no-new-privileges`, the same seccomp profile). For each command it reads a framed script from
//! the `command` FIFO (its length on a line, then the script: the FIFO stays open, so no
//! end-of-file marks the end), runs it in a subshell with stdout and stderr on the `stdout` and
//! `stderr` FIFOs, and writes the exit status to the `status` FIFO. The script switches to the
//! executions' user with `setpriv` before it changes directory and `exec`s the command, so the
//! command and everything it starts run as that user with no capabilities: they cannot signal,
//! trace or read the agent's memory or descriptors (another uid), nor open the FIFOs (root's, mode
//! 0600). A command cannot forge its status or read the next execution's script.
//!
//! **The reset**, done by the executor on the host before the container is offered again:
//! every process of the container but its init and the agent is killed (they are found in the
//! container's cgroup); `/tmp`, `/dev/shm` and `/dev/mqueue` (the only places the command's user
//! can write besides the workspace, the root being read-only) are emptied through the agent's
//! `/proc/<pid>/root`; System V IPC objects are removed in the container's IPC namespace; the
//! workspace is unbound from the slot; the limits of the next execution replace the previous
//! ones (not named ones are lifted) and, on cgroup v1, the peak-memory figure starts afresh. A
//! reset that fails, a command that ended other than by exiting (timeout, cancel, the agent
//! killed), or a container that served `warm_reuse` executions is removed instead.
//!
//! What a reset does not undo: CPU time and disk I/O are reported as the difference over the
//! execution; on cgroup v2 the peak memory is the container's since it started (v2 cannot reset
//! it), so it is not reported for a reused container there.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::pool::Slot;

/// How long a new resident container's agent has to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the reset may take to see the killed processes gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// A resident container's agent, as the executor talks to it.
#[derive(Debug)]
pub(crate) struct Resident {
    /// The `status` FIFO, read a line per execution (end of file: the agent is gone). Kept
    /// as a descriptor and registered with the runtime of each execution: a pool may outlive
    /// the runtime that filled it. `None` once a read was abandoned half-way.
    status: Option<std::os::fd::OwnedFd>,
    /// Host pids of the container's init and agent (and Podman's conmon): what survives a
    /// reset.
    keep: BTreeSet<u32>,
    /// Host pid of the container's init, whose root and IPC namespace the reset enters.
    init: u32,
    /// The cgroup directory holding the container (the engine's cgroup below it).
    tree: PathBuf,
    /// Executions served so far.
    pub(crate) uses: u32,
}

impl Resident {
    /// Opens the `status` FIFO of `slot`: before the container starts, so the agent's open of
    /// its write end does not wait.
    pub(crate) fn open_status(slot: &Slot) -> io::Result<pipe::Receiver> {
        pipe::OpenOptions::new().open_receiver(slot.status())
    }

    /// Waits for the agent started on `status` to say it is ready, then records the
    /// container's processes (its init and the agent) in cgroup `tree`; `init` is the host pid
    /// of the container's first process as the engine reports it.
    pub(crate) async fn arm(
        status: pipe::Receiver,
        tree: PathBuf,
        init: impl std::future::Future<Output = Option<u32>>,
    ) -> io::Result<Self> {
        let mut status = status;
        match tokio::time::timeout(READY_TIMEOUT, read_line(&mut status)).await {
            Ok(Ok(line)) if line == "ready" => {}
            Ok(Ok(line)) => {
                return Err(io::Error::other(format!(
                    "the agent said {line:?} instead of ready (does the image have sh, head and setpriv?)"
                )))
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the agent was not ready within 30 s",
                ))
            }
        }
        let scan = tree.clone();
        let keep = tokio::task::spawn_blocking(move || procs_in_tree(&scan))
            .await
            .map_err(io::Error::other)??;
        // The init and the agent, and Podman's conmon (in the cgroup parent): nothing else
        // runs yet.
        if keep.len() < 2 {
            return Err(io::Error::other(format!(
                "expected the init and the agent in the new container, found {} processes",
                keep.len()
            )));
        }
        let init = match init.await {
            Some(pid) if keep.contains(&pid) => pid,
            other => {
                return Err(io::Error::other(format!(
                    "the engine reports init pid {other:?}, not one of the container's {keep:?}"
                )))
            }
        };
        Ok(Self {
            status: Some(status.into_nonblocking_fd()?),
            keep,
            init,
            tree,
            uses: 0,
        })
    }

    /// The exit status the agent reports for the command sent last; `None` when the agent is
    /// gone (the container has exited) or said something else.
    pub(crate) async fn exit_status(&mut self) -> Option<i64> {
        let fd = self.status.take()?;
        let mut receiver = pipe::Receiver::from_owned_fd_unchecked(fd).ok()?;
        let line = read_line(&mut receiver).await;
        self.status = receiver.into_nonblocking_fd().ok();
        line.ok()?.parse().ok()
    }

    /// Undoes what an execution left (see the module docs): blocking, call it on a blocking
    /// thread. An error means the container must not be offered again.
    pub(crate) fn reset(&self) -> Result<(), String> {
        self.kill_leftovers()?;
        let [root, ipc] = self.open_in_container(self.init, ["root", "ns/ipc"])?;
        let root_path = PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
        for dir in ["tmp", "dev/shm", "dev/mqueue"] {
            empty_dir(&root_path.join(dir)).map_err(|e| format!("emptying /{dir}: {e}"))?;
        }
        let removed = std::process::Command::new("nsenter")
            // Our descriptor, as nsenter (another process) reaches it.
            .arg(format!(
                "--ipc=/proc/{}/fd/{}",
                std::process::id(),
                ipc.as_raw_fd()
            ))
            .args(["--", "ipcrm", "--all"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| format!("running nsenter ipcrm: {e}"))?;
        if !removed.status.success() {
            return Err(format!(
                "removing System V IPC objects: {}",
                String::from_utf8_lossy(&removed.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Kills every process of the container but its init and the agent, and waits until they
    /// are gone: blocking.
    pub(crate) fn kill_leftovers(&self) -> Result<(), String> {
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let procs = procs_in_tree(&self.tree).map_err(|e| format!("listing processes: {e}"))?;
            if !self.keep.is_subset(&procs) {
                return Err("the container's init or agent is gone".to_owned());
            }
            let left: Vec<u32> = procs.difference(&self.keep).copied().collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("{} processes survived SIGKILL", left.len()));
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Opens `/proc/<pid>/<entry>` of the container's process `pid` for each entry, checking
    /// before and after that `pid` is in the container (a pid reused by a host process must
    /// never be entered) and in a mount namespace other than ours.
    fn open_in_container<const N: usize>(
        &self,
        pid: u32,
        entries: [&str; N],
    ) -> Result<[std::fs::File; N], String> {
        let inside = || {
            procs_in_tree(&self.tree)
                .map(|procs| procs.contains(&pid))
                .unwrap_or(false)
        };
        if !inside() {
            return Err("the container's init is gone".to_owned());
        }
        let namespace = |path: String| std::fs::read_link(path).ok();
        let ours = namespace("/proc/self/ns/mnt".to_owned());
        if ours.is_none() || namespace(format!("/proc/{pid}/ns/mnt")) == ours {
            return Err(format!(
                "process {pid} is not in a mount namespace of its own: not entering it"
            ));
        }
        let mut files = Vec::with_capacity(N);
        for entry in entries {
            files.push(
                std::fs::File::open(format!("/proc/{pid}/{entry}"))
                    .map_err(|e| format!("opening /proc/{pid}/{entry}: {e}"))?,
            );
        }
        if !inside() {
            return Err("the container's init is gone".to_owned());
        }
        files
            .try_into()
            .map_err(|_| "opening the container's /proc entries".to_owned())
    }
}

/// One line from `fifo`, without its newline, read a byte at a time so nothing past it is
/// consumed. End of file before a newline is an error.
async fn read_line(fifo: &mut pipe::Receiver) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        match fifo.read_u8().await? {
            b'\n' => return String::from_utf8(line).map_err(io::Error::other),
            byte if line.len() < 64 => line.push(byte),
            _ => return Err(io::Error::other("an over-long status line")),
        }
    }
}

/// Every process in cgroup directory `dir` and the cgroups below it.
fn procs_in_tree(dir: &Path) -> io::Result<BTreeSet<u32>> {
    let mut procs = BTreeSet::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let text = match std::fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(text) => text,
            // A cgroup removed while we looked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        procs.extend(
            text.lines()
                .filter_map(|line| line.trim().parse::<u32>().ok()),
        );
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    Ok(procs)
}

/// Removes everything in `dir` (never following symbolic links), keeping `dir`. A missing
/// `dir` is empty. The tree is the task's: removed iteratively at any depth with a bounded
/// number of descriptors (std's `remove_dir_all` recurses, one descriptor per level).
fn empty_dir(dir: &Path) -> io::Result<()> {
    conductor_workspace::remove_contents(dir).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dir_removes_a_deep_tree_on_a_small_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tmp");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("top"), b"x").unwrap();
        // 10 000 levels, each made relative to the one above (no long path).
        let mut current = std::fs::File::open(&dir).unwrap();
        for _ in 0..10_000 {
            let next = format!("/proc/self/fd/{}/d", current.as_raw_fd());
            std::fs::create_dir(&next).unwrap();
            current = std::fs::File::open(&next).unwrap();
        }
        drop(current);
        let emptied = dir.clone();
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || empty_dir(&emptied))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        empty_dir(&tmp.path().join("missing")).unwrap();
    }
}
