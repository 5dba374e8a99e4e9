//! The execute stage of an agent task: one turn of an AI coding agent instead of shell commands.
//! The prepared run (workspace, quota, git, services) is the same; the turn gets a per-task token
//! from the gateway (dead when the turn ends), its adapter's command line, the session's home,
//! the gateway bridged onto the sandbox's loopback, and a non-root uid where the executor maps
//! one. Its stdout is the agent's stream: parsed into `agent_*` events and kept raw, redacted
//! (`agent_stream.rs`). How it ended comes from the gateway first (`budget_exceeded`), then the
//! agent's own account, then its exit.

use std::sync::Arc;

use conductor_agents::{adapter, AgentContext, GatewayUrl, RunAs};
use conductor_core::{OutputBudget, Redactor, StoreError};
use conductor_gateway::Provider;
use conductor_types::{
    AgentKind, AgentSpec, Capability, CommandResult, ExecutionRequest, ExecutionStats, FailureCode,
    Task, TaskEventKind, TaskStatus, Timestamp,
};

use super::agent_stream::{AgentStream, StreamEnd};
use super::execute::StepOutcome;
use super::finish::Ending;
use super::output::{remove_spools, OUTPUT_EVENT_BUFFER};
use super::prepare::PreparedRun;
use super::requests::{agent_request, AgentPlacement};
use crate::agents::{prepare_home, AgentRuntime, HomeMount, AGENT_UID, GATEWAY_PORT, HOME_QUOTA};
use crate::scheduler::Scheduler;

/// One agent turn, made ready: its request and what reads its output.
struct Turn {
    request: ExecutionRequest,
    stream: AgentStream,
    /// What the task's events call the command.
    label: String,
    /// The session's home, mounted for the turn.
    home: HomeMount,
}

impl Scheduler {
    /// Runs `task`'s agent turn in the prepared run, then finishes the task.
    pub(super) async fn drive_agent(
        &self,
        task: &Task,
        run: &mut PreparedRun,
        agent: &AgentSpec,
    ) -> Result<(), StoreError> {
        let Some(runtime) = self.config.agents.clone() else {
            let reason = "the server has no LLM gateway any more (no provider key)".to_owned();
            return self
                .finish_run(
                    task,
                    run,
                    Ending::refused(FailureCode::OrchestratorError, reason),
                    None,
                )
                .await;
        };
        let started_at = Timestamp::now();
        let turn = match self.prepare_turn(task, run, agent, &runtime).await? {
            Ok(turn) => turn,
            Err(reason) => {
                runtime.gateway.forget(task.id);
                let ending = Ending::refused(FailureCode::OrchestratorError, reason);
                return self.finish_run(task, run, ending, None).await;
            }
        };
        let label = turn.label.clone();
        let shape = self.workspace_shape(task, &run.workspace).await;
        let executed = self.execute_turn(task, run, turn).await;
        // The token dies with the turn, whatever happens next.
        let report = runtime.gateway.forget(task.id);
        let (outcome, end) = executed?;
        self.report_changes(task, &run.workspace, shape).await?;
        if let Some(report) = &report {
            self.store.record_usage(task.id, &report.usage).await?;
        }
        match (&task.spec.session_id, &end.cli_session) {
            (Some(session), Some(cli)) if conductor_agents::resumable(cli) => {
                self.store.set_cli_session(session, cli).await?;
            }
            (Some(_), Some(cli)) => {
                tracing::warn!(task = %task.id, cli = %cli.escape_debug(), "the agent printed a session id that is not one: its next turn starts afresh");
            }
            _ => {}
        }
        let mut result = CommandResult {
            index: 0,
            attempt: task.state.attempt,
            command: label,
            exit_code: None,
            signal: None,
            timed_out: false,
            oom_killed: false,
            error: None,
            executor: None,
            stats: ExecutionStats::default(),
            started_at,
            finished_at: Timestamp::now(),
        };
        self.apply_outcome(task, run, outcome, &mut result);
        let ending = agent_ending(&result, &end, report.as_ref());
        if self.stopped(task.id) {
            self.store.record_result(task.id, &result).await?;
            return Ok(());
        }
        self.finish_run(task, run, ending, Some(&result)).await
    }

    /// The turn's token, home, command line and request (`Err`: why it cannot start).
    async fn prepare_turn(
        &self,
        task: &Task,
        run: &PreparedRun,
        agent: &AgentSpec,
        runtime: &AgentRuntime,
    ) -> Result<Result<Turn, String>, StoreError> {
        let Some(session_id) = task.spec.session_id.clone() else {
            return Ok(Err("the agent task has no session".to_owned()));
        };
        let resume = match task.spec.parent_id {
            Some(_) => self
                .store
                .get_session(&session_id)
                .await?
                .and_then(|s| s.cli_session)
                .filter(|cli| conductor_agents::resumable(cli)),
            None => None,
        };
        let maps_users = run.step.capabilities().supports(Capability::RunAsUser);
        let provider = match agent.kind {
            AgentKind::ClaudeCode => Provider::Anthropic,
            AgentKind::Codex => Provider::OpenAi,
        };
        let budget = task.spec.budget.unwrap_or_default();
        let grant = runtime
            .gateway
            .grant(task.id, Some(session_id.to_string()), budget, provider);
        let context = AgentContext {
            gateway: GatewayUrl::loopback(GATEWAY_PORT),
            token: grant.token.expose().to_owned(),
            home: ExecutionRequest::SANDBOX_HOME.to_owned(),
            workdir: "/workspace".to_owned(),
            resume,
            run_as: if maps_users { RunAs::User } else { RunAs::Root },
        };
        let adapter = adapter(agent.kind);
        let command = adapter.command(agent, &context);
        let sessions = runtime.sessions.clone();
        let files = command.files.clone();
        let prepared = crate::stream::blocking(move || {
            prepare_home(&sessions, &session_id, &files, HOME_QUOTA)
        })
        .await;
        let home = match prepared {
            Ok(Ok(home)) => home,
            Ok(Err(reason)) => return Ok(Err(reason)),
            Err(error) => return Ok(Err(error.to_string())),
        };
        let placement = AgentPlacement {
            home: &home.path,
            gateway: &runtime.socket,
            port: GATEWAY_PORT,
            user: maps_users.then_some(AGENT_UID),
        };
        let remaining = task.spec.timeout;
        let request = agent_request(
            &task.spec,
            &command,
            &run.request_context(self),
            &placement,
            remaining,
        );
        // The stored stream and events must never carry the token or the task's secrets.
        let redactor = Redactor::new(stream_forms(
            run.secrets.values().cloned().chain([context.token.clone()]),
        ));
        let stream = AgentStream::open(
            runtime.stream_file(task.id),
            adapter.parser(),
            redactor,
            Arc::clone(&runtime.gateway),
        )
        .await
        .map_err(|e| StoreError::Backend {
            context: "opening the agent stream file".into(),
            message: e.to_string(),
        })?;
        let label = turn_label(agent.kind, context.run_as);
        Ok(Ok(Turn {
            request,
            stream,
            label,
            home,
        }))
    }

    /// Runs the turn on the run's step while its stream is parsed and stored; registered for
    /// cancel while it runs.
    async fn execute_turn(
        &self,
        task: &Task,
        run: &PreparedRun,
        turn: Turn,
    ) -> Result<(StepOutcome, StreamEnd), StoreError> {
        let id = task.id;
        let Turn {
            request,
            mut stream,
            label,
            home,
        } = turn;
        let execution_id = request.id.clone();
        if let Some(running) = self.lock().running.get_mut(&id) {
            running.execution = Some((execution_id.clone(), Arc::clone(&run.step)));
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(OUTPUT_EVENT_BUFFER);
        let mut budget = OutputBudget::new(self.config.stored_output_limit.get());
        let started = TaskEventKind::CommandStarted {
            index: 0,
            command: label,
        };
        let forwarder = async {
            self.emit(id, started).await?;
            stream.forward(self, id, receiver, &mut budget).await
        };
        let (outcome, forwarded) = tokio::join!(run.step.run(request, sender), forwarder);
        let done = match &outcome {
            StepOutcome::Finished(done) => Some(done),
            StepOutcome::Failed(_) => None,
        };
        remove_spools(self.config.spool_dir.as_deref(), &execution_id, done).await;
        match crate::stream::blocking(move || home.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(task = %id, %error, "unmounting the agent's home"),
            Err(error) => tracing::warn!(task = %id, %error, "unmounting the agent's home"),
        }
        let end = forwarded?;
        if let Some(running) = self.lock().running.get_mut(&id) {
            running.execution = None;
        }
        Ok((outcome, end))
    }
}

/// Each secret as it is, and as it appears inside a JSON string of the agent's stream (a secret
/// with a newline, a quote, a backslash or a tab is escaped there, and would not be found
/// as it is).
fn stream_forms(secrets: impl Iterator<Item = String>) -> Vec<String> {
    secrets
        .flat_map(|secret| {
            let quoted = serde_json::Value::String(secret.clone()).to_string();
            let escaped = quoted[1..quoted.len() - 1].to_owned();
            [secret, escaped]
        })
        .collect()
}

/// What the task's events and result call an agent turn; a turn that runs as the sandbox's
/// root (an executor that maps one uid) says so, and that the CLI's sandbox switch is on.
fn turn_label(kind: AgentKind, run_as: RunAs) -> String {
    let turn = format!("{} agent turn", kind.as_str());
    match (run_as, kind) {
        (RunAs::User, _) => turn,
        (RunAs::Root, AgentKind::ClaudeCode) => format!(
            "{turn} (as the sandbox's root, with Claude Code's IS_SANDBOX=1: this executor maps no other user)"
        ),
        (RunAs::Root, AgentKind::Codex) => {
            format!("{turn} (as the sandbox's root: this executor maps no other user)")
        }
    }
}

/// How an agent turn ended: the gateway's verdict first (a spent budget), then the agent's own
/// account, then its exit (no result of its own is a crash).
fn agent_ending(
    result: &CommandResult,
    end: &StreamEnd,
    report: Option<&conductor_gateway::GrantReport>,
) -> Ending {
    let failed = |code: FailureCode, reason: String| Ending {
        status: TaskStatus::Failed,
        exit_code: result.exit_code,
        code: Some(code),
        reason: Some(reason),
    };
    if result.timed_out {
        return Ending {
            status: TaskStatus::TimedOut,
            exit_code: result.exit_code,
            code: None,
            reason: Some("the agent ran out of the task's time".into()),
        };
    }
    if report.is_some_and(|r| r.budget_exceeded) {
        return failed(
            FailureCode::BudgetExceeded,
            "the agent reached the task's budget; the gateway refused its next request".into(),
        );
    }
    if let Some(error) = &result.error {
        return failed(
            FailureCode::AgentCrashed,
            format!("the agent could not run: {error}"),
        );
    }
    match end.failure {
        Some(code) => failed(code, end.describe(code)),
        None if result.exit_code == Some(0) => Ending {
            status: TaskStatus::Succeeded,
            exit_code: Some(0),
            code: None,
            reason: None,
        },
        None => failed(
            FailureCode::AgentCrashed,
            format!(
                "the agent exited with {} after reporting success",
                result.exit_code.unwrap_or(-1)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_also_looked_for_as_json_escapes_them() {
        let forms =
            stream_forms(["line1\nline2\t\"q\"".to_owned(), "plain".to_owned()].into_iter());
        assert!(
            forms.contains(&"line1\\nline2\\t\\\"q\\\"".to_owned()),
            "{forms:?}"
        );
        let redactor = Redactor::new(forms);
        let line =
            serde_json::json!({"text": "the key is line1\nline2\t\"q\" and plain"}).to_string();
        let clean = redactor.redact(&line);
        assert!(
            !clean.contains("line1") && !clean.contains("plain"),
            "{clean}"
        );
    }

    #[test]
    fn a_turn_as_the_sandboxs_root_says_so() {
        assert_eq!(
            turn_label(AgentKind::ClaudeCode, RunAs::User),
            "claude-code agent turn"
        );
        let root = turn_label(AgentKind::ClaudeCode, RunAs::Root);
        assert!(
            root.contains("sandbox's root") && root.contains("IS_SANDBOX=1"),
            "{root}"
        );
        let codex = turn_label(AgentKind::Codex, RunAs::Root);
        assert!(
            codex.contains("sandbox's root") && !codex.contains("IS_SANDBOX"),
            "{codex}"
        );
    }
}
