//! The HTTP side shared by the fakes: a listener on `127.0.0.1:0`, the script's cursor and the
//! record of every request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::Value;

use super::script::{Failure, Script, Turn};

/// A fake could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// Binding `127.0.0.1:0` failed.
    #[error("fake upstream: cannot listen on 127.0.0.1:0: {0}")]
    Bind(#[source] std::io::Error),
}

/// What a recorded request was to the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A conversation request, answered with the script's turn of this index.
    Turn(usize),
    /// A conversation request after the script ran out (answered with an error).
    PastScript,
    /// A side request (small-model call, token count, telemetry, model list), answered without
    /// consuming the script.
    Side,
}

/// One request the fake got.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// How the fake treated it.
    pub kind: RequestKind,
    /// When it arrived (its body read).
    pub received: std::time::Instant,
}

impl Recorded {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A request as the protocol modules see it.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

/// Which wire protocol a fake speaks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Protocol {
    Anthropic,
    OpenAi,
}

#[derive(Debug)]
pub(crate) struct Shared {
    protocol: Protocol,
    script: Script,
    state: Mutex<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    next_turn: usize,
    recorded: Vec<Recorded>,
}

impl Shared {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next turn of the script (`None` once it ran out).
    pub(crate) fn next_turn(&self) -> Option<(usize, &Turn)> {
        let mut progress = self.progress();
        let index = progress.next_turn;
        let turn = self.script.turns.get(index)?;
        progress.next_turn += 1;
        Some((index, turn))
    }
}

/// A running fake upstream; stops when dropped.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    pub(crate) async fn start(protocol: Protocol, script: Script) -> Result<Self, FakeError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(FakeError::Bind)?;
        let addr = listener.local_addr().map_err(FakeError::Bind)?;
        let shared = Arc::new(Shared {
            protocol,
            script,
            state: Mutex::new(Progress::default()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            // The fake lives as long as the test; an accept error ends it, the test then fails
            // on its requests.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.progress().recorded.clone()
    }

    /// The conversation requests so far (scripted ones and any past the script).
    pub fn conversation(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.kind != RequestKind::Side)
            .collect()
    }

    /// How many turns of the script were played.
    pub fn turns_played(&self) -> usize {
        self.shared.progress().next_turn
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let incoming = Incoming {
        method: method.clone(),
        path: path.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let (kind, response) = match shared.protocol {
        Protocol::Anthropic => super::anthropic::answer(&shared, &incoming),
        Protocol::OpenAi => super::openai::answer(&shared, &incoming),
    };
    let headers = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    shared.progress().recorded.push(Recorded {
        method: method.to_string(),
        path,
        headers,
        body: incoming.body,
        kind,
        received: std::time::Instant::now(),
    });
    response
}

/// An SSE response of `(event, data)` pairs.
pub(crate) fn sse(events: &[(&str, Value)]) -> Response {
    let mut text = String::new();
    for (event, data) in events {
        text.push_str("event: ");
        text.push_str(event);
        text.push_str("\ndata: ");
        text.push_str(&data.to_string());
        text.push_str("\n\n");
    }
    response(200, "text/event-stream", text)
}

/// The error answer of a failing turn, with its `retry-after`.
pub(crate) fn failure(failure: Failure, body: &Value) -> Response {
    let mut answer = json(failure.status, body);
    if let Some(seconds) = failure.retry_after {
        answer
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, seconds.into());
    }
    answer
}

/// A JSON response.
pub(crate) fn json(status: u16, body: &Value) -> Response {
    response(status, "application/json", body.to_string())
}

fn response(status: u16, content_type: &str, body: String) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
    if let Ok(value) = axum::http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, value);
    }
    response
}
