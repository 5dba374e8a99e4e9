//! The storage contract: tasks, their command results and events, slots, API tokens and
//! workspaces.
//! SQLite implements it today (`conductor-store`); Postgres can follow without touching the
//! scheduler or the API, which only see this trait.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use conductor_types::{
    CommandResult, EventId, LlmRequest, Session, SessionId, Slot, Task, TaskEvent, TaskEventKind,
    TaskId, TaskPage, TaskSpec, TaskState, TaskStatus, Timestamp, TokenInfo, Usage, Workspace,
    WorkspaceId,
};

use crate::{Candidate, Transition, TransitionError};

/// Which tasks `list_tasks` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks with this status.
    pub status: Option<TaskStatus>,
    /// Only tasks with this label key (and value, when given).
    pub label: Option<(String, Option<String>)>,
    /// At most this many (the store caps it).
    pub limit: u32,
    /// Continue after this cursor (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No task with this id.
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    /// The state machine refused the change.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// Deleting a task that has not finished.
    #[error("task {id} is {status}: cancel it and wait for it to finish before deleting it")]
    NotFinished {
        /// The task.
        id: TaskId,
        /// Its status.
        status: TaskStatus,
    },
    /// No workspace with this id or name.
    #[error("workspace {0} not found")]
    WorkspaceNotFound(String),
    /// A workspace with this name exists already.
    #[error("a workspace named {0:?} already exists")]
    WorkspaceExists(String),
    /// Removing a workspace that a queued or running task names.
    #[error(
        "workspace {name:?} is used by task {task} ({status}): wait for it to finish or cancel it"
    )]
    WorkspaceInUse {
        /// The workspace's name.
        name: String,
        /// A task that names it.
        task: TaskId,
        /// That task's status.
        status: TaskStatus,
    },
    /// A cursor that this store did not hand out.
    #[error("invalid cursor {0:?}: pass the next_cursor of a previous page")]
    InvalidCursor(String),
    /// The database failed.
    #[error("storage failed while {context}: {message}")]
    Backend {
        /// What was being done.
        context: String,
        /// The database's error.
        message: String,
    },
    /// Stored data that does not decode (a bug or a damaged database).
    #[error("stored data is damaged ({context}): {message}")]
    Corrupt {
        /// What was being read.
        context: String,
        /// What is wrong.
        message: String,
    },
}

/// Durable state of the orchestrator. Every method commits before it returns.
///
/// The one store the server calls plainly `Store`: the snapshot store is
/// `conductor_workspace::SnapshotStore`, the environment store `conductor_envs::EnvStore`. Not
/// `TaskStore`: it keeps tokens, secrets, slots and workspace records as well as tasks.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new queued task, with its `queued` event, and returns it.
    async fn create_task(
        &self,
        id: TaskId,
        spec: &TaskSpec,
        secrets: &BTreeMap<String, String>,
        at: Timestamp,
    ) -> Result<Task, StoreError>;

    /// The task, with the results of its current attempt.
    async fn get_task(&self, id: TaskId) -> Result<Task, StoreError>;

    /// Tasks newest first, one page at a time.
    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, StoreError>;

    /// Removes a finished task with its results and events.
    async fn delete_task(&self, id: TaskId) -> Result<(), StoreError>;

    /// Applies `transition` through [`crate::apply`] atomically, records a `state` event, and
    /// returns the task as it is now.
    async fn transition(&self, id: TaskId, transition: Transition) -> Result<Task, StoreError>;

    /// Starts a queued task that the caller holds as the store returned it: the
    /// [`Transition::Start`] of [`Store::transition`], which a store may do without reading the
    /// task back. `None` when the stored task is no longer in that state (cancelled, deleted,
    /// started meanwhile); [`Store::transition`] then says what happened.
    async fn start_known(
        &self,
        task: &Task,
        slot_id: &str,
        at: Timestamp,
    ) -> Result<Option<Task>, StoreError> {
        let start = Transition::Start {
            slot_id: slot_id.to_owned(),
            at,
        };
        self.transition(task.id, start).await.map(Some)
    }

    /// The secret values of a task (never returned by the API).
    async fn task_secrets(&self, id: TaskId) -> Result<BTreeMap<String, String>, StoreError>;

    /// Up to `limit` queued tasks, highest priority first, then oldest.
    async fn queued_tasks(&self, limit: u32) -> Result<Vec<Task>, StoreError>;

    /// What the dispatcher needs of up to `limit` queued tasks (highest priority first, then
    /// oldest), without decoding their whole specs: the queue is read on every wake-up, and the
    /// tasks it starts come back whole from [`Store::transition`].
    async fn queued_candidates(&self, limit: u32) -> Result<Vec<Candidate>, StoreError> {
        Ok(self
            .queued_tasks(limit)
            .await?
            .iter()
            .map(|task| Candidate {
                id: task.id,
                priority: task.spec.priority,
                queued_at: task.state.queued_at,
                cpus: task.spec.resources.cpus.map(|c| c.get()),
                memory: task.spec.resources.memory.map(|m| m.get()),
                workspace: task.spec.workspace.clone(),
            })
            .collect())
    }

    /// Ids of every task with `status`, oldest first.
    async fn task_ids_with_status(&self, status: TaskStatus) -> Result<Vec<TaskId>, StoreError>;

    /// Number of tasks in each status.
    async fn count_by_status(&self) -> Result<BTreeMap<TaskStatus, u64>, StoreError>;

    /// Appends an event; ids increase monotonically across all tasks.
    async fn append_event(
        &self,
        id: TaskId,
        at: Timestamp,
        kind: &TaskEventKind,
    ) -> Result<EventId, StoreError>;

    /// Events of a task after `after` (all when `None`), oldest first, at most `limit`.
    async fn events(
        &self,
        id: TaskId,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<Vec<TaskEvent>, StoreError>;

    /// The `state` events of every task after `after`, oldest first, at most `limit` (the
    /// list-level stream of task changes).
    async fn state_events(&self, after: EventId, limit: u32) -> Result<Vec<TaskEvent>, StoreError>;

    /// The id of the newest event (0 when there is none): where a live stream starts.
    async fn last_event_id(&self) -> Result<EventId, StoreError>;

    /// Records (or replaces) the result of one command of one attempt and appends its
    /// `command_finished` event, in one transaction; returns the event's id.
    async fn record_result(
        &self,
        id: TaskId,
        result: &CommandResult,
    ) -> Result<EventId, StoreError>;

    /// Records the result of a task's last command (as [`Store::record_result`]) and then
    /// applies `finish` (as [`Store::transition`]), in one transaction where the store can: one
    /// commit instead of two on every task's path. When the state machine refuses `finish` (the
    /// task was cancelled or interrupted meanwhile) the result is still committed and the
    /// refusal is the inner `Err`. Returns the task's state afterwards.
    async fn record_result_and_finish(
        &self,
        id: TaskId,
        result: &CommandResult,
        finish: Transition,
    ) -> Result<Result<TaskState, TransitionError>, StoreError> {
        self.record_result(id, result).await?;
        match self.transition(id, finish).await {
            Ok(task) => Ok(Ok(task.state)),
            Err(StoreError::Transition(refused)) => Ok(Err(refused)),
            Err(other) => Err(other),
        }
    }

    /// Creates or updates a slot.
    async fn put_slot(&self, slot: &Slot) -> Result<(), StoreError>;

    /// Every slot, by id.
    async fn slots(&self) -> Result<Vec<Slot>, StoreError>;

    /// Stores a token's listing and the hash of its secret.
    async fn create_token(&self, info: &TokenInfo, hash: &str) -> Result<(), StoreError>;

    /// The token whose secret hashes to `hash`, revoked or not. A store may answer from a
    /// short-lived cache (it is asked on every request), but never with a token it has since
    /// revoked through [`Store::revoke_token`].
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenInfo>, StoreError>;

    /// Every token, oldest first.
    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;

    /// Revokes a token; `false` when there is no such token.
    async fn revoke_token(&self, id: &str, at: Timestamp) -> Result<bool, StoreError>;

    /// Stores a new workspace; [`StoreError::WorkspaceExists`] when its name is taken.
    async fn create_workspace(&self, workspace: &Workspace) -> Result<(), StoreError>;

    /// The workspace with this id or name (ids and names never look alike).
    async fn find_workspace(&self, id_or_name: &str) -> Result<Option<Workspace>, StoreError>;

    /// Every workspace, by name.
    async fn list_workspaces(&self) -> Result<Vec<Workspace>, StoreError>;

    /// Removes a workspace's record and returns it, unless a queued or running task names it
    /// ([`StoreError::WorkspaceInUse`]); checked and removed in one transaction.
    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<Workspace, StoreError>;

    /// Records that a task started in the workspace named `name` (nothing when there is none).
    async fn touch_workspace(&self, name: &str, at: Timestamp) -> Result<(), StoreError>;

    /// Records the measured size of a workspace's files.
    async fn set_workspace_size(&self, id: &WorkspaceId, bytes: u64) -> Result<(), StoreError>;

    /// Records what an agent task used so far (replacing the previous figure).
    async fn record_usage(&self, id: TaskId, usage: &Usage) -> Result<(), StoreError>;

    /// Stores a new agent session (its turns are the tasks whose spec names it).
    async fn create_session(&self, session: &Session) -> Result<(), StoreError>;

    /// The session with its turns, oldest first, and their summed usage.
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// Records the agent CLI's own session id, which the next turn resumes.
    async fn set_cli_session(&self, id: &SessionId, cli_session: &str) -> Result<(), StoreError>;

    /// Appends the audit record of one request the LLM gateway forwarded.
    async fn record_llm_request(&self, request: &LlmRequest) -> Result<(), StoreError>;

    /// The audit records of a task's requests, oldest first.
    async fn llm_requests(&self, task: TaskId) -> Result<Vec<LlmRequest>, StoreError>;
}
