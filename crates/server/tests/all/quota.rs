//! `resources.disk` enforced by the scheduler with a loop-mounted filesystem per fresh
//! workspace, for real (root and a loop device needed; skipped with the reason otherwise).

use axum::http::{Method, StatusCode};
use conductor_types::{Bytes, FailureCode, TaskStatus, Workspace};
use serde_json::{json, Value};

use crate::support::{error_of, Options, TestApp};

/// Why this machine cannot run quota tests, if it cannot.
fn missing_facility() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("quota tests mount loop devices and need root".into());
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control: loop devices are not available".into());
    }
    let mkfs = std::process::Command::new("mkfs.ext4").arg("-V").output();
    if mkfs.is_err() {
        return Some("mkfs.ext4 is not installed".into());
    }
    None
}

async fn quota_app() -> Option<TestApp> {
    quota_app_with(Options::default()).await
}

/// A quota-enforcing app over `options`, or `None` (skipped, with the reason) where quotas
/// cannot work.
async fn quota_app_with(options: Options) -> Option<TestApp> {
    if let Some(reason) = missing_facility() {
        eprintln!("skipped: {reason}");
        return None;
    }
    Some(
        TestApp::with(Options {
            disk_quotas: true,
            ..options
        })
        .await,
    )
}

#[tokio::test]
async fn a_task_that_fills_its_disk_quota_gets_enospc_and_disk_quota_exceeded() {
    let Some(app) = quota_app().await else { return };
    let task = app
        .submit(r#"{"commands": ["fill 40000000"], "resources": {"disk": "16m"}}"#)
        .await;
    let done = app.wait_for(task.id, TaskStatus::Failed).await;
    let reason = done
        .state
        .status_reason
        .clone()
        .unwrap_or_else(|| format!("no reason: {done:?}"));
    assert!(
        reason.starts_with("disk_quota_exceeded: the task filled its workspace's disk quota of 16"),
        "{reason}"
    );
    // The stable code, in the task's JSON and in the store.
    assert_eq!(
        done.state.failure_code,
        Some(FailureCode::DiskQuotaExceeded)
    );
    let (_, text) = app
        .send(Method::GET, &format!("/api/v1/tasks/{}", task.id), None)
        .await;
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["failure_code"], json!("disk_quota_exceeded"));
    assert_eq!(
        app.store
            .get_task(task.id)
            .await
            .unwrap()
            .state
            .failure_code,
        Some(FailureCode::DiskQuotaExceeded)
    );
    let (_, logs) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/logs", task.id),
            None,
        )
        .await;
    assert!(logs.contains("No space left on device"), "{logs}");
    // The executor was not asked to enforce it; the scheduler did.
    let request = app.executor.requests.lock().unwrap()[0].clone();
    assert_eq!(request.limits.disk, None);
    // The workspace is unmounted and removed (its filesystem is emptied and kept: see
    // `a_fresh_workspace_filesystem_is_emptied_and_reused_by_the_next_task`).
    let image = app
        ._dir
        .path()
        .join("workspaces/quota")
        .join(done.state.slot_id.clone().unwrap())
        .join(format!("{}.img", task.id));
    for _ in 0..500 {
        if !image.exists() && !request.workspace.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!image.exists(), "{}", image.display());
    assert!(!request.workspace.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&task.id.to_string()), "{mounts}");

    // Within the quota: succeeds, no reason.
    let small = app
        .submit(r#"{"commands": ["fill 1000000"], "resources": {"disk": "16m"}}"#)
        .await;
    let done = app.wait_for(small.id, TaskStatus::Succeeded).await;
    assert_eq!(done.state.status_reason, None);
    assert_eq!(done.state.failure_code, None);
}

#[tokio::test]
async fn disk_quotas_are_refused_where_they_cannot_apply() {
    // Without a default disk, a workspace created without a quota has none.
    let mut limits = conductor_core::LimitPolicy::builtin();
    limits.default.disk = None;
    let app = TestApp::with(Options {
        disk_quotas: true,
        run_loop: false,
        limits: Some(limits),
        ..Options::default()
    })
    .await;
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/workspaces",
            Some(r#"{"name": "repo"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let cases = [
        (
            r#"{"commands": ["x"], "workspace": "repo", "resources": {"disk": "16m"}}"#,
            ("not_supported", "resources.disk: workspace repo has no disk quota: create the workspace with one (POST /api/v1/workspaces {\"name\", \"disk\"}) or leave out \"workspace\" to run in a fresh workspace of that size"),
        ),
        (
            r#"{"commands": ["x"], "resources": {"disk": "4m"}}"#,
            ("invalid_field", "resources.disk: 4m is below the smallest disk quota, 8m"),
        ),
    ];
    for (body, (code, message)) in cases {
        let (status, text) = app.send(Method::POST, "/api/v1/tasks", Some(body)).await;
        assert_eq!(
            (status, error_of(&text)),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                (code.into(), message.into())
            ),
            "{body}"
        );
    }
    // Without quotas the executor's capabilities decide, as before.
    let plain = TestApp::with(Options {
        run_loop: false,
        ..Options::default()
    })
    .await;
    let (status, text) = plain
        .send(
            Method::POST,
            "/api/v1/tasks",
            Some(r#"{"commands": ["x"], "resources": {"disk": "16m"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert_eq!(error_of(&text).0, "not_supported");
    // … and a workspace cannot get a quota the server cannot mount.
    let (status, text) = plain
        .send(
            Method::POST,
            "/api/v1/workspaces",
            Some(r#"{"name": "big", "disk": "1g"}"#),
        )
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            (
                "not_supported".into(),
                "disk: disk quotas are loop-mounted filesystems and need a server running as root"
                    .into()
            )
        )
    );
}

#[tokio::test]
async fn a_named_workspace_made_without_a_quota_gets_the_default_disk_and_its_tasks_say_so() {
    let mut limits = conductor_core::LimitPolicy::builtin();
    limits.default.disk = Some(Bytes::mib(16));
    let Some(app) = quota_app_with(Options {
        limits: Some(limits),
        ..Options::default()
    })
    .await
    else {
        return;
    };
    // Made through the API without a `disk`, and made by a task's first use of a new name.
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/workspaces",
            Some(r#"{"name": "made"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let made: Workspace = serde_json::from_str(&text).unwrap();
    assert_eq!(made.disk, Some(Bytes::mib(16)));
    let task = app
        .submit(r#"{"commands": ["fill 1000"], "workspace": "implicit"}"#)
        .await;
    assert_eq!(task.spec.resources.disk, Some(Bytes::mib(16)));
    assert!(
        task.spec
            .defaults_applied
            .contains(&conductor_types::LimitName::Disk),
        "{:?}",
        task.spec.defaults_applied
    );
    app.wait_for(task.id, TaskStatus::Succeeded).await;
    for name in ["made", "implicit"] {
        let dir = app._dir.path().join("workspaces/named").join(name);
        assert!(mounted(&dir), "{name} is not its own filesystem");
    }
    // The quota holds: a task writing past it in the named workspace fails.
    let full = app
        .submit(r#"{"commands": ["fill 40000000"], "workspace": "made"}"#)
        .await;
    let done = app.wait_for(full.id, TaskStatus::Failed).await;
    assert_eq!(
        done.state.failure_code,
        Some(FailureCode::DiskQuotaExceeded)
    );
}

/// Whether `dir` is a mountpoint, from this process's mount table.
fn mounted(dir: &std::path::Path) -> bool {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(dir.to_str().unwrap()))
}

#[tokio::test]
async fn a_named_workspace_with_a_disk_quota_is_its_own_filesystem_shared_by_its_tasks() {
    let Some(app) = quota_app().await else { return };
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/workspaces",
            Some(r#"{"name": "big", "disk": "16m"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let big: Workspace = serde_json::from_str(&text).unwrap();
    assert_eq!(big.disk, Some(Bytes::mib(16)));
    let dir = app._dir.path().join("workspaces/named/big");
    let image = app._dir.path().join("workspaces/named-quota/big.img");
    assert!(mounted(&dir));
    assert!(image.is_file());

    // A task asking for more than the workspace's quota is refused; within it, accepted.
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/tasks",
            Some(r#"{"commands": ["x"], "workspace": "big", "resources": {"disk": "32m"}}"#),
        )
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            (
                "invalid_field".into(),
                "resources.disk: asks for 32m but workspace big has a disk quota of 16m: a task shares its named workspace's quota".into()
            )
        )
    );
    let small = app
        .submit(
            r#"{"commands": ["fill 1000000"], "workspace": "big", "resources": {"disk": "8m"}}"#,
        )
        .await;
    app.wait_for(small.id, TaskStatus::Succeeded).await;
    let request = app.executor.requests.lock().unwrap()[0].clone();
    assert_eq!(
        (request.workspace.clone(), request.limits.disk),
        (dir.clone(), None)
    );

    // Unmounted behind the server's back (as after a reboot): the next use mounts it again,
    // with what the last task left.
    let status = std::process::Command::new("umount")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!mounted(&dir));
    let (status, text) = app
        .send(Method::GET, "/api/v1/workspaces/big/files/fill", None)
        .await;
    assert_eq!((status, text.len()), (StatusCode::OK, 1_000_000));
    assert!(mounted(&dir));

    // Any task in it (with or without resources.disk) is bounded by the quota.
    let full = app
        .submit(r#"{"commands": ["fill 40000000"], "workspace": "big"}"#)
        .await;
    let done = app.wait_for(full.id, TaskStatus::Failed).await;
    assert_eq!(
        done.state.failure_code,
        Some(FailureCode::DiskQuotaExceeded)
    );
    assert!(
        done.state
            .status_reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("disk_quota_exceeded: the task filled its workspace's disk quota of 16m"),
        "{:?}",
        done.state
    );

    // A new name with resources.disk creates the workspace with that quota.
    let (status, text) = app
        .send(
            Method::POST,
            "/api/v1/tasks",
            Some(r#"{"commands": ["x"], "workspace": "auto", "resources": {"disk": "12m"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let (_, text) = app.send(Method::GET, "/api/v1/workspaces/auto", None).await;
    let auto: Workspace = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (auto.disk, auto.owner.as_deref()),
        (Some(Bytes::mib(12)), Some(app.token_id.as_str()))
    );
    let auto_dir = app._dir.path().join("workspaces/named/auto");
    assert!(mounted(&auto_dir));

    // Deleted: unmounted, image and directory gone.
    for name in ["big", "auto"] {
        let mut deleted = StatusCode::CONFLICT;
        for _ in 0..500 {
            let (status, _) = app
                .send(Method::DELETE, &format!("/api/v1/workspaces/{name}"), None)
                .await;
            deleted = status;
            if status != StatusCode::CONFLICT {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(deleted, StatusCode::NO_CONTENT, "{name}");
    }
    assert!(!mounted(&dir) && !mounted(&auto_dir));
    assert!(!image.exists() && !dir.exists() && !auto_dir.exists());
}

/// The mount source (a loop device) of what is mounted on `dir`, if anything.
fn mount_source(dir: &std::path::Path) -> Option<String> {
    let point = std::fs::canonicalize(dir).ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        (std::path::Path::new(fields[4]) == point).then(|| fields[dash + 2].to_owned())
    })
}

/// A fresh workspace's quota filesystem is kept after its task, emptied, and the next task of
/// the same size gets it, empty, as its own workspace; a task of another size gets a new one;
/// nothing stays mounted once the scheduler releases them.
#[tokio::test]
async fn a_fresh_workspace_filesystem_is_emptied_and_reused_by_the_next_task() {
    let Some(app) = quota_app_with(Options {
        slots: 1,
        ..Options::default()
    })
    .await
    else {
        return;
    };
    let pool = app._dir.path().join("workspaces/quota/pool");
    let first = app
        .submit(r#"{"commands": ["fill 3000000", "deep 30"], "resources": {"disk": "16m"}}"#)
        .await;
    app.wait_for(first.id, TaskStatus::Succeeded).await;
    let first_workspace = app.executor.requests.lock().unwrap()[0].workspace.clone();
    // After the task: its workspace is gone, one filesystem is kept, empty.
    let images = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&pool)
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "img"))
                    .collect()
            })
            .unwrap_or_default()
    };
    for _ in 0..500 {
        if !first_workspace.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!first_workspace.exists());
    let kept = images();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept_dir = kept[0].with_extension("");
    let kept_source = mount_source(&kept_dir).expect("the kept filesystem is mounted");
    assert_eq!(std::fs::read_dir(&kept_dir).unwrap().count(), 0);

    // The next task of the same size runs on it, and finds it empty.
    let second = app
        .submit(r#"{"commands": ["sleep 60000"], "resources": {"disk": "16m"}}"#)
        .await;
    app.wait_for(second.id, TaskStatus::Running).await;
    let second_workspace = loop {
        if let Some(request) = app.executor.requests.lock().unwrap().get(2) {
            break request.workspace.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(mount_source(&second_workspace), Some(kept_source.clone()));
    assert_eq!(std::fs::read_dir(&second_workspace).unwrap().count(), 0);
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/api/v1/tasks/{}/cancel", second.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.wait_for(second.id, TaskStatus::Cancelled).await;

    // Another size: a filesystem of its own (the kept one stays for its size).
    let other = app
        .submit(r#"{"commands": ["fill 1000"], "resources": {"disk": "20m"}}"#)
        .await;
    app.wait_for(other.id, TaskStatus::Succeeded).await;
    for _ in 0..500 {
        if images().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(images().len(), 2);

    app.scheduler.release_disk_quotas();
    assert_eq!(images(), Vec::<std::path::PathBuf>::new());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(app._dir.path().to_str().unwrap()),
        "{mounts}"
    );
}
