//! Conductor's core: the contracts the edges implement and the decisions that need no I/O.
//!
//! Invariant: nothing in this crate spawns a process, opens a file or a socket. Executors, stores
//! and queues are traits declared here and implemented in other crates.

pub mod agent;
mod dispatch;
mod executor;
mod lifecycle;
mod limits;
mod plan;
mod redact;
mod services;
mod store;
mod task;

pub use dispatch::{dispatch, next_step, Assignment, Candidate, Capacity, Step};
pub use executor::{EventSender, Executor, ExecutorError};
pub use lifecycle::{apply, can_retry, Transition, TransitionError};
pub use limits::{apply_limits, unlimited, LimitError, LimitPolicy, LimitSet};
pub use plan::{
    check_supported, plan, HostContext, PlanError, PlanTarget, SANDBOX_PATH, SANDBOX_WORKSPACE,
};
pub use redact::{LineAssembler, OutputBudget, Redactor, REDACTED};
pub use services::{RunningService, ServiceRunner, ServiceSet};
pub use store::{Store, StoreError, TaskQuery};
pub use task::{
    command_argv, command_of, validate_request, validate_request_with, validate_workspace_name,
    SpecError, ValidatedTask, CWD_FILE, DEFAULT_ENVIRONMENT, MAX_COMMANDS, MAX_COMMAND_BYTES,
    MAX_RETRIES, MAX_TIMEOUT,
};
