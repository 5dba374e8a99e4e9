//! Per-task capabilities: a random token stands for one task (its budget, its session, its
//! provider) until the task is revoked. What the task used stays readable after revocation
//! until the server forgets it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use conductor_types::{Budget, TaskId, Usage};
use rand::RngCore;
use tokio::sync::Notify;

use crate::budget::Ledger;
use crate::config::Provider;

/// A task's token: 256 random bits in hex. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskToken(String);

impl TaskToken {
    fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// The token, to hand to the sandbox as its API key.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskToken(<redacted>)")
    }
}

/// What [`crate::Gateway::grant`] hands out.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The task.
    pub task: TaskId,
    /// Its key for the sandbox (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`).
    pub token: TaskToken,
}

/// What a task used and why the gateway stopped or failed its requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrantReport {
    /// Settled usage and cost.
    pub usage: Usage,
    /// A request was refused because the budget was spent.
    pub budget_exceeded: bool,
    /// The upstream could not be reached or stayed overloaded (5xx, 429, connection refused).
    pub upstream_unavailable: bool,
    /// The upstream refused a request (401, 403, another 4xx).
    pub upstream_rejected: bool,
    /// Models priced at the default price because the table does not know them.
    pub default_priced: Vec<String>,
}

/// One task's live state, shared by its requests.
#[derive(Debug)]
pub(crate) struct TaskGrant {
    pub task: TaskId,
    pub session: Option<String>,
    pub provider: Provider,
    pub state: Mutex<TaskState>,
    /// Signalled when a request settles (a waiting request may now fit).
    pub settled: Notify,
}

/// The mutable part of a [`TaskGrant`].
#[derive(Debug)]
pub(crate) struct TaskState {
    pub ledger: Ledger,
    pub report: GrantReport,
}

impl TaskGrant {
    /// Locks the state (a poisoned lock still holds consistent numbers).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, TaskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every grant, by token and by task, and usage per session.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    by_token: HashMap<String, Arc<TaskGrant>>,
    by_task: HashMap<TaskId, (Option<String>, Arc<TaskGrant>)>,
    sessions: HashMap<String, Usage>,
}

impl Grants {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new token for `task`; a task granted again keeps its usage and loses its old token.
    pub fn grant(
        &self,
        task: TaskId,
        session: Option<String>,
        budget: Budget,
        provider: Provider,
    ) -> Grant {
        let token = TaskToken::random();
        let mut registry = self.lock();
        let previous = registry.by_task.remove(&task);
        let state = match previous {
            Some((old_token, grant)) => {
                if let Some(old_token) = old_token {
                    registry.by_token.remove(&old_token);
                }
                let state = grant.lock();
                let used = state.ledger.used();
                let mut ledger = Ledger::new(budget);
                ledger.record(&used);
                TaskState {
                    ledger,
                    report: state.report.clone(),
                }
            }
            None => TaskState {
                ledger: Ledger::new(budget),
                report: GrantReport::default(),
            },
        };
        let grant = Arc::new(TaskGrant {
            task,
            session,
            provider,
            state: Mutex::new(state),
            settled: Notify::new(),
        });
        registry
            .by_token
            .insert(token.0.clone(), Arc::clone(&grant));
        registry
            .by_task
            .insert(task, (Some(token.0.clone()), grant));
        Grant { task, token }
    }

    /// The grant a token stands for, if it is live.
    pub fn find(&self, token: &str) -> Option<Arc<TaskGrant>> {
        self.lock().by_token.get(token).cloned()
    }

    /// Kills the task's token; its report stays.
    pub fn revoke(&self, task: TaskId) {
        let mut registry = self.lock();
        let token = registry
            .by_task
            .get_mut(&task)
            .and_then(|(token, _)| token.take());
        if let Some(token) = token {
            registry.by_token.remove(&token);
        }
    }

    /// The task's report so far.
    pub fn report(&self, task: TaskId) -> Option<GrantReport> {
        let grant = self.lock().by_task.get(&task).map(|(_, g)| Arc::clone(g))?;
        let state = grant.lock();
        Some(GrantReport {
            usage: state.ledger.used(),
            ..state.report.clone()
        })
    }

    /// Revokes the task and drops its state, returning its last report.
    pub fn forget(&self, task: TaskId) -> Option<GrantReport> {
        self.revoke(task);
        let report = self.report(task);
        self.lock().by_task.remove(&task);
        report
    }

    /// Adds a settled request's usage to its session.
    pub fn add_to_session(&self, session: &str, usage: &Usage) {
        let mut registry = self.lock();
        let total = registry.sessions.entry(session.to_owned()).or_default();
        *total = total.add(usage);
    }

    /// A session's usage over all its tasks.
    pub fn session(&self, session: &str) -> Option<Usage> {
        self.lock().sessions.get(session).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hidden_and_die_with_revocation() {
        let grants = Grants::default();
        let task = TaskId::random();
        let grant = grants.grant(task, None, Budget::default(), Provider::Anthropic);
        let token = grant.token.expose().to_owned();
        assert_eq!(token.len(), 64);
        assert!(!format!("{grant:?}").contains(&token));
        let other = grants.grant(
            TaskId::random(),
            None,
            Budget::default(),
            Provider::Anthropic,
        );
        assert_ne!(other.token, grant.token);
        assert_eq!(grants.find(&token).map(|g| g.task), Some(task));
        grants.revoke(task);
        assert!(grants.find(&token).is_none());
        assert_eq!(grants.report(task), Some(GrantReport::default()));
        assert_eq!(grants.forget(task), Some(GrantReport::default()));
        assert_eq!(grants.report(task), None);
    }

    #[test]
    fn a_second_grant_replaces_the_token_and_keeps_the_usage() {
        let grants = Grants::default();
        let task = TaskId::random();
        let first = grants.grant(task, None, Budget::default(), Provider::Anthropic);
        let used = Usage {
            input_tokens: 3,
            requests: 1,
            ..Usage::default()
        };
        if let Some(grant) = grants.find(first.token.expose()) {
            grant.lock().ledger.record(&used);
        }
        let second = grants.grant(task, None, Budget::default(), Provider::Anthropic);
        assert!(grants.find(first.token.expose()).is_none());
        assert!(grants.find(second.token.expose()).is_some());
        assert_eq!(grants.report(task).map(|r| r.usage), Some(used));
    }
}
