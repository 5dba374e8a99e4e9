//! The few Engine API requests made without bollard, each for a reason bollard cannot serve:
//!
//! - `GET /_ping` with its headers: the `API-Version` header agrees on a version in the one
//!   round trip the connection check makes anyway. bollard's `negotiate_version` asks `/version`
//!   instead, which Podman answers only after querying its runtime and conmon (hundreds of
//!   milliseconds on every `conductor exec`).
//! - `GET /containers/{id}/json`, the state only, decoded leniently: Podman reports a container
//!   whose process has exited but whose cleanup (a separate `podman container cleanup` process)
//!   has not finished as `"stopped"`, a status bollard's typed model refuses to decode. Waiting
//!   for that cleanup is what made Podman's `wait` slow: its compatible `wait` polls every
//!   250 ms for the state after cleanup.
//!
//! One HTTP/1.1 request per connection over the engine's Unix socket (hyper's client
//! connection, the same stack bollard uses). Also the list of containers, for the same reason as
//! the state.

use std::path::Path;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Connecting, sending or reading failed.
    #[error("{method} {path}: {reason}")]
    Transport {
        /// The method.
        method: &'static str,
        /// The request path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The engine answered with an error status.
    #[error("{method} {path}: the engine answered {status}: {body}")]
    Status {
        /// The method.
        method: &'static str,
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The engine's message.
        body: String,
    },
    /// The answer was not what the API documents.
    #[error("{method} {path}: cannot decode the answer: {reason}")]
    Decode {
        /// The method.
        method: &'static str,
        /// The request path.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// What `/_ping` says about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// The highest Docker API version the engine serves (`API-Version`), as (major, minor).
    pub api_version: Option<(usize, usize)>,
}

/// A container's state as both engines report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// `created`, `running`, `exited`, … and Podman's `stopped` (exited, cleanup pending).
    #[serde(default)]
    pub status: String,
    /// Whether the container's process runs.
    #[serde(default)]
    pub running: bool,
    /// The exit code, once exited.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// What the engine believes about an OOM kill.
    #[serde(default, rename = "OOMKilled")]
    pub oom_killed: Option<bool>,
    /// RFC 3339 start time.
    #[serde(default)]
    pub started_at: Option<String>,
    /// RFC 3339 finish time.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Host pid of the container's first process while it runs (0 otherwise).
    #[serde(default)]
    pub pid: Option<u32>,
}

impl ContainerState {
    /// Whether the process has run and ended (the engine knows its exit code).
    pub fn has_exited(&self) -> bool {
        !self.running && matches!(self.status.as_str(), "exited" | "stopped" | "dead")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    #[serde(default)]
    state: ContainerState,
}

/// `GET /_ping`.
pub async fn ping(socket: &Path) -> Result<Ping, ApiError> {
    let (_, headers, _) = request(socket, Method::GET, "/_ping").await?;
    let api_version = headers
        .get("api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_version);
    Ok(Ping { api_version })
}

/// The state of container `id` (`GET /containers/{id}/json`).
pub async fn container_state(socket: &Path, id: &str) -> Result<ContainerState, ApiError> {
    let path = format!("/containers/{id}/json");
    let (_, _, body) = request(socket, Method::GET, &path).await?;
    serde_json::from_slice::<Inspected>(&body)
        .map(|inspected| inspected.state)
        .map_err(|e| ApiError::Decode {
            method: "GET",
            path,
            reason: e.to_string(),
        })
}

/// A container as `GET /containers/json` lists it (only what is used here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedContainer {
    /// Its id.
    pub id: String,
    /// Its names (with a leading `/` on Docker).
    #[serde(default)]
    pub names: Vec<String>,
    /// Its labels.
    #[serde(default)]
    pub labels: std::collections::HashMap<String, String>,
}

/// Every container (running or not) matching `filters` (`label`, `name`, … as the API takes
/// them), decoded leniently: bollard's typed list fails on a Podman container in the
/// `stopped` state.
pub async fn list_containers(
    socket: &Path,
    filters: &std::collections::HashMap<String, Vec<String>>,
) -> Result<Vec<ListedContainer>, ApiError> {
    let filters = serde_json::to_string(filters).map_err(|e| ApiError::Decode {
        method: "GET",
        path: "/containers/json".to_owned(),
        reason: e.to_string(),
    })?;
    let path = format!(
        "/containers/json?all=true&filters={}",
        percent_encode(&filters)
    );
    let (_, _, body) = request(socket, Method::GET, &path).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::Decode {
        method: "GET",
        path,
        reason: e.to_string(),
    })
}

/// Percent-encodes everything but unreserved characters (RFC 3986) for a query value.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                encoded.push(char::from(byte))
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// `1.41` → (1, 41).
pub fn parse_version(text: &str) -> Option<(usize, usize)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

async fn request(
    socket: &Path,
    method: Method,
    path: &str,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes), ApiError> {
    let method_name = match method {
        Method::GET => "GET",
        Method::POST => "POST",
        _ => "request",
    };
    let transport = |reason: String| ApiError::Transport {
        method: method_name,
        path: path.to_owned(),
        reason,
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| transport(format!("connecting to {}: {e}", socket.display())))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(e.to_string()))?;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport(e.to_string()))?;
    // The connection is driven by a task of its own, which ends once `sender` is dropped (at
    // the end of this function) or the engine closes it (then `send_request` fails).
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "an engine API connection ended");
        }
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transport(e.to_string()))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| transport(e.to_string()))?
        .to_bytes();
    let (status, headers) = (parts.status, parts.headers);
    if !status.is_success() {
        return Err(ApiError::Status {
            method: method_name,
            path: path.to_owned(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    Ok((status, headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"{"label":["io.conductor.owner"]}"#),
            "%7B%22label%22%3A%5B%22io.conductor.owner%22%5D%7D"
        );
    }

    #[test]
    fn listed_podman_containers_decode_whatever_their_state() {
        let body = br#"[{"Id":"a","Names":["/conductor-x"],"State":"stopped",
            "Labels":{"io.conductor.owner":"1:2"}}]"#;
        let listed: Vec<ListedContainer> = serde_json::from_slice(body).unwrap();
        assert_eq!(
            listed,
            vec![ListedContainer {
                id: "a".into(),
                names: vec!["/conductor-x".into()],
                labels: [("io.conductor.owner".to_owned(), "1:2".to_owned())].into(),
            }]
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert_eq!(parse_version(" 1.53\n"), Some((1, 53)));
        assert_eq!(parse_version("4.3.1"), None);
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn podman_stopped_state_decodes_and_counts_as_exited() {
        let body = br#"{"Id":"c","State":{"Status":"stopped","Running":false,"Paused":false,
            "OOMKilled":false,"Pid":0,"ExitCode":3,"StartedAt":"2024-05-01T12:00:00.5Z",
            "FinishedAt":"2024-05-01T12:00:01Z"}}"#;
        let state = serde_json::from_slice::<Inspected>(body).unwrap().state;
        assert_eq!(
            state,
            ContainerState {
                status: "stopped".into(),
                running: false,
                exit_code: Some(3),
                oom_killed: Some(false),
                started_at: Some("2024-05-01T12:00:00.5Z".into()),
                finished_at: Some("2024-05-01T12:00:01Z".into()),
                pid: Some(0),
            }
        );
        assert!(state.has_exited());
        let running = ContainerState {
            status: "running".into(),
            running: true,
            ..ContainerState::default()
        };
        assert!(!running.has_exited());
        let created = ContainerState {
            status: "created".into(),
            ..ContainerState::default()
        };
        assert!(!created.has_exited());
    }
}
