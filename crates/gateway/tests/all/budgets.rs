//! Budgets that hold: capped `max_tokens`, local refusals the CLI does not retry, reservations
//! shared by concurrent requests.

use std::sync::Arc;

use conductor_gateway::Provider;
use conductor_types::{Budget, TaskId};
use serde_json::json;
use tokio::sync::Notify;

use crate::fake::{anthropic_json, setup, Reply};

fn tokens(n: u64) -> Budget {
    Budget {
        tokens: Some(n),
        usd: None,
    }
}

#[tokio::test]
async fn max_tokens_is_capped_then_the_spent_budget_refuses_without_forwarding() {
    let s = setup(vec![anthropic_json("claude-sonnet-4-5", 60, 50)], |_| {}).await;
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, tokens(100), Provider::Anthropic);
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":32000,"messages":[]});
    let first = s
        .post("/v1/messages", grant.token.expose(), body.clone())
        .await;
    assert_eq!(first.status(), 200);
    first.bytes().await.unwrap();
    assert_eq!(s.anthropic.seen()[0].json()["max_tokens"], 100);

    let refused = s.post("/v1/messages", grant.token.expose(), body).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()["x-should-retry"], "false");
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        error,
        json!({"type":"error","error":{"type":"invalid_request_error",
            "message":"budget exceeded: 110 of the task's 100 tokens used"}})
    );
    assert_eq!(
        s.anthropic.seen().len(),
        1,
        "the fake saw no request past the budget"
    );
    let report = s.gateway.report(task).unwrap();
    assert!(report.budget_exceeded);
    assert_eq!(report.usage.budget_tokens(), 110);
    assert_eq!(report.usage.requests, 1);
    let records = s.records.all();
    assert_eq!(records.len(), 2);
    assert_eq!((records[1].status, records[1].usage.requests), (400, 0));
}

#[tokio::test]
async fn a_thinking_budget_above_what_is_left_is_lowered_and_below_its_minimum_refused() {
    let s = setup(vec![], |_| {}).await;
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, tokens(1000), Provider::Anthropic);
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":16000,
        "thinking":{"type":"enabled","budget_tokens":8000},"messages":[]});
    let refused = s.post("/v1/messages", grant.token.expose(), body).await;
    assert_eq!(refused.status(), 400);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        "budget exceeded: 1000 output tokens left, the request needs at least 1025"
    );
    assert!(s.anthropic.seen().is_empty());
    assert!(s.gateway.report(task).unwrap().budget_exceeded);
}

#[tokio::test]
async fn usd_budgets_count_cache_reads() {
    let reply = Reply::Json(
        200,
        json!({"model":"claude-sonnet-4-5","usage":{"input_tokens":0,"output_tokens":0,
            "cache_read_input_tokens":4_000_000,"cache_creation_input_tokens":0}}),
        vec![],
    );
    let s = setup(vec![reply], |_| {}).await;
    let task = TaskId::random();
    let budget = Budget {
        tokens: Some(1_000_000),
        usd: Some(1.0),
    };
    let grant = s.gateway.grant(task, None, budget, Provider::Anthropic);
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":100,"messages":[]});
    s.post("/v1/messages", grant.token.expose(), body.clone())
        .await
        .bytes()
        .await
        .unwrap();
    let refused = s.post("/v1/messages", grant.token.expose(), body).await;
    assert_eq!(
        refused.status(),
        400,
        "$1.20 of cache reads spent a $1 budget"
    );
    let report = s.gateway.report(task).unwrap();
    assert!(report.budget_exceeded);
    assert_eq!(report.usage.budget_tokens(), 0);
}

#[tokio::test]
async fn a_budgeted_tasks_requests_go_upstream_one_at_a_time() {
    // Each request's input is unknown until it is answered: had both gone at once, a budget
    // could be overshot by every request in flight. The second waits for the first to settle.
    let gate = Arc::new(Notify::new());
    let done = json!({"model":"claude-sonnet-4-5","usage":{"input_tokens":5,"output_tokens":5}});
    let script = vec![
        Reply::GatedJson(done.clone(), Arc::clone(&gate)),
        Reply::Json(200, done, Vec::new()),
    ];
    let s = setup(script, |_| {}).await;
    let grant = s
        .gateway
        .grant(TaskId::random(), None, tokens(100), Provider::Anthropic);
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":80,"messages":[]});
    let first = s.post("/v1/messages", grant.token.expose(), body.clone());
    let second = s.post("/v1/messages", grant.token.expose(), body);
    let opener = async {
        while s.anthropic.seen().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The second is held while the first is in flight.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            s.anthropic.seen().len(),
            1,
            "both requests went upstream at once"
        );
        gate.notify_waiters();
    };
    let (a, b, ()) = tokio::join!(first, second, opener);
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let caps: Vec<u64> = s
        .anthropic
        .seen()
        .iter()
        .map(|seen| seen.json()["max_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(
        caps,
        [80, 80],
        "the second got what the first left: 90 tokens"
    );
}

#[tokio::test]
async fn a_task_without_a_budget_sends_requests_at_once() {
    let gate = Arc::new(Notify::new());
    let done = json!({"model":"claude-sonnet-4-5","usage":{"input_tokens":5,"output_tokens":5}});
    let script = vec![
        Reply::GatedJson(done.clone(), Arc::clone(&gate)),
        Reply::GatedJson(done, Arc::clone(&gate)),
    ];
    let s = setup(script, |_| {}).await;
    let unbounded = conductor_types::Budget::default();
    let grant = s
        .gateway
        .grant(TaskId::random(), None, unbounded, Provider::Anthropic);
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":80,"messages":[]});
    let first = s.post("/v1/messages", grant.token.expose(), body.clone());
    let second = s.post("/v1/messages", grant.token.expose(), body);
    let opener = async {
        while s.anthropic.seen().len() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        gate.notify_waiters();
    };
    let (a, b, ()) = tokio::join!(first, second, opener);
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
}
