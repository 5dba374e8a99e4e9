//! `GET /api/v1/events`: every task's state changes as one stream, resumable, live by default.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use conductor_types::{TaskEvent, TaskEventKind, TaskStatus};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::support::{error_of, TestApp};

/// Opens the stream at `uri` (with `Last-Event-ID` when given) and reads its events until
/// `done` says so, or fails after 10 s.
async fn read_feed(
    app: &TestApp,
    uri: &str,
    last_event_id: Option<i64>,
    done: impl Fn(&[TaskEvent]) -> bool,
) -> Vec<TaskEvent> {
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", app.token));
    if let Some(id) = last_event_id {
        builder = builder.header("last-event-id", id.to_string());
    }
    let response = app
        .router
        .clone()
        .oneshot(builder.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&events) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the stream went quiet before the events came")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if !data.is_empty() {
                events.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    events
}

fn statuses(events: &[TaskEvent], task: conductor_types::TaskId) -> Vec<TaskStatus> {
    events
        .iter()
        .filter(|e| e.task_id == task)
        .filter_map(|e| match &e.kind {
            TaskEventKind::State { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_feed_carries_every_tasks_state_changes_and_resumes_where_it_left_off() {
    let app = TestApp::new().await;
    let first = app.submit(r#"{"commands": ["echo one"]}"#).await;
    app.wait_for(first.id, TaskStatus::Succeeded).await;
    // From the start: the first task's whole life, and nothing but state events.
    let finished =
        |events: &[TaskEvent], task| statuses(events, task).last() == Some(&TaskStatus::Succeeded);
    let replay = read_feed(&app, "/api/v1/events?after=0", None, |e| {
        finished(e, first.id)
    })
    .await;
    assert_eq!(
        statuses(&replay, first.id),
        [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Succeeded
        ]
    );
    assert!(replay.iter().all(|e| e.kind.name() == "state"));
    // Live by default: a task submitted while the stream is open, and not the old one.
    let live = {
        let app_ref = &app;
        let reader = read_feed(app_ref, "/api/v1/events", None, |events| {
            events.iter().any(|e| e.task_id != first.id)
                && events.iter().rev().find_map(|e| match &e.kind {
                    TaskEventKind::State { status, .. } => Some(*status),
                    _ => None,
                }) == Some(TaskStatus::Succeeded)
        });
        let submit = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            app_ref.submit(r#"{"commands": ["echo two"]}"#).await
        };
        let (events, second) = tokio::join!(reader, submit);
        assert_eq!(statuses(&events, first.id), []);
        assert_eq!(
            statuses(&events, second.id).first(),
            Some(&TaskStatus::Queued)
        );
        events
    };
    // Resumed after the first task's `running`: only what came after it.
    let running = replay[1].id;
    let resumed = read_feed(&app, "/api/v1/events", Some(running), |events| {
        events.iter().any(|e| e.id == live.last().unwrap().id)
    })
    .await;
    assert_eq!(statuses(&resumed, first.id), [TaskStatus::Succeeded]);
    assert!(resumed.iter().all(|e| e.id > running));
}

#[tokio::test]
async fn a_bad_cursor_is_a_400_that_says_what_to_send() {
    let app = TestApp::new().await;
    for uri in [
        "/api/v1/events?after=-1",
        "/api/v1/events?after=x",
        "/api/v1/events?since=1",
    ] {
        let (status, text) = app.send(Method::GET, uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {text}");
        assert_eq!(error_of(&text).0, "invalid_query", "{uri}");
    }
    let (status, _, body) = app
        .send_with(
            Method::GET,
            "/api/v1/events",
            &[("last-event-id", "abc")],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&String::from_utf8_lossy(&body)).0,
        "invalid_header"
    );
}
