//! The real key never leaves the gateway except towards the upstream.

use conductor_gateway::Provider;
use conductor_types::{Budget, TaskId};
use serde_json::json;

use crate::fake::{anthropic_events, setup, Reply, ANTHROPIC_KEY, OPENAI_KEY};

#[tokio::test]
async fn the_key_is_not_in_answers_records_metrics_or_debug_output() {
    let script = vec![
        Reply::Sse(anthropic_events("claude-opus-4-5", 10, 0, 0, 10)),
        Reply::Json(
            401,
            json!({"type":"error","error":{"type":"authentication_error","message":"no"}}),
            vec![],
        ),
    ];
    let s = setup(script, |c| c.log_bodies = true).await;
    let task = TaskId::random();
    let grant = s.gateway.grant(
        task,
        None,
        Budget {
            tokens: Some(25),
            usd: None,
        },
        Provider::Anthropic,
    );
    let body = json!({"model":"claude-opus-4-5","max_tokens":10,"stream":true,"messages":[]});
    let mut answers = String::new();
    for path in ["/v1/messages", "/v1/messages", "/v1/telemetry"] {
        let response = s.post(path, grant.token.expose(), body.clone()).await;
        answers.push_str(&format!("{:?}", response.headers()));
        answers.push_str(&response.text().await.unwrap());
    }
    let mut metrics = String::new();
    s.gateway.render_metrics(&mut metrics);
    let everything = format!(
        "{answers}\n{metrics}\n{:?}\n{:?}\n{:?}\n{:?}",
        s.records.all(),
        s.gateway,
        s.gateway.report(task),
        grant,
    );
    for key in [ANTHROPIC_KEY, OPENAI_KEY] {
        assert!(!everything.contains(key), "the key leaked:\n{everything}");
    }
    assert!(!format!("{grant:?}").contains(grant.token.expose()));
    assert!(
        metrics
            .contains("conductor_llm_tokens_total{model=\"claude-opus-4-5\",kind=\"output\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("conductor_llm_requests_total{status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("conductor_llm_requests_total{status=\"401\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("conductor_llm_requests_total{status=\"404\"} 1"),
        "{metrics}"
    );
}
