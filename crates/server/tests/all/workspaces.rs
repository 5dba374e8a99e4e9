//! Workspaces and snapshots through the HTTP API, on real directories under the test's home.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use conductor_types::{TaskStatus, Workspace};
use serde_json::{json, Value};

use crate::support::{error_of, TestApp};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

async fn create(app: &TestApp, body: &str) -> Workspace {
    let (status, text) = app
        .send(Method::POST, "/api/v1/workspaces", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn dir_of(app: &TestApp, name: &str) -> PathBuf {
    app._dir.path().join("workspaces/named").join(name)
}

async fn snapshot(app: &TestApp, workspace: &str, name: &str) -> Value {
    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/workspaces/{workspace}/snapshots"),
            Some(&json!({ "name": name }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    json(&text)
}

/// Every entry under `root` as (path, kind, mode, contents or link target), sorted.
fn tree(root: &Path) -> Vec<(String, &'static str, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push((rel, "symlink", 0, target.display().to_string().into_bytes()));
            } else if meta.is_dir() {
                out.push((rel, "dir", mode, Vec::new()));
                pending.push(path);
            } else {
                out.push((rel, "file", mode, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn populate(dir: &Path) {
    std::fs::create_dir_all(dir.join("src/empty")).unwrap();
    std::fs::write(dir.join("src/main.py"), "print('v1')\n").unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("src/main.py", dir.join("link")).unwrap();
}

#[tokio::test]
async fn workspaces_are_created_listed_shown_and_deleted() {
    let app = TestApp::new().await;
    let repo = create(&app, r#"{"name": "repo"}"#).await;
    assert_eq!(
        (
            repo.name.as_str(),
            repo.cleanup.as_str(),
            repo.last_used_at,
            repo.size_bytes,
            repo.owner.as_deref(),
            repo.disk
        ),
        (
            "repo",
            "keep",
            None,
            None,
            Some(app.token_id.as_str()),
            None
        )
    );
    assert!(dir_of(&app, "repo").is_dir());
    let scratch = create(&app, r#"{"name": "scratch", "cleanup": "ttl:168h"}"#).await;
    // The policy is stored in its canonical spelling.
    assert_eq!(scratch.cleanup, "ttl:7d");
    let (status, text) = app.send(Method::GET, "/api/v1/workspaces", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Vec<Workspace>>(&text).unwrap(),
        vec![repo.clone(), scratch.clone()]
    );
    for key in [repo.id.to_string(), "repo".to_owned()] {
        let (status, text) = app
            .send(Method::GET, &format!("/api/v1/workspaces/{key}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(serde_json::from_str::<Workspace>(&text).unwrap(), repo);
    }
    let (status, _) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/workspaces/{}", repo.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!dir_of(&app, "repo").exists());
    let (status, text) = app
        .send(
            Method::GET,
            &format!("/api/v1/workspaces/{}", repo.id),
            None,
        )
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::NOT_FOUND,
            (
                "not_found".into(),
                format!("workspace {} not found", repo.id)
            )
        )
    );
    let (status, _) = app
        .send(Method::DELETE, "/api/v1/workspaces/repo", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_workspace_requests_are_refused_naming_the_field() {
    let app = TestApp::new().await;
    create(&app, r#"{"name": "repo"}"#).await;
    let cases = [
        (
            r#"{"name": "repo"}"#,
            StatusCode::CONFLICT,
            "conflict",
            "a workspace named \"repo\" already exists".to_owned(),
        ),
        (
            r#"{"name": "other", "cleanup": "sometimes"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "cleanup: invalid cleanup policy \"sometimes\": unknown policy (expected delete, keep or ttl:DURATION such as ttl:7d)".to_owned(),
        ),
        (
            r#"{"name": "../etc"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "name: \"../etc\" is not a valid workspace name: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'".to_owned(),
        ),
        (
            r#"{"name": "ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "name: \"ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c\" has the form of a workspace id: choose another name".to_owned(),
        ),
    ];
    for (body, status, code, message) in cases {
        let (got, text) = app
            .send(Method::POST, "/api/v1/workspaces", Some(body))
            .await;
        assert_eq!(
            (got, error_of(&text)),
            (status, (code.into(), message)),
            "{body}"
        );
    }
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/workspaces",
            Some(r#"{"name": "x", "owner": 1}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(
        error_of(&text)
            .1
            .starts_with("owner: unknown field `owner`"),
        "{text}"
    );
    // Only the first one was created.
    let (_, text) = app.send(Method::GET, "/api/v1/workspaces", None).await;
    assert_eq!(
        serde_json::from_str::<Vec<Workspace>>(&text).unwrap().len(),
        1
    );
}

#[tokio::test]
async fn tasks_name_a_workspace_by_id_or_name_and_record_its_use() {
    let app = TestApp::new().await;
    let repo = create(&app, r#"{"name": "repo"}"#).await;
    std::fs::write(dir_of(&app, "repo").join("data"), vec![7u8; 1000]).unwrap();
    let by_id = app
        .submit(&json!({"commands": ["echo a"], "workspace": repo.id}).to_string())
        .await;
    // The spec keeps the workspace's name: its directory.
    assert_eq!(by_id.spec.workspace.as_deref(), Some("repo"));
    app.wait_for(by_id.id, TaskStatus::Succeeded).await;
    let request = app.executor.requests.lock().unwrap()[0].clone();
    assert_eq!(request.workspace, dir_of(&app, "repo"));
    let mut shown = repo.clone();
    for _ in 0..200 {
        let (_, text) = app.send(Method::GET, "/api/v1/workspaces/repo", None).await;
        shown = serde_json::from_str(&text).unwrap();
        if shown.size_bytes.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = app.task(by_id.id).await.state.started_at.unwrap();
    assert!(shown.last_used_at.unwrap() >= started, "{shown:?}");
    assert_eq!(shown.size_bytes, Some(1000));

    // An unknown id is refused, naming the field; an unknown name is created (`keep`).
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/tasks",
            Some(r#"{"commands": ["x"], "workspace": "ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c"}"#),
        )
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            (
                "invalid_field".into(),
                "workspace: no workspace has the id ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c".into()
            )
        )
    );
    let fresh = app
        .submit(r#"{"commands": ["echo b"], "workspace": "newbie"}"#)
        .await;
    app.wait_for(fresh.id, TaskStatus::Succeeded).await;
    let (status, text) = app
        .send(Method::GET, "/api/v1/workspaces/newbie", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let newbie: Workspace = serde_json::from_str(&text).unwrap();
    assert_eq!(newbie.cleanup, "keep");
    assert!(newbie.last_used_at.is_some());
}

#[tokio::test]
async fn a_workspace_is_owned_by_the_token_that_created_it_directly_or_by_a_task() {
    let app = TestApp::with(crate::support::Options {
        run_loop: false,
        ..Default::default()
    })
    .await;
    let agent = conductor_server::auth::create_token(app.store.as_ref(), "agent", false)
        .await
        .unwrap();
    let (status, text) = app
        .send_as(
            Some(&agent.token),
            Method::POST,
            "/api/v1/workspaces",
            Some(r#"{"name": "mine"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let mine: Value = json(&text);
    assert_eq!(mine["owner"], json!(agent.info.id));
    // A task's first use of a name creates the workspace for the task's submitter.
    let (status, text) = app
        .send_as(
            Some(&agent.token),
            Method::POST,
            "/api/v1/tasks",
            Some(r#"{"commands": ["x"], "workspace": "by-task"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    // Using someone else's workspace does not change its owner.
    app.submit(r#"{"commands": ["x"], "workspace": "mine"}"#)
        .await;
    let admin = create(&app, r#"{"name": "admins"}"#).await;
    let (_, text) = app.send(Method::GET, "/api/v1/workspaces", None).await;
    let owners: Vec<(String, Option<String>)> = serde_json::from_str::<Vec<Workspace>>(&text)
        .unwrap()
        .into_iter()
        .map(|w| (w.name, w.owner))
        .collect();
    assert_eq!(
        owners,
        vec![
            ("admins".to_owned(), Some(app.token_id.clone())),
            ("by-task".to_owned(), Some(agent.info.id.clone())),
            ("mine".to_owned(), Some(agent.info.id.clone())),
        ]
    );
    assert_eq!(admin.owner, Some(app.token_id.clone()));
}

#[tokio::test]
async fn a_workspace_in_use_is_neither_deleted_nor_restored_into() {
    let app = TestApp::new().await;
    let repo = create(&app, r#"{"name": "repo"}"#).await;
    populate(&dir_of(&app, "repo"));
    let snap = snapshot(&app, "repo", "base").await;
    let sid = snap["id"].as_str().unwrap();
    let task = app
        .submit(r#"{"commands": ["sleep 5000"], "workspace": "repo"}"#)
        .await;
    app.wait_for(task.id, TaskStatus::Running).await;
    let (status, text) = app
        .send(Method::DELETE, "/api/v1/workspaces/repo", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert_eq!(
        error_of(&text).1,
        format!(
            "task {} is running in workspace repo: wait for it to finish or cancel it",
            task.id
        )
    );
    std::fs::write(dir_of(&app, "repo").join("new"), "x").unwrap();
    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/workspaces/repo/snapshots/{sid}/restore"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    // Nothing was restored.
    assert!(dir_of(&app, "repo").join("new").exists());
    // A snapshot while the task runs is allowed.
    snapshot(&app, "repo", "during").await;
    app.send(
        Method::POST,
        &format!("/api/v1/tasks/{}/cancel", task.id),
        None,
    )
    .await;
    app.wait_for(task.id, TaskStatus::Cancelled).await;
    for _ in 0..200 {
        if app.scheduler.running() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/workspaces/{}/snapshots/{sid}/restore", repo.id),
            Some("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(!dir_of(&app, "repo").join("new").exists());
    // A queued task also holds it against delete.
    let queued = app
        .submit(r#"{"commands": ["sleep 5000"], "workspace": "repo"}"#)
        .await;
    let (status, _) = app
        .send(Method::DELETE, "/api/v1/workspaces/repo", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    app.send(
        Method::POST,
        &format!("/api/v1/tasks/{}/cancel", queued.id),
        None,
    )
    .await;
}

#[tokio::test]
async fn snapshot_mutate_diff_restore_round_trip() {
    let app = TestApp::new().await;
    let repo = create(&app, r#"{"name": "repo"}"#).await;
    let dir = dir_of(&app, "repo");
    populate(&dir);
    let before = tree(&dir);
    let snap = snapshot(&app, &repo.id.to_string(), "before-deployment").await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    assert_eq!(
        snap,
        json!({
            "id": sid,
            "name": "before-deployment",
            "workspace": repo.id,
            "created_at": snap["created_at"],
            "files": 2,
            "dirs": 2,
            "symlinks": 1,
            "bytes": 31,
        })
    );
    let (_, text) = app.send(Method::GET, "/api/v1/workspaces/repo", None).await;
    assert_eq!(
        serde_json::from_str::<Workspace>(&text).unwrap().size_bytes,
        Some(31)
    );
    let (status, text) = app
        .send(Method::GET, "/api/v1/workspaces/repo/snapshots", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&text), json!([snap]));

    // Mutate: change, add, remove, chmod.
    std::fs::write(dir.join("src/main.py"), "print('v2')\n").unwrap();
    std::fs::write(dir.join("added.txt"), "new").unwrap();
    std::fs::remove_dir(dir.join("src/empty")).unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (status, text) = app
        .send(
            Method::GET,
            &format!("/api/v1/workspaces/repo/snapshots/{sid}/diff?against=current"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        json(&text),
        json!({
            "snapshot": sid,
            "against": "current",
            "changes": [
                {"path": "added.txt", "kind": "added", "after": {"type": "file", "mode": 0o644, "size": 3}},
                {"path": "run.sh", "kind": "mode_changed", "before": {"type": "file", "mode": 0o755, "size": 19}, "after": {"type": "file", "mode": 0o700, "size": 19}},
                {"path": "src/empty", "kind": "removed", "before": {"type": "dir", "mode": 0o755}},
                {"path": "src/main.py", "kind": "modified", "before": {"type": "file", "mode": 0o644, "size": 12}, "after": {"type": "file", "mode": 0o644, "size": 12}},
            ]
        })
    );
    // Diff between two snapshots.
    let later = snapshot(&app, "repo", "after").await;
    let later_id = later["id"].as_str().unwrap();
    let (_, text) = app
        .send(
            Method::GET,
            &format!("/api/v1/workspaces/repo/snapshots/{sid}/diff?against={later_id}"),
            None,
        )
        .await;
    let between = json(&text);
    assert_eq!(between["against"], json!(later_id));
    assert_eq!(between["changes"].as_array().unwrap().len(), 4, "{text}");

    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/workspaces/repo/snapshots/{sid}/restore"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let restored = json(&text);
    assert_eq!(
        (&restored["workspace"], &restored["removed"]),
        (&json!(repo.id), &json!(1))
    );
    assert_eq!(tree(&dir), before);
    let (_, text) = app
        .send(
            Method::GET,
            &format!("/api/v1/workspaces/repo/snapshots/{sid}/diff"),
            None,
        )
        .await;
    assert_eq!(json(&text)["changes"], json!([]));

    // Restore into another workspace.
    let copy = create(&app, r#"{"name": "copy"}"#).await;
    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/workspaces/repo/snapshots/{later_id}/restore"),
            Some(r#"{"target": "copy"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json(&text)["workspace"], json!(copy.id));
    assert_eq!(
        std::fs::read_to_string(dir_of(&app, "copy").join("src/main.py")).unwrap(),
        "print('v2')\n"
    );
    // The snapshot is repo's: not found under copy.
    let (status, text) = app
        .send(
            Method::GET,
            &format!("/api/v1/workspaces/copy/snapshots/{sid}/diff"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert_eq!(
        error_of(&text).1,
        format!(
            "snapshot {sid} not found in workspace copy: it belongs to workspace repo ({})",
            repo.id
        )
    );
    let (_, text) = app
        .send(Method::GET, "/api/v1/workspaces/copy/snapshots", None)
        .await;
    assert_eq!(json(&text), json!([]));

    // Delete, then it is gone.
    let (status, _) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/workspaces/repo/snapshots/{sid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, text) = app
        .send(Method::GET, "/api/v1/workspaces/repo/snapshots", None)
        .await;
    assert_eq!(json(&text), json!([later]));
    let (status, text) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/workspaces/repo/snapshots/{sid}"),
            None,
        )
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::NOT_FOUND,
            ("not_found".into(), format!("snapshot {sid} not found"))
        )
    );
    // The later snapshot still restores after the collection.
    std::fs::remove_dir_all(&dir).unwrap();
    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/workspaces/repo/snapshots/{later_id}/restore"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(tree(&dir), tree(&dir_of(&app, "copy")));
}

#[tokio::test]
async fn bad_snapshot_requests() {
    let app = TestApp::new().await;
    create(&app, r#"{"name": "repo"}"#).await;
    let snap = snapshot(&app, "repo", "one").await;
    let sid = snap["id"].as_str().unwrap();
    let cases: Vec<(Method, String, Option<&str>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/v1/workspaces/nope/snapshots".into(),
            Some(r#"{"name": "x"}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/api/v1/workspaces/nope/snapshots".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/api/v1/workspaces/repo/snapshots".into(),
            Some(r#"{"name": ""}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/api/v1/workspaces/repo/snapshots".into(),
            Some(r#"{}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::GET,
            "/api/v1/workspaces/repo/snapshots/not-a-uuid/diff".into(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            Method::GET,
            "/api/v1/workspaces/repo/snapshots/67e55044-10b1-426f-9247-bb680e5fe0c8/diff".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            format!("/api/v1/workspaces/repo/snapshots/{sid}/diff?against=yesterday"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::POST,
            format!("/api/v1/workspaces/repo/snapshots/{sid}/restore"),
            Some(r#"{"target": "nope"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            format!("/api/v1/workspaces/repo/snapshots/{sid}/restore"),
            Some(r#"{"into": "x"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/api/v1/snapshots/import".into(),
            Some("not a snapshot"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        let (got, text) = app.send(method.clone(), &uri, body).await;
        assert_eq!(
            (got, error_of(&text).0.as_str()),
            (status, code),
            "{method} {uri}: {text}"
        );
    }
    let (_, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/workspaces/repo/snapshots/{sid}/restore"),
            Some(r#"{"target": "nope"}"#),
        )
        .await;
    assert_eq!(
        error_of(&text).1,
        "target: no workspace has the id or name \"nope\""
    );
}

#[tokio::test]
async fn a_snapshot_exported_from_one_server_imports_and_restores_on_another() {
    let source = TestApp::new().await;
    create(&source, r#"{"name": "repo"}"#).await;
    populate(&dir_of(&source, "repo"));
    let snap = snapshot(&source, "repo", "ship").await;
    let sid = snap["id"].as_str().unwrap();
    let (status, headers, archive) = source
        .send_bytes(
            Method::GET,
            &format!("/api/v1/workspaces/repo/snapshots/{sid}/export"),
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/zstd");
    // zstd's magic number.
    assert_eq!(&archive[..4], &[0x28, 0xb5, 0x2f, 0xfd]);

    let target = TestApp::new().await;
    let (status, _, body) = target
        .send_bytes(Method::POST, "/api/v1/snapshots/import", archive.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let imported: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(imported, snap);
    // Again: a no-op with the same answer.
    let (status, _, body) = target
        .send_bytes(Method::POST, "/api/v1/snapshots/import", archive)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), snap);
    // Its workspace does not exist here: it restores under any workspace.
    create(&target, r#"{"name": "landing"}"#).await;
    let (status, text) = target
        .send(
            Method::POST,
            &format!("/api/v1/workspaces/landing/snapshots/{sid}/restore"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        tree(&dir_of(&target, "landing")),
        tree(&dir_of(&source, "repo"))
    );
}

#[tokio::test]
async fn an_import_declaring_more_than_import_max_is_refused_and_leaves_nothing() {
    // 8 MiB of zeros: a snapshot that exports to a few kilobytes (a decompression bomb, scaled).
    let source = TestApp::new().await;
    create(&source, r#"{"name": "bomb"}"#).await;
    std::fs::File::create(dir_of(&source, "bomb").join("zeros"))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let snap = snapshot(&source, "bomb", "bomb").await;
    let sid = snap["id"].as_str().unwrap();
    let (status, _, archive) = source
        .send_bytes(
            Method::GET,
            &format!("/api/v1/workspaces/bomb/snapshots/{sid}/export"),
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(archive.len() < 64 * 1024, "{} bytes", archive.len());

    let target = TestApp::with(crate::support::Options {
        import_max: Some(conductor_types::Bytes(4 << 20)),
        ..Default::default()
    })
    .await;
    let (status, _, body) = target
        .send_bytes(Method::POST, "/api/v1/snapshots/import", archive.clone())
        .await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert_eq!(
        error_of(&text),
        (
            "invalid_field".to_owned(),
            "body: the snapshot declares 8388608 bytes of files, over the import limit of 4194304 bytes".to_owned()
        )
    );
    // Nothing was stored: no manifest, no blob, no temporary file.
    let store = target.scheduler.config().snapshot_root.clone();
    let files: Vec<PathBuf> = walk_files(&store);
    assert_eq!(files, Vec::<PathBuf>::new());

    // The source's own limit (the default, 2 GiB) takes it back.
    let (status, _, _) = source
        .send_bytes(Method::POST, "/api/v1/snapshots/import", archive)
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// Every regular file below `dir` but the store lock.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "store.lock") {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test]
async fn cleanup_policies_are_enforced_by_the_sweeper() {
    let app = TestApp::new().await;
    let once = create(&app, r#"{"name": "once", "cleanup": "delete"}"#).await;
    create(&app, r#"{"name": "short", "cleanup": "ttl:300ms"}"#).await;
    create(&app, r#"{"name": "busy", "cleanup": "ttl:300ms"}"#).await;
    create(&app, r#"{"name": "kept", "cleanup": "keep"}"#).await;
    // Nothing is due yet: `delete` waits for a task, the TTLs have not run out.
    let (removed, next) = app.scheduler.sweep_workspaces().await.unwrap();
    assert_eq!(removed, Vec::<String>::new());
    assert!(next.is_some());

    // `delete`: removed once its task is over.
    let task = app
        .submit(&json!({"commands": ["echo hi"], "workspace": once.id}).to_string())
        .await;
    app.wait_for(task.id, TaskStatus::Succeeded).await;
    // The record goes first (atomically with the in-use check), then the directory.
    let mut status = StatusCode::OK;
    for _ in 0..300 {
        status = app
            .send(Method::GET, "/api/v1/workspaces/once", None)
            .await
            .0;
        if status == StatusCode::NOT_FOUND && !dir_of(&app, "once").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!dir_of(&app, "once").exists());

    // TTL: removed once unused that long, unless a task runs in it.
    let running = app
        .submit(r#"{"commands": ["sleep 5000"], "workspace": "busy"}"#)
        .await;
    app.wait_for(running.id, TaskStatus::Running).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (removed, _) = app.scheduler.sweep_workspaces().await.unwrap();
    assert_eq!(removed, vec!["short".to_owned()]);
    assert!(!dir_of(&app, "short").exists());
    let (_, text) = app.send(Method::GET, "/api/v1/workspaces", None).await;
    let names: Vec<String> = serde_json::from_str::<Vec<Workspace>>(&text)
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, vec!["busy", "kept"]);
    app.send(
        Method::POST,
        &format!("/api/v1/tasks/{}/cancel", running.id),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_deletes_and_their_gc_never_lose_a_blob_of_snapshots_being_created() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let app = Arc::new(TestApp::new().await);
    create(&app, r#"{"name": "repo"}"#).await;
    create(&app, r#"{"name": "check"}"#).await;
    let dir = dir_of(&app, "repo");
    std::fs::write(dir.join("stable"), "always here").unwrap();
    // Three states of one file cycle: a delete orphans blobs the next snapshot reuses, while
    // the delete's collection wants them gone.
    let states: Vec<Vec<u8>> = (0..3u8)
        .map(|i| vec![b'a' + i; 5000 + usize::from(i)])
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let deleted = Arc::new(AtomicUsize::new(0));
    let collector = {
        let (app, done, deleted) = (Arc::clone(&app), Arc::clone(&done), Arc::clone(&deleted));
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let (_, text) = app
                    .send(Method::GET, "/api/v1/workspaces/repo/snapshots", None)
                    .await;
                for snapshot in json(&text).as_array().unwrap() {
                    if snapshot["name"].as_str().unwrap().starts_with("ephemeral") {
                        let uri = format!(
                            "/api/v1/workspaces/repo/snapshots/{}",
                            snapshot["id"].as_str().unwrap()
                        );
                        let (status, text) = app.send(Method::DELETE, &uri, None).await;
                        assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
                        deleted.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut kept = Vec::new();
    for round in 0..60usize {
        std::fs::write(dir.join("cycling"), &states[round % 3]).unwrap();
        std::fs::write(
            dir.join(format!("unique-{}", round % 2)),
            format!("round {round}"),
        )
        .unwrap();
        let name = if round % 3 == 0 { "keep" } else { "ephemeral" };
        let created = snapshot(&app, "repo", &format!("{name}-{round}")).await;
        if name == "keep" {
            kept.push((created["id"].as_str().unwrap().to_owned(), tree(&dir)));
        }
    }
    done.store(true, Ordering::SeqCst);
    collector.await.unwrap();
    assert!(deleted.load(Ordering::SeqCst) > 0, "nothing was deleted");
    // Every kept snapshot restores exactly what it recorded.
    for (id, expected) in kept {
        let (status, text) = app
            .send(
                Method::POST,
                &format!("/api/v1/workspaces/repo/snapshots/{id}/restore"),
                Some(r#"{"target": "check"}"#),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(tree(&dir_of(&app, "check")), expected, "{id}");
    }
}
