//! The execute stage: one step of a task's run, behind [`RunStep`], so that what runs it can
//! change without the stages around it: today a shell command on the environment's executor
//! ([`ShellStep`]); later a remote worker that leased the task, or an AI coding agent's run.
//! A step gets a fully resolved request (see `requests.rs`), streams its output as
//! [`ExecEvent`]s, and can be cancelled by the execution id the request carries.

use std::sync::Arc;

use async_trait::async_trait;
use conductor_core::{Executor, ExecutorError};
use conductor_types::{
    ExecEvent, ExecutionId, ExecutionRequest, ExecutionResult, ExecutorCapabilities,
};
use tokio::sync::mpsc;

/// How a step ended.
#[derive(Debug)]
pub(crate) enum StepOutcome {
    /// It ran to an exit (any exit code, a timeout, a kill).
    Finished(ExecutionResult),
    /// It could not run, or the runner failed while it ran.
    Failed(ExecutorError),
}

/// Runs one step of a task.
#[async_trait]
pub(crate) trait RunStep: Send + Sync + std::fmt::Debug {
    /// The runner's name, as a command result records it (`namespace`, `docker`, …).
    fn name(&self) -> &'static str;

    /// Runs `request` to its end, sending its output to `output` as it comes.
    async fn run(&self, request: ExecutionRequest, output: mpsc::Sender<ExecEvent>) -> StepOutcome;

    /// Stops the execution `id` started by [`RunStep::run`] (`false` when it is not running).
    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError>;

    /// What the runner can enforce and offer (a non-root user, a port bridge, …).
    fn capabilities(&self) -> ExecutorCapabilities;
}

/// A shell command on an environment's executor.
#[derive(Debug, Clone)]
pub(crate) struct ShellStep {
    executor: Arc<dyn Executor>,
}

impl ShellStep {
    /// Runs on `executor`.
    pub(crate) fn new(executor: Arc<dyn Executor>) -> Self {
        Self { executor }
    }
}

#[async_trait]
impl RunStep for ShellStep {
    fn name(&self) -> &'static str {
        self.executor.name()
    }

    async fn run(&self, request: ExecutionRequest, output: mpsc::Sender<ExecEvent>) -> StepOutcome {
        match self.executor.execute(request, output).await {
            Ok(done) => StepOutcome::Finished(done),
            Err(error) => StepOutcome::Failed(error),
        }
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError> {
        self.executor.cancel(id).await
    }

    fn capabilities(&self) -> ExecutorCapabilities {
        self.executor.capabilities()
    }
}
