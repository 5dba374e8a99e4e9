//! The upstream misbehaving: retries honouring retry-after, errors passed through and
//! classified, an upstream that is down, rate limits that queue.

use std::time::{Duration, Instant};

use conductor_gateway::{Provider, RateLimits};
use conductor_types::{Budget, TaskId};
use serde_json::json;

use crate::fake::{anthropic_json, setup, Reply};

fn overloaded(status: u16, retry_after: Option<&str>) -> Reply {
    let headers = retry_after
        .map(|v| vec![("retry-after", v.to_owned())])
        .unwrap_or_default();
    Reply::Json(
        status,
        json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        headers,
    )
}

fn body() -> serde_json::Value {
    json!({"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]})
}

#[tokio::test]
async fn a_429_and_a_529_are_retried_honouring_retry_after() {
    let script = vec![
        overloaded(429, Some("1")),
        overloaded(529, None),
        anthropic_json("claude-sonnet-4-5", 3, 4),
    ];
    let s = setup(script, |_| {}).await;
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, Budget::default(), Provider::Anthropic);
    let started = Instant::now();
    let response = s.post("/v1/messages", grant.token.expose(), body()).await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "retry-after: 1 was honoured"
    );
    assert_eq!(s.anthropic.seen().len(), 3);
    let report = s.gateway.report(task).unwrap();
    assert!(!report.upstream_unavailable);
    assert_eq!(report.usage.requests, 1);
    assert_eq!(s.records.all()[0].retries, 2);
    let mut metrics = String::new();
    s.gateway.render_metrics(&mut metrics);
    assert!(
        metrics
            .lines()
            .any(|l| l == "conductor_llm_upstream_retries_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_upstream_that_stays_overloaded_passes_its_error_through() {
    let script = vec![
        overloaded(529, Some("0")),
        overloaded(529, Some("0")),
        overloaded(529, Some("0")),
    ];
    let s = setup(script, |_| {}).await;
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, Budget::default(), Provider::Anthropic);
    let response = s.post("/v1/messages", grant.token.expose(), body()).await;
    assert_eq!(response.status(), 529);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert_eq!(
        s.anthropic.seen().len(),
        3,
        "max_attempts bounds the retries"
    );
    let report = s.gateway.report(task).unwrap();
    assert!(report.upstream_unavailable && !report.upstream_rejected);
}

#[tokio::test]
async fn a_rejected_key_is_passed_through_once_and_reported() {
    let reply = Reply::Json(
        401,
        json!({"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}),
        vec![],
    );
    let s = setup(vec![reply], |_| {}).await;
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, Budget::default(), Provider::Anthropic);
    let response = s.post("/v1/messages", grant.token.expose(), body()).await;
    assert_eq!(response.status(), 401);
    response.bytes().await.unwrap();
    assert_eq!(s.anthropic.seen().len(), 1);
    let report = s.gateway.report(task).unwrap();
    assert!(report.upstream_rejected && !report.upstream_unavailable);
}

#[tokio::test]
async fn an_upstream_that_is_down_answers_502_after_the_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let s = setup(vec![], |c| {
        c.anthropic.url = format!("http://127.0.0.1:{port}/v1")
    })
    .await;
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, Budget::default(), Provider::Anthropic);
    let response = s.post("/v1/messages", grant.token.expose(), body()).await;
    assert_eq!(response.status(), 502);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "api_error");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("upstream unavailable: "), "{message}");
    let report = s.gateway.report(task).unwrap();
    assert!(report.upstream_unavailable);
    assert_eq!(report.usage.requests, 0);
    assert_eq!(s.records.all()[0].retries, 2);
}

#[tokio::test]
async fn requests_over_the_rate_limit_wait_instead_of_failing() {
    let s = setup(vec![anthropic_json("claude-sonnet-4-5", 1, 1)], |c| {
        c.anthropic.limits = RateLimits {
            rpm: Some(1),
            tpm: None,
        };
    })
    .await;
    let grant = s.gateway.grant(
        TaskId::random(),
        None,
        Budget::default(),
        Provider::Anthropic,
    );
    let first = s.post("/v1/messages", grant.token.expose(), body()).await;
    assert_eq!(first.status(), 200);
    first.bytes().await.unwrap();
    let second = s.post("/v1/messages", grant.token.expose(), body());
    let waited = tokio::time::timeout(Duration::from_millis(300), second).await;
    assert!(
        waited.is_err(),
        "the second request of the minute is still queued"
    );
    assert_eq!(s.anthropic.seen().len(), 1);
}
