//! [`FakeExecutor`]: runs a script language instead of a shell, so the scheduler, the API and
//! the benches can be driven without a sandbox.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use conductor_core::{EventSender, Executor, ExecutorError};
use conductor_types::{
    Capability, ExecEvent, ExecutionId, ExecutionRequest, ExecutionResult, ExecutorCapabilities,
    IsolationLevel, OutputStream,
};
use tokio::sync::Notify;

/// Runs each request's command as a script instead of a shell:
///
/// - `echo TEXT` prints TEXT (in two chunks, to exercise line assembly);
/// - `env NAME` prints `NAME=value` (split inside the value, so redaction must see whole lines);
/// - `interleave` prints two lines on stdout and two on stderr, in turn;
/// - `exit N` exits N; `fail` cannot be run (an [`ExecutorError::Unavailable`]);
/// - `sleep MS` sleeps, honouring the request's timeout (exit 124) and [`Executor::cancel`]
///   (exit 137);
/// - `date +%s%N` prints the nanoseconds since the epoch at which `execute` was called;
/// - `fill N` writes N bytes to `fill` in the workspace (exit 1 with the error when a write
///   fails); `deep N` makes a chain of N directories `d/d/…` with a file `leaf` at the bottom
///   (as `for i in $(seq N); do mkdir d; cd d; done` would);
/// - anything else exits 0.
///
/// Or, built with [`FakeExecutor::refusing`], refuses every request as unsupported.
#[derive(Debug)]
pub struct FakeExecutor {
    name: &'static str,
    capabilities: ExecutorCapabilities,
    refusal: Option<String>,
    /// Every request, in the order `execute` got them.
    pub requests: Mutex<Vec<ExecutionRequest>>,
    /// Every execution id `cancel` was called with.
    pub cancelled: Mutex<Vec<ExecutionId>>,
    /// Notified at every `execute` call.
    pub called: Notify,
    calls: AtomicUsize,
    running: Mutex<BTreeMap<ExecutionId, Arc<Notify>>>,
}

impl Default for FakeExecutor {
    /// `fake`: it runs nothing real, so every network policy but localhost and allowlist is
    /// "given" — tasks without one (network none) run and a refusal stays testable.
    fn default() -> Self {
        Self::new(
            "fake",
            [
                Capability::NetworkNone,
                Capability::NetworkFull,
                Capability::NetworkHost,
            ],
        )
    }
}

impl FakeExecutor {
    /// A fake named `name` that declares `capabilities`.
    pub fn new(name: &'static str, capabilities: impl IntoIterator<Item = Capability>) -> Self {
        Self {
            name,
            capabilities: ExecutorCapabilities {
                isolation_level: IsolationLevel::None,
                platform: "test".into(),
                supported: BTreeSet::from_iter(capabilities),
            },
            refusal: None,
            requests: Mutex::default(),
            cancelled: Mutex::default(),
            called: Notify::new(),
            calls: AtomicUsize::new(0),
            running: Mutex::default(),
        }
    }

    /// The same, refusing every request: "running {what}" is unsupported.
    pub fn refusing(mut self, what: &str) -> Self {
        self.refusal = Some(what.to_owned());
        self
    }

    /// How many times `execute` was called.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn result(&self, request: &ExecutionRequest, exit_code: i32) -> ExecutionResult {
        ExecutionResult::exited(
            request.id.clone(),
            self.name,
            IsolationLevel::None,
            exit_code,
        )
    }

    /// `sleep MS`: until it is over, the request's timeout, or a cancel.
    async fn sleep(&self, request: &ExecutionRequest, millis: u64) -> ExecutionResult {
        let notify = Arc::new(Notify::new());
        self.running
            .lock()
            .unwrap()
            .insert(request.id.clone(), Arc::clone(&notify));
        let wanted = Duration::from_millis(millis);
        let limit = request.timeout.unwrap_or(Duration::MAX).min(wanted);
        let mut done = self.result(request, 0);
        tokio::select! {
            _ = tokio::time::sleep(limit) => {
                if limit < wanted {
                    done.exit_code = 124;
                    done.timed_out = true;
                }
            }
            _ = notify.notified() => {
                done.exit_code = 137;
                done.signal = Some(9);
                done.cancelled = true;
            }
        }
        self.running.lock().unwrap().remove(&request.id);
        done
    }

    /// The output verbs; `None` for any other.
    async fn print(
        &self,
        verb: &str,
        arg: &str,
        request: &ExecutionRequest,
        events: &EventSender,
    ) -> Option<()> {
        let send = |stream, text: String| ExecEvent::Output {
            stream,
            data: text.into_bytes(),
            at_ms: 0,
        };
        let chunks = match verb {
            "echo" => {
                let (a, b) = arg.split_at(arg.len() / 2);
                vec![
                    (OutputStream::Stdout, a.to_owned()),
                    (OutputStream::Stdout, format!("{b}\n")),
                ]
            }
            "env" => {
                let value = request.env.get(arg).cloned().unwrap_or_default();
                let (a, b) = value.split_at(value.len() / 2);
                vec![
                    (OutputStream::Stdout, format!("{arg}={a}")),
                    (OutputStream::Stdout, format!("{b}\n")),
                ]
            }
            "interleave" => [
                OutputStream::Stdout,
                OutputStream::Stderr,
                OutputStream::Stdout,
                OutputStream::Stderr,
            ]
            .into_iter()
            .enumerate()
            .map(|(n, stream)| (stream, format!("{stream:?} {n}\n").to_lowercase()))
            .collect(),
            "date" if arg == "+%s%N" => vec![(OutputStream::Stdout, format!("{}\n", now_ns()))],
            _ => return None,
        };
        for (stream, text) in chunks {
            let _ = events.send(send(stream, text)).await;
        }
        Some(())
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    fn name(&self) -> &'static str {
        self.name
    }

    fn isolation_level(&self) -> IsolationLevel {
        IsolationLevel::None
    }

    fn capabilities(&self) -> ExecutorCapabilities {
        self.capabilities.clone()
    }

    async fn health_check(&self) -> Result<(), ExecutorError> {
        Ok(())
    }

    async fn warmup(&self) -> Result<(), ExecutorError> {
        Ok(())
    }

    async fn execute(
        &self,
        request: ExecutionRequest,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.requests.lock().unwrap().push(request.clone());
        self.called.notify_one();
        if let Some(what) = &self.refusal {
            return Err(ExecutorError::Unsupported {
                executor: self.name,
                what: format!("running {what}"),
            });
        }
        let script = conductor_core::command_of(&request.argv)
            .unwrap()
            .to_owned();
        let (verb, arg) = script.split_once(' ').unwrap_or((&script, ""));
        if self.print(verb, arg, &request, &events).await.is_some() {
            return Ok(self.result(&request, 0));
        }
        match verb {
            "exit" => Ok(self.result(&request, arg.parse().unwrap())),
            "fail" => Err(ExecutorError::Unavailable {
                executor: self.name,
                reason: "scripted failure".into(),
            }),
            "sleep" => Ok(self.sleep(&request, arg.parse().unwrap()).await),
            "fill" => match fill(&request.workspace, arg.parse().unwrap()) {
                Ok(()) => Ok(self.result(&request, 0)),
                Err(error) => {
                    let _ = events
                        .send(ExecEvent::Output {
                            stream: OutputStream::Stdout,
                            data: format!("{error}\n").into_bytes(),
                            at_ms: 0,
                        })
                        .await;
                    Ok(self.result(&request, 1))
                }
            },
            "deep" => {
                deep_chain(&request.workspace, arg.parse().unwrap());
                Ok(self.result(&request, 0))
            }
            _ => Ok(self.result(&request, 0)),
        }
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError> {
        self.cancelled.lock().unwrap().push(id.clone());
        let notify = self.running.lock().unwrap().remove(id);
        Ok(notify.map(|n| n.notify_one()).is_some())
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `size` bytes into `fill` in `dir`, in 64 KiB writes as `cat` or `dd` would.
fn fill(dir: &Path, size: usize) -> std::io::Result<()> {
    let mut file = std::fs::File::create(dir.join("fill"))?;
    let chunk = vec![1u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        std::io::Write::write_all(&mut file, &chunk[..n])?;
        left -= n;
    }
    Ok(())
}

/// `depth` nested directories `d` below `dir`, each made relative to the one above (through
/// `/proc/self/fd`, so no path ever gets long), and a 5-byte `leaf` in the deepest.
fn deep_chain(dir: &Path, depth: usize) {
    use std::os::fd::AsRawFd;
    let mut current = std::fs::File::open(dir).unwrap();
    for _ in 0..depth {
        let next = format!("/proc/self/fd/{}/d", current.as_raw_fd());
        std::fs::create_dir(&next).unwrap();
        current = std::fs::File::open(&next).unwrap();
    }
    std::fs::write(
        format!("/proc/self/fd/{}/leaf", current.as_raw_fd()),
        b"leaf\n",
    )
    .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str) -> ExecutionRequest {
        ExecutionRequest::new(
            conductor_core::command_argv(command, false),
            std::env::temp_dir(),
        )
    }

    async fn run(fake: &FakeExecutor, request: ExecutionRequest) -> (ExecutionResult, String) {
        let (events, mut received) = tokio::sync::mpsc::channel(16);
        let result = fake.execute(request, events).await.unwrap();
        let mut output = String::new();
        while let Ok(ExecEvent::Output { data, .. }) = received.try_recv() {
            output.push_str(&String::from_utf8(data).unwrap());
        }
        (result, output)
    }

    #[tokio::test]
    async fn scripts_print_exit_and_are_recorded() {
        let fake = FakeExecutor::default();
        let (done, output) = run(&fake, request("echo hello")).await;
        assert_eq!((done.exit_code, output.as_str()), (0, "hello\n"));
        let (done, _) = run(&fake, request("exit 3")).await;
        assert_eq!(done.exit_code, 3);
        assert_eq!(fake.calls(), 2);
        assert_eq!(fake.requests.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_at_its_timeout_or_when_cancelled() {
        let fake = Arc::new(FakeExecutor::default());
        let mut timed = request("sleep 60000");
        timed.timeout = Some(Duration::from_millis(10));
        let (done, _) = run(&fake, timed).await;
        assert_eq!((done.exit_code, done.timed_out), (124, true));

        let sleeping = request("sleep 60000");
        let id = sleeping.id.clone();
        let runner = Arc::clone(&fake);
        let task = tokio::spawn(async move { run(&runner, sleeping).await.0 });
        fake.called.notified().await;
        tokio::task::yield_now().await;
        assert!(fake.cancel(&id).await.unwrap());
        let done = task.await.unwrap();
        assert_eq!((done.exit_code, done.cancelled), (137, true));
        // Over, so nothing is left to cancel.
        assert!(!fake.cancel(&id).await.unwrap());
        assert_eq!(fake.cancelled.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_refusing_fake_refuses_and_declares_what_it_was_given() {
        let fake = FakeExecutor::new("refuses", [Capability::CpuLimit]).refusing("anything");
        let (events, _received) = tokio::sync::mpsc::channel(1);
        let err = fake.execute(request("true"), events).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            ExecutorError::Unsupported {
                executor: "refuses",
                what: "running anything".into(),
            }
            .to_string()
        );
        assert_eq!(
            fake.capabilities().supported,
            BTreeSet::from([Capability::CpuLimit])
        );
        assert_eq!(fake.calls(), 1);
    }
}
