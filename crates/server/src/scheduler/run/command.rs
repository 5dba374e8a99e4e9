//! One command of a task: its request (from `requests.rs`), run by the prepared run's step
//! while its output is stored, the step registered for cancel while it runs, and its
//! [`CommandResult`]. A task out of time gets a timed-out result without running it.

use std::sync::Arc;

use conductor_core::{OutputBudget, StoreError};
use conductor_types::{CommandResult, ExecutionStats, Task, TaskEventKind, Timestamp};
use tokio::time::Instant;

use super::execute::StepOutcome;
use super::output::{remove_spools, OUTPUT_EVENT_BUFFER};
use super::prepare::PreparedRun;
use super::requests::command_request;
use crate::scheduler::Scheduler;

impl Scheduler {
    /// Runs command `index` of `task` (its `command_started` event stored first, its output
    /// as it comes) and returns its result.
    pub(super) async fn run_command(
        &self,
        task: &Task,
        run: &PreparedRun,
        index: usize,
        deadline: Option<Instant>,
        budget: &mut OutputBudget,
    ) -> Result<CommandResult, StoreError> {
        let command = task.spec.commands[index].clone();
        let started_event = TaskEventKind::CommandStarted {
            index: index as u32,
            command: command.clone(),
        };
        let started_at = Timestamp::now();
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let mut result = CommandResult {
            index: index as u32,
            attempt: task.state.attempt,
            command,
            exit_code: None,
            signal: None,
            timed_out: false,
            oom_killed: false,
            error: None,
            executor: None,
            stats: ExecutionStats::default(),
            started_at,
            finished_at: started_at,
        };
        if remaining.is_some_and(|r| r.is_zero()) {
            self.emit(task.id, started_event).await?;
            result.timed_out = true;
            result.exit_code = Some(124);
        } else {
            let context = run.request_context(self);
            let request = command_request(&task.spec, index, &context, remaining);
            let outcome = self
                .execute_step(task, run, request, (index as u32, started_event), budget)
                .await?;
            self.apply_outcome(task, run, outcome, &mut result);
        }
        result.finished_at = Timestamp::now();
        Ok(result)
    }

    /// Runs `request` on the run's step while `started_event` and then the output are stored.
    async fn execute_step(
        &self,
        task: &Task,
        run: &PreparedRun,
        request: conductor_types::ExecutionRequest,
        (index, started_event): (u32, TaskEventKind),
        budget: &mut OutputBudget,
    ) -> Result<StepOutcome, StoreError> {
        let id = task.id;
        let execution_id = request.id.clone();
        if let Some(running) = self.lock().running.get_mut(&id) {
            running.execution = Some((execution_id.clone(), Arc::clone(&run.step)));
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(OUTPUT_EVENT_BUFFER);
        // The step starts while `command_started` is stored; output waits for it in the
        // channel, so the event order holds without a write on the start path.
        let redactor = &run.redactor;
        let forwarder = async move {
            self.emit(id, started_event).await?;
            self.forward_output(id, index, receiver, redactor, budget)
                .await
        };
        let (outcome, forwarded) = tokio::join!(run.step.run(request, sender), forwarder);
        // Its output is stored (as events): the spool files have no reader.
        let done = match &outcome {
            StepOutcome::Finished(done) => Some(done),
            StepOutcome::Failed(_) => None,
        };
        remove_spools(self.config.spool_dir.as_deref(), &execution_id, done).await;
        forwarded?;
        if let Some(running) = self.lock().running.get_mut(&id) {
            running.execution = None;
        }
        Ok(outcome)
    }

    /// Puts what the step reported into the command's result.
    pub(super) fn apply_outcome(
        &self,
        task: &Task,
        run: &PreparedRun,
        outcome: StepOutcome,
        result: &mut CommandResult,
    ) {
        match outcome {
            StepOutcome::Finished(done) => {
                if done.executor != run.step.name() {
                    tracing::warn!(task = %task.id, environment = %task.spec.environment, configured = run.step.name(), ran = %done.executor, "ran on the fallback executor");
                }
                result.executor = Some(done.executor);
                result.exit_code = Some(done.exit_code);
                result.signal = done.signal;
                result.timed_out = done.timed_out;
                result.oom_killed = done.oom_killed;
                result.stats = done.stats;
            }
            StepOutcome::Failed(error) => {
                self.metrics.executor_error(&task.spec.environment);
                result.error = Some(run.redactor.redact(&error.to_string()));
            }
        }
    }
}
