//! Decoding rows into conductor-types values. A row that does not decode is reported as
//! [`StoreError::Corrupt`], never a panic.

use std::str::FromStr;

use conductor_core::{Candidate, StoreError};
use conductor_types::{
    Bytes, CommandResult, Slot, SlotState, TaskEvent, TaskEventKind, TaskId, TaskSpec, TaskState,
    TaskStatus, Timestamp, TokenInfo, Workspace,
};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{backend, corrupt};

/// A task's id, spec and state (results are read separately).
pub(crate) type TaskRow = (TaskId, TaskSpec, TaskState);

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column)
        .map_err(backend(format!("reading column {column}")))
}

fn time(value: i64) -> Timestamp {
    Timestamp(value.max(0) as u64)
}

fn task_id(text: &str) -> Result<TaskId, StoreError> {
    TaskId::from_str(text).map_err(|e| corrupt("a task id", e))
}

/// The `seq` and contents of a `tasks` row.
pub(crate) fn task(row: &SqliteRow) -> Result<(i64, TaskRow), StoreError> {
    let id = task_id(&get::<String>(row, "id")?)?;
    let spec: TaskSpec = serde_json::from_str(&get::<String>(row, "spec")?)
        .map_err(|e| corrupt(format!("the spec of task {id}"), e))?;
    let status: TaskStatus = get::<String>(row, "status")?
        .parse()
        .map_err(|e| corrupt(format!("the status of task {id}"), e))?;
    let state = TaskState {
        status,
        status_reason: get(row, "status_reason")?,
        failure_code: get::<Option<String>>(row, "failure_code")?
            .map(|code| code.parse())
            .transpose()
            .map_err(|e| corrupt(format!("the failure code of task {id}"), e))?,
        attempt: get::<i64>(row, "attempt")?.max(0) as u32,
        // The column kept its name from before the slots were renamed (no migration needed).
        slot_id: get(row, "agent_id")?,
        exit_code: get(row, "exit_code")?,
        queued_at: time(get(row, "queued_at")?),
        started_at: get::<Option<i64>>(row, "started_at")?.map(time),
        finished_at: get::<Option<i64>>(row, "finished_at")?.map(time),
    };
    Ok((get(row, "seq")?, (id, spec, state)))
}

/// A queued task as the dispatcher sees it (see `queued_candidates`).
pub(crate) fn candidate(row: &SqliteRow) -> Result<Candidate, StoreError> {
    Ok(Candidate {
        id: task_id(&get::<String>(row, "id")?)?,
        priority: get(row, "priority")?,
        queued_at: time(get(row, "queued_at")?),
        cpus: get(row, "cpus")?,
        memory: get::<Option<i64>>(row, "memory")?.map(|n| n.max(0) as u64),
        workspace: get(row, "workspace")?,
    })
}

/// A `command_results` row.
pub(crate) fn command_result(row: &SqliteRow) -> Result<CommandResult, StoreError> {
    Ok(CommandResult {
        index: get::<i64>(row, "idx")?.max(0) as u32,
        attempt: get::<i64>(row, "attempt")?.max(0) as u32,
        command: get(row, "command")?,
        exit_code: get(row, "exit_code")?,
        signal: get(row, "signal")?,
        timed_out: get(row, "timed_out")?,
        oom_killed: get(row, "oom_killed")?,
        error: get(row, "error")?,
        stats: serde_json::from_str(&get::<String>(row, "stats")?)
            .map_err(|e| corrupt("command stats", e))?,
        started_at: time(get(row, "started_at")?),
        finished_at: time(get(row, "finished_at")?),
        executor: get(row, "executor")?,
    })
}

/// An `events` row.
pub(crate) fn event(task_id: TaskId, row: &SqliteRow) -> Result<TaskEvent, StoreError> {
    let kind: TaskEventKind =
        serde_json::from_str(&get::<String>(row, "body")?).map_err(|e| corrupt("an event", e))?;
    Ok(TaskEvent {
        id: get(row, "id")?,
        task_id,
        at: time(get(row, "at")?),
        kind,
    })
}

/// An `events` row that names its task (`task_id` selected).
pub(crate) fn any_event(row: &SqliteRow) -> Result<TaskEvent, StoreError> {
    event(task_id(&get::<String>(row, "task_id")?)?, row)
}

/// An `agents` row: a slot (the table kept its name from before the slots were renamed).
pub(crate) fn slot(row: &SqliteRow) -> Result<Slot, StoreError> {
    let state = match get::<String>(row, "state")?.as_str() {
        "idle" => SlotState::Idle,
        "busy" => SlotState::Busy,
        "offline" => SlotState::Offline,
        other => return Err(corrupt("an agent state", other)),
    };
    Ok(Slot {
        id: get(row, "id")?,
        state,
        task_id: get::<Option<String>>(row, "task_id")?
            .as_deref()
            .map(task_id)
            .transpose()?,
        workspace_root: get(row, "workspace_root")?,
        // Not stored: the scheduler knows it from the start.
        token_id: None,
        updated_at: time(get(row, "updated_at")?),
    })
}

/// A `tokens` row.
pub(crate) fn token(row: &SqliteRow) -> Result<TokenInfo, StoreError> {
    Ok(TokenInfo {
        id: get(row, "id")?,
        name: get(row, "name")?,
        admin: get(row, "admin")?,
        created_at: time(get(row, "created_at")?),
        revoked_at: get::<Option<i64>>(row, "revoked_at")?.map(time),
    })
}

/// A `workspaces` row.
pub(crate) fn workspace(row: &SqliteRow) -> Result<Workspace, StoreError> {
    let id: String = get(row, "id")?;
    Ok(Workspace {
        id: id.parse().map_err(|e| corrupt("a workspace id", e))?,
        name: get(row, "name")?,
        cleanup: get(row, "cleanup")?,
        created_at: time(get(row, "created_at")?),
        last_used_at: get::<Option<i64>>(row, "last_used_at")?.map(time),
        size_bytes: get::<Option<i64>>(row, "size_bytes")?.map(|n| n.max(0) as u64),
        owner: get(row, "owner")?,
        disk: get::<Option<i64>>(row, "disk_bytes")?.map(|n| Bytes(n.max(0) as u64)),
    })
}
