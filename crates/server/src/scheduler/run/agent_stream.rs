//! An agent turn's output: stdout is the agent CLI's stream (one JSON object a line), parsed by
//! its adapter into `agent_*` events and appended raw, redacted, to the task's stream file
//! (`GET /api/v1/tasks/{id}/agent-stream`); stderr (the CLI's diagnostics) and stdout lines that
//! are not the stream are stored as output, as a command's are. While the turn runs, the task's
//! usage is refreshed from the gateway at most once a second.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_agents::StreamParser;
use conductor_core::{LineAssembler, OutputBudget, Redactor, StoreError};
use conductor_gateway::Gateway;
use conductor_types::{AgentEvent, ExecEvent, FailureCode, OutputStream, TaskEventKind, TaskId};

use tokio::io::AsyncWriteExt;

use crate::scheduler::Scheduler;

/// Longest line of the agent's stream kept whole (a tool result can be long).
const MAX_LINE: usize = 1024 * 1024;
/// How often the task's usage is refreshed while the turn runs.
const USAGE_EVERY: Duration = Duration::from_secs(1);
/// Most bytes of one turn's raw stream kept on the host (the agent controls what it prints).
const MAX_STREAM_BYTES: u64 = 64 * 1024 * 1024;

/// What the stream said about the turn's end.
#[derive(Debug, Default)]
pub(super) struct StreamEnd {
    /// Why it failed by the agent's own account (`None`: it succeeded).
    pub failure: Option<FailureCode>,
    /// The CLI's own session id (what the next turn resumes).
    pub cli_session: Option<String>,
    /// The agent's final text.
    pub text: Option<String>,
}

impl StreamEnd {
    /// The status reason of a turn that failed with `code`.
    pub(super) fn describe(&self, code: FailureCode) -> String {
        let what = match code {
            FailureCode::MaxTurns => "the agent stopped at its turn limit (max_turns)",
            FailureCode::UpstreamRejected => "the model provider refused the agent's requests",
            FailureCode::UpstreamUnavailable => "the model provider could not be reached",
            FailureCode::BudgetExceeded => "the agent reached the task's budget",
            _ => "the agent failed",
        };
        match self.text.as_deref().filter(|t| !t.is_empty()) {
            Some(text) => format!("{what}: {}", shorten(text, 300)),
            None => what.to_owned(),
        }
    }
}

fn shorten(text: &str, most: usize) -> String {
    match text.char_indices().nth(most) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Reads one turn's output.
pub(super) struct AgentStream {
    file: tokio::fs::File,
    parser: Box<dyn StreamParser>,
    redactor: Redactor,
    gateway: Arc<Gateway>,
    end: StreamEnd,
    usage_at: Instant,
    /// Bytes of the raw stream kept so far.
    kept: u64,
}

impl AgentStream {
    /// Appends to `path` (0600), parses with `parser`, redacts with `redactor`.
    pub(super) async fn open(
        path: PathBuf,
        parser: Box<dyn StreamParser>,
        redactor: Redactor,
        gateway: Arc<Gateway>,
    ) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc_nofollow())
            .open(path)
            .await?;
        Ok(Self {
            file,
            parser,
            redactor,
            gateway,
            end: StreamEnd::default(),
            usage_at: Instant::now(),
            kept: 0,
        })
    }

    /// Stores everything the turn writes until it ends; returns what the stream said.
    pub(super) async fn forward(
        &mut self,
        scheduler: &Scheduler,
        id: TaskId,
        mut receiver: tokio::sync::mpsc::Receiver<ExecEvent>,
        budget: &mut OutputBudget,
    ) -> Result<StreamEnd, StoreError> {
        let mut stdout = LineAssembler::new(MAX_LINE);
        let mut stderr = LineAssembler::new(MAX_LINE);
        while let Some(event) = receiver.recv().await {
            let ExecEvent::Output { stream, data, .. } = event else {
                continue;
            };
            match stream {
                OutputStream::Stdout => {
                    if let Some(text) = stdout.push(&data) {
                        self.lines(scheduler, id, &text, budget).await?;
                    }
                }
                OutputStream::Stderr => {
                    if let Some(text) = stderr.push(&data) {
                        let redactor = &self.redactor;
                        scheduler
                            .emit_output(id, 0, OutputStream::Stderr, redactor, budget, text)
                            .await?;
                    }
                }
            }
        }
        if let Some(text) = stdout.finish() {
            self.lines(scheduler, id, &text, budget).await?;
        }
        if let Some(text) = stderr.finish() {
            let redactor = &self.redactor;
            scheduler
                .emit_output(id, 0, OutputStream::Stderr, redactor, budget, text)
                .await?;
        }
        let _ = self.file.flush().await;
        self.end.failure = self.parser.failure();
        Ok(std::mem::take(&mut self.end))
    }

    /// Whole lines of the stream: kept raw, parsed into events.
    async fn lines(
        &mut self,
        scheduler: &Scheduler,
        id: TaskId,
        text: &str,
        budget: &mut OutputBudget,
    ) -> Result<(), StoreError> {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.keep(id, line).await;
            match self.parser.line(line) {
                Ok(events) => {
                    for event in events {
                        self.event(scheduler, id, event, budget).await?;
                    }
                }
                Err(_) => {
                    let text = format!("{line}\n");
                    let redactor = &self.redactor;
                    scheduler
                        .emit_output(id, 0, OutputStream::Stdout, redactor, budget, text)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Appends one line of the raw stream, redacted, up to [`MAX_STREAM_BYTES`].
    async fn keep(&mut self, id: TaskId, line: &str) {
        if self.kept >= MAX_STREAM_BYTES {
            return;
        }
        let mut clean = self.redactor.redact(line);
        clean.push('\n');
        self.kept += clean.len() as u64;
        if self.kept >= MAX_STREAM_BYTES {
            clean = format!(
                "{{\"conductor\":\"the stream past {MAX_STREAM_BYTES} bytes is not kept\"}}\n"
            );
        }
        if let Err(error) = self.file.write_all(clean.as_bytes()).await {
            tracing::warn!(task = %id, %error, "keeping the agent stream");
        }
    }

    /// Stores one event, redacted, within the task's output budget (the result and usage
    /// always); notes the result; refreshes the usage now and then.
    async fn event(
        &mut self,
        scheduler: &Scheduler,
        id: TaskId,
        event: AgentEvent,
        budget: &mut OutputBudget,
    ) -> Result<(), StoreError> {
        if let AgentEvent::AgentResult {
            cli_session, text, ..
        } = &event
        {
            self.end.cli_session.clone_from(cli_session);
            // Redacted too: a failed turn's reason quotes it.
            self.end.text = Some(self.redactor.redact(text));
        }
        let event = redact_event(&self.redactor, event);
        let essential = matches!(
            event,
            AgentEvent::AgentResult { .. } | AgentEvent::AgentUsage { .. }
        );
        if !essential {
            // Steps count against the task's stored output, as a command's output does.
            let size = serde_json::to_string(&event).map_or(0, |json| json.len());
            if !budget.take(size as u64) {
                return Ok(());
            }
        }
        scheduler.emit(id, TaskEventKind::Agent(event)).await?;
        if self.usage_at.elapsed() >= USAGE_EVERY {
            self.usage_at = Instant::now();
            if let Some(report) = self.gateway.report(id) {
                scheduler.store().record_usage(id, &report.usage).await?;
            }
        }
        Ok(())
    }
}

/// `event` with the secrets taken out of every text it carries.
fn redact_event(redactor: &Redactor, event: AgentEvent) -> AgentEvent {
    match serde_json::to_string(&event) {
        Ok(json) => {
            let clean = redactor.redact(&json);
            serde_json::from_str(&clean).unwrap_or(event)
        }
        Err(_) => event,
    }
}

fn libc_nofollow() -> i32 {
    nix::libc::O_NOFOLLOW
}
