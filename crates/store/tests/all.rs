//! SQLite store against a real database file in a tempdir.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

#[path = "all/agents.rs"]
mod agents;
#[path = "all/secrets.rs"]
mod secrets;

use std::collections::BTreeMap;
use std::sync::Arc;

use conductor_core::{validate_request, Candidate, Store, StoreError, TaskQuery, Transition};
use conductor_store::{SqliteStore, SCHEMA_VERSION};
use conductor_types::{
    CommandResult, ExecutionStats, OutputStream, Slot, SlotState, TaskEventKind, TaskId,
    TaskRequest, TaskSpec, TaskStatus, Timestamp, TokenInfo,
};

fn spec(commands: &[&str], labels: &[(&str, &str)]) -> TaskSpec {
    let request = TaskRequest {
        commands: Some(commands.iter().map(|c| (*c).to_owned()).collect()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        retries: Some(1),
        ..TaskRequest::default()
    };
    validate_request(request, &["host"]).unwrap().spec
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("conductor.db"))
        .await
        .unwrap()
}

/// A store over a fresh database in a tempdir of its own (kept for [`open`] to reopen it).
async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    (dir, store)
}

fn start(at: u64) -> Transition {
    Transition::Start {
        slot_id: "agent-1".into(),
        at: Timestamp(at),
    }
}

#[tokio::test]
async fn migrations_apply_once_and_reopen_keeps_data() {
    let (dir, store) = fresh().await;
    let id = TaskId::random();
    store
        .create_task(id, &spec(&["true"], &[]), &BTreeMap::new(), Timestamp(5))
        .await
        .unwrap();
    store.close().await;
    let store = open(&dir).await;
    assert_eq!(
        store.get_task(id).await.unwrap().state.status,
        TaskStatus::Queued
    );
    assert_eq!(SCHEMA_VERSION, 7);
}

#[tokio::test]
async fn the_list_level_stream_reads_every_tasks_state_events_after_a_cursor() {
    let (_dir, store) = fresh().await;
    assert_eq!(store.last_event_id().await.unwrap(), 0);
    let (a, b) = (TaskId::random(), TaskId::random());
    for id in [a, b] {
        store
            .create_task(id, &spec(&["true"], &[]), &BTreeMap::new(), Timestamp(5))
            .await
            .unwrap();
    }
    let output = TaskEventKind::Output {
        index: 0,
        stream: OutputStream::Stdout,
        text: "hi".into(),
    };
    store.append_event(a, Timestamp(6), &output).await.unwrap();
    let last = store.last_event_id().await.unwrap();
    let states = store.state_events(0, 100).await.unwrap();
    // Both tasks' `queued`, not the output between them.
    assert_eq!(states.iter().map(|e| e.task_id).collect::<Vec<_>>(), [a, b]);
    assert!(states.iter().all(|e| e.kind.name() == "state"));
    assert_eq!(
        store.state_events(states[0].id, 100).await.unwrap().len(),
        1
    );
    assert!(store.state_events(last, 100).await.unwrap().is_empty());
    assert_eq!(store.state_events(0, 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_task_round_trips_with_events_results_and_secrets() {
    let (_dir, store) = fresh().await;
    let id = TaskId::random();
    let spec = spec(&["echo hi", "false"], &[("team", "infra")]);
    let secrets = BTreeMap::from([("TOKEN".to_owned(), "s3cr3t".to_owned())]);
    let created = store
        .create_task(id, &spec, &secrets, Timestamp(1_000))
        .await
        .unwrap();
    assert_eq!(store.get_task(id).await.unwrap(), created);
    assert_eq!(store.task_secrets(id).await.unwrap(), secrets);

    let running = store.transition(id, start(2_000)).await.unwrap();
    assert_eq!(running.state.attempt, 1);
    let output = TaskEventKind::Output {
        index: 0,
        stream: OutputStream::Stdout,
        text: "hi\n".into(),
    };
    let output_id = store
        .append_event(id, Timestamp(2_100), &output)
        .await
        .unwrap();
    let result = CommandResult {
        index: 0,
        attempt: 1,
        command: "echo hi".into(),
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        oom_killed: false,
        error: None,
        executor: None,
        stats: ExecutionStats {
            duration_ms: 3,
            ..ExecutionStats::default()
        },
        started_at: Timestamp(2_000),
        finished_at: Timestamp(2_003),
    };
    store.record_result(id, &result).await.unwrap();
    let done = store
        .transition(
            id,
            Transition::Finish {
                status: TaskStatus::Succeeded,
                exit_code: Some(0),
                reason: None,
                code: None,
                at: Timestamp(3_000),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.results, vec![result]);
    assert_eq!(done.state.finished_at, Some(Timestamp(3_000)));

    let events = store.events(id, None, 100).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.clone()).collect();
    let state = |status, attempt| TaskEventKind::State {
        status,
        attempt,
        reason: None,
    };
    assert_eq!(
        kinds,
        vec![
            state(TaskStatus::Queued, 0),
            state(TaskStatus::Running, 1),
            output,
            TaskEventKind::CommandFinished {
                index: 0,
                exit_code: Some(0)
            },
            state(TaskStatus::Succeeded, 1),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let after = store.events(id, Some(output_id), 100).await.unwrap();
    assert_eq!(after.len(), 2);
}

#[tokio::test]
async fn illegal_transitions_are_refused_and_change_nothing() {
    let (_dir, store) = fresh().await;
    let id = TaskId::random();
    store
        .create_task(id, &spec(&["true"], &[]), &BTreeMap::new(), Timestamp(1))
        .await
        .unwrap();
    let err = store
        .transition(
            id,
            Transition::Finish {
                status: TaskStatus::Succeeded,
                exit_code: Some(0),
                reason: None,
                code: None,
                at: Timestamp(2),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cannot finish a task that is queued");
    store
        .transition(id, Transition::Cancel { at: Timestamp(3) })
        .await
        .unwrap();
    let err = store
        .transition(id, Transition::Cancel { at: Timestamp(4) })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Transition(_)), "{err}");
    assert_eq!(store.events(id, None, 10).await.unwrap().len(), 2);
    let missing = TaskId::random();
    assert!(matches!(
        store.transition(missing, start(1)).await,
        Err(StoreError::TaskNotFound(m)) if m == missing
    ));
}

#[tokio::test]
async fn concurrent_starts_of_one_task_let_exactly_one_win() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir).await);
    let id = TaskId::random();
    store
        .create_task(id, &spec(&["true"], &[]), &BTreeMap::new(), Timestamp(1))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for n in 0..20 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            store.transition(id, start(n)).await.is_ok()
        }));
    }
    let mut wins = 0;
    for handle in handles {
        wins += usize::from(handle.await.unwrap());
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn lists_filter_by_status_and_label_and_paginate() {
    let (_dir, store) = fresh().await;
    let mut ids = Vec::new();
    for n in 0..7u64 {
        let team = if n % 2 == 0 { "infra" } else { "web" };
        let id = TaskId::random();
        store
            .create_task(
                id,
                &spec(&["true"], &[("team", team)]),
                &BTreeMap::new(),
                Timestamp(n),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    store
        .transition(ids[6], Transition::Cancel { at: Timestamp(9) })
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut query = TaskQuery {
        limit: 3,
        ..TaskQuery::default()
    };
    loop {
        let page = store.list_tasks(&query).await.unwrap();
        seen.extend(page.tasks.iter().map(|t| t.id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first);

    let ids_of =
        |page: conductor_types::TaskPage| page.tasks.iter().map(|t| t.id).collect::<Vec<_>>();
    let infra = TaskQuery {
        label: Some(("team".into(), Some("infra".into()))),
        limit: 100,
        ..TaskQuery::default()
    };
    assert_eq!(
        ids_of(store.list_tasks(&infra).await.unwrap()),
        vec![ids[6], ids[4], ids[2], ids[0]]
    );
    let has_team = TaskQuery {
        label: Some(("team".into(), None)),
        limit: 100,
        ..TaskQuery::default()
    };
    assert_eq!(store.list_tasks(&has_team).await.unwrap().tasks.len(), 7);
    let cancelled = TaskQuery {
        status: Some(TaskStatus::Cancelled),
        limit: 100,
        ..TaskQuery::default()
    };
    assert_eq!(
        ids_of(store.list_tasks(&cancelled).await.unwrap()),
        vec![ids[6]]
    );
    let bad = TaskQuery {
        cursor: Some("x".into()),
        limit: 1,
        ..TaskQuery::default()
    };
    assert!(matches!(
        store.list_tasks(&bad).await,
        Err(StoreError::InvalidCursor(_))
    ));
}

#[tokio::test]
async fn the_queue_is_in_priority_then_age_order() {
    let (_dir, store) = fresh().await;
    let mut ids = Vec::new();
    for (n, priority) in [0, 5, 0, 5].into_iter().enumerate() {
        let mut spec = spec(&["true"], &[]);
        spec.priority = priority;
        let id = TaskId::random();
        store
            .create_task(id, &spec, &BTreeMap::new(), Timestamp(n as u64))
            .await
            .unwrap();
        ids.push(id);
    }
    let queue: Vec<_> = store
        .queued_tasks(10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(queue, vec![ids[1], ids[3], ids[0], ids[2]]);
    store.transition(ids[1], start(9)).await.unwrap();
    assert_eq!(
        store
            .task_ids_with_status(TaskStatus::Running)
            .await
            .unwrap(),
        vec![ids[1]]
    );
    let counts = store.count_by_status().await.unwrap();
    assert_eq!(
        (
            counts[&TaskStatus::Queued],
            counts[&TaskStatus::Running],
            counts[&TaskStatus::Failed]
        ),
        (3, 1, 0)
    );
}

#[tokio::test]
async fn only_finished_tasks_can_be_deleted_and_their_events_go_too() {
    let (_dir, store) = fresh().await;
    let id = TaskId::random();
    store
        .create_task(id, &spec(&["true"], &[]), &BTreeMap::new(), Timestamp(1))
        .await
        .unwrap();
    assert!(matches!(
        store.delete_task(id).await,
        Err(StoreError::NotFinished {
            status: TaskStatus::Queued,
            ..
        })
    ));
    store
        .transition(id, Transition::Cancel { at: Timestamp(2) })
        .await
        .unwrap();
    store.delete_task(id).await.unwrap();
    assert!(matches!(
        store.get_task(id).await,
        Err(StoreError::TaskNotFound(_))
    ));
    assert_eq!(store.events(id, None, 10).await.unwrap(), vec![]);
    assert!(matches!(
        store.delete_task(id).await,
        Err(StoreError::TaskNotFound(_))
    ));
}

#[tokio::test]
async fn tokens_are_found_by_hash_and_revoked() {
    let (_dir, store) = fresh().await;
    let info = TokenInfo {
        id: "tok1".into(),
        name: "ci".into(),
        admin: false,
        created_at: Timestamp(10),
        revoked_at: None,
    };
    store.create_token(&info, "abc123").await.unwrap();
    assert_eq!(
        store.token_by_hash("abc123").await.unwrap(),
        Some(info.clone())
    );
    assert_eq!(store.token_by_hash("nope").await.unwrap(), None);
    assert!(store.revoke_token("tok1", Timestamp(20)).await.unwrap());
    assert!(!store.revoke_token("tok2", Timestamp(20)).await.unwrap());
    let revoked = TokenInfo {
        revoked_at: Some(Timestamp(20)),
        ..info
    };
    // Looked up (and cached) just before: the revocation is seen at once, not after a TTL.
    assert_eq!(
        store.token_by_hash("abc123").await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(store.tokens().await.unwrap(), vec![revoked]);
}

/// A token changed behind the store's back (another process on the same file) is seen again
/// once the cache entry is older than its TTL.
#[tokio::test]
async fn a_token_changed_elsewhere_is_seen_after_the_cache_ttl() {
    let (dir, store) = fresh().await;
    let other = open(&dir).await;
    let info = TokenInfo {
        id: "tok1".into(),
        name: "ci".into(),
        admin: false,
        created_at: Timestamp(10),
        revoked_at: None,
    };
    store.create_token(&info, "abc123").await.unwrap();
    assert_eq!(store.token_by_hash("abc123").await.unwrap(), Some(info));
    assert!(other.revoke_token("tok1", Timestamp(20)).await.unwrap());
    tokio::time::sleep(conductor_store::TOKEN_CACHE_TTL + std::time::Duration::from_millis(50))
        .await;
    let seen = store.token_by_hash("abc123").await.unwrap().unwrap();
    assert_eq!(seen.revoked_at, Some(Timestamp(20)));
}

/// The dispatcher's view of the queue is the queue's, field by field, in the same order.
#[tokio::test]
async fn queued_candidates_match_the_queued_tasks() {
    let (_dir, store) = fresh().await;
    let requests = [
        r#"{"commands": ["true"]}"#,
        r#"{"commands": ["true"], "priority": 3, "resources": {"cpus": 1.5, "memory": "512m"}}"#,
        r#"{"commands": ["true"], "workspace": "cache", "resources": {"cpus": 2}}"#,
    ];
    for (n, text) in requests.into_iter().enumerate() {
        let request: TaskRequest = serde_json::from_str(text).unwrap();
        let spec = validate_request(request, &["host"]).unwrap().spec;
        store
            .create_task(
                TaskId::random(),
                &spec,
                &BTreeMap::new(),
                Timestamp(n as u64),
            )
            .await
            .unwrap();
    }
    let expected: Vec<Candidate> = store
        .queued_tasks(10)
        .await
        .unwrap()
        .iter()
        .map(|task| Candidate {
            id: task.id,
            priority: task.spec.priority,
            queued_at: task.state.queued_at,
            cpus: task.spec.resources.cpus.map(|c| c.get()),
            memory: task.spec.resources.memory.map(|m| m.get()),
            workspace: task.spec.workspace.clone(),
        })
        .collect();
    assert_eq!(expected.len(), 3);
    assert_eq!(expected[0].memory, Some(512 * 1024 * 1024));
    assert_eq!(store.queued_candidates(10).await.unwrap(), expected);
    assert_eq!(store.queued_candidates(1).await.unwrap(), expected[..1]);
}

fn result_of(index: u32, exit_code: i32) -> CommandResult {
    CommandResult {
        index,
        attempt: 1,
        command: "true".into(),
        exit_code: Some(exit_code),
        signal: None,
        timed_out: false,
        oom_killed: false,
        error: None,
        executor: None,
        stats: ExecutionStats::default(),
        started_at: Timestamp(2_000),
        finished_at: Timestamp(2_001),
    }
}

fn finish(status: TaskStatus, exit_code: i32) -> Transition {
    Transition::Finish {
        status,
        exit_code: Some(exit_code),
        reason: None,
        code: None,
        at: Timestamp(3_000),
    }
}

/// The last command's result and the task's end are one commit; when the end is refused (the
/// task was cancelled meanwhile) the result is stored all the same.
#[tokio::test]
async fn the_last_result_and_the_end_are_recorded_together() {
    let (_dir, store) = fresh().await;
    let id = TaskId::random();
    store
        .create_task(id, &spec(&["true"], &[]), &BTreeMap::new(), Timestamp(1))
        .await
        .unwrap();
    store.transition(id, start(2)).await.unwrap();
    let state = store
        .record_result_and_finish(id, &result_of(0, 0), finish(TaskStatus::Succeeded, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.status, TaskStatus::Succeeded);
    let task = store.get_task(id).await.unwrap();
    assert_eq!(task.state, state);
    assert_eq!(task.results, vec![result_of(0, 0)]);
    let kinds: Vec<_> = store
        .events(id, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds[2..],
        [
            TaskEventKind::CommandFinished {
                index: 0,
                exit_code: Some(0)
            },
            TaskEventKind::State {
                status: TaskStatus::Succeeded,
                attempt: 1,
                reason: None
            },
        ]
    );

    let cancelled = TaskId::random();
    store
        .create_task(
            cancelled,
            &spec(&["false"], &[]),
            &BTreeMap::new(),
            Timestamp(1),
        )
        .await
        .unwrap();
    store.transition(cancelled, start(2)).await.unwrap();
    store
        .transition(cancelled, Transition::Cancel { at: Timestamp(5) })
        .await
        .unwrap();
    let refused = store
        .record_result_and_finish(cancelled, &result_of(0, 1), finish(TaskStatus::Failed, 1))
        .await
        .unwrap();
    assert!(refused.is_err(), "{refused:?}");
    let task = store.get_task(cancelled).await.unwrap();
    assert_eq!(task.state.status, TaskStatus::Cancelled);
    assert_eq!(task.results, vec![result_of(0, 1)]);
}

#[tokio::test]
async fn agents_are_upserted() {
    let (_dir, store) = fresh().await;
    let mut agent = Slot {
        id: "agent-1".into(),
        state: SlotState::Idle,
        task_id: None,
        workspace_root: "/w".into(),
        token_id: None,
        updated_at: Timestamp(1),
    };
    store.put_slot(&agent).await.unwrap();
    agent.state = SlotState::Busy;
    agent.task_id = Some(TaskId::random());
    store.put_slot(&agent).await.unwrap();
    assert_eq!(store.slots().await.unwrap(), vec![agent]);
}

/// Costs of the store operations on the dispatch path. Run: `cargo test --release -p
/// conductor-store --test all -- --ignored --nocapture store_costs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly, in release"]
async fn store_costs() {
    let (_dir, store) = fresh().await;
    let spec = spec(&["true"], &[]);
    let n = 500;
    let mut ids = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..n {
        let id = TaskId::random();
        store
            .create_task(id, &spec, &BTreeMap::new(), Timestamp(1))
            .await
            .unwrap();
        ids.push(id);
    }
    let create = started.elapsed() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        store.queued_tasks(24).await.unwrap();
    }
    let queue = started.elapsed() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        store.queued_candidates(24).await.unwrap();
    }
    let candidates = started.elapsed() / n;
    let started = std::time::Instant::now();
    for id in &ids {
        store.transition(*id, start(2)).await.unwrap();
    }
    let transition = started.elapsed() / n;
    let started = std::time::Instant::now();
    let kind = TaskEventKind::CommandStarted {
        index: 0,
        command: "true".into(),
    };
    for id in &ids {
        store.append_event(*id, Timestamp(3), &kind).await.unwrap();
    }
    let event = started.elapsed() / n;
    let (apart, together) = ids.split_at(ids.len() / 2);
    let started = std::time::Instant::now();
    for id in apart {
        store.record_result(*id, &result_of(0, 0)).await.unwrap();
        store
            .transition(*id, finish(TaskStatus::Succeeded, 0))
            .await
            .unwrap();
    }
    let result_then_finish = started.elapsed() / apart.len() as u32;
    let started = std::time::Instant::now();
    for id in together {
        store
            .record_result_and_finish(*id, &result_of(0, 0), finish(TaskStatus::Succeeded, 0))
            .await
            .unwrap()
            .unwrap();
    }
    let result_and_finish = started.elapsed() / together.len() as u32;
    let token = TokenInfo {
        id: "tok1".into(),
        name: "ci".into(),
        admin: false,
        created_at: Timestamp(10),
        revoked_at: None,
    };
    store.create_token(&token, "abc123").await.unwrap();
    let started = std::time::Instant::now();
    for _ in 0..n {
        store.token_by_hash("abc123").await.unwrap();
    }
    let cached = started.elapsed() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        store.token_by_hash("unknown").await.unwrap();
    }
    let uncached = started.elapsed() / n;
    println!("store costs: create {create:?}, queued_tasks {queue:?}, queued_candidates {candidates:?}, transition {transition:?}, append_event {event:?}, record_result then transition(finish) {result_then_finish:?}, record_result_and_finish {result_and_finish:?}, token_by_hash cached {cached:?}, not cached (unknown token) {uncached:?}");
}

fn workspace(name: &str, at: u64) -> conductor_types::Workspace {
    conductor_types::Workspace {
        id: conductor_types::WorkspaceId::random(),
        name: name.to_owned(),
        cleanup: "keep".to_owned(),
        created_at: Timestamp(at),
        last_used_at: None,
        size_bytes: None,
        owner: Some("tok_0123456789ab".to_owned()),
        disk: None,
    }
}

#[tokio::test]
async fn workspaces_are_unique_by_name_found_by_id_or_name_and_updated() {
    let (dir, store) = fresh().await;
    let repo = workspace("repo", 10);
    store.create_workspace(&repo).await.unwrap();
    let duplicate = store.create_workspace(&workspace("repo", 11)).await;
    assert!(
        matches!(&duplicate, Err(StoreError::WorkspaceExists(name)) if name == "repo"),
        "{duplicate:?}"
    );
    // Owner and quota are optional: an old record has neither.
    let other = conductor_types::Workspace {
        owner: None,
        disk: Some(conductor_types::Bytes::mib(64)),
        ..workspace("alpha", 12)
    };
    store.create_workspace(&other).await.unwrap();
    assert_eq!(
        store.find_workspace("repo").await.unwrap(),
        Some(repo.clone())
    );
    assert_eq!(
        store.find_workspace(repo.id.as_str()).await.unwrap(),
        Some(repo.clone())
    );
    assert_eq!(store.find_workspace("nope").await.unwrap(), None);

    store.touch_workspace("repo", Timestamp(50)).await.unwrap();
    store.set_workspace_size(&repo.id, 4096).await.unwrap();
    let updated = store.find_workspace("repo").await.unwrap().unwrap();
    assert_eq!(
        updated,
        conductor_types::Workspace {
            last_used_at: Some(Timestamp(50)),
            size_bytes: Some(4096),
            ..repo.clone()
        }
    );
    assert_eq!(
        store.list_workspaces().await.unwrap(),
        vec![other.clone(), updated.clone()]
    );

    // Reopening keeps them.
    store.close().await;
    let store = open(&dir).await;
    assert_eq!(store.find_workspace("repo").await.unwrap(), Some(updated));
}

#[tokio::test]
async fn a_workspace_named_by_a_queued_or_running_task_cannot_be_deleted() {
    let (_dir, store) = fresh().await;
    let repo = workspace("repo", 10);
    store.create_workspace(&repo).await.unwrap();
    let mut task_spec = spec(&["true"], &[]);
    task_spec.workspace = Some("repo".into());
    let id = TaskId::random();
    store
        .create_task(id, &task_spec, &BTreeMap::new(), Timestamp(20))
        .await
        .unwrap();
    let refused = store.delete_workspace(&repo.id).await;
    assert!(
        matches!(&refused, Err(StoreError::WorkspaceInUse { name, task, status: TaskStatus::Queued }) if name == "repo" && *task == id),
        "{refused:?}"
    );
    store.transition(id, start(30)).await.unwrap();
    assert!(matches!(
        store.delete_workspace(&repo.id).await,
        Err(StoreError::WorkspaceInUse {
            status: TaskStatus::Running,
            ..
        })
    ));
    store
        .transition(
            id,
            Transition::Finish {
                status: TaskStatus::Succeeded,
                exit_code: Some(0),
                reason: None,
                code: None,
                at: Timestamp(40),
            },
        )
        .await
        .unwrap();
    assert_eq!(store.delete_workspace(&repo.id).await.unwrap(), repo);
    assert_eq!(store.find_workspace("repo").await.unwrap(), None);
    assert!(matches!(
        store.delete_workspace(&repo.id).await,
        Err(StoreError::WorkspaceNotFound(_))
    ));
}

#[tokio::test]
async fn a_failure_code_is_stored_with_the_outcome_and_survives_a_reopen() {
    let (dir, store) = fresh().await;
    let id = TaskId::random();
    store
        .create_task(id, &spec(&["true"], &[]), &BTreeMap::new(), Timestamp(1))
        .await
        .unwrap();
    store.transition(id, start(2)).await.unwrap();
    let finished = store
        .transition(
            id,
            Transition::Finish {
                status: TaskStatus::Failed,
                exit_code: Some(1),
                reason: Some("disk_quota_exceeded: full".to_owned()),
                code: Some(conductor_types::FailureCode::DiskQuotaExceeded),
                at: Timestamp(3),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        finished.state.failure_code,
        Some(conductor_types::FailureCode::DiskQuotaExceeded)
    );
    store.close().await;
    let store = open(&dir).await;
    let reread = store.get_task(id).await.unwrap();
    assert_eq!(reread.state, finished.state);
}

/// A held task starts as `transition` would start it, and only while the store still has it
/// queued at the same attempt.
#[tokio::test]
async fn a_known_queued_task_starts_as_a_transition_would_start_it() {
    let (dir, store) = fresh().await;
    let create = |id: TaskId| {
        let store = &store;
        async move {
            store
                .create_task(
                    id,
                    &spec(&["true"], &[]),
                    &BTreeMap::new(),
                    Timestamp(1_000),
                )
                .await
                .unwrap()
        }
    };
    let start_held = |held: conductor_types::Task, at: u64| {
        let store = &store;
        async move {
            store
                .start_known(&held, "agent-1", Timestamp(at))
                .await
                .unwrap()
        }
    };
    let (a, b) = (TaskId::random(), TaskId::random());
    let held_a = create(a).await;
    create(b).await;
    let fast = start_held(held_a.clone(), 2_000).await.unwrap();
    let slow = store.transition(b, start(2_000)).await.unwrap();
    assert_eq!(fast.state, slow.state);
    assert_eq!(store.get_task(a).await.unwrap(), fast);
    // Its `state` event, as the transition records it.
    let events = |id: TaskId| {
        let store = &store;
        async move {
            let events = store.events(id, None, 100).await.unwrap();
            events
                .into_iter()
                .map(|e| (e.at, e.kind))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(events(a).await, events(b).await);
    // Started already, cancelled, deleted: not as held, and nothing is written.
    assert_eq!(start_held(held_a, 3_000).await, None);
    let c = TaskId::random();
    let held_c = create(c).await;
    let cancel = Transition::Cancel {
        at: Timestamp(1_500),
    };
    store.transition(c, cancel).await.unwrap();
    let before = events(c).await;
    assert_eq!(start_held(held_c.clone(), 2_000).await, None);
    assert_eq!(
        store.get_task(c).await.unwrap().state.status,
        TaskStatus::Cancelled
    );
    assert_eq!(events(c).await, before);
    store.delete_task(c).await.unwrap();
    assert_eq!(start_held(held_c, 2_000).await, None);
    // No transaction was left open: the next start commits.
    let d = TaskId::random();
    let held_d = create(d).await;
    assert!(start_held(held_d, 4_000).await.is_some());
    store.close().await;
    let store = open(&dir).await;
    assert_eq!(
        store.get_task(d).await.unwrap().state.status,
        TaskStatus::Running
    );
}

/// Opening the store reads the secrets of the tasks that have some, through the partial index
/// `tasks_with_secrets`: never a scan of every task (a store of many tasks opens as fast as an
/// empty one).
#[tokio::test]
async fn opening_the_store_reads_only_the_tasks_with_secrets() {
    use sqlx::{Connection, Row};
    let (dir, store) = fresh().await;
    store.close().await;
    let url = format!("sqlite://{}", dir.path().join("conductor.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for query in [
        "SELECT COUNT(*) FROM tasks WHERE secrets <> '{}' AND secrets LIKE 'x%'",
        "SELECT id, secrets FROM tasks WHERE secrets <> '{}' AND secrets LIKE 'x%' LIMIT 1",
        "SELECT id, secrets FROM tasks WHERE secrets <> '{}' AND secrets LIKE '{%'",
    ] {
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {query}"))
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        assert!(
            plan.iter().any(|step| step.contains("tasks_with_secrets")),
            "{query}: {plan:?}"
        );
    }
    // The store's own three reads are these (the condition that lets SQLite use the index).
    let source = include_str!("../src/lib.rs");
    assert_eq!(
        source
            .matches("WHERE secrets <> '{}' AND secrets LIKE")
            .count(),
        3
    );
}
