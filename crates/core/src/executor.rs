//! The executor contract every sandbox implementation fulfils.

use std::fmt::Debug;

use async_trait::async_trait;
use conductor_types::{
    ExecEvent, ExecutionId, ExecutionRequest, ExecutionResult, ExecutorCapabilities, IsolationLevel,
};

use crate::{PlanError, ServiceRunner};

/// Where an executor sends live events. Bounded, so a slow reader slows the command down instead
/// of growing memory; a closed receiver means nobody is listening and is not an error.
pub type EventSender = tokio::sync::mpsc::Sender<ExecEvent>;

/// Runs commands in some kind of sandbox.
#[async_trait]
pub trait Executor: Send + Sync + Debug {
    /// Short stable name: `host`, `namespace`, `docker`, `podman`.
    fn name(&self) -> &'static str;

    /// How strongly this executor isolates.
    fn isolation_level(&self) -> IsolationLevel;

    /// What this executor enforces and measures.
    fn capabilities(&self) -> ExecutorCapabilities;

    /// Whether the executor can run anything right now (kernel facilities present, daemon up).
    async fn health_check(&self) -> Result<(), ExecutorError>;

    /// Prepares whatever makes the next executions faster (pools, images). Idempotent.
    async fn warmup(&self) -> Result<(), ExecutorError>;

    /// Runs one request to completion, streaming output to `events` while it runs.
    ///
    /// A command that runs and fails is `Ok` with its exit code; `Err` means it could not be run
    /// (bad request, unsupported feature, sandbox set-up failure).
    async fn execute(
        &self,
        request: ExecutionRequest,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError>;

    /// Kills a running execution's whole process tree. Returns whether it was running.
    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError>;

    /// What starts service sidecars next to this executor's sandboxes, when it can (then it
    /// also declares `Capability::Services` and runs requests with a `service_network`).
    fn services(&self) -> Option<&dyn ServiceRunner> {
        None
    }
}

/// Why an executor could not run a request.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The request is invalid.
    #[error(transparent)]
    InvalidRequest(#[from] PlanError),
    /// The request asks for something this executor does not do (yet).
    #[error("{what} is not supported yet by the {executor} executor")]
    Unsupported {
        /// The executor's name.
        executor: &'static str,
        /// What was asked for.
        what: String,
    },
    /// A kernel facility, binary or daemon the executor needs is missing.
    #[error("the {executor} executor is unavailable: {reason}")]
    Unavailable {
        /// The executor's name.
        executor: &'static str,
        /// What is missing and how to get it.
        reason: String,
    },
    /// The executor is down but a fallback runs its tasks (from `health_check` only).
    #[error("degraded: {reason}")]
    Degraded {
        /// What is down and what runs instead.
        reason: String,
    },
    /// Building the sandbox failed at a named stage.
    #[error("sandbox set-up failed while {stage}: {reason}")]
    Setup {
        /// What was being done (`mounting /proc`, `writing uid_map`, …).
        stage: String,
        /// The error.
        reason: String,
    },
    /// An I/O error outside the sandbox.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ExecutorError {
    /// A stable machine-readable code for APIs and `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unsupported { .. } => "not_supported",
            Self::Unavailable { .. } => "executor_unavailable",
            Self::Degraded { .. } => "executor_degraded",
            Self::Setup { .. } => "sandbox_setup_failed",
            Self::Io { .. } => "io_error",
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
