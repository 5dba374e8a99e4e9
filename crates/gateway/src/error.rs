//! Answers the gateway gives itself, never forwarded: each is shaped like the provider's own
//! errors so the agent CLI shows the message. A spent budget is a 400 `invalid_request_error`
//! with `x-should-retry: false`: the CLIs retry 408, 409, 429 and 5xx (and honour that header),
//! never a plain 400.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::budget::Refusal;
use crate::config::Provider;
use crate::request::RequestError;

/// Why the gateway answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// No token, or one that is not (or no longer) live.
    #[error("invalid or revoked task token")]
    Unauthorized,
    /// The token belongs to a task of the other provider.
    #[error("this task's token is not valid for {0} requests")]
    WrongProvider(&'static str),
    /// A path the gateway does not serve (telemetry and the like).
    #[error("{0} is not served by the conductor gateway")]
    NotServed(String),
    /// The provider has no upstream configured.
    #[error("no {0} upstream is configured")]
    NoUpstream(&'static str),
    /// The task's budget is spent.
    #[error("{0}")]
    Budget(Refusal),
    /// A body the gateway cannot meter.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The upstream could not be reached, after retries.
    #[error("upstream unavailable: {0}")]
    Unreachable(String),
}

impl LocalError {
    /// The HTTP status and the provider's error type.
    fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error"),
            Self::WrongProvider(_) => (StatusCode::FORBIDDEN, "permission_error"),
            Self::NotServed(_) | Self::NoUpstream(_) => (StatusCode::NOT_FOUND, "not_found_error"),
            Self::Budget(_) | Self::Request(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            Self::Unreachable(_) => (StatusCode::BAD_GATEWAY, "api_error"),
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status_and_type().0
    }

    /// The response, shaped for `provider`'s clients.
    pub fn response(&self, provider: Provider) -> Response {
        let (status, kind) = self.status_and_type();
        let message = self.to_string();
        let body = match provider {
            Provider::Anthropic => json!({
                "type": "error",
                "error": { "type": kind, "message": message },
            }),
            Provider::OpenAi => json!({
                "error": {
                    "message": message,
                    "type": kind,
                    "code": if matches!(self, Self::Budget(_)) { "budget_exceeded" } else { kind },
                },
            }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        // An unreachable upstream was already retried here, with backoff: retries happen in one
        // place, so the agent fails in bounded time (`upstream_unavailable`).
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refusals_are_non_retryable_400s_in_both_shapes() {
        let error = LocalError::Budget(Refusal::Tokens {
            budget: 10,
            used: 12,
        });
        let response = error.response(Provider::Anthropic);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["x-should-retry"], "false");
        assert_eq!(
            error.to_string(),
            "budget exceeded: 12 of the task's 10 tokens used"
        );
        assert_eq!(
            LocalError::Unreachable("refused".into())
                .response(Provider::OpenAi)
                .status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
