//! Authentication, header rewriting and what is (not) forwarded.

use conductor_gateway::Provider;
use conductor_types::{Budget, TaskId};
use serde_json::json;

use crate::fake::{anthropic_json, setup, ANTHROPIC_KEY};

#[tokio::test]
async fn forwards_with_the_real_key_and_the_anthropic_headers_unchanged() {
    let s = setup(
        vec![anthropic_json("claude-sonnet-4-5-20250929", 12, 3)],
        |_| {},
    )
    .await;
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, Budget::default(), Provider::Anthropic);
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":1024,
        "messages":[{"role":"user","content":"hi"}]});
    let response = s
        .client
        .post(format!("{}/v1/messages?beta=true", s.url))
        .header("authorization", format!("Bearer {}", grant.token.expose()))
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("x-app", "cli")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["content"][0]["text"], "hi");

    let seen = s.anthropic.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.uri, "/v1/messages?beta=true");
    assert_eq!(request.headers["x-api-key"], ANTHROPIC_KEY);
    assert!(request.headers.get("authorization").is_none());
    assert!(request.headers.get("x-hop").is_none());
    assert_eq!(request.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        request.headers["anthropic-beta"],
        "claude-code-20250219,interleaved-thinking-2025-05-14"
    );
    assert_eq!(request.headers["x-app"], "cli");
    assert_eq!(
        request.json(),
        body,
        "an uncapped body goes through as sent"
    );
}

#[tokio::test]
async fn wrong_revoked_and_other_provider_tokens_are_refused_locally() {
    let s = setup(vec![], |_| {}).await;
    let task = TaskId::random();
    let grant = s
        .gateway
        .grant(task, None, Budget::default(), Provider::Anthropic);
    let body = json!({"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]});

    let wrong = s.post("/v1/messages", "not-a-token", body.clone()).await;
    assert_eq!(wrong.status(), 401);
    let error: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(
        error,
        json!({"type":"error","error":{"type":"authentication_error",
            "message":"invalid or revoked task token"}})
    );
    let none = s
        .client
        .post(format!("{}/v1/messages", s.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);

    let openai_task = s
        .gateway
        .grant(TaskId::random(), None, Budget::default(), Provider::OpenAi);
    let crossed = s
        .post("/v1/messages", openai_task.token.expose(), body.clone())
        .await;
    assert_eq!(crossed.status(), 403);

    s.gateway.revoke(task);
    let revoked = s.post("/v1/messages", grant.token.expose(), body).await;
    assert_eq!(revoked.status(), 401);
    assert!(s.anthropic.seen().is_empty(), "nothing was forwarded");
    assert!(
        s.records.all().is_empty(),
        "no task is accountable for these"
    );
    let report = s.gateway.report(task).unwrap();
    assert_eq!(report.usage.requests, 0);
}

#[tokio::test]
async fn paths_it_does_not_serve_are_answered_locally() {
    let s = setup(vec![], |_| {}).await;
    let grant = s.gateway.grant(
        TaskId::random(),
        None,
        Budget::default(),
        Provider::Anthropic,
    );
    for path in [
        "/api/event_logging/batch",
        "/v1/models",
        "/v1/complete",
        "/",
    ] {
        let response = s.post(path, grant.token.expose(), json!({})).await;
        assert_eq!(response.status(), 404, "{path}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "not_found_error", "{path}");
    }
    let codex = s
        .client
        .get(format!("{}/v1/models", s.url))
        .bearer_auth(grant.token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(codex.status(), 404);
    let error: serde_json::Value = codex.json().await.unwrap();
    assert_eq!(
        error,
        json!({"error":{"message":"/v1/models is not served by the conductor gateway",
            "type":"not_found_error","code":"not_found_error"}})
    );
    let get = s
        .client
        .get(format!("{}/v1/messages", s.url))
        .header("x-api-key", grant.token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert!(s.anthropic.seen().is_empty());
    assert!(s.openai.seen().is_empty());
}

#[tokio::test]
async fn count_tokens_passes_through_without_counting_tokens() {
    let reply = crate::fake::Reply::Json(200, json!({"input_tokens": 4242}), vec![]);
    let s = setup(vec![reply], |_| {}).await;
    let task = TaskId::random();
    let grant = s.gateway.grant(
        task,
        None,
        Budget {
            tokens: Some(1),
            usd: None,
        },
        Provider::Anthropic,
    );
    let body = json!({"model":"claude-haiku-4-5","messages":[{"role":"user","content":"x"}]});
    let response = s
        .post(
            "/v1/messages/count_tokens?beta=true",
            grant.token.expose(),
            body,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"input_tokens": 4242})
    );
    assert_eq!(
        s.anthropic.seen()[0].uri,
        "/v1/messages/count_tokens?beta=true"
    );
    let report = s.gateway.report(task).unwrap();
    assert_eq!(report.usage.requests, 1);
    assert_eq!(report.usage.budget_tokens(), 0);
    assert!(!report.budget_exceeded);
}

#[tokio::test]
async fn serves_a_unix_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup(vec![], |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.sock");
    std::fs::write(&path, "a file").unwrap();
    let refused = s.gateway.serve_unix(&path).await.unwrap_err();
    assert!(refused.to_string().contains("gateway.sock"), "{refused}");
    std::fs::remove_file(&path).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let gateway = std::sync::Arc::clone(&s.gateway);
    let served = path.clone();
    tokio::spawn(async move { gateway.serve_unix(&served).await });
    let mut stream = loop {
        match tokio::net::UnixStream::connect(&path).await {
            Ok(stream) => break stream,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    };
    stream
        .write_all(b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: nope\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("authentication_error"), "{answer}");
}
