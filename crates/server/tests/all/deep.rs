//! A task that builds a directory chain 10 000 levels deep in a named workspace: snapshot,
//! diff, restore, the file API's delete and the workspace's delete answer (a typed error where
//! the tree is too deep to capture), and the server stays up. Before the walks were iterative,
//! the snapshot overflowed the stack of a `conductor-cas` thread and aborted the process.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use conductor_types::{TaskStatus, Workspace};
use serde_json::{json, Value};

use crate::support::{error_of, TestApp};

const DEPTH: usize = 10_000;

fn dir_of(app: &TestApp, name: &str) -> PathBuf {
    app._dir.path().join("workspaces/named").join(name)
}

/// Runs `deep DEPTH` as a task in workspace `deep`.
async fn build_chain(app: &TestApp) {
    let body = json!({"commands": [format!("deep {DEPTH}")], "workspace": "deep"});
    let task = app.submit(&body.to_string()).await;
    app.wait_for(task.id, TaskStatus::Succeeded).await;
}

/// The workspace's recorded size once it is `wanted` (the scheduler measures it after a task,
/// off the agent's time), or the last one seen.
async fn measured_size(app: &TestApp, wanted: u64) -> Option<u64> {
    let mut size = None;
    for _ in 0..500 {
        let (_, text) = app.send(Method::GET, "/api/v1/workspaces/deep", None).await;
        size = serde_json::from_str::<Workspace>(&text).unwrap().size_bytes;
        if size == Some(wanted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_tree_made_by_a_task_never_takes_the_server_down() {
    let app = TestApp::new().await;
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/workspaces",
            Some(r#"{"name": "deep"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let dir = dir_of(&app, "deep");
    std::fs::write(dir.join("kept.txt"), b"kept").unwrap();
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/workspaces/deep/snapshots",
            Some(r#"{"name": "shallow"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let sid = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    build_chain(&app).await;
    // Measured at any depth: the file at the bottom counts.
    assert_eq!(measured_size(&app, 4 + 5).await, Some(4 + 5));

    // Too deep to capture: a conflict naming the reason, for the snapshot and the diff.
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/workspaces/deep/snapshots",
            Some(r#"{"name": "deep"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    let (code, message) = error_of(&text);
    assert_eq!(code, "conflict");
    assert!(message.contains("longer than 4095 bytes"), "{message}");
    let (status, text) = app
        .send(
            Method::GET,
            &format!("/api/v1/workspaces/deep/snapshots/{sid}/diff?against=current"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert_eq!(error_of(&text).0, "conflict");

    // Restoring the shallow snapshot removes the chain.
    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/workspaces/deep/snapshots/{sid}/restore"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["removed"],
        json!(1)
    );
    assert!(!dir.join("d").exists());
    assert_eq!(std::fs::read(dir.join("kept.txt")).unwrap(), b"kept");

    // The file API deletes a deep directory.
    build_chain(&app).await;
    let (status, text) = app
        .send(
            Method::DELETE,
            "/api/v1/workspaces/deep/files/d?recursive=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert!(!dir.join("d").exists());

    // And the workspace goes, chain and all.
    build_chain(&app).await;
    let (status, text) = app
        .send(Method::DELETE, "/api/v1/workspaces/deep", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert!(!dir.exists());

    // Still answering.
    let (status, text) = app.send(Method::GET, "/api/v1/workspaces", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}
