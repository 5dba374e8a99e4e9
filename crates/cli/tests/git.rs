//! A task's `git` from the outside: a real `conductor serve` clones in a sandbox of its own,
//! never as root on the host, only from the local paths `[git] allow_local` lists, never
//! through `file://` or `ext::`, and never reaching the host's own loopback services.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use conductor_types::{FailureCode, Task, TaskStatus};
use serde_json::{json, Value};

mod support;
use support::{is_root, Server};

/// A repository with one commit on `main` holding `README`, at `dir` (created).
fn repository(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README"), "hello\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A server on `executor` whose config allows local clones from `allowed` only.
fn server(home: &Path, allowed: &Path, executor: &str) -> Server {
    std::fs::write(
        home.join("config.toml"),
        format!("[git]\nallow_local = [{allowed:?}]\n"),
    )
    .unwrap();
    Server::start_with(home, 1, &["--executor", executor])
}

/// POSTs a task; the status and the body.
async fn post(server: &Server, body: Value) -> (u16, Value) {
    let client = server.client();
    let response = client
        .http
        .post(format!("{}/api/v1/tasks", server.url))
        .bearer_auth(&server.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn finished(server: &Server, body: Value) -> (Task, String) {
    let (status, task) = post(server, body).await;
    assert_eq!(status, 201, "{task}");
    let task: Task = serde_json::from_value(task).unwrap();
    let client = server.client();
    let done = client
        .wait_until(task.id, |t| t.state.status.is_finished())
        .await;
    let logs = client.logs(task.id).await;
    (done, logs)
}

#[tokio::test]
async fn clones_run_unprivileged_and_only_from_allowed_local_paths() {
    if !is_root() {
        eprintln!("skipped: the clone's sandbox maps a uid range only as root");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let allowed = tempfile::tempdir().unwrap();
    chmod(allowed.path(), 0o755);
    let open_repo = allowed.path().join("open");
    repository(&open_repo);
    // Root-only: a clone running as host root would read it.
    let root_only = allowed.path().join("root-only");
    repository(&root_only);
    chmod(&root_only, 0o700);
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("secret");
    repository(&outside);
    chmod(&outside, 0o700);
    let server = server(home.path(), allowed.path(), "namespace");

    // Not listed, or a transport that reads host files or runs programs: refused at once.
    let file_url = format!("file://{}", open_repo.display());
    let ext = format!("ext::git upload-pack {}", open_repo.display());
    for repository in [outside.to_str().unwrap(), &file_url, &ext] {
        let body =
            json!({"commands": ["true"], "network": "none", "git": {"repository": repository}});
        let (status, error) = post(&server, body).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (422, Some("repository_not_allowed")),
            "{repository}: {error}"
        );
    }

    // Listed: cloned.
    let body = json!({
        "commands": ["cat README"],
        "network": "none",
        "git": {"repository": open_repo, "ref": "main"}
    });
    let (done, logs) = finished(&server, body).await;
    assert_eq!(
        (done.state.status, logs.contains("hello")),
        (TaskStatus::Succeeded, true),
        "{done:?} {logs}"
    );

    // Listed but root-only: the clone runs as a user that owns nothing on the host, so it
    // cannot read it (host root would).
    let body = json!({"commands": ["true"], "network": "none", "git": {"repository": root_only}});
    let (done, logs) = finished(&server, body).await;
    assert_eq!(
        (done.state.status, done.state.failure_code),
        (TaskStatus::Failed, Some(FailureCode::GitCloneFailed)),
        "{done:?} {logs}"
    );
    server.terminate();
}

#[tokio::test]
async fn a_clone_never_reaches_the_hosts_loopback_whatever_the_tasks_network() {
    if !is_root() {
        eprintln!("skipped: the clone's sandbox maps a uid range only as root");
        return;
    }
    // A service on the host's loopback that answers anything with 404 and counts visitors.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let visits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&visits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let home = tempfile::tempdir().unwrap();
    let allowed = tempfile::tempdir().unwrap();
    let server = server(home.path(), allowed.path(), "namespace");
    for network in ["none", "full"] {
        let body = json!({
            "commands": ["true"],
            "network": network,
            "git": {"repository": format!("http://127.0.0.1:{port}/repo.git")}
        });
        let (done, logs) = finished(&server, body).await;
        assert_eq!(
            (done.state.status, done.state.failure_code),
            (TaskStatus::Failed, Some(FailureCode::GitCloneFailed)),
            "{network}: {done:?} {logs}"
        );
        let reason = done.state.status_reason.unwrap_or_default();
        assert!(
            reason.starts_with(&format!("could not clone http://127.0.0.1:{port}/repo.git")),
            "{reason}"
        );
    }
    assert_eq!(
        visits.load(Ordering::SeqCst),
        0,
        "a clone reached a service on the host's loopback"
    );
    server.terminate();
}
