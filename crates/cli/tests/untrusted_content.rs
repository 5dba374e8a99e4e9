//! What tasks make never lands on the host with powers it should not have, nor fills its disk:
//! a real `conductor serve` with the host executor, driven over HTTP. A task's `chmod 6755`
//! comes back from snapshot → restore into another workspace without the set-id bits; a task
//! writing more output than the spool cap leaves no spool file behind; the home's content
//! directories are the server user's alone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use conductor_types::TaskStatus;
use serde_json::json;

mod support;
use support::{Client, Server};

async fn post(client: &Client, path: &str, body: serde_json::Value) -> serde_json::Value {
    let response = client
        .http
        .post(format!("{}{path}", client.url))
        .bearer_auth(&client.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "POST {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

async fn run(client: &Client, body: serde_json::Value) {
    let task = client.submit(body).await;
    let done = client
        .wait_until(task.id, |t| t.state.status.is_finished())
        .await;
    assert_eq!(
        done.state.status,
        TaskStatus::Succeeded,
        "{}",
        client.logs(task.id).await
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_set_id_file_is_restored_elsewhere_without_set_id_bits() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), 1);
    let client = server.client();
    run(
        &client,
        json!({
            "workspace": "src",
            "commands": ["cp /bin/sh ./suid && chmod 6755 ./suid && mkdir -m 1777 shared"],
        }),
    )
    .await;
    let named = home.path().join("workspaces/named");
    // What the task made is what it made (the snapshot and restore are what must not keep it).
    assert_eq!(mode(&named.join("src/suid")), 0o6755);
    let snapshot = post(
        &client,
        "/api/v1/workspaces/src/snapshots",
        json!({ "name": "suid" }),
    )
    .await;
    let sid = snapshot["id"].as_str().unwrap().to_owned();
    post(&client, "/api/v1/workspaces", json!({ "name": "dst" })).await;
    post(
        &client,
        &format!("/api/v1/workspaces/src/snapshots/{sid}/restore"),
        json!({ "target": "dst" }),
    )
    .await;
    let dst = named.join("dst");
    assert_eq!(
        (mode(&dst.join("suid")), mode(&dst.join("shared"))),
        (0o755, 0o775)
    );
    // The home's content directories are private.
    for dir in [
        "workspaces",
        "workspaces/named",
        "workspaces/agents",
        "snapshots",
        "logs",
    ] {
        assert_eq!(mode(&home.path().join(dir)), 0o700, "{dir}");
    }
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_the_spool_cap_leaves_no_spool_behind() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[output]\nspool_limit = \"1m\"\n",
    )
    .unwrap();
    let server = Server::start(home.path(), 1);
    let client = server.client();
    // 8 MiB on stdout: past the in-memory limit (1 MiB) and the spool cap (1 MiB).
    let task = client
        .submit(json!({ "commands": ["head -c 8388608 /dev/zero | tr '\\0' x; echo; echo done"] }))
        .await;
    let logs = home.path().join("logs");
    let mut largest = 0;
    let done = loop {
        // While it runs, the spool never passes its cap.
        for entry in walk(&logs) {
            largest = largest.max(std::fs::metadata(&entry).map_or(0, |m| m.len()));
        }
        let task = client.task(task.id).await;
        if task.state.status.is_finished() {
            break task;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(done.state.status, TaskStatus::Succeeded);
    assert!(largest <= 1 << 20, "a spool grew to {largest} bytes");
    assert_eq!(walk(&logs), Vec::<std::path::PathBuf>::new());
    server.terminate();
}

/// Every file below `dir` (none when it is missing).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
