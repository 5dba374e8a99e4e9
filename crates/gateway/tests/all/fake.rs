//! A scripted fake upstream (a real axum server on loopback) and a gateway in front of it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use conductor_gateway::{
    Gateway, GatewayConfig, RequestRecord, RetryPolicy, SecretKey, Upstream, UsageSink,
};
use serde_json::Value;
use tokio::sync::Notify;

pub const ANTHROPIC_KEY: &str = "sk-ant-REAL-anthropic-key-0123456789";
pub const OPENAI_KEY: &str = "sk-proj-REAL-openai-key-9876543210";

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON body with a status and extra headers.
    Json(u16, Value, Vec<(&'static str, String)>),
    /// SSE events, sent one chunk each.
    Sse(Vec<String>),
    /// The first event, then the rest once the gate is opened.
    GatedSse(Vec<String>, Arc<Notify>),
    /// A JSON body sent once the gate is opened.
    GatedJson(Value, Arc<Notify>),
}

/// What the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Debug, Default)]
struct FakeState {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

/// A fake upstream on a loopback port.
#[derive(Debug, Clone)]
pub struct Fake {
    pub url: String,
    state: Arc<FakeState>,
}

impl Fake {
    pub async fn start(script: Vec<Reply>) -> Self {
        let state = Arc::new(FakeState {
            script: Mutex::new(script.into()),
            seen: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn push(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }
}

async fn answer(
    axum::extract::State(state): axum::extract::State<Arc<FakeState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.seen.lock().unwrap().push(Seen {
        uri: uri.to_string(),
        headers,
        body,
    });
    let reply = state.script.lock().unwrap().pop_front();
    match reply {
        None => (StatusCode::IM_A_TEAPOT, "script exhausted").into_response(),
        Some(Reply::Json(status, body, headers)) => {
            let mut response =
                (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Some(Reply::Sse(events)) => sse(events, None),
        Some(Reply::GatedSse(events, gate)) => sse(events, Some(gate)),
        Some(Reply::GatedJson(body, gate)) => {
            gate.notified().await;
            axum::Json(body).into_response()
        }
    }
}

fn sse(events: Vec<String>, gate: Option<Arc<Notify>>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if i == 1 {
                if let Some(gate) = &gate {
                    gate.notified().await;
                }
            }
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Anthropic's streamed answer: `message_start` with `input`, deltas ending at `output`.
pub fn anthropic_events(
    model: &str,
    input: u64,
    cache_read: u64,
    cache_write: u64,
    output: u64,
) -> Vec<String> {
    let start = serde_json::json!({"type":"message_start","message":{"id":"msg_1","type":"message",
        "role":"assistant","model":model,"content":[],"stop_reason":null,
        "usage":{"input_tokens":input,"cache_read_input_tokens":cache_read,
                 "cache_creation_input_tokens":cache_write,"output_tokens":1}}});
    let text = serde_json::json!({"type":"content_block_delta","index":0,
        "delta":{"type":"text_delta","text":"hello, usage"}});
    let half = serde_json::json!({"type":"message_delta","delta":{"stop_reason":null},
        "usage":{"output_tokens":output / 2}});
    let done = serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},
        "usage":{"output_tokens":output}});
    vec![
        format!("event: message_start\ndata: {start}\n\n"),
        format!("event: content_block_delta\ndata: {text}\n\n"),
        format!("event: message_delta\ndata: {half}\n\n"),
        format!("event: message_delta\ndata: {done}\n\n"),
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned(),
    ]
}

/// Anthropic's non-streamed answer.
pub fn anthropic_json(model: &str, input: u64, output: u64) -> Reply {
    Reply::Json(
        200,
        serde_json::json!({"id":"msg_1","type":"message","role":"assistant","model":model,
            "content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn",
            "usage":{"input_tokens":input,"output_tokens":output,
                     "cache_read_input_tokens":0,"cache_creation_input_tokens":0}}),
        vec![],
    )
}

/// Collects records.
#[derive(Debug, Default)]
pub struct Records(pub Mutex<Vec<RequestRecord>>);

impl UsageSink for Records {
    fn record(&self, record: RequestRecord) {
        self.0.lock().unwrap().push(record);
    }
}

impl Records {
    pub fn all(&self) -> Vec<RequestRecord> {
        self.0.lock().unwrap().clone()
    }
}

/// A gateway in front of fakes, served on loopback.
#[derive(Debug)]
pub struct Setup {
    pub gateway: Arc<Gateway>,
    pub url: String,
    pub anthropic: Fake,
    pub openai: Fake,
    pub records: Arc<Records>,
    pub client: reqwest::Client,
}

/// A gateway with fast retries; `tweak` adjusts the config.
pub async fn setup(script: Vec<Reply>, tweak: impl FnOnce(&mut GatewayConfig)) -> Setup {
    let anthropic = Fake::start(script).await;
    let openai = Fake::start(Vec::new()).await;
    let mut config =
        GatewayConfig::new(Upstream::new(&anthropic.url, SecretKey::new(ANTHROPIC_KEY)));
    config.openai = Some(Upstream::new(&openai.url, SecretKey::new(OPENAI_KEY)));
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
    };
    tweak(&mut config);
    let records = Arc::new(Records::default());
    let gateway = Gateway::new(config, Arc::clone(&records) as Arc<dyn UsageSink>).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::clone(&gateway);
    tokio::spawn(async move { served.serve_listener(listener).await });
    Setup {
        gateway,
        url,
        anthropic,
        openai,
        records,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl Setup {
    /// `POST {path}` with the Anthropic headers and `token` as `x-api-key`.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .header("x-api-key", token)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }
}
