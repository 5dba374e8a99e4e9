//! Reset-and-reuse warm containers: the opt-in (`warm_reuse` > 0) that keeps a warm container
//! for further executions instead of removing it after one (see `pool` for warm containers).
//!
//! **Why opt-in.** A reused container was used by an earlier execution: whatever the reset does
//! not undo is shared between the executions it serves. Environments whose tasks trust each
//! other (one user's test runs) gain the refill a fresh container costs; the default stays one
//! container per execution.
//!
//! **The agent.** A resident container's main process is [`AGENT`], a `sh` loop running as root
//! in the container (no capabilities but `SETUID` and `SETGID`, `no-new-privileges`, the same
//! seccomp profile). For each command it reads a framed script from the `command` FIFO (its
//! length on a line, then the script: the FIFO stays open, so no end-of-file marks the end),
//! runs it in a subshell with stdout and stderr on the `stdout` and `stderr` FIFOs, and writes
//! the exit status to the `status` FIFO. The script switches to the executions' user with
//! `setpriv` before it changes directory and `exec`s the command, so the command and everything
//! it starts run as that user with no capabilities: they cannot signal, trace or read the
//! agent's memory or descriptors (another uid), nor open the FIFOs (root's, mode 0600). A
//! command cannot forge its status or read the next execution's script.
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

use std::sync::Arc;

use conductor_core::{EventSender, ExecutorError};
use conductor_sandbox::cgroup::CgroupLimits;
use conductor_types::{ExecPlan, ExecutionRequest, ExecutionResult, IsolationLevel};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use super::guard::ContainerGuard;
use super::pool::{send, shell_quote, Slot};
use super::spec::command;
use super::warm::{Warm, WarmKind};
use super::{api, exit_of, Inner, OUTPUT_GRACE};
use crate::run::{supervise, Ending, Finished, Measurements, OutputCapture};

/// The agent of a resident container (see the module docs). Exits 125 if a FIFO cannot be
/// opened or a script cannot be read.
pub const AGENT: &str = "exec 3<>/.conductor/command 4>/.conductor/status || exit 125
echo ready >&4
while read -r n <&3; do
  c=$(head -c \"$n\" <&3) || exit 125
  (eval \"$c\") </dev/null >/.conductor/stdout 2>/.conductor/stderr 3>&- 4>&-
  echo \"$?\" >&4
done
exit 125
";

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

impl Inner {
    /// Runs `request` in the resident container `warm` (taken from the pool), then resets it
    /// and gives it back, or removes it (see the module docs).
    pub(crate) async fn run_resident(
        inner: &Arc<Self>,
        warm: Warm,
        request: &ExecutionRequest,
        plan: &ExecPlan,
        events: EventSender,
        cancel: &CancellationToken,
    ) -> Result<ExecutionResult, ExecutorError> {
        let Warm {
            guard,
            id,
            oom,
            kind,
        } = warm;
        let WarmKind::Resident(mut agent) = kind else {
            inner.retire(guard, false).await;
            return Err(inner.setup("taking a resident container", "it is not one"));
        };
        let Some(slot) = guard.slot().cloned() else {
            inner.retire(guard, false).await;
            return Err(inner.setup("taking a resident container", "it has no slot"));
        };
        let begun = Instant::now();
        let prepared = match inner.prepare_resident(&guard, &slot, request, plan).await {
            Ok(prepared) => prepared,
            Err((e, bound)) => {
                inner.retire(guard, bound).await;
                return Err(e);
            }
        };
        let Prepared {
            baseline,
            peak_reset,
            stdout,
            stderr,
        } = prepared;
        let started = Instant::now();
        let output = inner.started(request, &events, stdout, stderr).await;
        let kill = || inner.kill(&id);
        let (ending, status) = supervise(agent.exit_status(), plan.timeout, cancel, kill).await;
        let duration = started.elapsed();
        // What the command left running would hold the output open: gone before it is read.
        let reusable = ending == Ending::Exited && status.is_some();
        if reusable {
            agent = match tokio::task::spawn_blocking(move || {
                agent.kill_leftovers().map(|()| agent)
            })
            .await
            {
                Ok(Ok(agent)) => agent,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, container = %id, "resetting a resident container; removing it");
                    return inner
                        .finish_removed(
                            guard, ending, status, &id, output, duration, request, &oom, baseline,
                            peak_reset,
                        )
                        .await;
                }
                Err(e) => return Err(inner.setup("resetting a resident container", e)),
            };
        }
        let (stdout, stderr) = output.finish(OUTPUT_GRACE).await?;
        let measurements = inner
            .measure(&guard, &oom, baseline.as_ref(), peak_reset)
            .await;
        let exit = match status {
            Some(code) => exit_of(code),
            None => exit_of(
                api::container_state(inner.engine.socket(), &id)
                    .await
                    .ok()
                    .and_then(|state| state.exit_code)
                    .unwrap_or(-1),
            ),
        };
        let unbound = tokio::task::spawn_blocking(move || slot.unbind_workspace()).await;
        let unbound = matches!(unbound, Ok(Ok(())));
        agent.uses += 1;
        let reuse = reusable && unbound && agent.uses < inner.config.warm_reuse;
        let warm = Warm {
            guard,
            id,
            oom,
            kind: WarmKind::Resident(agent),
        };
        if reuse {
            let pool = Arc::clone(inner);
            tokio::spawn(async move { pool.reset_and_give_back(warm).await });
        } else {
            inner.retire(warm.guard, false).await;
        }
        tracing::debug!(
            launch_ms = (started - begun).as_secs_f64() * 1e3,
            run_ms = duration.as_secs_f64() * 1e3,
            "resident container execution"
        );
        Ok(Finished {
            execution_id: request.id.clone(),
            executor: inner.config.engine.name(),
            isolation_level: IsolationLevel::Container,
            ending,
            exit,
            stdout,
            stderr,
            duration,
            measurements,
        }
        .into_result())
    }

    /// Everything up to sending the command: the limits, the workspace bound, the output
    /// FIFOs opened, the script sent. On error, whether the workspace was bound.
    async fn prepare_resident(
        &self,
        guard: &ContainerGuard,
        slot: &Slot,
        request: &ExecutionRequest,
        plan: &ExecPlan,
    ) -> Result<Prepared, (ExecutorError, bool)> {
        let unbound = |e| (e, false);
        let cgroup = guard.cgroup().ok_or_else(|| {
            unbound(self.setup("taking a resident container", "it has no cgroup"))
        })?;
        let limits = CgroupLimits {
            cpus: plan.limits.cpus,
            memory: plan.limits.memory,
            pids: plan.limits.pids,
        };
        let manager = self.cgroups().map_err(unbound)?;
        let (baseline, peak_reset) = tokio::task::spawn_blocking(move || {
            manager.replace_limits(&cgroup, &limits)?;
            let peak_reset = cgroup.reset_peak_memory()?;
            Ok::<_, conductor_sandbox::cgroup::CgroupError>((cgroup.stats().ok(), peak_reset))
        })
        .await
        .map_err(|e| unbound(self.setup("limiting a resident container", e)))?
        .map_err(|e| unbound(self.setup("limiting a resident container", e)))?;
        let cmd = command(plan, self.config.engine.name()).map_err(unbound)?;
        let text = frame(&script(
            self.config.user,
            &plan.cwd.display().to_string(),
            &cmd,
        ));
        self.bind_workspace(slot, request).await.map_err(unbound)?;
        let bound = |e| (e, true);
        let open = |path: PathBuf| {
            pipe::OpenOptions::new()
                .open_receiver(&path)
                .map_err(|e| bound(self.setup("opening a resident container's output FIFO", e)))
        };
        let stdout = open(slot.stdout())?;
        let stderr = open(slot.stderr())?;
        let writer = slot
            .open_writer()
            .map_err(|e| bound(self.setup("sending the command to a resident container", e)))?;
        tokio::task::spawn_blocking(move || send(writer, &text))
            .await
            .map_err(|e| bound(self.setup("sending the command to a resident container", e)))?
            .map_err(|e| bound(self.setup("sending the command to a resident container", e)))?;
        Ok(Prepared {
            baseline,
            peak_reset,
            stdout,
            stderr,
        })
    }

    /// The execution's measurements: the cgroup's figures minus those before it started; the
    /// peak memory only where it was reset.
    async fn measure(
        &self,
        guard: &ContainerGuard,
        oom: &Option<super::OomWatch>,
        baseline: Option<&conductor_sandbox::cgroup::CgroupStats>,
        peak_reset: bool,
    ) -> Measurements {
        let mut now = guard.measurements().await;
        if let Some(before) = baseline.map(Measurements::from) {
            let less = |now: Option<u64>, before: Option<u64>| match (now, before) {
                (Some(now), Some(before)) => Some(now.saturating_sub(before)),
                _ => None,
            };
            now.cpu_time_us = less(now.cpu_time_us, before.cpu_time_us);
            now.disk_read_bytes = less(now.disk_read_bytes, before.disk_read_bytes);
            now.disk_write_bytes = less(now.disk_write_bytes, before.disk_write_bytes);
            now.oom_kills = now.oom_kills.saturating_sub(before.oom_kills);
        }
        if !peak_reset {
            now.peak_memory_bytes = None;
        }
        if let Some(watch) = oom {
            now.oom_kills += watch.take_count();
        }
        now
    }

    /// The result of an execution whose container could not be reset: removed, not reused.
    #[allow(clippy::too_many_arguments)]
    async fn finish_removed(
        self: &Arc<Self>,
        guard: ContainerGuard,
        ending: Ending,
        status: Option<i64>,
        id: &str,
        output: OutputCapture,
        duration: Duration,
        request: &ExecutionRequest,
        oom: &Option<super::OomWatch>,
        baseline: Option<conductor_sandbox::cgroup::CgroupStats>,
        peak_reset: bool,
    ) -> Result<ExecutionResult, ExecutorError> {
        let measurements = self
            .measure(&guard, oom, baseline.as_ref(), peak_reset)
            .await;
        let slot = guard.slot().cloned();
        self.retire(guard, slot.is_some()).await;
        let (stdout, stderr) = output.finish(OUTPUT_GRACE).await?;
        tracing::debug!(container = %id, "resident container removed after a failed reset");
        Ok(Finished {
            execution_id: request.id.clone(),
            executor: self.config.engine.name(),
            isolation_level: IsolationLevel::Container,
            ending,
            exit: exit_of(status.unwrap_or(-1)),
            stdout,
            stderr,
            duration,
            measurements,
        }
        .into_result())
    }

    /// Removes a resident container (unbinding the workspace first when `bound`) and lets the
    /// pool make another.
    async fn retire(self: &Arc<Self>, guard: ContainerGuard, bound: bool) {
        if bound {
            if let Some(slot) = guard.slot().cloned() {
                let _ = tokio::task::spawn_blocking(move || slot.unbind_workspace()).await;
            }
        }
        guard.finish().await;
        self.give_back(None);
        Inner::refill(self);
    }

    /// Resets `warm` (see the module docs) and offers it again, or removes it.
    async fn reset_and_give_back(self: Arc<Self>, warm: Warm) {
        let reset = tokio::task::spawn_blocking(move || {
            let outcome = match &warm.kind {
                WarmKind::Resident(agent) => agent.reset(),
                WarmKind::Once(_) => Err("not a resident container".to_owned()),
            };
            (warm, outcome)
        })
        .await;
        match reset {
            Ok((warm, Ok(()))) => self.give_back(Some(warm)),
            Ok((warm, Err(e))) => {
                tracing::warn!(error = %e, container = %warm.id, "resetting a resident container; removing it");
                self.retire(warm.guard, false).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "resetting a resident container");
                self.give_back(None);
            }
        }
    }
}

/// What [`Inner::prepare_resident`] readied.
struct Prepared {
    baseline: Option<conductor_sandbox::cgroup::CgroupStats>,
    peak_reset: bool,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
}

/// The script the agent runs for one command: as `user` with no supplementary groups, in
/// `cwd` (after the workspace was bound, so the path now reaches it), `exec` `cmd`. Exits 125
/// if `cwd` cannot be entered.
pub fn script(user: (u32, u32), cwd: &str, cmd: &[String]) -> String {
    let mut script = format!(
        "exec setpriv --reuid={} --regid={} --clear-groups -- /bin/sh -c 'cd \"$1\" || exit 125; shift; exec \"$@\"' sh {}",
        user.0,
        user.1,
        shell_quote(cwd)
    );
    for word in cmd {
        script.push(' ');
        script.push_str(&shell_quote(word));
    }
    script.push('\n');
    script
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

/// `script` as the agent reads it: its length in bytes on a line, then the script.
pub fn frame(script: &str) -> String {
    format!("{}\n{script}", script.len())
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
    use std::io::{Read, Write};

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

    #[test]
    fn frames_count_bytes() {
        assert_eq!(frame("échô\n"), "7\néchô\n");
    }

    #[test]
    fn scripts_switch_user_then_directory_then_exec() {
        let cmd = ["/usr/bin/env", "-i", "--", "A=it's", "sh", "-c", "exit 3"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            script((7, 8), "/work space", &cmd),
            "exec setpriv --reuid=7 --regid=8 --clear-groups -- /bin/sh -c 'cd \"$1\" || exit 125; shift; exec \"$@\"' sh '/work space' '/usr/bin/env' '-i' '--' 'A=it'\\''s' 'sh' '-c' 'exit 3'\n"
        );
    }

    /// The agent as the container runs it, on the host with its FIFOs in a temporary
    /// directory: two commands in a row, each with its own output and status, run as another
    /// user who can neither read the command FIFO nor write the status one.
    #[test]
    fn the_agent_runs_one_command_after_another_as_the_user() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: switching users needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control");
        let cwd = dir.path().join("cwd");
        std::fs::create_dir(&control).unwrap();
        std::fs::create_dir(&cwd).unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        for fifo in ["command", "status", "stdout", "stderr"] {
            nix::unistd::mkfifo(
                &control.join(fifo),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
        }
        let control_text = control.display().to_string();
        let mut agent = std::process::Command::new("sh")
            .args(["-c", &AGENT.replace("/.conductor", &control_text)])
            .spawn()
            .unwrap();
        let mut status =
            std::io::BufReader::new(std::fs::File::open(control.join("status")).unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut status, &mut line).unwrap();
        assert_eq!(line, "ready\n");
        let nobody = (65534, 65534);
        for (text, expected_out, expected_status) in [
            (
                format!("id -u; echo err >&2; cat {control_text}/command; exit 3"),
                "65534\n",
                "3\n",
            ),
            (
                format!("pwd; echo 0 > {control_text}/status || exit 4"),
                &*format!("{}\n", cwd.display()),
                "4\n",
            ),
        ] {
            let read = |name: &str| {
                let path = control.join(name);
                std::thread::spawn(move || {
                    let mut text = String::new();
                    std::fs::File::open(path)
                        .unwrap()
                        .read_to_string(&mut text)
                        .unwrap();
                    text
                })
            };
            let (stdout, stderr) = (read("stdout"), read("stderr"));
            let cmd = ["sh", "-c", &text].map(str::to_owned).to_vec();
            std::fs::OpenOptions::new()
                .write(true)
                .open(control.join("command"))
                .unwrap()
                .write_all(frame(&script(nobody, &cwd.display().to_string(), &cmd)).as_bytes())
                .unwrap();
            line.clear();
            std::io::BufRead::read_line(&mut status, &mut line).unwrap();
            assert_eq!(line, expected_status);
            assert_eq!(stdout.join().unwrap(), expected_out);
            let stderr = stderr.join().unwrap();
            assert!(
                stderr.contains("Permission denied") || stderr == "err\n",
                "{stderr}"
            );
        }
        agent.kill().unwrap();
        agent.wait().unwrap();
    }
}
