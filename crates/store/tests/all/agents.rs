//! What agent tasks keep in the store: usage, sessions and the gateway's audit records.

use std::collections::BTreeMap;

use conductor_core::{validate_request, Store};
use conductor_types::{
    AgentKind, AgentSpec, LlmRequest, Session, SessionId, TaskId, TaskRequest, TaskSpec, TaskType,
    Timestamp, Usage,
};

use crate::open;

fn agent_spec(session: &SessionId) -> TaskSpec {
    let request = TaskRequest {
        task_type: Some(TaskType::Agent),
        agent: Some(AgentSpec {
            kind: AgentKind::ClaudeCode,
            prompt: "add a test".into(),
            model: None,
            max_turns: Some(3),
            allowed_tools: None,
            permission_mode: None,
            system_prompt: None,
        }),
        ..TaskRequest::default()
    };
    let mut spec = validate_request(request, &["claude-code"]).unwrap().spec;
    spec.session_id = Some(session.clone());
    spec
}

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_input_tokens: 7,
        cache_creation_input_tokens: 3,
        requests: 2,
        cost_usd: 0.25,
    }
}

#[tokio::test]
async fn a_session_lists_its_turns_and_sums_their_usage() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let id = SessionId::random();
    let session = Session {
        id: id.clone(),
        kind: AgentKind::ClaudeCode,
        workspace: "session-ws".into(),
        cli_session: None,
        turns: Vec::new(),
        usage: Usage::default(),
        created_at: Timestamp(9),
    };
    store.create_session(&session).await.unwrap();
    assert_eq!(store.get_session(&id).await.unwrap(), Some(session.clone()));
    assert_eq!(store.get_session(&SessionId::random()).await.unwrap(), None);

    let (first, second, other) = (TaskId::random(), TaskId::random(), TaskId::random());
    for (task, session_id) in [(first, &id), (other, &SessionId::random()), (second, &id)] {
        let spec = agent_spec(session_id);
        store
            .create_task(task, &spec, &BTreeMap::new(), Timestamp(10))
            .await
            .unwrap();
    }
    store.record_usage(first, &usage(100, 10)).await.unwrap();
    store.record_usage(first, &usage(200, 20)).await.unwrap(); // replaces, never adds
    store.record_usage(second, &usage(5, 1)).await.unwrap();
    store.set_cli_session(&id, "cli-123").await.unwrap();

    let read = store.get_session(&id).await.unwrap().unwrap();
    assert_eq!(read.turns, [first, second]);
    assert_eq!(read.cli_session.as_deref(), Some("cli-123"));
    assert_eq!(read.usage.input_tokens, 205);
    assert_eq!(read.usage.output_tokens, 21);
    assert_eq!(read.usage.requests, 4);
    assert_eq!(
        store.get_task(first).await.unwrap().usage,
        Some(usage(200, 20))
    );
    assert!(store
        .record_usage(TaskId::random(), &usage(1, 1))
        .await
        .is_err());
    store.close().await;
    let reopened = open(&dir).await;
    assert_eq!(
        reopened
            .get_session(&id)
            .await
            .unwrap()
            .unwrap()
            .turns
            .len(),
        2
    );
}

#[tokio::test]
async fn llm_requests_are_kept_in_order_per_task() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let task = TaskId::random();
    let record = |model: &str, status: u16| LlmRequest {
        task_id: task,
        session_id: None,
        model: model.into(),
        status,
        usage: Usage {
            requests: 1,
            ..usage(11, 4)
        },
        latency_ms: 12,
        at: Timestamp(1_000),
    };
    store
        .record_llm_request(&record("claude-a", 200))
        .await
        .unwrap();
    store
        .record_llm_request(&record("claude-b", 429))
        .await
        .unwrap();
    let read = store.llm_requests(task).await.unwrap();
    assert_eq!(read, [record("claude-a", 200), record("claude-b", 429)]);
    assert!(store
        .llm_requests(TaskId::random())
        .await
        .unwrap()
        .is_empty());
}
