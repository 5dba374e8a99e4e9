//! The task state machine: which [`Transition`] is legal from which [`TaskStatus`], and the
//! state it leads to. Stores apply it inside their write transaction, so every status change in
//! the system goes through [`apply`].
//!
//! ```text
//! queued ──start──▶ running ──finish──▶ succeeded | failed | timed_out
//!   │                 │ └──interrupt──▶ interrupted
//!   └──cancel──┬──────┘
//!              ▼
//!          cancelled
//! failed | timed_out | interrupted ──retry (while attempts remain)──▶ queued
//! ```

use conductor_types::{FailureCode, TaskState, TaskStatus, Timestamp};

/// A change to a task's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A slot takes a queued task: `queued → running`, next attempt.
    Start {
        /// The slot.
        slot_id: String,
        /// When.
        at: Timestamp,
    },
    /// The commands ended: `running → succeeded | failed | timed_out`.
    Finish {
        /// One of succeeded, failed, timed_out.
        status: TaskStatus,
        /// The task's exit code.
        exit_code: Option<i32>,
        /// Why, when the commands could not be run.
        reason: Option<String>,
        /// The stable code of why it did not succeed, when known.
        code: Option<FailureCode>,
        /// When.
        at: Timestamp,
    },
    /// A client cancelled it: `queued | running → cancelled`.
    Cancel {
        /// When.
        at: Timestamp,
    },
    /// The server stopped while it ran: `running → interrupted`.
    Interrupt {
        /// What happened.
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// Run it again: `failed | timed_out | interrupted → queued`, while `retries` allows.
    Retry {
        /// When.
        at: Timestamp,
    },
}

impl Transition {
    /// The verb, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start { .. } => "start",
            Self::Finish { .. } => "finish",
            Self::Cancel { .. } => "cancel",
            Self::Interrupt { .. } => "interrupt",
            Self::Retry { .. } => "retry",
        }
    }
}

/// A transition that is not legal from the task's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {transition} a task that is {from}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct TransitionError {
    /// The verb.
    pub transition: &'static str,
    /// The status the task has.
    pub from: TaskStatus,
    /// More about why, when there is more to say.
    pub detail: Option<String>,
}

/// Whether a task in `state` whose spec allows `retries` extra runs may run again.
pub fn can_retry(state: &TaskState, retries: u32) -> bool {
    matches!(
        state.status,
        TaskStatus::Failed | TaskStatus::TimedOut | TaskStatus::Interrupted
    ) && state.attempt <= retries
}

/// The state `transition` leads to from `state`, or why it is illegal.
pub fn apply(
    state: &TaskState,
    transition: &Transition,
    retries: u32,
) -> Result<TaskState, TransitionError> {
    use TaskStatus::*;
    let illegal = |detail: Option<String>| TransitionError {
        transition: transition.name(),
        from: state.status,
        detail,
    };
    let mut next = state.clone();
    match (state.status, transition) {
        (Queued, Transition::Start { slot_id, at }) => {
            next.status = Running;
            next.attempt += 1;
            next.slot_id = Some(slot_id.clone());
            next.started_at = Some(*at);
            next.finished_at = None;
            next.exit_code = None;
            next.status_reason = None;
            next.failure_code = None;
        }
        (
            Running,
            Transition::Finish {
                status,
                exit_code,
                reason,
                code,
                at,
            },
        ) => {
            if !matches!(status, Succeeded | Failed | TimedOut) {
                return Err(illegal(Some(format!("{status} is not an outcome"))));
            }
            next.status = *status;
            next.exit_code = *exit_code;
            next.status_reason = reason.clone();
            next.failure_code = if *status == Succeeded { None } else { *code };
            next.finished_at = Some(*at);
        }
        (Queued | Running, Transition::Cancel { at }) => {
            next.status = Cancelled;
            next.status_reason = Some("cancelled by a client".to_owned());
            next.failure_code = None;
            next.finished_at = Some(*at);
        }
        (Running, Transition::Interrupt { reason, at }) => {
            next.status = Interrupted;
            next.status_reason = Some(reason.clone());
            next.failure_code = None;
            next.finished_at = Some(*at);
        }
        (Failed | TimedOut | Interrupted, Transition::Retry { .. }) => {
            if !can_retry(state, retries) {
                return Err(illegal(Some(format!(
                    "all {} allowed attempts are used",
                    retries + 1
                ))));
            }
            next.status = Queued;
            next.started_at = None;
            next.finished_at = None;
            next.exit_code = None;
            next.slot_id = None;
            // The reason it is being retried stays visible until it starts again.
        }
        _ => return Err(illegal(None)),
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_000);
    const T1: Timestamp = Timestamp(2_000);
    const T2: Timestamp = Timestamp(3_000);

    fn start() -> Transition {
        Transition::Start {
            slot_id: "agent-1".into(),
            at: T1,
        }
    }

    fn finish(status: TaskStatus, exit_code: i32) -> Transition {
        Transition::Finish {
            status,
            exit_code: Some(exit_code),
            reason: None,
            code: None,
            at: T2,
        }
    }

    fn running() -> TaskState {
        apply(&TaskState::queued(T0), &start(), 0).unwrap()
    }

    #[test]
    fn start_then_finish_records_each_phase() {
        let started = running();
        assert_eq!(
            started,
            TaskState {
                status: TaskStatus::Running,
                status_reason: None,
                failure_code: None,
                attempt: 1,
                slot_id: Some("agent-1".into()),
                exit_code: None,
                queued_at: T0,
                started_at: Some(T1),
                finished_at: None,
            }
        );
        let done = apply(&started, &finish(TaskStatus::Failed, 3), 0).unwrap();
        assert_eq!(
            done,
            TaskState {
                status: TaskStatus::Failed,
                exit_code: Some(3),
                finished_at: Some(T2),
                ..started
            }
        );
    }

    #[test]
    fn every_illegal_pair_is_rejected() {
        let transitions = [
            start(),
            finish(TaskStatus::Succeeded, 0),
            Transition::Cancel { at: T2 },
            Transition::Interrupt {
                reason: "x".into(),
                at: T2,
            },
            Transition::Retry { at: T2 },
        ];
        let legal = [
            (TaskStatus::Queued, "start"),
            (TaskStatus::Queued, "cancel"),
            (TaskStatus::Running, "finish"),
            (TaskStatus::Running, "cancel"),
            (TaskStatus::Running, "interrupt"),
            (TaskStatus::Failed, "retry"),
            (TaskStatus::TimedOut, "retry"),
            (TaskStatus::Interrupted, "retry"),
        ];
        for status in TaskStatus::ALL {
            let state = TaskState {
                status,
                attempt: 1,
                ..TaskState::queued(T0)
            };
            for transition in &transitions {
                let allowed = legal.contains(&(status, transition.name()));
                let result = apply(&state, transition, 5);
                assert_eq!(
                    result.is_ok(),
                    allowed,
                    "{} from {status}: {result:?}",
                    transition.name()
                );
            }
        }
    }

    #[test]
    fn a_failure_code_lasts_until_the_next_start_and_never_marks_a_success() {
        let full = Transition::Finish {
            status: TaskStatus::Failed,
            exit_code: Some(1),
            reason: Some("disk_quota_exceeded: full".into()),
            code: Some(FailureCode::DiskQuotaExceeded),
            at: T2,
        };
        let failed = apply(&running(), &full, 1).unwrap();
        assert_eq!(failed.failure_code, Some(FailureCode::DiskQuotaExceeded));
        let requeued = apply(&failed, &Transition::Retry { at: T2 }, 1).unwrap();
        assert_eq!(requeued.failure_code, Some(FailureCode::DiskQuotaExceeded));
        assert_eq!(apply(&requeued, &start(), 1).unwrap().failure_code, None);
        let succeeded = Transition::Finish {
            status: TaskStatus::Succeeded,
            exit_code: Some(0),
            reason: None,
            code: Some(FailureCode::DiskQuotaExceeded),
            at: T2,
        };
        assert_eq!(apply(&running(), &succeeded, 0).unwrap().failure_code, None);
    }

    #[test]
    fn finish_only_accepts_outcomes() {
        let err = apply(&running(), &finish(TaskStatus::Cancelled, 0), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot finish a task that is running: cancelled is not an outcome"
        );
    }

    #[test]
    fn cancelling_a_finished_task_says_why() {
        let done = apply(&running(), &finish(TaskStatus::Succeeded, 0), 0).unwrap();
        let err = apply(&done, &Transition::Cancel { at: T2 }, 0).unwrap_err();
        assert_eq!(err.to_string(), "cannot cancel a task that is succeeded");
    }

    #[test]
    fn retries_are_bounded_by_the_policy() {
        let interrupted = apply(
            &running(),
            &Transition::Interrupt {
                reason: "server restarted".into(),
                at: T2,
            },
            1,
        )
        .unwrap();
        assert!(can_retry(&interrupted, 1));
        assert!(!can_retry(&interrupted, 0));
        let requeued = apply(&interrupted, &Transition::Retry { at: T2 }, 1).unwrap();
        assert_eq!(
            requeued,
            TaskState {
                status: TaskStatus::Queued,
                status_reason: Some("server restarted".into()),
                failure_code: None,
                attempt: 1,
                slot_id: None,
                exit_code: None,
                queued_at: T0,
                started_at: None,
                finished_at: None,
            }
        );
        let second = apply(&requeued, &start(), 1).unwrap();
        assert_eq!(second.attempt, 2);
        let failed = apply(&second, &finish(TaskStatus::Failed, 1), 1).unwrap();
        assert_eq!(
            apply(&failed, &Transition::Retry { at: T2 }, 1)
                .unwrap_err()
                .to_string(),
            "cannot retry a task that is failed: all 2 allowed attempts are used"
        );
    }
}
