//! Conductor's core: the contracts the edges implement and the decisions that need no I/O.
//!
//! Invariant: nothing in this crate spawns a process, opens a file or a socket. Executors, stores
//! and queues are traits declared here and implemented in other crates.

mod executor;
mod plan;

pub use executor::{EventSender, Executor, ExecutorError};
pub use plan::{
    check_supported, plan, HostContext, PlanError, PlanTarget, SANDBOX_PATH, SANDBOX_WORKSPACE,
};
