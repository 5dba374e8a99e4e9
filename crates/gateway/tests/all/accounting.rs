//! Usage read from streamed and plain answers, per task and per session, priced.

use std::sync::Arc;
use std::time::Duration;

use conductor_gateway::Provider;
use conductor_types::{Budget, TaskId, Usage};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::Notify;

use crate::fake::{anthropic_events, anthropic_json, setup, Reply, OPENAI_KEY};

fn usage(input: u64, output: u64, read: u64, write: u64, requests: u64, cost: f64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_input_tokens: read,
        cache_creation_input_tokens: write,
        requests,
        cost_usd: cost,
    }
}

fn assert_usage(actual: Usage, expected: Usage) {
    let cost = (actual.cost_usd - expected.cost_usd).abs();
    assert!(cost < 1e-12, "{actual:?} != {expected:?}");
    assert_eq!(
        Usage {
            cost_usd: 0.0,
            ..actual
        },
        Usage {
            cost_usd: 0.0,
            ..expected
        }
    );
}

#[tokio::test]
async fn streamed_usage_keeps_the_last_cumulative_value_and_the_body_is_untouched() {
    let events = anthropic_events("claude-sonnet-4-5-20250929", 25, 1000, 70, 40);
    let s = setup(
        vec![
            Reply::Sse(events.clone()),
            anthropic_json("claude-sonnet-4-5", 5, 5),
        ],
        |_| {},
    )
    .await;
    let task = TaskId::random();
    let grant = s.gateway.grant(
        task,
        Some("sess-1".into()),
        Budget::default(),
        Provider::Anthropic,
    );
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[]});
    let response = s
        .post("/v1/messages", grant.token.expose(), body.clone())
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.text().await.unwrap(), events.concat());
    let second = s.post("/v1/messages", grant.token.expose(), body).await;
    assert_eq!(second.status(), 200);
    second.bytes().await.unwrap();

    // sonnet 4.5: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million.
    let first_cost = (25.0 * 3.0 + 40.0 * 15.0 + 1000.0 * 0.3 + 70.0 * 3.75) / 1e6;
    let second_cost = (5.0 * 3.0 + 5.0 * 15.0) / 1e6;
    let expected = usage(30, 45, 1000, 70, 2, first_cost + second_cost);
    let report = s.gateway.report(task).unwrap();
    assert_usage(report.usage, expected);
    assert!(!report.budget_exceeded && !report.upstream_unavailable && !report.upstream_rejected);
    assert!(report.default_priced.is_empty());
    assert_usage(s.gateway.session_usage("sess-1").unwrap(), expected);

    let records = s.records.all();
    assert_eq!(records.len(), 2);
    let first = &records[0];
    assert_eq!(first.task, task);
    assert_eq!(first.session.as_deref(), Some("sess-1"));
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.model, "claude-sonnet-4-5-20250929");
    assert_eq!(first.status, 200);
    assert!(!first.default_price);
    assert_usage(first.usage, usage(25, 40, 1000, 70, 1, first_cost));
    assert_eq!(
        (first.request_body.as_ref(), first.response_body.as_ref()),
        (None, None)
    );
}

#[tokio::test]
async fn sessions_add_up_their_tasks_and_unknown_models_are_priced_by_default() {
    let replies = vec![
        anthropic_json("mystery-model", 1_000_000, 0),
        anthropic_json("claude-haiku-4-5", 10, 10),
    ];
    let s = setup(replies, |_| {}).await;
    let (a, b) = (TaskId::random(), TaskId::random());
    let ga = s
        .gateway
        .grant(a, Some("s".into()), Budget::default(), Provider::Anthropic);
    let gb = s
        .gateway
        .grant(b, Some("s".into()), Budget::default(), Provider::Anthropic);
    let body = json!({"model":"x","max_tokens":10,"messages":[]});
    s.post("/v1/messages", ga.token.expose(), body.clone())
        .await
        .bytes()
        .await
        .unwrap();
    s.post("/v1/messages", gb.token.expose(), body)
        .await
        .bytes()
        .await
        .unwrap();
    let report = s.gateway.report(a).unwrap();
    assert_eq!(report.default_priced, vec!["mystery-model".to_owned()]);
    assert!(
        (report.usage.cost_usd - 15.0).abs() < 1e-9,
        "default input price is $15/M"
    );
    assert!(s.records.all()[0].default_price);
    let session = s.gateway.session_usage("s").unwrap();
    assert_eq!(session.input_tokens, 1_000_010);
    assert_eq!(session.requests, 2);
    assert!((session.cost_usd - (15.0 + 10.0 * 1.0 / 1e6 + 10.0 * 5.0 / 1e6)).abs() < 1e-9);
}

#[tokio::test]
async fn chunks_reach_the_client_before_the_upstream_finishes() {
    let gate = Arc::new(Notify::new());
    let events = anthropic_events("claude-sonnet-4-5", 10, 0, 0, 20);
    let s = setup(
        vec![Reply::GatedSse(events.clone(), Arc::clone(&gate))],
        |_| {},
    )
    .await;
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, Budget::default(), Provider::Anthropic);
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[]});
    let response = s.post("/v1/messages", grant.token.expose(), body).await;
    let mut stream = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the first event arrives while the upstream is still open")
        .unwrap()
        .unwrap();
    assert_eq!(first, events[0].as_bytes());
    assert_eq!(
        s.gateway.report(task).unwrap().usage.requests,
        0,
        "not settled yet"
    );
    gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, events[1..].concat().as_bytes());
    let report = s.gateway.report(task).unwrap();
    assert_eq!(
        (report.usage.input_tokens, report.usage.output_tokens),
        (10, 20)
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_charged_what_the_request_could_cost() {
    let gate = Arc::new(Notify::new());
    let events = anthropic_events("claude-sonnet-4-5", 10, 0, 0, 20);
    let s = setup(vec![Reply::GatedSse(events, Arc::clone(&gate))], |_| {}).await;
    let task = TaskId::random();
    let grant = s.gateway.grant(
        task,
        None,
        Budget {
            tokens: Some(1000),
            usd: None,
        },
        Provider::Anthropic,
    );
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":500,"stream":true,"messages":[]});
    let response = s.post("/v1/messages", grant.token.expose(), body).await;
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    gate.notify_one();
    let report = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let report = s.gateway.report(task).unwrap();
            if report.usage.requests == 1 {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("settled after the client left");
    // The final usage never came: the whole reserved output is charged, and the input seen
    // (or the body's estimate, if larger) — hanging up early never spends less.
    assert_eq!(report.usage.output_tokens, 500);
    assert!(report.usage.input_tokens >= 10, "{:?}", report.usage);
    let used = report.usage.budget_tokens();
    let next = json!({"model":"claude-sonnet-4-5","max_tokens":2000,"messages":[]});
    s.anthropic.push(anthropic_json("claude-sonnet-4-5", 1, 1));
    s.post("/v1/messages", grant.token.expose(), next)
        .await
        .bytes()
        .await
        .unwrap();
    let seen = s.anthropic.seen();
    let reserved_again = seen[1].json()["max_tokens"].as_u64().unwrap();
    assert_eq!(
        reserved_again,
        1000 - used,
        "the next request gets what is left after the charge"
    );
}

#[tokio::test]
async fn openai_responses_stream_and_plain_with_bearer_keys() {
    let s = setup(vec![], |_| {}).await;
    let completed = json!({"type":"response.completed","response":{"id":"r1","model":"gpt-5-codex",
        "usage":{"input_tokens":1200,"input_tokens_details":{"cached_tokens":1000},
                 "output_tokens":30,"output_tokens_details":{"reasoning_tokens":10},"total_tokens":1230}}});
    s.openai.push(Reply::Sse(vec![
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n".into(),
        format!("event: response.completed\ndata: {completed}\n\n"),
    ]));
    s.openai.push(Reply::Json(
        200,
        json!({"id":"r2","model":"gpt-5-mini","object":"response",
        "usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":0},"output_tokens":5}}),
        vec![],
    ));
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, Budget::default(), Provider::OpenAi);
    for body in [
        json!({"model":"gpt-5-codex","stream":true,"input":"hi"}),
        json!({"model":"gpt-5-mini","input":"hi"}),
    ] {
        let response = s
            .client
            .post(format!("{}/v1/responses", s.url))
            .bearer_auth(grant.token.expose())
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let seen = s.openai.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri, "/v1/responses");
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {OPENAI_KEY}")
    );
    assert!(seen[0].headers.get("x-api-key").is_none());
    let cost = (200.0 * 1.25 + 1000.0 * 0.125 + 30.0 * 10.0 + 100.0 * 0.25 + 5.0 * 2.0) / 1e6;
    assert_usage(
        s.gateway.report(task).unwrap().usage,
        usage(300, 35, 1000, 0, 2, cost),
    );
    assert!(s.anthropic.seen().is_empty());
}

#[tokio::test]
async fn bodies_are_recorded_only_when_asked() {
    let s = setup(vec![anthropic_json("claude-haiku-4-5", 1, 1)], |c| {
        c.log_bodies = true
    })
    .await;
    let grant = s.gateway.grant(
        TaskId::random(),
        None,
        Budget::default(),
        Provider::Anthropic,
    );
    let body = json!({"model":"claude-haiku-4-5","max_tokens":5,"messages":[]});
    s.post("/v1/messages", grant.token.expose(), body.clone())
        .await
        .bytes()
        .await
        .unwrap();
    let record = s.records.all().remove(0);
    assert_eq!(record.request_body, Some(body.to_string()));
    assert!(record.response_body.unwrap().contains("\"text\":\"hi\""));
}
