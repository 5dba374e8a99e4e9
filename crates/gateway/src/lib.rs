//! The LLM gateway (issue 12): agent CLIs in sandboxes talk to it with a per-task token; it
//! swaps in the provider key, forwards to the upstream, counts every token from the upstream's
//! own responses, and holds each task to its budget. The server grants a token when an agent
//! task starts, revokes it when the task ends, reads the task's [`GrantReport`], serves
//! [`Gateway::router`] on the listener the sandbox's bridge reaches, and appends
//! [`Gateway::render_metrics`] to its `/metrics`.

mod body;
mod budget;
mod config;
mod error;
mod forward;
mod grant;
mod limits;
mod metrics;
mod prices;
mod proxy;
mod raw;
mod record;
mod request;
mod retry;
mod settle;
mod usage;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use conductor_types::{Budget, TaskId, Usage};

pub use budget::Refusal;
pub use config::{
    BudgetPolicy, GatewayConfig, Provider, RateLimits, RetryPolicy, SecretKey, Upstream,
};
pub use grant::{Grant, GrantReport, TaskToken};
pub use prices::{Price, PriceTable};
pub use raw::{ConfigError, RawLlmConfig, RawPrice, RawUpstream};
pub use record::{RequestRecord, TracingSink, UsageSink};

use crate::grant::Grants;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::proxy::Endpoint;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The HTTP client could not be built (TLS backend).
    #[error("cannot build the upstream http client: {0}")]
    Client(#[source] reqwest::Error),
    /// Binding or serving the listener failed.
    #[error("cannot serve the gateway on {path}: {source}")]
    Serve {
        /// The socket or address.
        path: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The gateway: grants, accounting and the proxy.
pub struct Gateway {
    config: GatewayConfig,
    client: reqwest::Client,
    grants: Grants,
    limiters: [Limiter; 2],
    metrics: Metrics,
    sink: Arc<dyn UsageSink>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway with `config`, sending one record per request to `sink`.
    pub fn new(config: GatewayConfig, sink: Arc<dyn UsageSink>) -> Result<Arc<Self>, GatewayError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(600))
            .build()
            .map_err(GatewayError::Client)?;
        let openai_limits = config.openai.as_ref().map(|u| u.limits).unwrap_or_default();
        Ok(Arc::new(Self {
            limiters: [
                Limiter::new(config.anthropic.limits),
                Limiter::new(openai_limits),
            ],
            config,
            client,
            grants: Grants::default(),
            metrics: Metrics::default(),
            sink,
        }))
    }

    /// A token for `task`'s agent (on `provider`'s API) under `budget`, valid until revoked.
    pub fn grant(
        &self,
        task: TaskId,
        session: Option<String>,
        budget: Budget,
        provider: Provider,
    ) -> Grant {
        self.grants.grant(task, session, budget, provider)
    }

    /// `[llm.budget]`: agent tasks' default and maximum budgets.
    pub fn budget_policy(&self) -> BudgetPolicy {
        self.config.budget_policy
    }

    /// Kills `task`'s token; its report stays readable until [`Gateway::forget`].
    pub fn revoke(&self, task: TaskId) {
        self.grants.revoke(task);
    }

    /// What `task` used so far and why requests were refused or failed.
    pub fn report(&self, task: TaskId) -> Option<GrantReport> {
        self.grants.report(task)
    }

    /// Revokes `task` and drops its state, returning its last report.
    pub fn forget(&self, task: TaskId) -> Option<GrantReport> {
        self.grants.forget(task)
    }

    /// A session's usage over all its tasks (since the gateway started).
    pub fn session_usage(&self, session: &str) -> Option<Usage> {
        self.grants.session(session)
    }

    /// Appends the gateway's metrics in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        self.metrics.render(out);
    }

    /// The HTTP routes: `POST /v1/messages`, `/v1/messages/count_tokens`, `/v1/responses`;
    /// everything else is answered 404 locally.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/v1/responses", post(responses))
            .fallback(proxy::not_served)
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .with_state(Arc::clone(self))
    }

    /// Serves the router on `listener` (with `TCP_NODELAY` on each connection) until the future
    /// is dropped.
    pub async fn serve_listener(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> Result<(), GatewayError> {
        let path = listener
            .local_addr()
            .map_or_else(|_| "tcp".to_owned(), |a| a.to_string());
        // Small SSE chunks must leave at once: with Nagle's algorithm on, each chunk after the
        // first waits for the client's delayed ACK (~40 ms per streamed response).
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY on a gateway connection");
            }
        });
        axum::serve(listener, self.router())
            .await
            .map_err(|source| GatewayError::Serve { path, source })
    }

    /// Binds a Unix socket at `path` (replacing a stale socket, never another file) and serves the router on it.
    pub async fn serve_unix(self: &Arc<Self>, path: &Path) -> Result<(), GatewayError> {
        let error = |source| GatewayError::Serve {
            path: path.display().to_string(),
            source,
        };
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                let exists = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
                return Err(error(exists));
            }
            std::fs::remove_file(path).map_err(error)?;
        }
        let listener = tokio::net::UnixListener::bind(path).map_err(error)?;
        axum::serve(listener, self.router()).await.map_err(error)
    }

    fn limiter(&self, provider: Provider) -> &Limiter {
        match provider {
            Provider::Anthropic => &self.limiters[0],
            Provider::OpenAi => &self.limiters[1],
        }
    }
}

async fn messages(
    State(gateway): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    proxy::handle(gateway, Endpoint::Messages, uri, headers, body).await
}

async fn count_tokens(
    State(gateway): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    proxy::handle(gateway, Endpoint::CountTokens, uri, headers, body).await
}

async fn responses(
    State(gateway): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    proxy::handle(gateway, Endpoint::Responses, uri, headers, body).await
}
