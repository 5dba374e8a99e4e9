//! `resources.disk` enforced by the scheduler with a loop-mounted filesystem per fresh
//! workspace, for real (root and a loop device needed; skipped with the reason otherwise).

use axum::http::{Method, StatusCode};
use conductor_types::TaskStatus;

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
    if let Some(reason) = missing_facility() {
        eprintln!("skipped: {reason}");
        return None;
    }
    Some(
        TestApp::with(Options {
            disk_quotas: true,
            ..Options::default()
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
    // The image is unmounted and removed with the workspace.
    let image = app
        ._dir
        .path()
        .join("workspaces/quota")
        .join(done.state.agent_id.clone().unwrap())
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
}

#[tokio::test]
async fn disk_quotas_are_refused_where_they_cannot_apply() {
    let app = TestApp::with(Options {
        disk_quotas: true,
        run_loop: false,
        ..Options::default()
    })
    .await;
    let cases = [
        (
            r#"{"commands": ["x"], "workspace": "repo", "resources": {"disk": "16m"}}"#,
            ("not_supported", "resources.disk: a disk quota applies to a task's own fresh workspace; named workspaces cannot have one yet"),
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
}
