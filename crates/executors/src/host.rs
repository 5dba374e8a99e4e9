//! The host executor: runs a command directly on the host, in its workspace directory, in a new
//! session with the plan's rlimits and — where cgroups are usable — in a cgroup of its own that
//! enforces the cpu/memory/pids limits, measures the tree and kills it whole.
//!
//! Isolation is process-level only: the command sees the host's filesystem and network, so this
//! executor refuses network policies other than `full`.
//!
//! With cgroups, the command normally starts from a warm helper (see [`crate::warm`]): a
//! `conductor __sandbox-init` in host mode started ahead of time that has already joined a fresh
//! cgroup of its own (joining can wait for an RCU grace period, milliseconds, which would
//! otherwise be on the critical path). The execution writes its limits into that cgroup and
//! sends the helper a [`HostSpec`]; the helper starts a session, sets the rlimits, changes to
//! the workspace and execs the command, so the helper's pid is the command's. When no warm
//! helper is ready (or without cgroups), the command is spawned directly and joins its cgroup
//! from `pre_exec` (before it can fork). Either way nothing escapes accounting or the kill.
//!
//! When the command exits, whatever it left running is killed too, as when a container's init
//! exits. Without usable cgroups the session's process group is killed instead, which misses
//! children that called `setsid`; the executor then does not declare `kills_process_tree`, the
//! limits, or the tree-wide stats (cpu time comes from `wait4`'s rusage: the command and the
//! children it waited for).

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conductor_core::{check_supported, EventSender, Executor, ExecutorError, PlanTarget};
use conductor_sandbox::cgroup::{Cgroup, CgroupLimits, CgroupManager};
use conductor_sandbox::report::{outcome, Outcome};
use conductor_sandbox::spec::{HelperMode, HostSpec};
use conductor_types::{
    Capability, ExecEvent, ExecPlan, ExecutionId, ExecutionRequest, ExecutionResult,
    ExecutorCapabilities, IsolationLevel, Rlimit, RlimitResource,
};

use crate::output::{now_ms, CapturedStream};
use crate::run::{
    reap, supervise, wait_until_exited, Ending, Finished, Measurements, OutputCapture, ProcessExit,
    Registration, Registry, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND,
};
use crate::warm::{apply_limits, Launched, WarmPool};

const NAME: &str = "host";
/// How long output may keep flowing after the tree was killed before capture is cut off.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Where the host executor puts its cgroups and spool files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Where the cgroup filesystem is mounted.
    pub cgroup_root: PathBuf,
    /// The cgroup (in every hierarchy) under which each execution gets its own.
    pub cgroup_parent: String,
    /// Where output past the in-memory limit is spooled (`<spool_dir>/<id>/stdout.log`).
    pub spool_dir: PathBuf,
    /// The `conductor` binary, run as `<helper_path> __sandbox-init` for warm helpers.
    pub helper_path: PathBuf,
    /// Helpers kept started, each already in a cgroup of its own (used only with cgroups); 0
    /// spawns every command directly.
    pub warm_helpers: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "conductor".to_owned(),
            spool_dir: std::env::temp_dir().join("conductor-spool"),
            helper_path: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
            warm_helpers: 1,
        }
    }
}

/// Runs commands on the host with process-level isolation (see the module docs).
#[derive(Debug)]
pub struct HostExecutor {
    config: HostConfig,
    cgroups: Result<Arc<CgroupManager>, String>,
    registry: Registry,
    pool: Arc<WarmPool>,
}

impl HostExecutor {
    /// An executor with `config`. Without usable cgroups it still runs commands but declares no
    /// limits or tree-wide stats.
    pub fn new(config: HostConfig) -> Self {
        let cgroups = CgroupManager::detect(&config.cgroup_root, &config.cgroup_parent)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        if let Err(reason) = &cgroups {
            tracing::debug!(%reason, "host executor runs without cgroups");
        }
        // Without cgroups a warm helper would save little: every command is spawned directly.
        let warm_helpers = if cgroups.is_ok() {
            config.warm_helpers
        } else {
            0
        };
        let pool = Arc::new(WarmPool::new(
            config.helper_path.clone(),
            cgroups.as_ref().ok().cloned(),
            HelperMode::Host,
            None,
            warm_helpers,
        ));
        Self {
            config,
            cgroups,
            registry: Registry::new(),
            pool,
        }
    }

    /// Why cgroups are not used, when they are not.
    pub fn cgroups_unavailable(&self) -> Option<&str> {
        self.cgroups.as_ref().err().map(String::as_str)
    }

    async fn run(
        &self,
        request: &ExecutionRequest,
        plan: &ExecPlan,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        let registration = self.registry.register(&request.id)?;
        let warm = self.pool.take(&HelperMode::Host).and_then(|warm| {
            let manager = self.cgroups.as_ref().ok().map(Arc::as_ref);
            apply_limits(warm, manager, &CgroupLimits::from(&plan.limits))
        });
        self.pool.refill();
        if let Some(warm) = warm {
            return self
                .run_warm(request, plan, events, &registration, warm)
                .await;
        }
        let (cgroup, procs) = match &self.cgroups {
            Ok(manager) => {
                let (cgroup, procs) = create_cgroup(manager, &request.id, plan).await?;
                (Some(Arc::new(cgroup)), procs)
            }
            Err(_) => (None, Vec::new()),
        };
        let mut tree = Tree { cgroup, pgid: None };
        let mut command = command(plan, &procs);
        let started = Instant::now();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => return spawn_failure(request, plan, error, &events, tree).await,
        };
        drop(procs);
        let pid = child.id();
        let pgid = i32::try_from(pid).map_err(|_| {
            ExecutorError::io("starting the command", io::Error::other("pid out of range"))
        })?;
        tree.pgid = Some(pgid);
        let _ = events
            .send(ExecEvent::Started {
                execution_id: request.id.clone(),
                pid: Some(pid),
                at_ms: now_ms(),
            })
            .await;
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(stdout), Some(stderr)) => (
                tokio::process::ChildStdout::from_std(stdout),
                tokio::process::ChildStderr::from_std(stderr),
            ),
            _ => unreachable_pipes()?,
        };
        let output = OutputCapture::start(
            stdout.map_err(|e| ExecutorError::io("watching stdout", e))?,
            stderr.map_err(|e| ExecutorError::io("watching stderr", e))?,
            &self.config.spool_dir,
            request,
            &events,
        );

        let (ending, exit, rusage_cpu_us) = tree
            .supervise(pgid, plan.timeout, registration.token())
            .await?;
        let duration = started.elapsed();
        // `child` was reaped by hand; dropping a std Child never waits.
        drop(child);
        let (stdout, stderr) = output.finish(OUTPUT_GRACE).await?;
        let measurements = tree.finish(rusage_cpu_us).await;
        Ok(finished(
            request,
            ending,
            exit,
            (stdout, stderr),
            duration,
            measurements,
        ))
    }

    /// Runs the command from a warm helper, already in its cgroup (which now has the plan's
    /// limits): sends it the spec and supervises it, as it becomes the command.
    async fn run_warm(
        &self,
        request: &ExecutionRequest,
        plan: &ExecPlan,
        events: EventSender,
        registration: &Registration<'_>,
        warm: Launched,
    ) -> Result<ExecutionResult, ExecutorError> {
        let Launched {
            mut child,
            channel,
            cgroup,
            ..
        } = warm;
        let spec = HostSpec::from_plan(plan)
            .to_bytes()
            .map_err(|e| ExecutorError::Setup {
                stage: "encoding the host spec".to_owned(),
                reason: e.to_string(),
            })?;
        let pgid = i32::try_from(child.id()).map_err(|_| {
            ExecutorError::io("starting the command", io::Error::other("pid out of range"))
        })?;
        let (stdout, stderr) = child
            .take_output()
            .map_err(|e| ExecutorError::io("watching the command's output", e))?;
        // From here the tree owns the helper, which becomes the session leader: it is killed and
        // reaped by pid, like a command spawned directly.
        let pid = child.disown();
        let mut tree = Tree {
            cgroup: cgroup.map(Arc::new),
            pgid: Some(pgid),
        };
        let started = Instant::now();
        let reports = Launched::send_spec(channel, None, &spec)?;
        let _ = events
            .send(ExecEvent::Started {
                execution_id: request.id.clone(),
                pid: Some(pid),
                at_ms: now_ms(),
            })
            .await;
        let output = OutputCapture::start(stdout, stderr, &self.config.spool_dir, request, &events);

        let (ending, exit, rusage_cpu_us) = tree
            .supervise(pgid, plan.timeout, registration.token())
            .await?;
        let duration = started.elapsed();
        // The socket closed when the command was executed (close-on-exec) or the helper exited.
        let reports = reports.bytes.await.unwrap_or_default();
        let (stdout, stderr) = output.finish(OUTPUT_GRACE).await?;
        let measurements = tree.finish(rusage_cpu_us).await;
        if ending == Ending::Exited {
            match outcome(&reports) {
                Outcome::SetupFailed { stage, error } => {
                    return Err(ExecutorError::Setup {
                        stage,
                        reason: error,
                    })
                }
                Outcome::Exited {
                    code,
                    exec_error: Some(error),
                } => {
                    tracing::debug!(%error, "the command could not be executed");
                    return Ok(exec_failure(request, plan, code, &events).await);
                }
                // The helper became the command: its status is the command's.
                Outcome::Exited {
                    exec_error: None, ..
                }
                | Outcome::Signaled { .. }
                | Outcome::Lost => {}
            }
        }
        Ok(finished(
            request,
            ending,
            exit,
            (stdout, stderr),
            duration,
            measurements,
        ))
    }
}

/// The result of a host execution that ran.
fn finished(
    request: &ExecutionRequest,
    ending: Ending,
    exit: ProcessExit,
    (stdout, stderr): (CapturedStream, CapturedStream),
    duration: Duration,
    measurements: Measurements,
) -> ExecutionResult {
    Finished {
        execution_id: request.id.clone(),
        executor: NAME,
        isolation_level: IsolationLevel::ProcessOnly,
        ending,
        exit,
        stdout,
        stderr,
        duration,
        measurements,
    }
    .into_result()
}

#[async_trait]
impl Executor for HostExecutor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn isolation_level(&self) -> IsolationLevel {
        IsolationLevel::ProcessOnly
    }

    fn capabilities(&self) -> ExecutorCapabilities {
        // The host's own network is the only one it can give: it enforces no other policy.
        let mut supported = BTreeSet::from([Capability::NetworkHost]);
        if self.cgroups.is_ok() {
            supported.extend([
                Capability::KillsProcessTree,
                Capability::CpuLimit,
                Capability::MemoryLimit,
                Capability::PidsLimit,
                Capability::CpuTimeStats,
                Capability::PeakMemoryStats,
                Capability::DiskIoStats,
            ]);
        }
        ExecutorCapabilities {
            isolation_level: IsolationLevel::ProcessOnly,
            platform: std::env::consts::OS.to_owned(),
            supported,
        }
    }

    async fn health_check(&self) -> Result<(), ExecutorError> {
        Ok(())
    }

    /// Starts the warm helpers in the background (with cgroups).
    async fn warmup(&self) -> Result<(), ExecutorError> {
        self.pool.refill();
        Ok(())
    }

    async fn execute(
        &self,
        request: ExecutionRequest,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        check_supported(&request, NAME, &self.capabilities())?;
        let plan = crate::run::plan_request(&request, PlanTarget::Host)?;
        self.run(&request, &plan, events).await
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError> {
        Ok(self.registry.cancel(id))
    }
}

/// The process tree of one execution: its cgroup, if any, and its session's process group
/// (`pgid`, set while the session leader is not reaped). Dropping it (when `execute` fails or
/// is abandoned half-way) kills the tree and removes the cgroup.
struct Tree {
    cgroup: Option<Arc<Cgroup>>,
    pgid: Option<i32>,
}

impl Tree {
    /// Waits for the session leader `pgid` under the timeout and the cancel token, then kills
    /// whatever the tree still holds and reaps the leader: its exit and the cpu time `wait4`
    /// reports.
    async fn supervise(
        &mut self,
        pgid: i32,
        timeout: Option<Duration>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(Ending, ProcessExit, Option<u64>), ExecutorError> {
        let exited = tokio::task::spawn_blocking(move || wait_until_exited(pgid));
        let (ending, waited) = supervise(exited, timeout, cancel, || self.kill()).await;
        waited
            .map_err(|e| ExecutorError::io("waiting for the command", io::Error::other(e)))?
            .map_err(|e| ExecutorError::io("waiting for the command", e))?;
        // The outermost process is a zombie now, so its pid (the session's pgid) cannot be
        // reused. Whatever it left behind goes with it.
        self.kill().await;
        let (exit, rusage_cpu_us) = reap(pgid).map_err(|e| ExecutorError::io("reaping", e))?;
        self.pgid = None;
        Ok((ending, exit, rusage_cpu_us))
    }

    async fn kill(&self) {
        if let Some(pgid) = self.pgid {
            killpg(pgid);
        }
        if let Some(cgroup) = self.cgroup.clone() {
            let killed = tokio::task::spawn_blocking(move || cgroup.kill_all()).await;
            match killed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "killing the cgroup's processes"),
                Err(e) => tracing::warn!(error = %e, "killing the cgroup's processes"),
            }
        }
    }

    /// Reads the cgroup's measurements, then removes it off the result's path.
    async fn finish(mut self, rusage_cpu_us: Option<u64>) -> Measurements {
        self.pgid = None;
        let Some(cgroup) = self.cgroup.take() else {
            return Measurements {
                cpu_time_us: rusage_cpu_us,
                ..Measurements::default()
            };
        };
        // The stats are part of the result; the removal (an emptiness check and one `rmdir`
        // per hierarchy) is not, so it runs after the result is out. If the runtime shuts down
        // first, the cgroup's `Drop` removes it.
        let runtime = tokio::runtime::Handle::current();
        let done = tokio::task::spawn_blocking(move || {
            let stats = cgroup.stats();
            if let Some(cgroup) = Arc::into_inner(cgroup) {
                runtime.spawn_blocking(move || {
                    if let Err(e) = cgroup.destroy() {
                        tracing::warn!(error = %e, "removing the execution's cgroup");
                    }
                });
            }
            stats
        })
        .await;
        match done {
            Ok(Ok(stats)) => Measurements::from(&stats),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the execution's cgroup stats");
                Measurements::default()
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the execution's cgroup stats");
                Measurements::default()
            }
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            killpg(pgid);
            // Not reaped yet (the execution was abandoned half-way): reap it once it is dead so
            // no zombie is left behind.
            std::thread::spawn(move || {
                let _ = reap(pgid);
            });
        }
        if let Some(cgroup) = self.cgroup.take() {
            if let Err(e) = cgroup.kill_all() {
                tracing::warn!(error = %e, "killing an abandoned execution's processes");
            }
            if let Some(cgroup) = Arc::into_inner(cgroup) {
                if let Err(e) = cgroup.destroy() {
                    tracing::warn!(error = %e, "removing an abandoned execution's cgroup");
                }
            }
        }
    }
}

/// Creates the execution's cgroup and opens its `cgroup.procs` files (on the blocking pool:
/// cgroupfs calls are blocking file operations).
async fn create_cgroup(
    manager: &Arc<CgroupManager>,
    id: &ExecutionId,
    plan: &ExecPlan,
) -> Result<(Cgroup, Vec<OwnedFd>), ExecutorError> {
    let manager = manager.clone();
    let name = format!("exec-{id}");
    let limits = CgroupLimits::from(&plan.limits);
    let created = tokio::task::spawn_blocking(move || {
        let cgroup = manager
            .create(&name, &limits)
            .map_err(|e| ExecutorError::Setup {
                stage: "creating the execution's cgroup".to_owned(),
                reason: e.to_string(),
            })?;
        // On failure `cgroup` drops here, which removes it.
        let procs = open_procs_files(&cgroup)?;
        Ok((cgroup, procs))
    })
    .await;
    created.map_err(|e| ExecutorError::Setup {
        stage: "creating the execution's cgroup".to_owned(),
        reason: e.to_string(),
    })?
}

/// Opens every `cgroup.procs` of the execution's cgroup for the child to write itself into.
/// `O_CLOEXEC` (std's default): the command never inherits them.
fn open_procs_files(cgroup: &Cgroup) -> Result<Vec<OwnedFd>, ExecutorError> {
    cgroup
        .procs_files()
        .into_iter()
        .map(|path| {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .map(OwnedFd::from)
                .map_err(|e| ExecutorError::Setup {
                    stage: format!("opening {}", path.display()),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// The command for `plan`: cleared environment, workspace as cwd, no stdin, piped output, and a
/// `pre_exec` that joins the cgroup, starts a new session, sets the rlimits and keeps every
/// descriptor but the standard three from the command.
fn command(plan: &ExecPlan, procs: &[OwnedFd]) -> Command {
    let mut command = Command::new(&plan.argv[0]);
    command
        .args(&plan.argv[1..])
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let procs: Vec<RawFd> = procs.iter().map(AsRawFd::as_raw_fd).collect();
    let rlimits: Vec<(RlimitName, libc::rlimit)> = plan.rlimits.iter().map(raw_rlimit).collect();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It makes only raw system calls (write, setsid, setrlimit, close_range
    // or fcntl) on data
    // prepared before the fork, and does not allocate: the vectors are moved in and only read;
    // errors are built from errno without allocating.
    unsafe {
        command.pre_exec(move || {
            // Join the cgroup first, so nothing the command does can escape accounting; the
            // command cannot fork before this point.
            for &fd in &procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            for (resource, limit) in &rlimits {
                if libc::setrlimit(*resource, limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Descriptors this process inherited without close-on-exec stay here.
            conductor_sandbox::fds::cloexec_from(3)
        });
    }
    command
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type RlimitName = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type RlimitName = libc::c_int;

fn raw_rlimit(rlimit: &Rlimit) -> (RlimitName, libc::rlimit) {
    let resource = match rlimit.resource {
        RlimitResource::As => libc::RLIMIT_AS,
        RlimitResource::Core => libc::RLIMIT_CORE,
        RlimitResource::Cpu => libc::RLIMIT_CPU,
        RlimitResource::Data => libc::RLIMIT_DATA,
        RlimitResource::Fsize => libc::RLIMIT_FSIZE,
        RlimitResource::Memlock => libc::RLIMIT_MEMLOCK,
        RlimitResource::Nofile => libc::RLIMIT_NOFILE,
        RlimitResource::Nproc => libc::RLIMIT_NPROC,
        RlimitResource::Stack => libc::RLIMIT_STACK,
    };
    (
        resource,
        libc::rlimit {
            rlim_cur: rlimit.soft,
            rlim_max: rlimit.hard,
        },
    )
}

/// A program that could not be started is reported like a shell does: exit 127 when it does not
/// exist, 126 when it cannot be executed, with the reason on stderr. Anything else (the cgroup
/// join or an rlimit failing in `pre_exec`) is a set-up error.
async fn spawn_failure(
    request: &ExecutionRequest,
    plan: &ExecPlan,
    error: io::Error,
    events: &EventSender,
    tree: Tree,
) -> Result<ExecutionResult, ExecutorError> {
    let code = match error.kind() {
        io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        io::ErrorKind::PermissionDenied => EXIT_CANNOT_EXECUTE,
        _ => {
            return Err(ExecutorError::Setup {
                stage: "starting the command (cgroup join, setsid, rlimits, exec)".to_owned(),
                reason: error.to_string(),
            })
        }
    };
    drop(tree);
    let _ = events
        .send(ExecEvent::Started {
            execution_id: request.id.clone(),
            pid: None,
            at_ms: now_ms(),
        })
        .await;
    Ok(exec_failure(request, plan, code, events).await)
}

/// The result for a program that could not be executed (`code` 127: not found, else 126), with
/// the reason on stderr, whether the direct spawn or a warm helper's `execve` failed.
async fn exec_failure(
    request: &ExecutionRequest,
    plan: &ExecPlan,
    code: i32,
    events: &EventSender,
) -> ExecutionResult {
    let program = &plan.argv[0];
    let message = if code == EXIT_NOT_FOUND {
        format!(
            "conductor: {program}: command not found (PATH={})\n",
            path_of(plan)
        )
    } else {
        format!("conductor: {program}: permission denied\n")
    };
    let _ = events
        .send(ExecEvent::Output {
            stream: conductor_types::OutputStream::Stderr,
            data: message.clone().into_bytes(),
            at_ms: now_ms(),
        })
        .await;
    let stderr = CapturedStream {
        summary: conductor_types::StreamSummary {
            total_bytes: message.len() as u64,
            truncated: false,
            spool_path: None,
            spool_truncated: false,
        },
        text: message,
    };
    Finished {
        execution_id: request.id.clone(),
        executor: NAME,
        isolation_level: IsolationLevel::ProcessOnly,
        ending: Ending::Exited,
        exit: ProcessExit::Code(code),
        stdout: CapturedStream::default(),
        stderr,
        duration: Duration::ZERO,
        measurements: Measurements::default(),
    }
    .into_result()
}

fn path_of(plan: &ExecPlan) -> &str {
    plan.env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str())
}

fn unreachable_pipes<T>() -> Result<T, ExecutorError> {
    Err(ExecutorError::io(
        "starting the command",
        io::Error::other("stdout and stderr were not piped"),
    ))
}

fn killpg(pgid: i32) {
    // SAFETY: killpg takes plain integers; a group that no longer exists gives ESRCH.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use conductor_types::{Bytes, NetworkPolicy};

    use super::*;

    fn without_cgroups(dir: &std::path::Path) -> HostExecutor {
        HostExecutor::new(HostConfig {
            cgroup_root: dir.join("no-cgroupfs-here"),
            cgroup_parent: "conductor".to_owned(),
            spool_dir: dir.join("spool"),
            // Never started without cgroups (and this test binary is no helper).
            helper_path: dir.join("no-helper-here"),
            warm_helpers: 1,
        })
    }

    fn request(workspace: &std::path::Path, argv: &[&str]) -> ExecutionRequest {
        let mut request = ExecutionRequest::new(
            argv.iter().map(|s| (*s).to_owned()).collect(),
            workspace.to_owned(),
        );
        request.network = NetworkPolicy::Host;
        request
    }

    #[tokio::test]
    async fn without_cgroups_it_runs_but_declares_no_limits() {
        let dir = tempfile::tempdir().unwrap();
        let executor = without_cgroups(dir.path());
        assert!(executor.cgroups_unavailable().is_some());
        assert_eq!(
            executor.capabilities(),
            ExecutorCapabilities {
                isolation_level: IsolationLevel::ProcessOnly,
                platform: "linux".to_owned(),
                supported: BTreeSet::from([Capability::NetworkHost]),
            }
        );
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let result = executor
            .execute(request(dir.path(), &["sh", "-c", "echo hi; exit 4"]), tx)
            .await
            .unwrap();
        assert_eq!(
            (result.exit_code, result.stdout.as_str(), result.oom_killed),
            (4, "hi\n", false)
        );
        assert!(result.stats.cpu_time_us.is_some(), "rusage cpu time");
        assert_eq!(result.stats.peak_memory_bytes, None);

        let mut limited = request(dir.path(), &["true"]);
        limited.limits.memory = Some(Bytes::mib(64));
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let error = executor.execute(limited, tx).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "a memory limit is not supported yet by the host executor"
        );
    }

    #[tokio::test]
    async fn refuses_network_isolation_and_missing_workspaces() {
        let dir = tempfile::tempdir().unwrap();
        let executor = without_cgroups(dir.path());
        let mut isolated = request(dir.path(), &["true"]);
        isolated.network = NetworkPolicy::None;
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let error = executor.execute(isolated, tx).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "network policy none is not supported yet by the host executor"
        );
        // `full` is the host's network no more: the host executor cannot give it.
        let mut full = request(dir.path(), &["true"]);
        full.network = NetworkPolicy::Full;
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let error = executor.execute(full, tx).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "network policy full is not supported yet by the host executor"
        );
        let missing = request(&dir.path().join("missing"), &["true"]);
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let error = executor.execute(missing, tx).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "workspace {}: not an existing directory",
                dir.path().join("missing").display()
            )
        );
    }

    #[tokio::test]
    async fn runs_in_a_new_session_with_the_plans_rlimits() {
        let dir = tempfile::tempdir().unwrap();
        let executor = without_cgroups(dir.path());
        let mut req = request(
            dir.path(),
            &[
                "sh",
                "-c",
                "ulimit -n; ulimit -c; cut -d' ' -f6 /proc/$$/stat; echo $$",
            ],
        );
        req.limits.rlimits = vec![Rlimit {
            resource: RlimitResource::Nofile,
            soft: 64,
            hard: 64,
        }];
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let result = executor.execute(req, tx).await.unwrap();
        let lines: Vec<&str> = result.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{result:?}");
        assert_eq!(&lines[..2], ["64", "0"]);
        assert_eq!(lines[2], lines[3], "the command leads its own session");
    }

    #[test]
    fn rlimits_map_to_their_libc_resources() {
        let (resource, limit) = raw_rlimit(&Rlimit {
            resource: RlimitResource::Nofile,
            soft: 256,
            hard: 512,
        });
        assert_eq!(resource, libc::RLIMIT_NOFILE);
        assert_eq!((limit.rlim_cur, limit.rlim_max), (256, 512));
    }
}
