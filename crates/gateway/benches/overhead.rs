//! Gateway overhead per request: p50/p99 latency of a small non-streamed and a streamed
//! (5-event SSE) Messages request sent through the gateway against the same request sent
//! straight to the fake upstream, interleaved in the same run, printed as differences and
//! ratios. Target: added p50 ≤ 1 ms.
//!
//! Run: `cargo bench -p conductor-gateway --bench overhead`; `CONDUCTOR_BENCH_REQUESTS`
//! (default 2000) sets the requests per series.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench binary: a failed unwrap is a failed run

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use conductor_gateway::{
    Gateway, GatewayConfig, Provider, RequestRecord, SecretKey, Upstream, UsageSink,
};
use conductor_types::{Budget, TaskId};

const JSON: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":3,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}"#;

const SSE: [&str; 5] = [
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello\"}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":2}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

struct Discard;

impl UsageSink for Discard {
    fn record(&self, _: RequestRecord) {}
}

async fn fake(body: Bytes) -> Response {
    if body.windows(13).any(|w| w == b"\"stream\":true") {
        let chunks = SSE.map(|event| Ok::<_, Infallible>(Bytes::from_static(event.as_bytes())));
        let stream = futures_util::stream::iter(chunks);
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    ([("content-type", "application/json")], JSON).into_response()
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn once(client: &reqwest::Client, url: &str, token: &str, body: &'static str) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("x-api-key", token)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(name: &str, mut direct: Vec<Duration>, mut gateway: Vec<Duration>) {
    direct.sort_unstable();
    gateway.sort_unstable();
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let d = percentile(&direct, p);
        let g = percentile(&gateway, p);
        let added = g.as_secs_f64() - d.as_secs_f64();
        println!(
            "{name:<12} {label}: direct {:>8.1} µs  gateway {:>8.1} µs  added {:>+8.1} µs  ratio {:.2}",
            d.as_secs_f64() * 1e6,
            g.as_secs_f64() * 1e6,
            added * 1e6,
            g.as_secs_f64() / d.as_secs_f64(),
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let requests: usize = std::env::var("CONDUCTOR_BENCH_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let upstream = serve(axum::Router::new().route("/v1/messages", post(fake))).await;
    let config = GatewayConfig::new(Upstream::new(
        format!("{upstream}/v1"),
        SecretKey::new("sk-bench"),
    ));
    let gateway = Gateway::new(config, Arc::new(Discard)).unwrap();
    let grant = gateway.grant(
        TaskId::random(),
        None,
        Budget {
            tokens: Some(u64::MAX / 2),
            usd: None,
        },
        Provider::Anthropic,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let via = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::clone(&gateway);
    tokio::spawn(async move { served.serve_listener(listener).await });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = grant.token.expose();
    let plain = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]}"#;
    let streamed = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    println!(
        "gateway overhead: {requests} requests per series, interleaved, one keep-alive client"
    );
    for (name, body) in [("plain", plain), ("streamed", streamed)] {
        let direct_url = format!("{upstream}/v1/messages");
        let gateway_url = format!("{via}/v1/messages");
        for _ in 0..200 {
            once(&client, &direct_url, "sk-bench", body).await;
            once(&client, &gateway_url, token, body).await;
        }
        let mut direct = Vec::with_capacity(requests);
        let mut through = Vec::with_capacity(requests);
        for i in 0..requests {
            if i % 2 == 0 {
                direct.push(once(&client, &direct_url, "sk-bench", body).await);
                through.push(once(&client, &gateway_url, token, body).await);
            } else {
                through.push(once(&client, &gateway_url, token, body).await);
                direct.push(once(&client, &direct_url, "sk-bench", body).await);
            }
        }
        report(name, direct, through);
    }
    let usage = gateway.report(grant.task).unwrap().usage;
    println!(
        "counted: {} requests, {} input and {} output tokens",
        usage.requests, usage.input_tokens, usage.output_tokens
    );
}
