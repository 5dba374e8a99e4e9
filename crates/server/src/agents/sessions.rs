//! Agent sessions as operations (issue 12): the next turn of a session from a message to its
//! latest turn, and a session with its turns. One continuation at a time, so two messages to the
//! same turn cannot both become the next turn.

use conductor_core::{next_turn, StoreError, TurnError};
use conductor_types::{Session, SessionId, Task, TaskId, Timestamp};

use crate::scheduler::Scheduler;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such task.
    #[error("no task {0}")]
    TaskNotFound(TaskId),
    /// No such session.
    #[error("no session {0}")]
    NotFound(SessionId),
    /// The message cannot become the next turn.
    #[error(transparent)]
    Turn(#[from] TurnError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SessionError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::TaskNotFound(id) => Self::TaskNotFound(id),
            other => Self::Store(other),
        }
    }
}

/// Serializes continuations (a check, then an insert).
static CONTINUING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Scheduler {
    /// Queues `content` as the next turn of the session whose latest turn is `parent`: a new
    /// task in the same workspace that resumes the agent's own session.
    pub async fn continue_session(
        &self,
        parent: TaskId,
        content: &str,
    ) -> Result<Task, SessionError> {
        let _one_at_a_time = CONTINUING.lock().await;
        let store = self.store();
        let task = store.get_task(parent).await?;
        let Some(session_id) = task.spec.session_id.clone() else {
            return Err(TurnError::NotAnAgentTask(parent).into());
        };
        let session = store
            .get_session(&session_id)
            .await?
            .ok_or(SessionError::NotFound(session_id))?;
        let latest = session.turns.last().copied().unwrap_or(parent);
        let spec = next_turn(&task, latest, content)?;
        let secrets = if spec.secret_names.is_empty() {
            Default::default()
        } else {
            store.task_secrets(parent).await?
        };
        let next = store
            .create_task(TaskId::random(), &spec, &secrets, Timestamp::now())
            .await?;
        self.events().bump();
        self.submitted(&next);
        Ok(next)
    }

    /// Session `id` with its turns and usage.
    pub async fn session(&self, id: &SessionId) -> Result<Session, SessionError> {
        self.store()
            .get_session(id)
            .await?
            .ok_or_else(|| SessionError::NotFound(id.clone()))
    }
}
