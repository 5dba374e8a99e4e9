//! The HTTP API: auth, validation errors, task lifecycle endpoints.

use axum::http::{Method, StatusCode};
use conductor_types::{NetworkPolicy, Task, TaskPage, TaskStatus, TokenInfo};

use crate::support::{error_of, Options, TestApp};

#[tokio::test]
async fn probes_need_no_token_and_everything_else_does() {
    let app = TestApp::new().await;
    for path in ["/health", "/ready", "/live"] {
        let (status, text) = app.send_as(None, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
    }
    let (_, health) = app.send_as(None, Method::GET, "/health", None).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&health).unwrap(),
        serde_json::json!({"status": "ok", "checks": {"database": "ok", "executor:host": "ok"}})
    );
    let (status, text) = app.send_as(None, Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&text).0, "unauthorized");
    let (status, text) = app
        .send_as(
            Some("cdt_wrong"),
            Method::POST,
            "/tasks",
            Some(r#"{"commands":["x"]}"#),
        )
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::UNAUTHORIZED,
            ("unauthorized".into(), "invalid or revoked token".into())
        )
    );
}

#[tokio::test]
async fn submit_is_committed_and_runs_to_success() {
    let app = TestApp::new().await;
    let task = app
        .submit(r#"{"description": "hello", "commands": ["echo hello world", "exit 0"], "labels": {"team": "infra"}}"#)
        .await;
    assert_eq!(task.state.status, TaskStatus::Queued);
    assert_eq!(task.spec.environment, "host");
    // Committed before the answer: the store has it.
    assert_eq!(app.store.get_task(task.id).await.unwrap().id, task.id);
    let done = app.wait_for(task.id, TaskStatus::Succeeded).await;
    assert_eq!(done.state.exit_code, Some(0));
    assert_eq!(done.state.attempt, 1);
    assert!(done.state.started_at.is_some() && done.state.finished_at.is_some());
    let exits: Vec<_> = done
        .results
        .iter()
        .map(|r| (r.index, r.exit_code))
        .collect();
    assert_eq!(exits, vec![(0, Some(0)), (1, Some(0))]);
    let (status, logs) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/logs", task.id),
            None,
        )
        .await;
    assert_eq!((status, logs.as_str()), (StatusCode::OK, "hello world\n"));
}

/// Networking is off unless asked for: a task that names no network gets `none`, or the
/// configured default of its environment (else the server's); one it names is kept.
#[tokio::test]
async fn tasks_default_to_network_none_unless_configured() {
    let app = TestApp::new().await;
    let task = app.submit(r#"{"commands": ["true"]}"#).await;
    assert_eq!(task.spec.network, NetworkPolicy::None);
    app.wait_for(task.id, TaskStatus::Succeeded).await;
    let sent: Vec<NetworkPolicy> = app
        .executor
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.network.clone())
        .collect();
    assert_eq!(sent, vec![NetworkPolicy::None]);

    let app = TestApp::with(Options {
        default_network: conductor_server::DefaultNetwork {
            all: NetworkPolicy::Full,
            environments: [("host".to_owned(), NetworkPolicy::Host)].into(),
        },
        ..Options::default()
    })
    .await;
    let task = app.submit(r#"{"commands": ["true"]}"#).await;
    assert_eq!(task.spec.network, NetworkPolicy::Host);
    let task = app
        .submit(r#"{"commands": ["true"], "network": "none"}"#)
        .await;
    assert_eq!(task.spec.network, NetworkPolicy::None);
}

#[tokio::test]
async fn seed_001_requests_are_accepted_on_the_alias_and_environments_are_checked() {
    let app = TestApp::new().await;
    let seed = r#"{
        "task_type": "isolated_execution",
        "description": "Run Python tests",
        "environment": "python-dev",
        "commands": ["cd /workspace/src", "python -m pytest tests/"]
    }"#;
    let (status, text) = app.send(Method::POST, "/tasks", Some(seed)).await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            (
                "invalid_field".into(),
                "environment: unknown environment \"python-dev\": the environments that exist are \"host\" (the server offers every environment built on it, also one built while it runs: `conductor env build NAME`; or define it in the request's `environments`)".into()
            )
        )
    );
    let host = seed.replace("python-dev", "host");
    let (status, text) = app.send(Method::POST, "/tasks", Some(&host)).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let task: Task = serde_json::from_str(&text).unwrap();
    assert_eq!(task.spec.commands.len(), 2);
}

#[tokio::test]
async fn bad_input_gets_a_precise_error() {
    let app = TestApp::with(Options {
        body_limit: 256,
        ..Options::default()
    })
    .await;
    let big = format!(r#"{{"commands": ["{}"]}}"#, "x".repeat(300));
    let cases: Vec<(&str, StatusCode, &str, &str)> = vec![
        ("{", StatusCode::BAD_REQUEST, "malformed_json", "malformed JSON: EOF while parsing an object at line 1 column 1"),
        (r#"{"commands": ["ls"], "comands": 1}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", ""),
        (r#"{"commands": []}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "commands: must list at least one command"),
        (r#"{"commands": ["ls"], "resources": {"memory": "-5g"}}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "resources.memory: size \"-5g\" is negative: sizes must be zero or more at line 1 column 51"),
        (r#"{"commands": ["ls"], "task_type": "agent"}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "commands: an agent task runs an agent, not commands: give `agent.prompt` (or `description` for the seed's task types) and no `commands`"),
        (r#"{"commands": ["ls"], "agent": {"kind": "codex", "prompt": "x"}}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "agent: is only for agent tasks (task_type \"agent\", \"code_review\", \"refactor\", \"test_generation\", \"analysis\" or \"generic\")"),
        (r#"{"commands": ["ls"], "network": "localhost"}"#, StatusCode::UNPROCESSABLE_ENTITY, "not_supported", "network: network policy localhost is not supported yet by the fake executor (environment \"host\")"),
        (r#"{"commands": ["ls"], "timeout": "soon"}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", ""),
        (&big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is larger than the limit of 256 bytes"),
    ];
    for (body, status, code, message) in cases {
        let (got_status, text) = app.send(Method::POST, "/api/v1/tasks", Some(body)).await;
        let (got_code, got_message) = error_of(&text);
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{body}: {text}"
        );
        if !message.is_empty() {
            assert_eq!(got_message, message, "{body}");
        }
    }
    let (status, text) = app.send(Method::GET, "/api/v1/tasks/nope", None).await;
    assert_eq!(
        (status, error_of(&text).0.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_id")
    );
    let missing = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let (status, text) = app
        .send(Method::GET, &format!("/api/v1/tasks/{missing}"), None)
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::NOT_FOUND,
            ("not_found".into(), format!("task {missing} not found"))
        )
    );
    let (status, text) = app
        .send(Method::GET, "/api/v1/tasks?status=done", None)
        .await;
    assert_eq!(
        (status, error_of(&text).0.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    let (status, text) = app.send(Method::GET, "/api/v2/nothing", None).await;
    assert_eq!(
        (status, error_of(&text).0.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, text) = app.send(Method::PUT, "/api/v1/tasks", Some("{}")).await;
    assert_eq!(
        (status, error_of(&text).0.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn cancelling_queued_running_and_finished_tasks() {
    let app = TestApp::with(Options {
        slots: 1,
        ..Options::default()
    })
    .await;
    let running = app
        .submit(r#"{"commands": ["sleep 10000", "echo never"]}"#)
        .await;
    app.wait_for(running.id, TaskStatus::Running).await;
    let queued = app.submit(r#"{"commands": ["echo later"]}"#).await;

    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/tasks/{}/cancel", queued.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        serde_json::from_str::<Task>(&text).unwrap().state.status,
        TaskStatus::Cancelled
    );

    let (status, _) = app
        .send(
            Method::POST,
            &format!("/api/v1/tasks/{}/cancel", running.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The execution is killed and the second command never runs.
    for _ in 0..200 {
        if app.scheduler.running() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(app.executor.cancelled.lock().unwrap().len(), 1);
    let task = app.task(running.id).await;
    assert_eq!(task.state.status, TaskStatus::Cancelled);
    assert_eq!(task.results.len(), 1);
    assert_eq!(app.executor.requests.lock().unwrap().len(), 1);

    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/tasks/{}/cancel", running.id),
            None,
        )
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::CONFLICT,
            (
                "conflict".into(),
                "cannot cancel a task that is cancelled".into()
            )
        )
    );
}

#[tokio::test]
async fn delete_refuses_unfinished_tasks() {
    let app = TestApp::with(Options {
        run_loop: false,
        ..Options::default()
    })
    .await;
    let task = app.submit(r#"{"commands": ["echo x"]}"#).await;
    let uri = format!("/api/v1/tasks/{}", task.id);
    let (status, text) = app.send(Method::DELETE, &uri, None).await;
    assert_eq!(
        (status, error_of(&text).0.as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
    app.send(Method::POST, &format!("{uri}/cancel"), None).await;
    let (status, _) = app.send(Method::DELETE, &uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.send(Method::GET, &uri, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn page(app: &TestApp, uri: String) -> TaskPage {
    let (status, text) = app.send(Method::GET, &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str::<TaskPage>(&text).unwrap()
}

#[tokio::test]
async fn list_filters_and_paginates() {
    let app = TestApp::with(Options {
        run_loop: false,
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let team = if n % 2 == 0 { "infra" } else { "web" };
        let body = format!(r#"{{"commands": ["echo {n}"], "labels": {{"team": "{team}"}}}}"#);
        ids.push(app.submit(&body).await.id);
    }
    app.send(
        Method::POST,
        &format!("/api/v1/tasks/{}/cancel", ids[0]),
        None,
    )
    .await;
    let first = page(&app, "/api/v1/tasks?limit=2".into()).await;
    assert_eq!(
        first.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    let cursor = first.next_cursor.unwrap();
    let second = page(&app, format!("/api/v1/tasks?limit=2&cursor={cursor}")).await;
    assert_eq!(
        second.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let infra = page(&app, "/api/v1/tasks?label=team%3Dinfra".into()).await;
    assert_eq!(
        infra.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[4], ids[2], ids[0]]
    );
    let cancelled = page(&app, "/api/v1/tasks?status=cancelled".into()).await;
    assert_eq!(
        cancelled.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    assert_eq!(cancelled.next_cursor, None);
}

#[tokio::test]
async fn secrets_are_redacted_and_never_returned() {
    let app = TestApp::new().await;
    let task = app
        .submit(r#"{"commands": ["env API_KEY", "echo done"], "secrets": {"API_KEY": "hunter22"}}"#)
        .await;
    let text = serde_json::to_string(&task).unwrap();
    assert!(!text.contains("hunter22"), "{text}");
    app.wait_for(task.id, TaskStatus::Succeeded).await;
    let (_, logs) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/logs", task.id),
            None,
        )
        .await;
    assert_eq!(logs, "API_KEY=[REDACTED]\ndone\n");
    // The command did get the value.
    let requests = app.executor.requests.lock().unwrap();
    assert_eq!(requests[0].env["API_KEY"], "hunter22");
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_by_admins_only() {
    let app = TestApp::new().await;
    let (status, text) = app
        .send(Method::POST, "/api/v1/tokens", Some(r#"{"name": "ci"}"#))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let created: conductor_types::CreatedToken = serde_json::from_str(&text).unwrap();
    assert!(created.token.starts_with("cdt_") && created.token.len() == 68);
    let ci = created.token.as_str();
    let (status, _) = app
        .send_as(Some(ci), Method::GET, "/api/v1/tasks", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, text) = app
        .send_as(Some(ci), Method::GET, "/api/v1/tokens", None)
        .await;
    assert_eq!(
        (status, error_of(&text).0.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (_, text) = app.send(Method::GET, "/api/v1/tokens", None).await;
    let names: Vec<String> = serde_json::from_str::<Vec<TokenInfo>>(&text)
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["admin".to_owned(), "ci".to_owned()]);
    assert!(!text.contains(ci));
    let (status, _) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", created.info.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .send_as(Some(ci), Method::GET, "/api/v1/tasks", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn events_stream_as_sse_and_resume_after_last_event_id() {
    let app = TestApp::new().await;
    let task = app.submit(r#"{"commands": ["echo hi"]}"#).await;
    app.wait_for(task.id, TaskStatus::Succeeded).await;
    let uri = format!("/api/v1/tasks/{}/events", task.id);
    let (status, text) = app.send(Method::GET, &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        vec![
            "state",
            "state",
            "command_started",
            "output",
            "command_finished",
            "state"
        ]
    );
    let ids: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.parse().unwrap())
        .collect();
    let resumed = format!("{uri}?after={}", ids[3]);
    let (_, rest) = app.send(Method::GET, &resumed, None).await;
    let names: Vec<&str> = rest
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names, vec!["command_finished", "state"]);
    let (_, follow) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/logs?follow=true", task.id),
            None,
        )
        .await;
    assert_eq!(follow, "hi\n");
}

/// A follower reads once per wake-up and waits for the next one, yet misses nothing and ends as
/// soon as the task does (a missed wake-up would cost the 1 s recheck, here 1.6 s at least).
#[tokio::test]
async fn following_a_running_task_sees_all_its_output_and_ends_with_it() {
    let app = TestApp::new().await;
    let started = std::time::Instant::now();
    let task = app
        .submit(r#"{"commands": ["echo one", "sleep 300", "echo two", "sleep 300", "echo three"]}"#)
        .await;
    let (status, follow) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/logs?follow=true", task.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(follow, "one\ntwo\nthree\n");
    assert_eq!(app.task(task.id).await.state.status, TaskStatus::Succeeded);
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_millis(1500), "{took:?}");
}

#[tokio::test]
async fn logs_keep_the_order_lines_were_read_in_across_both_streams() {
    let app = TestApp::new().await;
    let task = app.submit(r#"{"commands": ["interleave"]}"#).await;
    app.wait_for(task.id, TaskStatus::Succeeded).await;
    let (status, logs) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/logs", task.id),
            None,
        )
        .await;
    assert_eq!(
        (status, logs.as_str()),
        (StatusCode::OK, "stdout 0\nstderr 1\nstdout 2\nstderr 3\n")
    );
}

#[tokio::test]
async fn slots_are_listed() {
    let app = TestApp::new().await;
    let (status, text) = app.send(Method::GET, "/api/v1/slots", None).await;
    assert_eq!(status, StatusCode::OK);
    let agents: Vec<conductor_types::Slot> = serde_json::from_str(&text).unwrap();
    let root = app._dir.path().join("workspaces/agents");
    let listed: Vec<_> = agents
        .iter()
        .map(|a| (a.id.as_str(), a.state, a.task_id, a.workspace_root.clone()))
        .collect();
    let expected: Vec<_> = ["agent-1", "agent-2"]
        .into_iter()
        .map(|id| {
            let root = root.join(id).display().to_string();
            (id, conductor_types::SlotState::Idle, None, root)
        })
        .collect();
    assert_eq!(listed, expected);

    // A running task shows on its slot, and its fresh workspace is under that slot's root.
    let task = app.submit(r#"{"commands": ["sleep 60000"]}"#).await;
    let running = app.wait_for(task.id, TaskStatus::Running).await;
    let slot_id = running.state.slot_id.clone().unwrap();
    let (_, text) = app.send(Method::GET, "/api/v1/slots", None).await;
    // The old path answers the same, one release; the task says its slot under both names.
    assert_eq!(app.send(Method::GET, "/api/v1/agents", None).await.1, text);
    let (_, task_json) = app
        .send(Method::GET, &format!("/api/v1/tasks/{}", task.id), None)
        .await;
    let task_json: serde_json::Value = serde_json::from_str(&task_json).unwrap();
    assert_eq!(
        (&task_json["slot_id"], &task_json["agent_id"]),
        (&serde_json::json!(slot_id), &serde_json::json!(slot_id))
    );
    let agents: Vec<conductor_types::Slot> = serde_json::from_str(&text).unwrap();
    let agent = agents.iter().find(|a| a.id == slot_id).unwrap();
    assert_eq!(
        (agent.state, agent.task_id),
        (conductor_types::SlotState::Busy, Some(task.id))
    );
    let request = app.executor.requests.lock().unwrap()[0].clone();
    assert_eq!(
        request.workspace,
        std::path::Path::new(&agent.workspace_root).join(task.id.to_string())
    );
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/api/v1/tasks/{}/cancel", task.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_tasks_requests_and_latencies() {
    let app = TestApp::new().await;
    let task = app.submit(r#"{"commands": ["echo hi"]}"#).await;
    app.wait_for(task.id, TaskStatus::Succeeded).await;
    let (status, _) = app.send_as(None, Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, text) = app.send(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "conductor_tasks{state=\"succeeded\"} 1",
        "conductor_tasks{state=\"queued\"} 0",
        "conductor_queue_depth 0",
        "conductor_slots_busy 0",
        "conductor_agents_busy 0",
        "conductor_task_dispatch_seconds_count 1",
        "conductor_task_run_seconds_count 1",
        "conductor_http_requests_total{method=\"POST\",route=\"/api/v1/tasks\",status=\"201\"} 1",
        "conductor_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"401\"} 1",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
}

/// The fields serde accepts for `T`, from its unknown-field error.
fn accepted_fields<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
    let err = serde_json::from_str::<T>(r#"{"zz_unknown": 1}"#)
        .unwrap_err()
        .to_string();
    // "expected one of `a`, `b`, …", or "expected `a` or `b`" for two.
    let list = err.split("expected ").nth(1).unwrap();
    let mut fields: Vec<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn the_openapi_document_matches_the_router_and_the_types() {
    let app = TestApp::new().await;
    let (status, text) = app.send(Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut paths: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "DELETE /api/v1/tasks/{id}",
            "DELETE /api/v1/tokens/{id}",
            "DELETE /api/v1/workspaces/{id}",
            "DELETE /api/v1/workspaces/{id}/files/{path}",
            "DELETE /api/v1/workspaces/{id}/snapshots/{sid}",
            "GET /api/v1/agents",
            "GET /api/v1/events",
            "GET /api/v1/openapi.json",
            "GET /api/v1/sessions/{id}",
            "GET /api/v1/slots",
            "GET /api/v1/tasks",
            "GET /api/v1/tasks/{id}",
            "GET /api/v1/tasks/{id}/agent-stream",
            "GET /api/v1/tasks/{id}/diff",
            "GET /api/v1/tasks/{id}/events",
            "GET /api/v1/tasks/{id}/logs",
            "GET /api/v1/tokens",
            "GET /api/v1/workspaces",
            "GET /api/v1/workspaces/{id}",
            "GET /api/v1/workspaces/{id}/files/{path}",
            "GET /api/v1/workspaces/{id}/snapshots",
            "GET /api/v1/workspaces/{id}/snapshots/{sid}/diff",
            "GET /api/v1/workspaces/{id}/snapshots/{sid}/export",
            "GET /health",
            "GET /live",
            "GET /metrics",
            "GET /ready",
            "POST /api/v1/snapshots/import",
            "POST /api/v1/tasks",
            "POST /api/v1/tasks/{id}/cancel",
            "POST /api/v1/tasks/{id}/messages",
            "POST /api/v1/tokens",
            "POST /api/v1/workspaces",
            "POST /api/v1/workspaces/{id}/snapshots",
            "POST /api/v1/workspaces/{id}/snapshots/{sid}/restore",
            "POST /tasks",
            "PUT /api/v1/workspaces/{id}/files/{path}",
        ]
    );
    // The seed's alias documents exactly the answers of the path it stands for.
    let statuses = |path: &str| -> Vec<String> {
        let mut codes: Vec<String> = doc["paths"][path]["post"]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        codes.sort();
        codes
    };
    assert_eq!(statuses("/tasks"), statuses("/api/v1/tasks"));
    // The slots' old path is documented as what it is: deprecated, answering as the new one.
    assert_eq!(
        doc["paths"]["/api/v1/agents"]["get"]["deprecated"],
        serde_json::json!(true)
    );
    assert_eq!(
        doc["paths"]["/api/v1/agents"]["get"]["responses"],
        doc["paths"]["/api/v1/slots"]["get"]["responses"]
    );
    // Every documented path answers something other than "no such endpoint".
    for entry in &paths {
        let (method, path) = entry.split_once(' ').unwrap();
        let path = path
            .replace("{id}", "67e55044-10b1-426f-9247-bb680e5fe0c8")
            .replace("{sid}", "67e55044-10b1-426f-9247-bb680e5fe0c8")
            .replace("{path}", "some/file");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        if path == "/api/v1/events" {
            // The list-level stream never ends: its status is all there is to wait for.
            let (status, _) = app.open(method, &path).await;
            assert_eq!(status, StatusCode::OK, "{entry}");
            continue;
        }
        let (status, text) = app.send(method, &path, Some("{}")).await;
        assert!(
            !text.contains("no such endpoint") && status != StatusCode::METHOD_NOT_ALLOWED,
            "{entry}: {status} {text}"
        );
    }
    // The request schema is exactly what serde accepts, and refuses anything else.
    let request = &doc["components"]["schemas"]["TaskRequest"];
    let mut documented: Vec<String> = request["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    documented.sort();
    assert_eq!(
        documented,
        accepted_fields::<conductor_types::TaskRequest>()
    );
    assert_eq!(request["additionalProperties"], serde_json::json!(false));
    // Seed 001's `environments: [{name, dockerfile}]`, both required, nothing else.
    let definition = &doc["components"]["schemas"]["EnvironmentDefinition"];
    assert_eq!(
        (&definition["required"], &definition["additionalProperties"]),
        (
            &serde_json::json!(["name", "dockerfile"]),
            &serde_json::json!(false)
        )
    );
    let mut schemas: Vec<&String> = doc["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    schemas.sort();
    assert_eq!(
        schemas,
        vec![
            "AgentEvent",
            "AgentKind",
            "AgentOutcome",
            "AgentSpec",
            "ApiError",
            "ApiErrorBody",
            "Budget",
            "ChangeView",
            "ChangedPath",
            "CommandResult",
            "CreatedToken",
            "DiffView",
            "EntryView",
            "EnvironmentDefinition",
            "ExecutionStats",
            "FailureCode",
            "FileEntryView",
            "GitFileView",
            "GitSource",
            "InlineEnvironment",
            "LimitName",
            "ListingView",
            "Message",
            "NetworkPolicy",
            "NewToken",
            "OutputStream",
            "PathChange",
            "ResourceLimits",
            "RestoreRequest",
            "RestoreView",
            "Session",
            "SessionId",
            "Slot",
            "SlotNames",
            "SlotState",
            "SnapshotRequest",
            "SnapshotView",
            "Task",
            "TaskDiffView",
            "TaskEvent",
            "TaskEventKind",
            "TaskId",
            "TaskPage",
            "TaskRequest",
            "TaskSpec",
            "TaskState",
            "TaskStatus",
            "TaskType",
            "Timestamp",
            "TokenInfo",
            "UploadView",
            "Usage",
            "Workspace",
            "WorkspaceId",
            "WorkspaceRequest",
        ]
    );
    // The other request bodies too: documented fields are exactly the accepted ones.
    let properties = |schema: &str| {
        let schema = &doc["components"]["schemas"][schema];
        assert_eq!(schema["additionalProperties"], serde_json::json!(false));
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        properties("WorkspaceRequest"),
        accepted_fields::<conductor_types::WorkspaceRequest>()
    );
    assert_eq!(properties("SnapshotRequest"), vec!["name"]);
    // Owners, disk quotas and failure codes are documented where they appear.
    let schemas = &doc["components"]["schemas"];
    for (schema, property) in [
        ("Workspace", "owner"),
        ("Workspace", "disk"),
        ("WorkspaceRequest", "disk"),
        ("TaskState", "failure_code"),
        ("TaskSpec", "inline_environment"),
    ] {
        // Directly, or in the object of an `allOf` (a type with flattened fields).
        let documented = std::iter::once(&schemas[schema])
            .chain(schemas[schema]["allOf"].as_array().into_iter().flatten())
            .any(|part| part["properties"][property].is_object());
        assert!(documented, "{schema}.{property}: {}", schemas[schema]);
    }
    // The slot under its name and, deprecated, its old one.
    let slot_names = &schemas["SlotNames"]["properties"];
    assert_eq!(
        (
            &slot_names["slot_id"]["deprecated"],
            &slot_names["agent_id"]["deprecated"]
        ),
        (&serde_json::Value::Null, &serde_json::json!(true))
    );
    assert_eq!(
        schemas["FailureCode"]["enum"],
        serde_json::json!(conductor_types::FailureCode::ALL.map(|code| code.as_str()))
    );
    assert_eq!(properties("RestoreRequest"), vec!["target"]);
    assert_eq!(
        properties("GitSource"),
        accepted_fields::<conductor_types::GitSource>()
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        serde_json::json!("bearer")
    );
}
