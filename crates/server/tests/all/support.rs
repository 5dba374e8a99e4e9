//! Shared fixtures: a scripted fake executor, an app over a tempdir store, request helpers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use conductor_core::{Executor, Store};
use conductor_server::{app, AppState, EventBus, Scheduler, SchedulerConfig};
use conductor_store::SqliteStore;
use conductor_types::{Task, TaskId, TaskStatus};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The shared test doubles: the scripted fake executor (see its docs for the script
/// language) and the host stand-in for the git sandbox.
pub use conductor_testkit::{FakeExecutor, HostGit};

/// Kept disk-quota filesystems (and named workspaces' quota filesystems) are mounted inside the
/// tempdir: unmounted and removed before it is, so no test leaves a mount or a loop device.
impl Drop for TestApp {
    fn drop(&mut self) {
        self.scheduler.release_disk_quotas();
        for point in conductor_workspace::mounts_under(self._dir.path()) {
            let _ = conductor_workspace::unbind(&point);
        }
    }
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
            sandbox: Some(Arc::new(HostGit::default())),
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
        self.send_with(
            method,
            uri,
            &[(header::CONTENT_TYPE.as_str(), content_type)],
            body,
        )
        .await
    }

    /// A request with the token, answered as far as its status and headers (for a stream
    /// that does not end).
    pub async fn open(&self, method: Method, uri: &str) -> (StatusCode, axum::http::HeaderMap) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        (response.status(), response.headers().clone())
    }

    /// A request with `headers` (and the token) and `body`: status, headers, body.
    pub async fn send_with(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Body::from(body)).unwrap();
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

    /// Polls until the task has `status` (30 s at most: a loaded CI machine once took more than
    /// 5 s for the 10 000-level tree of `deep.rs`).
    pub async fn wait_for(&self, id: TaskId, status: TaskStatus) -> Task {
        for _ in 0..3000 {
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
