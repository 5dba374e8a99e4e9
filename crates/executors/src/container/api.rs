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
//! connection, the same stack bollard uses).

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
    let exchange = async {
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
        Ok::<_, ApiError>((parts.status, parts.headers, body))
    };
    // The connection is driven alongside the exchange and dropped with it.
    let (status, headers, body) = tokio::select! {
        exchanged = exchange => exchanged?,
        ended = connection => {
            return Err(transport(match ended {
                Ok(()) => "the engine closed the connection".to_owned(),
                Err(e) => e.to_string(),
            }))
        }
    };
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
