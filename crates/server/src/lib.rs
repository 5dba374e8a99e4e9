//! The Conductor orchestrator service: the HTTP API ([`app`]), bearer-token auth, and the
//! scheduler loop that hands queued tasks to agents and runs them on executors.
//!
//! Handlers only parse and translate; decisions live in `conductor-core`, state in a
//! `conductor_core::Store`, and execution behind `conductor_core::Executor`.

mod api;
pub mod auth;
mod body;
pub mod config;
mod error;
mod events;
mod metrics;
pub mod openapi;
mod scheduler;
mod serve;

use std::sync::Arc;

use axum::middleware;
use axum::routing::{delete, get, post};
use axum::Router;
use conductor_core::Store;

pub use body::{decode_json, read_json};
pub use config::{Config, ConfigError, RawConfig};
pub use error::AppError;
pub use events::EventBus;
pub use metrics::{Histogram, Metrics};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use serve::{serve, ServeConfig, ServeError, Server, Sweep, DATABASE_FILE, DEFAULT_LISTEN};

/// Default largest request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    scheduler: Arc<Scheduler>,
    body_limit: usize,
}

impl AppState {
    /// State over a scheduler (which holds the store and executors).
    pub fn new(scheduler: Arc<Scheduler>, body_limit: usize) -> Self {
        Self {
            scheduler,
            body_limit,
        }
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

    /// Largest request body, in bytes.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }
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
        .route("/api/v1/agents", get(api::agents))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route(
            "/api/v1/tokens",
            post(api::create_token).get(api::list_tokens),
        )
        .route("/api/v1/tokens/{id}", delete(api::revoke_token))
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
