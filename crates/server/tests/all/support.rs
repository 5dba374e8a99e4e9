//! Shared fixtures: a scripted fake executor, an app over a tempdir store, request helpers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use conductor_core::{EventSender, Executor, ExecutorError, Store};
use conductor_server::{app, AppState, EventBus, Scheduler, SchedulerConfig};
use conductor_store::SqliteStore;
use conductor_types::{
    Capability, ExecEvent, ExecutionId, ExecutionRequest, ExecutionResult, ExecutorCapabilities,
    IsolationLevel, OutputStream, Task, TaskId, TaskStatus,
};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tower::ServiceExt;

/// Runs scripted "commands" instead of a shell:
/// `echo TEXT` prints TEXT, `env NAME` prints a variable, `interleave` prints lines on stdout and
/// stderr in turn, `exit N` exits N,
/// `sleep MS` sleeps (honouring timeout and cancel), `fail` cannot be run, `fill N` writes N
/// bytes to `fill` in the workspace (exit 1 with the error when the write fails), `deep N`
/// makes a chain of N directories `d/d/…` with a file `leaf` at the bottom in the workspace (as
/// `for i in $(seq N); do mkdir d; cd d; done` would), anything else exits 0.
#[derive(Debug, Default)]
pub struct FakeExecutor {
    pub requests: Mutex<Vec<ExecutionRequest>>,
    pub cancelled: Mutex<Vec<ExecutionId>>,
    /// Notified at every `execute` call.
    pub called: Notify,
    running: Mutex<BTreeMap<String, Arc<Notify>>>,
}

fn result(request: &ExecutionRequest, exit_code: i32) -> ExecutionResult {
    ExecutionResult::exited(request.id.clone(), "fake", IsolationLevel::None, exit_code)
}

#[async_trait]
impl Executor for FakeExecutor {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn isolation_level(&self) -> IsolationLevel {
        IsolationLevel::None
    }

    fn capabilities(&self) -> ExecutorCapabilities {
        ExecutorCapabilities {
            isolation_level: IsolationLevel::None,
            platform: "test".into(),
            // It runs nothing real: every network policy but localhost and allowlist is
            // "given", so tasks without one (network none) run and a refusal stays testable.
            supported: BTreeSet::from([
                Capability::NetworkNone,
                Capability::NetworkFull,
                Capability::NetworkHost,
            ]),
        }
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
        self.requests.lock().unwrap().push(request.clone());
        self.called.notify_one();
        let script = conductor_core::command_of(&request.argv)
            .unwrap()
            .to_owned();
        let (verb, arg) = script.split_once(' ').unwrap_or((&script, ""));
        let output = |text: String| ExecEvent::Output {
            stream: OutputStream::Stdout,
            data: text.into_bytes(),
            at_ms: 0,
        };
        match verb {
            "echo" => {
                // Two chunks, to exercise line assembly.
                let (a, b) = arg.split_at(arg.len() / 2);
                let _ = events.send(output(a.to_owned())).await;
                let _ = events.send(output(format!("{b}\n"))).await;
                Ok(result(&request, 0))
            }
            "env" => {
                // Split inside the value, to check that redaction sees whole lines.
                let value = request.env.get(arg).cloned().unwrap_or_default();
                let (a, b) = value.split_at(value.len() / 2);
                let _ = events.send(output(format!("{arg}={a}"))).await;
                let _ = events.send(output(format!("{b}\n"))).await;
                Ok(result(&request, 0))
            }
            "interleave" => {
                // Lines on both streams, all sent before the scheduler reads any of them.
                for (n, stream) in [
                    OutputStream::Stdout,
                    OutputStream::Stderr,
                    OutputStream::Stdout,
                    OutputStream::Stderr,
                ]
                .into_iter()
                .enumerate()
                {
                    let text = format!("{stream:?} {n}\n").to_lowercase();
                    let _ = events
                        .send(ExecEvent::Output {
                            stream,
                            data: text.into_bytes(),
                            at_ms: 0,
                        })
                        .await;
                }
                Ok(result(&request, 0))
            }
            "exit" => Ok(result(&request, arg.parse().unwrap())),
            "fill" => {
                // In 64 KiB writes, as `cat` or `dd` would.
                let size: usize = arg.parse().unwrap();
                let written =
                    std::fs::File::create(request.workspace.join("fill")).and_then(|mut file| {
                        let chunk = vec![1u8; 64 * 1024];
                        let mut left = size;
                        while left > 0 {
                            let n = left.min(chunk.len());
                            std::io::Write::write_all(&mut file, &chunk[..n])?;
                            left -= n;
                        }
                        Ok(())
                    });
                match written {
                    Ok(()) => Ok(result(&request, 0)),
                    Err(error) => {
                        let _ = events.send(output(format!("{error}\n"))).await;
                        Ok(result(&request, 1))
                    }
                }
            }
            "deep" => {
                deep_chain(&request.workspace, arg.parse().unwrap());
                Ok(result(&request, 0))
            }
            "fail" => Err(ExecutorError::Unavailable {
                executor: "fake",
                reason: "scripted failure".into(),
            }),
            "sleep" => {
                let notify = Arc::new(Notify::new());
                self.running
                    .lock()
                    .unwrap()
                    .insert(request.id.to_string(), Arc::clone(&notify));
                let wanted = Duration::from_millis(arg.parse().unwrap());
                let limit = request.timeout.unwrap_or(Duration::MAX).min(wanted);
                let mut done = result(&request, 0);
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
                Ok(done)
            }
            _ => Ok(result(&request, 0)),
        }
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError> {
        self.cancelled.lock().unwrap().push(id.clone());
        let notify = self.running.lock().unwrap().remove(&id.to_string());
        Ok(match notify {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        })
    }
}

/// `depth` nested directories `d` below `dir`, each made relative to the one above (through
/// `/proc/self/fd`, so no path ever gets long), and a 5-byte `leaf` in the deepest.
fn deep_chain(dir: &std::path::Path, depth: usize) {
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

/// An app over a fresh tempdir database, a running scheduler and an admin token.
pub struct TestApp {
    pub router: Router,
    pub token: String,
    /// The admin token's id (`tok_…`): the owner of what it creates.
    pub token_id: String,
    pub store: Arc<dyn Store>,
    pub scheduler: Arc<Scheduler>,
    pub executor: Arc<FakeExecutor>,
    pub _dir: tempfile::TempDir,
}

pub struct Options {
    pub slots: usize,
    pub stored_output_limit: Option<conductor_types::Bytes>,
    pub body_limit: usize,
    pub run_loop: bool,
    pub upload_limit: Option<u64>,
    pub disk_quotas: bool,
    pub environment_port: Option<Arc<dyn conductor_server::EnvironmentPort>>,
    /// How often the loop reads the queue unprompted.
    pub poll_interval: Duration,
    /// `[limits.*]` (default: the built-in policy).
    pub limits: Option<conductor_core::LimitPolicy>,
    /// `[workspaces] import_max` (the default when `None`).
    pub import_max: Option<conductor_types::Bytes>,
    /// The network of tasks that name none.
    pub default_network: conductor_server::DefaultNetwork,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            slots: 2,
            stored_output_limit: None,
            body_limit: 64 * 1024,
            run_loop: true,
            upload_limit: None,
            disk_quotas: false,
            environment_port: None,
            poll_interval: Duration::from_millis(50),
            limits: None,
            import_max: None,
            default_network: conductor_server::DefaultNetwork::default(),
        }
    }
}

/// Runs a clone's git commands on the host with `/workspace` replaced by the workspace: the
/// scheduler's side of clones without a sandbox (the real one is tested in the cli crate).
#[derive(Debug)]
pub struct HostGit;

impl conductor_workspace::GitSandbox for HostGit {
    fn run(
        &self,
        git: &conductor_workspace::SandboxedGit,
    ) -> Result<conductor_workspace::SandboxedOutput, String> {
        let workspace = git.workspace.to_str().unwrap();
        let map = |text: &str| match text.strip_prefix(conductor_workspace::SANDBOX_WORKSPACE) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{workspace}{rest}"),
            _ => text.to_owned(),
        };
        let home = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(&git.argv[0]);
        cmd.args(git.argv[1..].iter().map(|arg| map(arg)))
            .env_clear()
            .current_dir(&git.workspace);
        for (name, value) in &git.env {
            match name.as_str() {
                "HOME" => cmd.env(name, home.path()),
                _ => cmd.env(name, map(value)),
            };
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        Ok(conductor_workspace::SandboxedOutput {
            exit_code: out.status.code().unwrap_or(128),
            timed_out: false,
            stdout: out.stdout,
            stdout_truncated: false,
            stderr: out.stderr,
        })
    }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("conductor.db"))
            .await
            .unwrap();
        Self::over(dir, Arc::new(store), options).await
    }

    pub async fn over(dir: tempfile::TempDir, store: Arc<dyn Store>, options: Options) -> Self {
        let executor = Arc::new(FakeExecutor::default());
        let mut config = SchedulerConfig::new(dir.path().join("workspaces"));
        config.slots = options.slots;
        config.concurrency = options.slots;
        config.poll_interval = options.poll_interval;
        config.disk_quotas = options.disk_quotas;
        config.environment_port = options.environment_port;
        if let Some(limits) = options.limits {
            config.limits = limits;
        }
        config.git = conductor_server::GitConfig {
            allow_local: vec![dir.path().to_path_buf()],
            sandbox: Some(Arc::new(HostGit)),
        };
        config.default_network = options.default_network;
        if let Some(limit) = options.stored_output_limit {
            config.stored_output_limit = limit;
        }
        if let Some(limit) = options.import_max {
            config.import_max = limit;
        }
        let executors: BTreeMap<String, Arc<dyn Executor>> =
            BTreeMap::from([("host".to_owned(), executor.clone() as Arc<dyn Executor>)]);
        let scheduler = Scheduler::new(Arc::clone(&store), executors, config, EventBus::default());
        scheduler.recover().await.unwrap();
        if options.run_loop {
            tokio::spawn(Arc::clone(&scheduler).run());
        }
        let created = conductor_server::auth::create_token(store.as_ref(), "admin", true)
            .await
            .unwrap();
        let mut state = AppState::new(Arc::clone(&scheduler), options.body_limit);
        if let Some(limit) = options.upload_limit {
            state = state.with_upload_limit(limit);
        }
        let router = app(state);
        Self {
            router,
            token: created.token,
            token_id: created.info.id,
            store,
            scheduler,
            executor,
            _dir: dir,
        }
    }

    /// Sends a request with the admin token; returns status and body text.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, String) {
        self.send_as(Some(&self.token), method, uri, body).await
    }

    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, String) {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Body::from(body.unwrap_or_default().to_owned()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Sends raw bytes (as application/zstd) with the admin token; returns status, headers and
    /// body bytes.
    pub async fn send_bytes(
        &self,
        method: Method,
        uri: &str,
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        self.send_typed(method, uri, "application/zstd", body).await
    }

    /// Sends raw bytes of `content_type` with the admin token.
    pub async fn send_typed(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes.to_vec())
    }

    pub async fn submit(&self, body: &str) -> Task {
        let (status, text) = self.send(Method::POST, "/api/v1/tasks", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn task(&self, id: TaskId) -> Task {
        let (status, text) = self
            .send(Method::GET, &format!("/api/v1/tasks/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Polls until the task has `status` (5 s at most).
    pub async fn wait_for(&self, id: TaskId, status: TaskStatus) -> Task {
        for _ in 0..500 {
            let task = self.task(id).await;
            if task.state.status == status {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("task {id} never became {status}: {:?}", self.task(id).await);
    }
}

/// Parses an error body into (code, message).
pub fn error_of(text: &str) -> (String, String) {
    let body: conductor_types::ApiErrorBody = serde_json::from_str(text).unwrap();
    (body.error.code, body.error.message)
}
