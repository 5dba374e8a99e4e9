//! The audit record of each request a task's token made, and where records go. Bodies are in a
//! record only when `log_bodies` is on.

use std::time::Duration;

use conductor_types::{TaskId, Usage};

use crate::config::Provider;

/// One request, as the gateway saw it end.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// The task whose token made it.
    pub task: TaskId,
    /// The task's session.
    pub session: Option<String>,
    /// The provider API.
    pub provider: Provider,
    /// The path asked for (`/v1/messages`).
    pub path: String,
    /// The model (as the upstream named it, else as the request did).
    pub model: String,
    /// Tokens and cost of this request (`requests` is 1 when it went upstream, else 0).
    pub usage: Usage,
    /// The model was priced at the default price: the table does not know it.
    pub default_price: bool,
    /// The status the client got.
    pub status: u16,
    /// Arrival to the body's end.
    pub latency: Duration,
    /// Upstream attempts beyond the first.
    pub retries: u32,
    /// The request body (only with `log_bodies`).
    pub request_body: Option<String>,
    /// The response body, up to 1 MiB (only with `log_bodies`).
    pub response_body: Option<String>,
}

/// Receives every record (the server stores them; tests collect them).
pub trait UsageSink: Send + Sync {
    /// One finished request. Called on the request's own task: keep it short.
    fn record(&self, record: RequestRecord);
}

/// A sink that logs each record with `tracing` (target `conductor_gateway::audit`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl UsageSink for TracingSink {
    fn record(&self, record: RequestRecord) {
        tracing::info!(
            target: "conductor_gateway::audit",
            task = %record.task,
            session = record.session.as_deref().unwrap_or(""),
            provider = record.provider.as_str(),
            path = %record.path,
            model = %record.model,
            status = record.status,
            input_tokens = record.usage.input_tokens,
            output_tokens = record.usage.output_tokens,
            cache_read_tokens = record.usage.cache_read_input_tokens,
            cache_write_tokens = record.usage.cache_creation_input_tokens,
            cost_usd = record.usage.cost_usd,
            default_price = record.default_price,
            latency_ms = record.latency.as_millis() as u64,
            retries = record.retries,
            request_body = record.request_body.as_deref(),
            response_body = record.response_body.as_deref(),
            "llm request"
        );
    }
}
