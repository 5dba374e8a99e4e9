//! What every executor that supervises a local process tree shares: the registry `cancel` looks
//! executions up in, the race between exit, timeout and cancel ([`supervise`]), waiting for a
//! child without reaping it so its pid stays reserved while the tree is killed
//! ([`wait_until_exited`], then [`reap`]), ending output capture when an escaped process still
//! holds the pipes ([`OutputCapture`]), and assembling the [`ExecutionResult`] from the exit, the
//! captured output and the measurements ([`Finished`]: 124 on timeout, 128 + N for signal N,
//! OOM detection).
//!
//! The host and namespace executors both use it; each brings its own way to start and kill.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use conductor_core::{EventSender, ExecutorError};
use conductor_sandbox::cgroup::CgroupStats;
use conductor_types::{
    ExecutionId, ExecutionRequest, ExecutionResult, ExecutionStats, IsolationLevel, OutputStream,
};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::output::{capture, CaptureConfig, CapturedStream};

/// Exit code for a command that hit its timeout.
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code for a program that exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit code for a program that does not exist.
pub const EXIT_NOT_FOUND: i32 = 127;

/// The executions an executor is running, so `cancel` can find them by id.
#[derive(Debug, Default)]
pub struct Registry {
    running: Mutex<HashMap<ExecutionId, CancellationToken>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `id` as running until the returned registration is dropped. Refuses an id that is
    /// already running.
    pub fn register(&self, id: &ExecutionId) -> Result<Registration<'_>, ExecutorError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.contains_key(id) {
            return Err(ExecutorError::Setup {
                stage: "registering the execution".to_owned(),
                reason: format!("execution {id} is already running"),
            });
        }
        let token = CancellationToken::new();
        running.insert(id.clone(), token.clone());
        Ok(Registration {
            registry: self,
            id: id.clone(),
            token,
        })
    }

    /// Asks the execution `id` to stop. Returns whether it was running.
    pub fn cancel(&self, id: &ExecutionId) -> bool {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match running.get(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// One running execution in a [`Registry`]; removes itself when dropped.
#[derive(Debug)]
pub struct Registration<'a> {
    registry: &'a Registry,
    id: ExecutionId,
    token: CancellationToken,
}

impl Registration<'_> {
    /// Fires when `cancel` is called for this execution.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Why the supervised process stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited (or was killed) on its own.
    Exited,
    /// The timeout fired and the tree was killed.
    TimedOut,
    /// `cancel` was called and the tree was killed.
    Cancelled,
}

/// Plans `request` for `target` with this process's environment (for the allow-listed
/// variables) and checks that its workspace exists: the first step of every `execute`.
pub fn plan_request(
    request: &conductor_types::ExecutionRequest,
    target: conductor_core::PlanTarget,
) -> Result<conductor_types::ExecPlan, ExecutorError> {
    let host = conductor_core::HostContext {
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    };
    let plan = conductor_core::plan(request, target, &host)?;
    if !request.workspace.is_dir() {
        return Err(ExecutorError::io(
            format!("workspace {}", request.workspace.display()),
            io::Error::new(io::ErrorKind::NotFound, "not an existing directory"),
        ));
    }
    Ok(plan)
}

/// Waits for `exited`; when the timeout or `cancel` comes first, runs `kill` and then waits for
/// `exited` all the same. `kill` must make `exited` resolve.
pub async fn supervise<T, K>(
    exited: impl Future<Output = T>,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    kill: impl FnOnce() -> K,
) -> (Ending, T)
where
    K: Future<Output = ()>,
{
    let mut exited = std::pin::pin!(exited);
    let deadline = async {
        match timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        value = &mut exited => return (Ending::Exited, value),
        () = deadline => Ending::TimedOut,
        () = cancel.cancelled() => Ending::Cancelled,
    };
    kill().await;
    (ending, exited.await)
}

/// How the outermost process ended, as `wait` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessExit {
    /// It called `exit` with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ProcessExit {
    /// Decodes a raw `wait` status.
    pub fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signal(libc::WTERMSIG(status))
        } else {
            Self::Code(libc::WEXITSTATUS(status))
        }
    }
}

/// Blocks until the child `pid` has exited, leaving it a zombie (`WNOWAIT`) so its pid — and
/// the process group it leads — cannot be reused while the tree is killed. Run it with
/// `spawn_blocking`, then [`reap`].
pub fn wait_until_exited(pid: i32) -> io::Result<()> {
    loop {
        // SAFETY: `info` is a valid, writable siginfo_t; waitid only writes into it.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Reaps the exited `pid`: how it ended and the CPU time of it and its waited-for
/// descendants.
pub fn reap(pid: i32) -> io::Result<(ProcessExit, Option<u64>)> {
    let mut status = 0;
    // SAFETY: `status` and `usage` are valid, writable locals that wait4 fills in.
    let (rc, usage) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let rc = libc::wait4(pid, &mut status, 0, &mut usage);
        (rc, usage)
    };
    if rc != pid {
        return Err(io::Error::last_os_error());
    }
    let micros = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    Ok((
        ProcessExit::from_wait_status(status),
        Some(micros(usage.ru_utime) + micros(usage.ru_stime)),
    ))
}

/// What an executor measured; `None` where it could not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measurements {
    /// User plus system CPU time of the tree.
    pub cpu_time_us: Option<u64>,
    /// Peak memory of the tree.
    pub peak_memory_bytes: Option<u64>,
    /// Bytes read from block devices.
    pub disk_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub disk_write_bytes: Option<u64>,
    /// How often the memory limit's OOM killer fired.
    pub oom_kills: u64,
}

impl From<&CgroupStats> for Measurements {
    fn from(stats: &CgroupStats) -> Self {
        Self {
            cpu_time_us: stats.cpu_time_us,
            peak_memory_bytes: stats.peak_memory_bytes,
            disk_read_bytes: stats.disk_read_bytes,
            disk_write_bytes: stats.disk_write_bytes,
            oom_kills: stats.oom_kills,
        }
    }
}

/// Everything an executor knows once an execution is over; [`Finished::into_result`] applies the
/// conventions (124 on timeout, 128 + N for signal N, OOM detection).
#[derive(Debug)]
pub struct Finished {
    /// Which execution.
    pub execution_id: ExecutionId,
    /// The executor's name.
    pub executor: &'static str,
    /// The executor's isolation level.
    pub isolation_level: IsolationLevel,
    /// Why it stopped.
    pub ending: Ending,
    /// How the outermost process ended.
    pub exit: ProcessExit,
    /// Captured standard output.
    pub stdout: CapturedStream,
    /// Captured standard error.
    pub stderr: CapturedStream,
    /// Wall-clock time from start to exit.
    pub duration: Duration,
    /// Measurements.
    pub measurements: Measurements,
}

impl Finished {
    /// The result, following the conventions of [`ExecutionResult`].
    pub fn into_result(self) -> ExecutionResult {
        let (code, signal) = match self.exit {
            ProcessExit::Code(code) => (code, None),
            ProcessExit::Signal(signal) => (128 + signal, Some(signal)),
        };
        let timed_out = self.ending == Ending::TimedOut;
        // The memory limit's OOM killer sends SIGKILL; a shell in between reports 128 + 9.
        let oom_killed = self.ending == Ending::Exited
            && self.measurements.oom_kills > 0
            && (signal == Some(libc::SIGKILL) || code == 128 + libc::SIGKILL);
        let m = self.measurements;
        ExecutionResult {
            execution_id: self.execution_id,
            executor: self.executor.to_owned(),
            isolation_level: self.isolation_level,
            exit_code: if timed_out { EXIT_TIMEOUT } else { code },
            signal,
            timed_out,
            cancelled: self.ending == Ending::Cancelled,
            oom_killed,
            stdout: self.stdout.text,
            stderr: self.stderr.text,
            stdout_info: self.stdout.summary,
            stderr_info: self.stderr.summary,
            stats: ExecutionStats {
                duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
                cpu_time_us: m.cpu_time_us,
                peak_memory_bytes: m.peak_memory_bytes,
                disk_read_bytes: m.disk_read_bytes,
                disk_write_bytes: m.disk_write_bytes,
            },
        }
    }
}

/// Captures a command's stdout and stderr concurrently, each through [`capture`].
#[derive(Debug)]
pub struct OutputCapture {
    stdout: JoinHandle<io::Result<CapturedStream>>,
    stderr: JoinHandle<io::Result<CapturedStream>>,
    stop: CancellationToken,
}

impl OutputCapture {
    /// Starts reading both streams; each spools to `<spool_dir>/<id>/<stream>.log` past the
    /// request's `output_limit`, at most its `spool_limit` bytes.
    pub fn start<O, E>(
        stdout: O,
        stderr: E,
        spool_dir: &Path,
        request: &ExecutionRequest,
        events: &EventSender,
    ) -> Self
    where
        O: AsyncRead + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        let stop = CancellationToken::new();
        let dir = spool_dir.join(request.id.to_string());
        let spawn = |reader: StopReader<_>, stream, file: &str| {
            let config = CaptureConfig {
                stream,
                limit: request.output_limit,
                spool_path: dir.join(file),
                spool_limit: request.spool_limit,
            };
            tokio::spawn(capture(reader, config, events.clone()))
        };
        Self {
            stdout: spawn(
                StopReader::new(Box::new(stdout) as BoxReader, &stop),
                OutputStream::Stdout,
                "stdout.log",
            ),
            stderr: spawn(
                StopReader::new(Box::new(stderr) as BoxReader, &stop),
                OutputStream::Stderr,
                "stderr.log",
            ),
            stop,
        }
    }

    /// Waits for both streams to end. Call it once the tree is dead: the pipes then close at
    /// once. A process that escaped the kill may keep them open; after `grace` the streams are
    /// cut off where they are.
    pub async fn finish(
        self,
        grace: Duration,
    ) -> Result<(CapturedStream, CapturedStream), ExecutorError> {
        let Self {
            stdout,
            stderr,
            stop,
        } = self;
        let mut both = std::pin::pin!(async { (stdout.await, stderr.await) });
        let (stdout, stderr) = match tokio::time::timeout(grace, &mut both).await {
            Ok(done) => done,
            Err(_) => {
                tracing::warn!("output pipes still open {grace:?} after the command ended; a process escaped the kill");
                stop.cancel();
                both.await
            }
        };
        Ok((joined(stdout, "stdout")?, joined(stderr, "stderr")?))
    }
}

fn joined(
    result: Result<io::Result<CapturedStream>, tokio::task::JoinError>,
    stream: &str,
) -> Result<CapturedStream, ExecutorError> {
    match result {
        Ok(Ok(captured)) => Ok(captured),
        Ok(Err(source)) => Err(ExecutorError::io(format!("capturing {stream}"), source)),
        Err(join) => Err(ExecutorError::io(
            format!("capturing {stream}"),
            io::Error::other(join.to_string()),
        )),
    }
}

type BoxReader = Box<dyn AsyncRead + Unpin + Send>;

/// A reader that reports end-of-file once its token is cancelled.
struct StopReader<R> {
    inner: R,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<R> StopReader<R> {
    fn new(inner: R, stop: &CancellationToken) -> Self {
        Self {
            inner,
            stop: Box::pin(stop.clone().cancelled_owned()),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for StopReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use conductor_types::{Bytes, StreamSummary};

    use super::*;

    fn finished(ending: Ending, exit: ProcessExit, oom_kills: u64) -> ExecutionResult {
        Finished {
            execution_id: "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap(),
            executor: "host",
            isolation_level: IsolationLevel::ProcessOnly,
            ending,
            exit,
            stdout: CapturedStream::default(),
            stderr: CapturedStream::default(),
            duration: Duration::from_millis(1500),
            measurements: Measurements {
                oom_kills,
                ..Measurements::default()
            },
        }
        .into_result()
    }

    fn summary(r: &ExecutionResult) -> (i32, Option<i32>, bool, bool, bool) {
        (
            r.exit_code,
            r.signal,
            r.timed_out,
            r.cancelled,
            r.oom_killed,
        )
    }

    #[test]
    fn results_follow_the_exit_code_conventions() {
        let cases = [
            (
                Ending::Exited,
                ProcessExit::Code(3),
                0,
                (3, None, false, false, false),
            ),
            (
                Ending::Exited,
                ProcessExit::Signal(15),
                0,
                (143, Some(15), false, false, false),
            ),
            (
                Ending::TimedOut,
                ProcessExit::Signal(9),
                0,
                (124, Some(9), true, false, false),
            ),
            (
                Ending::Cancelled,
                ProcessExit::Signal(9),
                0,
                (137, Some(9), false, true, false),
            ),
            (
                Ending::Exited,
                ProcessExit::Signal(9),
                1,
                (137, Some(9), false, false, true),
            ),
            (
                Ending::Exited,
                ProcessExit::Code(137),
                1,
                (137, None, false, false, true),
            ),
            (
                Ending::Exited,
                ProcessExit::Code(1),
                1,
                (1, None, false, false, false),
            ),
            (
                Ending::TimedOut,
                ProcessExit::Signal(9),
                1,
                (124, Some(9), true, false, false),
            ),
        ];
        for (ending, exit, oom_kills, expected) in cases {
            let result = finished(ending, exit, oom_kills);
            assert_eq!(
                summary(&result),
                expected,
                "{ending:?} {exit:?} oom_kills={oom_kills}"
            );
            assert_eq!(result.stats.duration_ms, 1500);
        }
    }

    #[test]
    fn wait_statuses_decode() {
        assert_eq!(ProcessExit::from_wait_status(3 << 8), ProcessExit::Code(3));
        assert_eq!(ProcessExit::from_wait_status(9), ProcessExit::Signal(9));
        assert_eq!(
            ProcessExit::from_wait_status(0x80 | 11),
            ProcessExit::Signal(11)
        );
    }

    #[test]
    fn registry_cancels_only_running_executions() {
        let registry = Registry::new();
        let id = ExecutionId::random();
        let registration = registry.register(&id).unwrap();
        assert!(registry.register(&id).is_err());
        assert!(!registry.cancel(&ExecutionId::random()));
        assert!(registry.cancel(&id));
        assert!(registration.token().is_cancelled());
        drop(registration);
        assert!(!registry.cancel(&id));
    }

    #[tokio::test(start_paused = true)]
    async fn supervise_kills_on_timeout_and_on_cancel() {
        let never = CancellationToken::new();
        let (ending, value) = supervise(
            async { 7 },
            Some(Duration::from_secs(1)),
            &never,
            || async {},
        )
        .await;
        assert_eq!((ending, value), (Ending::Exited, 7));

        let killed = CancellationToken::new();
        let (ending, ()) = supervise(
            killed.clone().cancelled_owned(),
            Some(Duration::from_secs(1)),
            &never,
            || async { killed.cancel() },
        )
        .await;
        assert_eq!(ending, Ending::TimedOut);

        let cancel = CancellationToken::new();
        cancel.cancel();
        let killed = CancellationToken::new();
        let (ending, ()) = supervise(killed.clone().cancelled_owned(), None, &cancel, || async {
            killed.cancel()
        })
        .await;
        assert_eq!(ending, Ending::Cancelled);
    }

    #[tokio::test]
    async fn capture_is_cut_off_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        // Writers that never close: the pipes stay open, as with a process that escaped.
        let (stdout_writer, stdout) = tokio::io::duplex(64);
        let (stderr_writer, stderr) = tokio::io::duplex(64);
        let mut request = ExecutionRequest::new(vec!["true".into()], dir.path().to_owned());
        request.output_limit = Bytes(100);
        let capture = OutputCapture::start(stdout, stderr, dir.path(), &request, &tx);
        let (out, err) = capture.finish(Duration::from_millis(50)).await.unwrap();
        drop((stdout_writer, stderr_writer));
        assert_eq!(out.summary, StreamSummary::default());
        assert_eq!(err.summary, StreamSummary::default());
    }
}
