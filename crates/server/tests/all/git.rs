//! `git` on a task: cloned into the fresh workspace before the commands, and the diff of what
//! the commands changed recorded for `GET /api/v1/tasks/{id}/diff` (needs the `git` program).

use std::path::Path;
use std::process::Command;

use axum::http::{Method, StatusCode};
use conductor_types::TaskStatus;
use serde_json::{json, Value};

use crate::support::{error_of, Options, TestApp};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository with one commit on `main` holding `README` and `src/lib.rs`; its commit id.
fn repository(dir: &Path) -> Option<String> {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("skipped: the git program is not installed");
        return None;
    }
    std::fs::create_dir_all(dir.join("src")).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README"), "hello\n").unwrap();
    std::fs::write(dir.join("src/lib.rs"), "fn a() {}\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "first"]);
    Some(git(dir, &["rev-parse", "HEAD"]))
}

#[tokio::test]
async fn a_task_clones_its_repository_and_its_changes_are_the_diff() {
    let app = TestApp::new().await;
    let repo = app._dir.path().join("repo");
    let Some(commit) = repository(&repo) else {
        return;
    };
    let task = app
        .submit(
            &json!({
                "commands": ["fill 6"],
                "git": {"repository": repo, "ref": "main"}
            })
            .to_string(),
        )
        .await;
    let done = app.wait_for(task.id, TaskStatus::Succeeded).await;
    assert_eq!(done.spec.git.unwrap().reference.as_deref(), Some("main"));
    // The commands ran in the clone.
    let request = app.executor.requests.lock().unwrap()[0].clone();
    assert_eq!(
        request.workspace.file_name().unwrap().to_string_lossy(),
        task.id.to_string()
    );
    let (status, text) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/diff", task.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let diff: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            &diff["repository"],
            &diff["reference"],
            &diff["kind"],
            &diff["commit"]
        ),
        (
            &json!(repo),
            &json!("main"),
            &json!("branch"),
            &json!(commit)
        )
    );
    assert_eq!(diff["files"], json!([{"change": "added", "path": "fill"}]));
    assert!(
        diff["patch"].as_str().unwrap().contains("+++ b/fill"),
        "{}",
        diff["patch"]
    );
    assert_eq!(diff["truncated"], json!(false));
    // The source repository is untouched.
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");

    // Deleting the task deletes its diff.
    let (status, _) = app
        .send(Method::DELETE, &format!("/api/v1/tasks/{}", task.id), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!app
        ._dir
        .path()
        .join(format!("workspaces/diffs/{}.json", task.id))
        .exists());
}

#[tokio::test]
async fn clone_failures_and_bad_git_requests() {
    let app = TestApp::new().await;
    let repo = app._dir.path().join("repo");
    if repository(&repo).is_none() {
        return;
    }
    let task = app
        .submit(
            &json!({"commands": ["echo x"], "git": {"repository": repo, "ref": "no-such-branch"}})
                .to_string(),
        )
        .await;
    let done = app.wait_for(task.id, TaskStatus::Failed).await;
    assert_eq!(
        done.state.failure_code,
        Some(conductor_types::FailureCode::GitCloneFailed)
    );
    let reason = done.state.status_reason.unwrap();
    assert!(
        reason.starts_with(&format!("could not clone {}", repo.display())),
        "{reason}"
    );
    assert!(
        app.executor.requests.lock().unwrap().is_empty(),
        "no command ran"
    );
    let (status, text) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/diff", task.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(
        error_of(&text).1.starts_with(&format!(
            "no diff was recorded for task {}: could not clone",
            task.id
        )),
        "{text}"
    );
    let plain = app.submit(r#"{"commands": ["echo x"]}"#).await;
    let (status, text) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/diff", plain.id),
            None,
        )
        .await;
    assert_eq!(
        (status, error_of(&text).1),
        (
            StatusCode::NOT_FOUND,
            format!("task {} names no git repository", plain.id)
        )
    );

    let idle = TestApp::with(Options {
        run_loop: false,
        ..Options::default()
    })
    .await;
    let cases = [
        (
            r#"{"commands": ["x"], "workspace": "repo", "git": {"repository": "/r"}}"#,
            ("not_supported", "git: a repository is cloned into the task's own fresh workspace; named workspaces cannot take one yet"),
        ),
        (
            r#"{"commands": ["x"], "git": {"repository": ""}}"#,
            ("invalid_field", "git.repository: must be 1 to 4096 bytes: a local path or a URL"),
        ),
        (
            r#"{"commands": ["x"], "git": {"repository": "--upload-pack=evil"}}"#,
            ("invalid_field", "git.repository: must not start with '-' or contain control characters"),
        ),
        (
            r#"{"commands": ["x"], "git": {"repository": "/r", "ref": "a b"}}"#,
            ("invalid_field", "git.ref: must be a branch, tag or commit id: not empty, not starting with '-', no spaces"),
        ),
    ];
    for (body, (code, message)) in cases {
        let (status, text) = idle.send(Method::POST, "/api/v1/tasks", Some(body)).await;
        assert_eq!(
            (status, error_of(&text)),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                (code.into(), message.into())
            ),
            "{body}"
        );
    }
    // Only network transports, and local paths under `[git] allow_local` (the test app lists
    // its directory).
    let outside = tempfile::tempdir().unwrap();
    let refused = [
        (
            outside.path().display().to_string(),
            format!(
                "git.repository: {:?}: local repositories are cloned only from the directories [git] allow_local lists ({})",
                outside.path().display().to_string(),
                idle._dir.path().display()
            ),
        ),
        (
            format!("file://{}/r", idle._dir.path().display()),
            format!(
                "git.repository: {:?}: the file transport is not allowed: use an https, http, git or ssh URL",
                format!("file://{}/r", idle._dir.path().display())
            ),
        ),
        (
            "ext::sh -c touch% /tmp/pwned".to_owned(),
            "git.repository: \"ext::sh -c touch% /tmp/pwned\": the ext transport is not allowed: use an https, http, git or ssh URL".to_owned(),
        ),
        (
            format!("{}/../r", idle._dir.path().display()),
            format!(
                "git.repository: {:?}: a local repository must be an absolute path without . or .. components",
                format!("{}/../r", idle._dir.path().display())
            ),
        ),
    ];
    for (repository, message) in refused {
        let body = json!({"commands": ["x"], "git": {"repository": repository}}).to_string();
        let (status, text) = idle.send(Method::POST, "/api/v1/tasks", Some(&body)).await;
        assert_eq!(
            (status, error_of(&text)),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                ("repository_not_allowed".to_owned(), message)
            ),
            "{body}"
        );
    }
    let allowed = format!("{}/r", idle._dir.path().display());
    let queued = idle
        .submit(&json!({"commands": ["x"], "git": {"repository": allowed}}).to_string())
        .await;
    let (status, _) = idle
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/diff", queued.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, text) = idle
        .send(
            Method::POST,
            "/api/v1/tasks",
            Some(r#"{"commands": ["x"], "git": {"repository": "/r", "branch": "x"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
}
