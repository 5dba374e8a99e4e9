//! The API keeps its document's promises: server limits applied and shown on every task, ranges
//! refused at submission, every error JSON with a stable code (never a 500 or `text/plain` for
//! what a client sent), no `null` where the document says integer or string, and every status
//! the server answers documented.

use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use conductor_core::{LimitPolicy, LimitSet};
use conductor_types::{Bytes, LimitName, TaskStatus};
use serde_json::{json, Value};

use crate::support::{error_of, Options, TestApp};

#[tokio::test]
async fn tasks_get_the_server_defaults_they_can_enforce_and_say_which() {
    let app = TestApp::new().await;
    // The fake executor enforces no resource limit: only the timeout is filled in.
    let task = app.submit(r#"{"commands": ["echo hi"]}"#).await;
    assert_eq!(task.spec.defaults_applied, [LimitName::Timeout]);
    assert_eq!(task.spec.timeout, Some(Duration::from_secs(3600)));
    let (_, text) = app
        .send(Method::GET, &format!("/api/v1/tasks/{}", task.id), None)
        .await;
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&json["spec"]["timeout"], &json["spec"]["defaults_applied"]),
        (&json!("1h"), &json!(["timeout"]))
    );
    // Its own timeout is kept and not listed.
    let task = app
        .submit(r#"{"commands": ["echo hi"], "timeout": "5m"}"#)
        .await;
    assert_eq!(
        (task.spec.timeout, task.spec.defaults_applied),
        (Some(Duration::from_secs(300)), vec![])
    );
}

#[tokio::test]
async fn a_request_above_a_maximum_is_refused_naming_the_field_and_the_maximum() {
    let app = TestApp::with(Options {
        limits: Some(LimitPolicy {
            default: LimitSet::default(),
            max: LimitSet {
                memory: Some(Bytes::mib(512)),
                timeout: Some(Duration::from_secs(600)),
                ..LimitSet::default()
            },
        }),
        ..Options::default()
    })
    .await;
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/tasks",
            Some(r#"{"commands": ["true"], "timeout": "1h"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert_eq!(
        error_of(&text),
        (
            "limit_exceeded".to_owned(),
            "timeout asks for 1h, above the server's maximum of 10m ([limits.max] timeout)"
                .to_owned()
        )
    );
    // With no default, the maximum is the default.
    let task = app.submit(r#"{"commands": ["true"]}"#).await;
    assert_eq!(
        (task.spec.timeout, task.spec.defaults_applied),
        (Some(Duration::from_secs(600)), vec![LimitName::Timeout])
    );
    assert_eq!(app.task(task.id).await.spec.timeout, task.spec.timeout);
}

#[tokio::test]
async fn sizes_and_counts_out_of_range_are_refused_at_submission() {
    let app = TestApp::new().await;
    let cases = [
        (
            r#"{"commands": ["true"], "resources": {"disk": 9223372036854775807}}"#,
            "resources.disk: must be at most 64t",
        ),
        (
            r#"{"commands": ["true"], "resources": {"memory": "5t"}}"#,
            "resources.memory: must be at most 4t",
        ),
        (
            r#"{"commands": ["true"], "resources": {"pids": 4294967295}}"#,
            "resources.pids: must be at most 4194304",
        ),
    ];
    for (body, message) in cases {
        let (status, text) = app.send(Method::POST, "/api/v1/tasks", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {text}");
        assert_eq!(
            error_of(&text),
            ("invalid_field".to_owned(), message.to_owned())
        );
    }
    let (status, text) = app.send(Method::GET, "/api/v1/tasks?limit=0", None).await;
    assert_eq!(
        (status, error_of(&text).0),
        (StatusCode::BAD_REQUEST, "invalid_query".to_owned())
    );
}

#[tokio::test]
async fn a_name_too_long_for_the_kernel_is_a_client_error() {
    let app = TestApp::new().await;
    let (status, text) = app
        .send(Method::POST, "/api/v1/workspaces", Some(r#"{"name": "w"}"#))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let long = "n".repeat(256);
    let deep = vec!["d"; 2100].join("/");
    for path in [long.clone(), format!("dir/{long}"), deep] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let uri = format!("/api/v1/workspaces/w/files/{path}");
            let (status, headers, body) = app
                .send_typed(method.clone(), &uri, "application/octet-stream", vec![])
                .await;
            let text = String::from_utf8_lossy(&body);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {text}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            assert_eq!(error_of(&text).0, "invalid_path", "{method}");
        }
    }
    // 255 bytes is a name like any other.
    let uri = format!("/api/v1/workspaces/w/files/{}", "n".repeat(255));
    let (status, _, _) = app
        .send_typed(Method::PUT, &uri, "application/octet-stream", vec![b'x'])
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn rejections_of_paths_and_queries_are_json() {
    let app = TestApp::new().await;
    let (status, text) = app
        .send(Method::POST, "/api/v1/workspaces", Some(r#"{"name": "w"}"#))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let uris = [
        (Method::GET, "/api/v1/workspaces/w/files/a%FFb"),
        (Method::GET, "/api/v1/tasks/%FF"),
        (Method::PUT, "/api/v1/workspaces/w/files/%C0%AF"),
        (Method::GET, "/api/v1/workspaces/w/files/x?format=zip"),
        (Method::GET, "/api/v1/tasks?limit=many"),
        (Method::GET, "/api/v1/tasks?cursor=0"),
        (Method::PUT, "/api/v1/workspaces/w/files/x?mode=+644"),
    ];
    for (method, uri) in uris {
        let (status, headers, body) = app
            .send_typed(method.clone(), uri, "application/octet-stream", vec![])
            .await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}: {text}");
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json",
            "{method} {uri}"
        );
        let (code, message) = error_of(&text);
        assert!(!code.is_empty() && !message.is_empty(), "{uri}: {text}");
    }
}

/// Every `null` in `value`, by JSON path.
fn nulls(value: &Value, at: &str, found: &mut Vec<String>) {
    match value {
        Value::Null => found.push(at.to_owned()),
        Value::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                nulls(item, &format!("{at}[{n}]"), found);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                nulls(item, &format!("{at}.{key}"), found);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn a_task_that_timed_out_at_once_has_no_null_where_the_document_says_integer() {
    let app = TestApp::new().await;
    let task = app
        .submit(r#"{"commands": ["sleep 5000"], "timeout": 0.001}"#)
        .await;
    app.wait_for(task.id, TaskStatus::TimedOut).await;
    let (_, text) = app
        .send(Method::GET, &format!("/api/v1/tasks/{}", task.id), None)
        .await;
    let json: Value = serde_json::from_str(&text).unwrap();
    let mut found = Vec::new();
    nulls(&json, "", &mut found);
    assert_eq!(found, Vec::<String>::new(), "{text}");
    assert!(
        json["results"][0]["stats"]["duration_ms"].is_u64(),
        "{text}"
    );
}

#[tokio::test]
async fn every_operation_documents_the_answers_of_the_layers_around_it() {
    let app = TestApp::new().await;
    let (_, text) = app.send(Method::GET, "/api/v1/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let public = operation["security"] == json!([{}]);
            let mut expected = vec!["431"];
            if !public {
                expected.extend(["400", "401"]);
            }
            if path.contains('{') {
                expected.push("404");
            }
            if operation.get("requestBody").is_some() {
                expected.push("413");
            }
            for status in expected {
                if operation["responses"].get(status).is_none() {
                    missing.push(format!("{method} {path} {status}"));
                }
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let schema = &parameter["schema"];
                // Present or absent, never `null`; a reference names a schema that exists.
                let dangling = schema["$ref"].as_str().is_some_and(|reference| {
                    let name = reference.trim_start_matches("#/components/schemas/");
                    doc["components"]["schemas"].get(name).is_none()
                });
                if schema["type"].as_array().is_some() || dangling {
                    missing.push(format!("{method} {path} {}: {schema}", parameter["name"]));
                }
                if parameter["in"] == "path"
                    && ["id", "sid"].contains(&parameter["name"].as_str().unwrap())
                {
                    assert!(schema["pattern"].is_string(), "{method} {path}: {schema}");
                }
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new());
}

#[tokio::test]
async fn a_workspace_quota_is_bounded_like_a_tasks_disk() {
    let app = TestApp::with(Options {
        // Refused before any filesystem is made: no root needed.
        disk_quotas: true,
        limits: Some(LimitPolicy {
            default: LimitSet::default(),
            max: LimitSet {
                disk: Some(Bytes(Bytes::GIB)),
                ..LimitSet::default()
            },
        }),
        ..Options::default()
    })
    .await;
    let cases = [
        (
            r#"{"name": "w", "disk": 9223372036854775807}"#,
            ("invalid_field", "disk: must be at most 64t"),
        ),
        (
            r#"{"name": "w", "disk": "2g"}"#,
            (
                "limit_exceeded",
                "resources.disk asks for 2g, above the server's maximum of 1g ([limits.max] disk)",
            ),
        ),
    ];
    for (body, (code, message)) in cases {
        let (status, text) = app
            .send(Method::POST, "/api/v1/workspaces", Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {text}");
        assert_eq!(error_of(&text), (code.to_owned(), message.to_owned()));
    }
}
