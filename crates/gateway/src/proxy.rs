//! The request path: check the task's token, let the budget decide (and lower `max_tokens`),
//! send upstream with the real key, and stream the answer back through the usage meter.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::body::MeteredBody;
use crate::budget::Admission;
use crate::config::Provider;
use crate::error::LocalError;
use crate::forward::{self, Outgoing, Sender, Sent};
use crate::grant::TaskGrant;
use crate::request::ModelRequest;
use crate::settle::{classify, Settlement};
use crate::usage::UsageMeter;
use crate::Gateway;

/// The paths the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/messages` (Anthropic).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic; free, outside budgets).
    CountTokens,
    /// `POST /v1/responses` (OpenAI).
    Responses,
}

impl Endpoint {
    /// The gateway's path.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
            Self::Responses => "/v1/responses",
        }
    }

    /// The provider it belongs to.
    pub const fn provider(self) -> Provider {
        match self {
            Self::Messages | Self::CountTokens => Provider::Anthropic,
            Self::Responses => Provider::OpenAi,
        }
    }

    /// Whether it costs tokens (and so passes the budget and the meter).
    const fn metered(self) -> bool {
        !matches!(self, Self::CountTokens)
    }
}

/// A request ready to go upstream.
struct Prepared {
    body: Bytes,
    /// Output tokens reserved (also held in the rate-limit window).
    reserved: u64,
}

/// Serves one request to `endpoint`.
pub async fn handle(
    gateway: Arc<Gateway>,
    endpoint: Endpoint,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let provider = endpoint.provider();
    let grant = match authorize(&gateway, &headers, provider) {
        Ok(grant) => grant,
        Err(error) => return gateway.answer_unattributed(provider, &error, started),
    };
    let logged = gateway
        .config
        .log_bodies
        .then(|| String::from_utf8_lossy(&body).into_owned());
    let mut settlement = Settlement::open(
        Arc::clone(&gateway),
        Arc::clone(&grant),
        endpoint.path(),
        started,
        logged,
    );
    let prepared = match prepare(&gateway, &grant, endpoint, body, &mut settlement).await {
        Ok(prepared) => prepared,
        Err(error) => {
            settlement.answered(error.status().as_u16(), None, 0);
            return error.response(provider);
        }
    };
    forward_and_stream(
        &gateway, &grant, endpoint, uri, &headers, prepared, settlement,
    )
    .await
}

/// The live grant behind the request's token (`x-api-key` or `Authorization: Bearer`), for the
/// endpoint's provider.
fn authorize(
    gateway: &Gateway,
    headers: &HeaderMap,
    provider: Provider,
) -> Result<Arc<TaskGrant>, LocalError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or(bearer)
        .ok_or(LocalError::Unauthorized)?;
    let grant = gateway
        .grants
        .find(token.trim())
        .ok_or(LocalError::Unauthorized)?;
    if grant.provider != provider {
        return Err(LocalError::WrongProvider(provider.as_str()));
    }
    Ok(grant)
}

/// Reads the body and lets the budget decide; waits while requests in flight hold what is left.
async fn prepare(
    gateway: &Gateway,
    grant: &TaskGrant,
    endpoint: Endpoint,
    body: Bytes,
    settlement: &mut Settlement,
) -> Result<Prepared, LocalError> {
    let provider = endpoint.provider();
    let request = ModelRequest::parse(provider, &body);
    if !endpoint.metered() {
        let model = request.map(|r| r.model).unwrap_or_default();
        settlement.model(model);
        return Ok(Prepared { body, reserved: 0 });
    }
    let request = request?;
    let output_price = gateway.config.prices.price(&request.model).0.output / 1e6;
    let needs = request.needs(output_price);
    loop {
        let settled = grant.settled.notified();
        let admission = grant.lock().ledger.admit(needs);
        match admission {
            Admission::Forward { cap, tokens, usd } => {
                settlement.admitted(request.model.clone(), (tokens, usd), body.len() as u64 / 4);
                let body = match cap {
                    Some(cap) => request.capped(provider, cap),
                    None => body,
                };
                return Ok(Prepared {
                    body,
                    reserved: tokens,
                });
            }
            Admission::Wait => settled.await,
            Admission::Refuse(refusal) => {
                settlement.model(request.model.clone());
                grant.lock().report.budget_exceeded = true;
                return Err(LocalError::Budget(refusal));
            }
        }
    }
}

/// Sends the request and answers with the upstream's response, metered.
async fn forward_and_stream(
    gateway: &Gateway,
    grant: &TaskGrant,
    endpoint: Endpoint,
    uri: Uri,
    headers: &HeaderMap,
    prepared: Prepared,
    mut settlement: Settlement,
) -> Response {
    let provider = endpoint.provider();
    let Some(upstream) = gateway.config.upstream(provider) else {
        let error = LocalError::NoUpstream(provider.as_str());
        settlement.answered(error.status().as_u16(), None, 0);
        return error.response(provider);
    };
    let suffix = endpoint.path().trim_start_matches("/v1");
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let estimate = prepared.body.len() as u64 / 4 + prepared.reserved;
    let outgoing = Outgoing {
        url: format!("{}{suffix}{query}", upstream.url),
        headers: forward::upstream_headers(headers, provider, &upstream.key),
        body: prepared.body,
        estimate,
    };
    let sender = Sender {
        client: &gateway.client,
        limiter: gateway.limiter(provider),
        retry: &gateway.config.retry,
        metrics: &gateway.metrics,
    };
    let (response, slot, retries) = match forward::send(sender, outgoing).await {
        Sent::Answered {
            response,
            slot,
            retries,
        } => (response, slot, retries),
        Sent::Unreachable { error, retries } => {
            grant.lock().report.upstream_unavailable = true;
            let error = LocalError::Unreachable(error);
            settlement.answered(error.status().as_u16(), None, retries);
            return error.response(provider);
        }
    };
    let status = response.status();
    let unavailable = classify(status.as_u16());
    match unavailable {
        Some(true) => grant.lock().report.upstream_unavailable = true,
        Some(false) => grant.lock().report.upstream_rejected = true,
        None => {}
    }
    settlement.answered(status.as_u16(), Some(slot), retries);
    let mut answer = stream_back(gateway, endpoint, response, settlement);
    if unavailable == Some(true) {
        // Retried here already (honouring `retry-after`): the client must not start over.
        answer
            .headers_mut()
            .insert("x-should-retry", header::HeaderValue::from_static("false"));
    }
    answer
}

/// The client's response: the upstream's status and headers, its body passed through the meter.
fn stream_back(
    gateway: &Gateway,
    endpoint: Endpoint,
    response: reqwest::Response,
    settlement: Settlement,
) -> Response {
    let status = response.status();
    let headers = forward::response_headers(response.headers());
    let streamed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let meter = (endpoint.metered() && status == StatusCode::OK)
        .then(|| UsageMeter::new(endpoint.provider(), streamed));
    let body = MeteredBody::new(
        Box::pin(response.bytes_stream()),
        meter,
        gateway.config.log_bodies,
        settlement,
    );
    let mut answer = Body::from_stream(body).into_response();
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
}

/// Answers a path the gateway does not serve, without forwarding it.
/// The error is shaped for the client the headers suggest: Anthropic's clients send
/// `x-api-key` or `anthropic-version`, OpenAI's a bearer token alone.
pub async fn not_served(
    axum::extract::State(gateway): axum::extract::State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let anthropic = headers.contains_key("x-api-key") || headers.contains_key("anthropic-version");
    let bearer = headers.contains_key(header::AUTHORIZATION);
    let provider = if bearer && !anthropic {
        Provider::OpenAi
    } else {
        Provider::Anthropic
    };
    let error = LocalError::NotServed(uri.path().to_owned());
    gateway.answer_unattributed(provider, &error, started)
}

impl Gateway {
    /// Answers `error` for a request no task is accountable for (counted in metrics only).
    fn answer_unattributed(
        &self,
        provider: Provider,
        error: &LocalError,
        started: Instant,
    ) -> Response {
        let status = error.status().as_u16().to_string();
        let usage = conductor_types::Usage::default();
        self.metrics.request(&status, "", &usage, started.elapsed());
        error.response(provider)
    }
}
