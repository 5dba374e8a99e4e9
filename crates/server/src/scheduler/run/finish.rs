//! The finish stage: the services stopped, the `git` diff recorded, a filled disk quota named
//! as the failure, and the task's end stored through the state machine (with the last
//! command's result, in one transaction), then a retry queued when its retries allow.

use std::time::Duration;

use conductor_core::{can_retry, StoreError, Transition, CWD_FILE};
use conductor_types::{CommandResult, FailureCode, Task, TaskId, TaskStatus, Timestamp};
use conductor_workspace::{diff_against, Checkout, GitOptions};

use super::prepare::PreparedRun;
use crate::scheduler::Scheduler;

/// How a task's status reason starts when it filled its disk quota (its `failure_code` is
/// [`FailureCode::DiskQuotaExceeded`]).
pub const DISK_QUOTA_EXCEEDED: &str = "disk_quota_exceeded";

/// How a task ends: what `Transition::Finish` records.
#[derive(Debug)]
pub(super) struct Ending {
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub code: Option<FailureCode>,
    pub reason: Option<String>,
}

impl Ending {
    /// Failed before any command ran, with `code` and `reason`.
    pub(super) fn refused(code: FailureCode, reason: String) -> Self {
        Self {
            status: TaskStatus::Failed,
            exit_code: None,
            code: Some(code),
            reason: Some(reason),
        }
    }
}

impl Scheduler {
    /// Ends a task whose commands are over (`ending` as `core::next_step` decided it):
    /// tears the prepared run down, records the diff, and names a filled disk quota as the
    /// failure.
    pub(super) async fn finish_run(
        &self,
        task: &Task,
        run: &mut PreparedRun,
        mut ending: Ending,
        last: Option<&CommandResult>,
    ) -> Result<(), StoreError> {
        run.teardown().await;
        if let Some((repository, checkout)) = &run.checkout {
            self.record_diff(task.id, &run.workspace, repository, checkout)
                .await;
        }
        if let Some(disk) = self.filled_quota(run, ending.status).await {
            ending.code = Some(FailureCode::DiskQuotaExceeded);
            ending.reason = Some(format!(
                "{DISK_QUOTA_EXCEEDED}: the task filled its workspace's disk quota of {disk}{}",
                ending.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }
        self.record_finish(task, ending, last).await
    }

    /// Ends `task` as failed before any command ran.
    pub(super) async fn refuse(
        &self,
        task: &Task,
        code: FailureCode,
        reason: String,
    ) -> Result<(), StoreError> {
        self.record_finish(task, Ending::refused(code, reason), None)
            .await
    }

    /// The size of the run's quota filesystem when a task that did not succeed filled it.
    async fn filled_quota(
        &self,
        run: &PreparedRun,
        status: TaskStatus,
    ) -> Option<conductor_types::Bytes> {
        let (fs, disk) = run.quota.as_ref()?;
        if status == TaskStatus::Succeeded {
            return None;
        }
        let fs = fs.clone();
        let full = tokio::task::spawn_blocking(move || fs.is_full())
            .await
            .map(|full| full.unwrap_or(false))
            .unwrap_or(false);
        full.then_some(*disk)
    }

    /// Records what the task changed against its checkout (before its workspace goes); a
    /// failure is logged, and the diff endpoint then says none was recorded.
    async fn record_diff(
        &self,
        id: TaskId,
        workspace: &std::path::Path,
        repository: &str,
        checkout: &Checkout,
    ) {
        let path = crate::gitdiff::diff_path(&self.config.workspace_root, id);
        let (workspace, repository, checkout) = (
            workspace.to_owned(),
            repository.to_owned(),
            checkout.clone(),
        );
        let recorded = tokio::task::spawn_blocking(move || {
            // The shell's working-directory note is the orchestrator's, not the task's change.
            let _ = std::fs::remove_file(workspace.join(CWD_FILE));
            let diff = diff_against(&workspace, &checkout.commit, &GitOptions::default())
                .map_err(|e| e.to_string())?;
            let view = crate::gitdiff::TaskDiffView::new(&repository, &checkout, diff);
            crate::gitdiff::write_diff(&path, &view).map_err(|e| e.to_string())
        })
        .await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(task = %id, %error, "could not record the git diff"),
            Err(error) => tracing::warn!(task = %id, %error, "could not record the git diff"),
        }
    }

    /// Records the outcome, with the last command's result when it is not stored yet (then
    /// both in one transaction; the result stands even when the end is refused).
    async fn record_finish(
        &self,
        task: &Task,
        ending: Ending,
        last: Option<&CommandResult>,
    ) -> Result<(), StoreError> {
        let at = Timestamp::now();
        let finish = Transition::Finish {
            status: ending.status,
            exit_code: ending.exit_code,
            reason: ending.reason,
            code: ending.code,
            at,
        };
        let finished = match last {
            Some(result) => match self
                .store
                .record_result_and_finish(task.id, result, finish)
                .await?
            {
                Ok(state) => state,
                // Cancelled or interrupted meanwhile; that status stands (the result is stored).
                Err(_) => {
                    self.events.bump();
                    return Ok(());
                }
            },
            None => match self.store.transition(task.id, finish).await {
                Ok(finished) => finished.state,
                // Cancelled or interrupted meanwhile; that status stands.
                Err(StoreError::Transition(_)) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        self.events.bump();
        if let (Some(started), Some(ended)) = (finished.started_at, finished.finished_at) {
            let ran = ended.millis_since(started);
            self.metrics
                .run_duration
                .observe(Duration::from_millis(ran));
        }
        if can_retry(&finished, task.spec.retries) {
            self.store
                .transition(task.id, Transition::Retry { at })
                .await?;
            self.events.bump();
        }
        Ok(())
    }
}
