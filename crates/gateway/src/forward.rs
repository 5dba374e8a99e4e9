//! Sending a request upstream: the headers the client sent minus its token and the hop-by-hop
//! ones, plus the account's real key; each attempt waits for the account's rate limits; 429,
//! 503, 529 and failed connections are retried (before any byte reached the client) as the
//! [`crate::retry`] policy says.

use std::time::SystemTime;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

use crate::config::{Provider, RetryPolicy, SecretKey};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::retry;

/// Request headers never forwarded: the client's credentials, hop-by-hop headers, and the ones
/// the client library sets itself. `accept-encoding` goes too: the gateway must read usage
/// from the body, so the upstream answers uncompressed.
const DROPPED: [&str; 14] = [
    "x-api-key",
    "authorization",
    "host",
    "content-length",
    "accept-encoding",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The headers to send upstream: `incoming` without [`DROPPED`] and whatever `connection`
/// names, with the real key in the provider's auth header.
pub fn upstream_headers(incoming: &HeaderMap, provider: Provider, key: &SecretKey) -> HeaderMap {
    let named: Vec<String> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut headers = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        let lower = name.as_str();
        if DROPPED.contains(&lower) || named.iter().any(|n| n == lower) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let (name, value) = match provider {
        Provider::Anthropic => (
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(key.expose()),
        ),
        Provider::OpenAi => (
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", key.expose())),
        ),
    };
    if let Ok(mut value) = value {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    headers
}

/// Response headers never passed back: hop-by-hop ones and the length (the body is re-chunked).
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        if DROPPED[3..].contains(&name.as_str()) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// The upstream's wish: `retry-after-ms` (OpenAI) in seconds, else `retry-after`.
fn retry_after(headers: &HeaderMap) -> Option<String> {
    let millis = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok());
    if let Some(millis) = millis {
        return Some((millis / 1000.0).to_string());
    }
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// One request to send.
#[derive(Debug)]
pub struct Outgoing {
    /// Full upstream URL, query included.
    pub url: String,
    /// From [`upstream_headers`].
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// Tokens to hold in the rate-limit window until the request settles.
    pub estimate: u64,
}

/// How sending ended.
#[derive(Debug)]
pub enum Sent {
    /// The upstream answered (maybe with an error status, after the last retry).
    Answered {
        /// Its answer, body not yet read.
        response: reqwest::Response,
        /// The rate-limit slot to settle.
        slot: u64,
        /// Attempts beyond the first.
        retries: u32,
    },
    /// No answer after the last attempt.
    Unreachable {
        /// What went wrong (no URL, no headers).
        error: String,
        /// Attempts beyond the first.
        retries: u32,
    },
}

/// What [`send`] uses.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The HTTP client.
    pub client: &'a reqwest::Client,
    /// The account's limits.
    pub limiter: &'a Limiter,
    /// Retry policy.
    pub retry: &'a RetryPolicy,
    /// Where retries are counted.
    pub metrics: &'a Metrics,
}

/// Sends `out`, retrying transient failures.
pub async fn send(sender: Sender<'_>, out: Outgoing) -> Sent {
    let mut retries = 0;
    loop {
        let slot = sender.limiter.admit(out.estimate).await;
        let attempt = sender
            .client
            .post(&out.url)
            .headers(out.headers.clone())
            .body(out.body.clone())
            .send()
            .await;
        let last = retries + 1 >= sender.retry.max_attempts;
        let retry_after = match attempt {
            Ok(response) if last || !retry::retryable(response.status().as_u16()) => {
                return Sent::Answered {
                    response,
                    slot,
                    retries,
                };
            }
            Ok(response) => retry_after(response.headers()),
            Err(error) if last || !(error.is_connect() || error.is_timeout()) => {
                sender.limiter.settle(slot, 0);
                return Sent::Unreachable {
                    error: error.without_url().to_string(),
                    retries,
                };
            }
            Err(_) => None,
        };
        sender.limiter.settle(slot, 0);
        retries += 1;
        sender.metrics.retry();
        let delay = retry::delay(
            sender.retry,
            retries,
            retry_after.as_deref(),
            SystemTime::now(),
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_and_hop_by_hop_headers_stay_behind_and_the_key_goes_in() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("x-api-key", "task-token"),
            ("authorization", "Bearer task-token"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "a,b"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
        ] {
            incoming.append(name, HeaderValue::from_static(value));
        }
        let key = SecretKey::new("sk-real");
        let anthropic = upstream_headers(&incoming, Provider::Anthropic, &key);
        let mut names: Vec<_> = anthropic.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "anthropic-beta",
                "anthropic-version",
                "content-type",
                "x-api-key"
            ]
        );
        assert_eq!(anthropic["x-api-key"], "sk-real");
        assert!(anthropic["x-api-key"].is_sensitive());
        assert_eq!(anthropic["anthropic-beta"], "a,b");
        let openai = upstream_headers(&incoming, Provider::OpenAi, &key);
        assert_eq!(openai["authorization"], "Bearer sk-real");
        assert!(openai.get("x-api-key").is_none());
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers).as_deref(), Some("7"));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers).as_deref(), Some("1.5"));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
