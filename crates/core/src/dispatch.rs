//! Scheduler decisions: which queued tasks go to which free slots ([`dispatch`]), and what to do
//! after each command of a running task ([`next_step`]). Pure; the scheduler loop in the server
//! gathers the inputs and carries out the answer.

use std::collections::BTreeSet;

use conductor_types::{CommandResult, TaskId, TaskStatus, Timestamp};

/// A queued task as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The task.
    pub id: TaskId,
    /// Higher first.
    pub priority: i32,
    /// Earlier first among equal priorities.
    pub queued_at: Timestamp,
    /// CPU cores it asks for.
    pub cpus: Option<f64>,
    /// Memory it asks for, in bytes.
    pub memory: Option<u64>,
    /// The named persistent workspace it uses, if any.
    pub workspace: Option<String>,
}

/// What is free right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Idle slots, in the order to use them.
    pub free_slots: Vec<String>,
    /// Tasks running now.
    pub running: usize,
    /// Most tasks running at once.
    pub concurrency_limit: usize,
    /// CPU cores not yet handed out, when CPU is budgeted.
    pub cpus_free: Option<f64>,
    /// Memory bytes not yet handed out, when memory is budgeted.
    pub memory_free: Option<u64>,
    /// Named workspaces a running task is using: one task per named workspace at a time.
    pub busy_workspaces: BTreeSet<String>,
}

/// One decision: run this task on this slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The task.
    pub task_id: TaskId,
    /// The slot.
    pub slot_id: String,
}

/// Orders `candidates` by priority (higher first), then queue time, then id, and hands them to
/// free slots while slots, the concurrency limit and the resource budget last. Strict order:
/// a task that does not fit the remaining budget blocks those behind it (no starvation of large
/// tasks); the caller refuses tasks that could never fit at submission. A task whose named
/// workspace is in use waits without blocking others.
pub fn dispatch(candidates: &[Candidate], capacity: &Capacity) -> Vec<Assignment> {
    let mut ordered: Vec<&Candidate> = candidates.iter().collect();
    ordered.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.queued_at.cmp(&b.queued_at))
            .then(a.id.cmp(&b.id))
    });
    let slots = capacity
        .concurrency_limit
        .saturating_sub(capacity.running)
        .min(capacity.free_slots.len());
    let mut cpus_free = capacity.cpus_free;
    let mut memory_free = capacity.memory_free;
    let mut busy = capacity.busy_workspaces.clone();
    let mut free = capacity.free_slots.iter();
    let mut assignments = Vec::new();
    for candidate in ordered {
        if assignments.len() >= slots {
            break;
        }
        if candidate
            .workspace
            .as_ref()
            .is_some_and(|w| busy.contains(w))
        {
            continue;
        }
        let cpus_left = match (cpus_free, candidate.cpus) {
            (Some(free), Some(wanted)) if wanted > free + 1e-9 => break,
            (Some(free), Some(wanted)) => Some(free - wanted),
            (free, _) => free,
        };
        let memory_left = match (memory_free, candidate.memory) {
            (Some(free), Some(wanted)) if wanted > free => break,
            (Some(free), Some(wanted)) => Some(free - wanted),
            (free, _) => free,
        };
        let Some(slot) = free.next() else { break };
        cpus_free = cpus_left;
        memory_free = memory_left;
        if let Some(workspace) = &candidate.workspace {
            busy.insert(workspace.clone());
        }
        assignments.push(Assignment {
            task_id: candidate.id,
            slot_id: slot.clone(),
        });
    }
    assignments
}

/// What to do after a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run the command at this index.
    Run(usize),
    /// The task is over.
    Finish {
        /// succeeded, failed or timed_out.
        status: TaskStatus,
        /// The task's exit code.
        exit_code: Option<i32>,
        /// Why, when a command could not be run.
        reason: Option<String>,
    },
}

/// Decides the next step from the results so far (in command order) of a task with
/// `command_count` commands. A timeout or a command that could not be run ends the task; a
/// non-zero exit ends it unless `continue_on_error`. With `continue_on_error` the task still
/// fails when any command failed, with the exit code of the last failing one.
pub fn next_step(command_count: usize, continue_on_error: bool, results: &[CommandResult]) -> Step {
    if let Some(last) = results.last() {
        if last.timed_out {
            return Step::Finish {
                status: TaskStatus::TimedOut,
                exit_code: last.exit_code,
                reason: Some(format!(
                    "command {} ran past the task's timeout",
                    last.index
                )),
            };
        }
        if let Some(error) = &last.error {
            return Step::Finish {
                status: TaskStatus::Failed,
                exit_code: last.exit_code,
                reason: Some(format!("command {} could not be run: {error}", last.index)),
            };
        }
        if last.exit_code != Some(0) && !continue_on_error {
            return Step::Finish {
                status: TaskStatus::Failed,
                exit_code: last.exit_code,
                reason: None,
            };
        }
    }
    if results.len() < command_count {
        return Step::Run(results.len());
    }
    match results.iter().rev().find(|r| r.exit_code != Some(0)) {
        Some(failed) => Step::Finish {
            status: TaskStatus::Failed,
            exit_code: failed.exit_code,
            reason: None,
        },
        None => Step::Finish {
            status: TaskStatus::Succeeded,
            exit_code: Some(0),
            reason: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use conductor_types::ExecutionStats;

    use super::*;

    fn candidate(n: u128, priority: i32, queued_at: u64) -> Candidate {
        Candidate {
            id: id(n),
            priority,
            queued_at: Timestamp(queued_at),
            cpus: None,
            memory: None,
            workspace: None,
        }
    }

    fn id(n: u128) -> TaskId {
        format!("00000000-0000-4000-8000-{n:012}").parse().unwrap()
    }

    fn capacity(slots: usize, running: usize, limit: usize) -> Capacity {
        Capacity {
            free_slots: (1..=slots).map(|i| format!("agent-{i}")).collect(),
            running,
            concurrency_limit: limit,
            cpus_free: None,
            memory_free: None,
            busy_workspaces: BTreeSet::new(),
        }
    }

    fn assigned(assignments: &[Assignment]) -> Vec<(TaskId, &str)> {
        assignments
            .iter()
            .map(|a| (a.task_id, a.slot_id.as_str()))
            .collect()
    }

    #[test]
    fn higher_priority_first_then_oldest() {
        let queue = [
            candidate(1, 0, 10),
            candidate(2, 5, 30),
            candidate(3, 0, 5),
            candidate(4, 5, 20),
        ];
        let got = dispatch(&queue, &capacity(3, 0, 10));
        assert_eq!(
            assigned(&got),
            vec![(id(4), "agent-1"), (id(2), "agent-2"), (id(3), "agent-3")]
        );
    }

    #[test]
    fn respects_the_concurrency_limit_and_free_agents() {
        let queue = [candidate(1, 0, 1), candidate(2, 0, 2), candidate(3, 0, 3)];
        assert_eq!(dispatch(&queue, &capacity(3, 2, 3)).len(), 1);
        assert_eq!(dispatch(&queue, &capacity(3, 3, 3)).len(), 0);
        assert_eq!(dispatch(&queue, &capacity(0, 0, 3)).len(), 0);
        assert_eq!(dispatch(&[], &capacity(2, 0, 3)).len(), 0);
    }

    #[test]
    fn a_task_that_does_not_fit_blocks_those_behind_it() {
        let mut big = candidate(1, 9, 1);
        big.memory = Some(800);
        let mut small = candidate(2, 0, 2);
        small.memory = Some(100);
        let mut cap = capacity(2, 0, 2);
        cap.memory_free = Some(500);
        assert_eq!(dispatch(&[big.clone(), small.clone()], &cap), vec![]);
        cap.memory_free = Some(900);
        assert_eq!(
            assigned(&dispatch(&[small, big], &cap)),
            vec![(id(1), "agent-1"), (id(2), "agent-2")]
        );
    }

    #[test]
    fn one_task_per_named_workspace_at_a_time() {
        let mut first = candidate(1, 0, 1);
        first.workspace = Some("repo".into());
        let mut second = candidate(2, 0, 2);
        second.workspace = Some("repo".into());
        let third = candidate(3, 0, 3);
        let queue = [first.clone(), second, third];
        assert_eq!(
            assigned(&dispatch(&queue, &capacity(3, 0, 3))),
            vec![(id(1), "agent-1"), (id(3), "agent-2")]
        );
        let mut cap = capacity(3, 1, 3);
        cap.busy_workspaces.insert("repo".into());
        assert_eq!(assigned(&dispatch(&queue, &cap)), vec![(id(3), "agent-1")]);
    }

    fn result(index: u32, exit_code: i32) -> CommandResult {
        CommandResult {
            index,
            attempt: 1,
            command: format!("cmd{index}"),
            exit_code: Some(exit_code),
            signal: None,
            timed_out: false,
            oom_killed: false,
            error: None,
            executor: None,
            stats: ExecutionStats::default(),
            started_at: Timestamp(0),
            finished_at: Timestamp(0),
        }
    }

    #[test]
    fn runs_commands_in_order_and_stops_at_the_first_failure() {
        assert_eq!(next_step(3, false, &[]), Step::Run(0));
        assert_eq!(next_step(3, false, &[result(0, 0)]), Step::Run(1));
        assert_eq!(
            next_step(3, false, &[result(0, 0), result(1, 2)]),
            Step::Finish {
                status: TaskStatus::Failed,
                exit_code: Some(2),
                reason: None
            }
        );
        assert_eq!(
            next_step(2, false, &[result(0, 0), result(1, 0)]),
            Step::Finish {
                status: TaskStatus::Succeeded,
                exit_code: Some(0),
                reason: None
            }
        );
    }

    #[test]
    fn continue_on_error_runs_everything_but_still_fails() {
        assert_eq!(next_step(3, true, &[result(0, 7)]), Step::Run(1));
        assert_eq!(
            next_step(3, true, &[result(0, 7), result(1, 0), result(2, 0)]),
            Step::Finish {
                status: TaskStatus::Failed,
                exit_code: Some(7),
                reason: None
            }
        );
    }

    #[test]
    fn timeouts_and_errors_end_the_task_even_with_continue_on_error() {
        let mut timed_out = result(0, 124);
        timed_out.timed_out = true;
        assert_eq!(
            next_step(2, true, &[timed_out]),
            Step::Finish {
                status: TaskStatus::TimedOut,
                exit_code: Some(124),
                reason: Some("command 0 ran past the task's timeout".into())
            }
        );
        let mut broken = result(0, 0);
        broken.exit_code = None;
        broken.error = Some("sandbox set-up failed".into());
        assert_eq!(
            next_step(2, true, &[broken]),
            Step::Finish {
                status: TaskStatus::Failed,
                exit_code: None,
                reason: Some("command 0 could not be run: sandbox set-up failed".into())
            }
        );
    }
}
