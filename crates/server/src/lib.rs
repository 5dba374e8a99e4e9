//! The Conductor orchestrator service: the HTTP API ([`app`]), bearer-token auth, and the
//! scheduler loop that hands queued tasks to execution slots and runs them on executors.
//!
//! Handlers only parse and translate; decisions live in `conductor-core`, state in a
//! `conductor_core::Store`, and execution behind `conductor_core::Executor`.

pub mod agents;
mod api;
pub mod auth;
mod body;
pub mod config;
pub mod environments;
mod error;
mod events;
mod extract;
mod feed;
mod files;
mod gitdiff;
pub mod hostdirs;
mod limits_config;
mod metrics;
pub mod openapi;
mod precondition;
mod scheduler;
mod serve;
mod sessions_api;
mod stream;
mod workspaces;

use std::sync::Arc;

use axum::middleware;
use axum::routing::{delete, get, post};
use axum::Router;
use conductor_core::Store;

pub use body::{decode_json, read_json};
/// How a path changed between two sides of a snapshot diff (in [`ChangeView`]).
pub use conductor_workspace::ChangeKind;
pub use config::{Config, ConfigError, RawConfig};
pub use environments::{DefineError, EnvironmentPort, Progress};
pub use error::AppError;
pub use events::EventBus;
pub use files::{FileEntryView, ListingView, UploadView, DEFAULT_UPLOAD_LIMIT};
pub use gitdiff::{GitConfig, GitFileView, TaskDiffView};
pub use metrics::{Histogram, Metrics};
pub use scheduler::{
    DefaultNetwork, Scheduler, SchedulerConfig, WorkspaceReservation, DISK_QUOTA_EXCEEDED,
};
pub use serve::{serve, ServeConfig, ServeError, Server, Sweep, DATABASE_FILE, DEFAULT_LISTEN};
pub use workspaces::{
    ChangeView, DiffView, EntryView, RestoreRequest, RestoreView, SnapshotRequest, SnapshotView,
};

/// Default largest request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    scheduler: Arc<Scheduler>,
    body_limit: usize,
    /// The snapshot store at the scheduler's `snapshot_root`, opened on first use.
    snapshots: Arc<tokio::sync::OnceCell<Arc<conductor_workspace::SnapshotStore>>>,
    upload_limit: u64,
}

impl AppState {
    /// State over a scheduler (which holds the store and executors).
    pub fn new(scheduler: Arc<Scheduler>, body_limit: usize) -> Self {
        Self {
            scheduler,
            body_limit,
            snapshots: Arc::default(),
            upload_limit: DEFAULT_UPLOAD_LIMIT,
        }
    }

    /// With another limit on file-API uploads (bytes of one file, or of a tar's files).
    pub fn with_upload_limit(mut self, bytes: u64) -> Self {
        self.upload_limit = bytes;
        self
    }

    /// Largest file-API upload, in bytes.
    pub fn upload_limit(&self) -> u64 {
        self.upload_limit
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.scheduler.store()
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        self.scheduler.events()
    }

    /// The snapshot store, once opened.
    fn snapshot_store(&self) -> &tokio::sync::OnceCell<Arc<conductor_workspace::SnapshotStore>> {
        &self.snapshots
    }

    /// Largest request body, in bytes.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }
}

/// `GET /api/v1/agents`, the slots' old path (kept one release).
#[allow(deprecated)]
fn deprecated_agents_route() -> axum::routing::MethodRouter<AppState> {
    get(api::agents)
}

/// The whole HTTP API. Everything but `/health`, `/ready` and `/live` needs a bearer token.
pub fn app(state: AppState) -> Router {
    let authenticated = Router::new()
        .route("/api/v1/tasks", post(api::create_task).get(api::list_tasks))
        .route("/tasks", post(api::create_task_alias))
        .route(
            "/api/v1/tasks/{id}",
            get(api::get_task).delete(api::delete_task),
        )
        .route("/api/v1/tasks/{id}/cancel", post(api::cancel_task))
        .route("/api/v1/tasks/{id}/logs", get(api::logs))
        .route("/api/v1/tasks/{id}/events", get(api::events))
        .route("/api/v1/events", get(feed::feed))
        .route("/api/v1/tasks/{id}/diff", get(gitdiff::task_diff))
        .route(
            "/api/v1/tasks/{id}/messages",
            post(sessions_api::send_message),
        )
        .route(
            "/api/v1/tasks/{id}/agent-stream",
            get(sessions_api::agent_stream),
        )
        .route("/api/v1/sessions/{id}", get(sessions_api::get_session))
        .route("/api/v1/slots", get(api::slots))
        .route("/api/v1/agents", deprecated_agents_route())
        .route("/metrics", get(api::metrics))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route(
            "/api/v1/tokens",
            post(api::create_token).get(api::list_tokens),
        )
        .route("/api/v1/tokens/{id}", delete(api::revoke_token))
        .route(
            "/api/v1/workspaces",
            post(workspaces::create_workspace).get(workspaces::list_workspaces),
        )
        .route(
            "/api/v1/workspaces/{id}",
            get(workspaces::get_workspace).delete(workspaces::delete_workspace),
        )
        .route(
            "/api/v1/workspaces/{id}/snapshots",
            post(workspaces::create_snapshot).get(workspaces::list_snapshots),
        )
        .route(
            "/api/v1/workspaces/{id}/snapshots/{sid}",
            delete(workspaces::delete_snapshot),
        )
        .route(
            "/api/v1/workspaces/{id}/snapshots/{sid}/restore",
            post(workspaces::restore_snapshot),
        )
        .route(
            "/api/v1/workspaces/{id}/snapshots/{sid}/diff",
            get(workspaces::diff_snapshot),
        )
        .route(
            "/api/v1/workspaces/{id}/snapshots/{sid}/export",
            get(workspaces::export_snapshot),
        )
        .route(
            "/api/v1/workspaces/{id}/files",
            get(files::get_root).put(files::put_root),
        )
        .route(
            "/api/v1/workspaces/{id}/files/{*path}",
            get(files::get_file)
                .put(files::put_file)
                .delete(files::delete_file),
        )
        .route(
            "/api/v1/snapshots/import",
            post(workspaces::import_snapshot),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(api::health))
        .route("/ready", get(api::ready))
        .route("/live", get(api::live))
        .merge(authenticated)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
