//! One task on one slot, as named stages:
//!
//! 1. **prepare** (`prepare.rs`): environment, secrets, workspace, quota, git, services →
//!    a [`prepare::PreparedRun`] (or the failure the task ends with);
//! 2. **requests** (`requests.rs`): a pure function from the spec and the prepared run to each
//!    command's `ExecutionRequest`;
//! 3. **execute** (`execute.rs`, `command.rs`, `output.rs`): each command run by a
//!    [`execute::RunStep`] — a shell command on the environment's executor today — its output
//!    stored as redacted, bounded events; `core::next_step` decides the next one;
//! 4. **finish** (`finish.rs`): teardown, diff, disk-quota failure, the end through the state
//!    machine, a retry;
//!
//! then the slot is freed and the workspace cleaned up off its time (`cleanup.rs`).

mod agent;
mod agent_changes;
mod agent_stream;
mod cleanup;
mod command;
mod execute;
mod finish;
mod output;
mod prepare;
mod requests;

pub(super) use execute::RunStep;
pub use finish::DISK_QUOTA_EXCEEDED;

use std::sync::Arc;

use conductor_core::{next_step, OutputBudget, Step, StoreError, Transition};
use conductor_types::{
    CommandResult, FailureCode, SlotState, Task, TaskEventKind, TaskId, TaskStatus, Timestamp,
};
use tokio::time::Instant;

use self::finish::Ending;
use self::prepare::Prepared;
use super::Scheduler;

impl Scheduler {
    /// Runs `task` on the slot it was started on, then frees the slot and cleans up.
    pub(super) async fn run_task(self: Arc<Self>, task: Task) {
        let id = task.id;
        let slot = task.state.slot_id.clone().unwrap_or_default();
        self.record_slot(&slot, SlotState::Busy, Some(id));
        if let Err(error) = self.drive(&task).await {
            tracing::error!(task = %id, %error, "running a task failed");
            let interrupted = self.lock().running.get(&id).is_some_and(|r| r.interrupted);
            if !interrupted {
                let reason = format!("the orchestrator failed while running it: {error}");
                let finish = Transition::Finish {
                    status: TaskStatus::Failed,
                    exit_code: None,
                    reason: Some(reason),
                    code: Some(FailureCode::OrchestratorError),
                    at: Timestamp::now(),
                };
                let _ = self.store.transition(id, finish).await;
                self.events.bump();
            }
        }
        if let Some(slot) = self.release(id) {
            self.record_slot(&slot, SlotState::Idle, None);
        }
        self.after_task(&task);
    }

    /// The stages: prepare, then each command as `core::next_step` decides, then finish.
    async fn drive(&self, task: &Task) -> Result<(), StoreError> {
        let mut run = match self.prepare(task).await? {
            Prepared::Ready(run) => run,
            Prepared::Refused(code, reason) => return self.refuse(task, code, reason).await,
            Prepared::Stopped => return Ok(()),
        };
        if let Some(agent) = &task.spec.agent {
            return self.drive_agent(task, &mut run, agent).await;
        }
        let (id, spec) = (task.id, &task.spec);
        let deadline = spec.timeout.map(|t| Instant::now() + t);
        let mut budget = OutputBudget::new(self.config.stored_output_limit.get());
        let mut results: Vec<CommandResult> = Vec::new();
        // The last command's result, stored with the task's end in one transaction.
        let mut last: Option<CommandResult> = None;
        loop {
            let index = match next_step(spec.commands.len(), spec.continue_on_error, &results) {
                Step::Run(index) => index,
                Step::Finish {
                    status,
                    exit_code,
                    reason,
                } => {
                    let ending = Ending {
                        status,
                        exit_code,
                        code: None,
                        reason,
                    };
                    return self.finish_run(task, &mut run, ending, last.as_ref()).await;
                }
            };
            if self.stopped(id) {
                return Ok(());
            }
            let result = self
                .run_command(task, &run, index, deadline, &mut budget)
                .await?;
            results.push(result);
            let done = matches!(
                next_step(spec.commands.len(), spec.continue_on_error, &results),
                Step::Finish { .. }
            );
            if done && !self.stopped(id) {
                // Recorded with the task's end (one commit instead of two per task).
                last = results.last().cloned();
                continue;
            }
            if let Some(result) = results.last() {
                self.store.record_result(id, result).await?;
                self.events.bump();
            }
            if self.stopped(id) {
                return Ok(());
            }
        }
    }

    /// Whether the task was cancelled (already recorded by the API) or interrupted by shutdown.
    pub(super) fn stopped(&self, id: TaskId) -> bool {
        self.lock()
            .running
            .get(&id)
            .is_some_and(|r| r.cancelled || r.interrupted)
    }

    /// Stores one of the task's events and tells the followers.
    pub(super) async fn emit(&self, id: TaskId, kind: TaskEventKind) -> Result<(), StoreError> {
        self.store.append_event(id, Timestamp::now(), &kind).await?;
        self.events.bump();
        Ok(())
    }
}
