//! Service sidecars (seed 001's `"services": ["postgres:14", "redis:7"]`): the contract an
//! executor that can run them implements, and what a started set is. The scheduler starts a
//! task's services before its commands (each command's request then names the set's network in
//! `ExecutionRequest::service_network` and carries the set's `env`) and stops them after.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;

use crate::ExecutorError;

/// Starts and stops a task's services.
#[async_trait]
pub trait ServiceRunner: Send + Sync + Debug {
    /// Whether every reference names a service this runner can start (known and built), so
    /// an API can refuse a task at submission. Starts nothing.
    fn check(&self, services: &[String]) -> Result<(), ExecutorError>;

    /// Starts `services` (references as the user wrote them) for `owner` (a task id) on a
    /// private network, healthy before it returns. On failure nothing it made is left.
    async fn start(&self, owner: &str, services: &[String]) -> Result<ServiceSet, ExecutorError>;

    /// Stops and removes everything `start` made. Never fails loudly: logs.
    async fn stop(&self, set: &ServiceSet);
}

/// Services started for one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSet {
    /// The private network they (and the owner's commands) are on.
    pub network: String,
    /// One per reference, in the order given.
    pub services: Vec<RunningService>,
    /// Variables that tell the owner's commands where the services are (`DATABASE_URL`, …).
    pub env: BTreeMap<String, String>,
}

/// One started service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningService {
    /// The reference as written (`postgres:14`).
    pub reference: String,
    /// Its host name on the network (`postgres`).
    pub name: String,
    /// The image it runs (`conductor-service/postgres:<hash>`).
    pub image: String,
}
