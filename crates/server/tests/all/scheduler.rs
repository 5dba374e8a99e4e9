//! The scheduler: command order, failures, timeouts, priorities, retries, restart recovery.

use std::sync::Arc;

use conductor_core::{Store, Transition};
use conductor_types::{TaskStatus, Timestamp};

use crate::support::{Options, TestApp};

#[tokio::test]
async fn stops_at_the_first_failure_unless_continue_on_error() {
    let app = TestApp::new().await;
    let stop = app
        .submit(r#"{"commands": ["exit 3", "echo never"]}"#)
        .await;
    let done = app.wait_for(stop.id, TaskStatus::Failed).await;
    assert_eq!(done.state.exit_code, Some(3));
    assert_eq!(done.results.len(), 1);

    let go_on = app
        .submit(r#"{"commands": ["exit 3", "echo still"], "continue_on_error": true}"#)
        .await;
    let done = app.wait_for(go_on.id, TaskStatus::Failed).await;
    let exits: Vec<_> = done.results.iter().map(|r| r.exit_code).collect();
    assert_eq!(exits, vec![Some(3), Some(0)]);
    assert_eq!(done.state.exit_code, Some(3));
}

#[tokio::test]
async fn a_command_that_cannot_run_fails_the_task_with_the_reason() {
    let app = TestApp::new().await;
    let task = app.submit(r#"{"commands": ["fail"]}"#).await;
    let done = app.wait_for(task.id, TaskStatus::Failed).await;
    assert_eq!(
        done.state.status_reason.as_deref(),
        Some("command 0 could not be run: the fake executor is unavailable: scripted failure")
    );
    assert_eq!(done.results[0].exit_code, None);
}

/// The last command's result is stored with the task's end (one commit); a task cancelled while
/// its last command ran keeps that result, and `cancelled` stands.
#[tokio::test]
async fn the_last_result_is_kept_when_the_task_is_cancelled_meanwhile() {
    let app = TestApp::new().await;
    let task = app.submit(r#"{"commands": ["sleep 10000"]}"#).await;
    app.wait_for(task.id, TaskStatus::Running).await;
    let (status, _) = app
        .send(
            axum::http::Method::POST,
            &format!("/api/v1/tasks/{}/cancel", task.id),
            None,
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::OK);
    // Until the run has wound up (10 s at most: a loaded machine is slow, never wrong).
    for _ in 0..1000 {
        if app.scheduler.running() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(app.scheduler.running(), 0, "the cancelled run never ended");
    let done = app.task(task.id).await;
    assert_eq!(done.state.status, TaskStatus::Cancelled);
    assert_eq!(done.results.len(), 1);
    let finished = app.task(task.id).await;
    assert_eq!(finished, done, "nothing is recorded after the cancel");

    // A task that runs to its end: the result and the end, one after the other in the log.
    let ok = app.submit(r#"{"commands": ["echo hi"]}"#).await;
    let done = app.wait_for(ok.id, TaskStatus::Succeeded).await;
    assert_eq!(done.results.len(), 1);
    let events = app
        .scheduler
        .store()
        .events(ok.id, None, 100)
        .await
        .unwrap();
    let tail: Vec<_> = events[events.len() - 2..]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(
        tail,
        vec![
            conductor_types::TaskEventKind::CommandFinished {
                index: 0,
                exit_code: Some(0)
            },
            conductor_types::TaskEventKind::State {
                status: TaskStatus::Succeeded,
                attempt: 1,
                reason: None
            },
        ]
    );
}

#[tokio::test]
async fn the_task_timeout_spans_all_commands() {
    let app = TestApp::new().await;
    let task = app
        .submit(r#"{"commands": ["sleep 50", "sleep 5000"], "timeout": 0.2}"#)
        .await;
    let done = app.wait_for(task.id, TaskStatus::TimedOut).await;
    assert_eq!(done.state.exit_code, Some(124));
    assert_eq!(done.results.len(), 2);
    assert!(done.results[1].timed_out);
}

#[tokio::test]
async fn failed_tasks_are_retried_while_retries_last() {
    let app = TestApp::new().await;
    let task = app
        .submit(r#"{"commands": ["exit 1"], "retries": 2}"#)
        .await;
    for _ in 0..500 {
        let t = app.task(task.id).await;
        if t.state.status == TaskStatus::Failed && t.state.attempt == 3 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never reached attempt 3: {:?}", app.task(task.id).await);
}

#[tokio::test]
async fn higher_priority_runs_first() {
    let app = TestApp::with(Options {
        slots: 1,
        run_loop: false,
        ..Options::default()
    })
    .await;
    let low = app
        .submit(r#"{"commands": ["echo low"], "priority": 1}"#)
        .await;
    let high = app
        .submit(r#"{"commands": ["echo high"], "priority": 9}"#)
        .await;
    tokio::spawn(Arc::clone(&app.scheduler).run());
    app.wait_for(low.id, TaskStatus::Succeeded).await;
    let high = app.task(high.id).await;
    let low = app.task(low.id).await;
    assert!(high.state.started_at <= low.state.started_at);
    let order: Vec<String> = app
        .executor
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| conductor_core::command_of(&r.argv).unwrap().to_owned())
        .collect();
    assert_eq!(order, vec!["echo high", "echo low"]);
}

#[tokio::test]
async fn restart_interrupts_running_tasks_retries_them_and_runs_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conductor.db");
    let store = conductor_store::SqliteStore::open(&path).await.unwrap();
    let first = TestApp::over(
        tempfile::tempdir().unwrap(),
        Arc::new(store.clone()),
        Options {
            run_loop: false,
            ..Options::default()
        },
    )
    .await;
    let once = first.submit(r#"{"commands": ["echo once"]}"#).await;
    let twice = first
        .submit(r#"{"commands": ["echo twice"], "retries": 1}"#)
        .await;
    let waiting = first.submit(r#"{"commands": ["echo waiting"]}"#).await;
    for id in [once.id, twice.id] {
        store
            .transition(
                id,
                Transition::Start {
                    slot_id: "agent-1".into(),
                    at: Timestamp::now(),
                },
            )
            .await
            .unwrap();
    }
    drop(first);

    // "Restart": a new scheduler over the same database.
    let second = TestApp::over(dir, Arc::new(store), Options::default()).await;
    let once = second.wait_for(once.id, TaskStatus::Interrupted).await;
    assert_eq!(
        once.state.status_reason.as_deref(),
        Some("the server stopped while the task was running (found at restart)")
    );
    let twice = second.wait_for(twice.id, TaskStatus::Succeeded).await;
    assert_eq!(twice.state.attempt, 2);
    second.wait_for(waiting.id, TaskStatus::Succeeded).await;
}

#[tokio::test]
async fn shutdown_interrupts_what_does_not_finish_within_the_grace_period() {
    let app = TestApp::new().await;
    let slow = app.submit(r#"{"commands": ["sleep 10000"]}"#).await;
    app.wait_for(slow.id, TaskStatus::Running).await;
    app.scheduler
        .shutdown(std::time::Duration::from_millis(100))
        .await;
    let task = app.task(slow.id).await;
    assert_eq!(task.state.status, TaskStatus::Interrupted);
    assert_eq!(
        task.state.status_reason.as_deref(),
        Some("the server shut down and the task did not finish within the 0s grace period")
    );
    let agents = app.store.slots().await.unwrap();
    assert!(agents
        .iter()
        .all(|a| a.state == conductor_types::SlotState::Offline));
}

#[tokio::test]
async fn many_tasks_complete_exactly_once() {
    let app = Arc::new(
        TestApp::with(Options {
            slots: 4,
            ..Options::default()
        })
        .await,
    );
    let mut handles = Vec::new();
    for client in 0..10 {
        let app = Arc::clone(&app);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..10 {
                let body = format!(r#"{{"commands": ["echo {client}-{n}"]}}"#);
                ids.push(app.submit(&body).await.id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for handle in handles {
        ids.extend(handle.await.unwrap());
    }
    for id in &ids {
        let task = app.wait_for(*id, TaskStatus::Succeeded).await;
        assert_eq!(task.state.attempt, 1);
    }
    assert_eq!(app.executor.requests.lock().unwrap().len(), 100);
}

#[tokio::test]
async fn named_workspaces_persist_and_fresh_ones_are_removed() {
    let app = TestApp::new().await;
    let first = app
        .submit(r#"{"commands": ["echo a"], "workspace": "repo"}"#)
        .await;
    let second = app
        .submit(r#"{"commands": ["echo b"], "workspace": "repo"}"#)
        .await;
    let fresh = app.submit(r#"{"commands": ["echo c"]}"#).await;
    for id in [first.id, second.id, fresh.id] {
        app.wait_for(id, TaskStatus::Succeeded).await;
    }
    let requests = app.executor.requests.lock().unwrap().clone();
    let workspace_of = |command: &str| {
        requests
            .iter()
            .find(|r| conductor_core::command_of(&r.argv) == Some(command))
            .unwrap()
            .workspace
            .clone()
    };
    assert_eq!(workspace_of("echo a"), workspace_of("echo b"));
    assert!(workspace_of("echo a").ends_with("named/repo"));
    assert!(workspace_of("echo a").is_dir());
    let fresh = app.task(fresh.id).await;
    let agent = fresh.state.slot_id.clone().unwrap();
    assert!(workspace_of("echo c").ends_with(format!("agents/{agent}/{}", fresh.id)));
    for _ in 0..100 {
        if !workspace_of("echo c").exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the fresh workspace was not removed");
}

#[tokio::test]
async fn stored_output_is_capped_per_attempt() {
    let app = TestApp::with(Options {
        stored_output_limit: Some(conductor_types::Bytes(12)),
        ..Options::default()
    })
    .await;
    let task = app
        .submit(r#"{"commands": ["echo 0123456789", "echo abcdefghij", "echo more"]}"#)
        .await;
    app.wait_for(task.id, TaskStatus::Succeeded).await;
    let (_, logs) = app
        .send(
            axum::http::Method::GET,
            &format!("/api/v1/tasks/{}/logs", task.id),
            None,
        )
        .await;
    assert_eq!(
        logs,
        "0123456789\na\n[conductor: output past 12 bytes is not stored]\n"
    );
}

/// With a poll of an hour, only a wake-up or the dispatcher's view of the queue can start a
/// task: one the view missed would never run. Submitted through the API one at a time (a free
/// agent: the view starts it without a queue read), two at a time (the second waits for the
/// agent), and more than the view holds (256) at once.
#[tokio::test]
async fn every_submitted_task_runs_without_the_poll() {
    let app = TestApp::with(Options {
        slots: 1,
        poll_interval: std::time::Duration::from_secs(3600),
        ..Options::default()
    })
    .await;
    for burst in [1, 2, 1, 2, 1, 384] {
        let mut ids = Vec::new();
        for _ in 0..burst {
            ids.push(app.submit(r#"{"commands": ["true"]}"#).await.id);
        }
        for id in ids {
            app.wait_for(id, TaskStatus::Succeeded).await;
        }
    }
}
