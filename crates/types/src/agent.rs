//! The vocabulary of agent tasks (issue 12): which coding agent runs, with what budget, what it
//! used, and what it did, normalized across agent CLIs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{TaskId, Timestamp};

/// Which agent CLI runs in the sandbox.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// Anthropic's Claude Code (`claude -p … --output-format stream-json`).
    ClaudeCode,
    /// OpenAI's Codex CLI (`codex exec --json`).
    Codex,
}

impl AgentKind {
    /// Every kind.
    pub const ALL: [AgentKind; 2] = [Self::ClaudeCode, Self::Codex];

    /// The name the API uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex",
        }
    }
}

/// What the agent is asked to do and how (`agent` in a task request).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Which agent CLI.
    pub kind: AgentKind,
    /// The user's message for this turn, at most 256 KiB (for the seed's task types, added after
    /// the prompt their template makes of `description`). The bound is checked, not declared
    /// in the schema: a body that long is over the default body limit first (413).
    #[serde(default)]
    pub prompt: String,
    /// Model name passed to the CLI (its own default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Upper bound on the agent's turns in this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_turns: Option<u32>,
    /// Tools the agent may use without asking (Claude Code's `--allowedTools`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// The CLI's permission mode (`default`, `acceptEdits`, `plan`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// Extra system prompt appended to the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
}

/// Spending limits of one task (`budget` in a task request). Absent fields are unbounded.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Input + output + cache-write tokens (cache reads count only in `usd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Cost in US dollars of everything, cache reads included, at the configured prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
}

/// What a task (or a session) used of the model provider, as counted by the gateway from the
/// upstream's own responses.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Requests forwarded to the upstream.
    pub requests: u64,
    /// Cost in US dollars at the configured prices.
    pub cost_usd: f64,
}

impl Usage {
    /// The tokens a `Budget::tokens` counts: input + output + cache writes.
    pub fn budget_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_input_tokens)
    }

    /// `self + other`, field by field.
    pub fn add(&self, other: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .saturating_add(other.cache_read_input_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .saturating_add(other.cache_creation_input_tokens),
            requests: self.requests.saturating_add(other.requests),
            cost_usd: self.cost_usd + other.cost_usd,
        }
    }
}

/// How an agent's run ended, as its CLI reported it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentOutcome {
    /// The agent finished its work.
    Success,
    /// It stopped at its turn limit.
    MaxTurns,
    /// It stopped on an error (the model's, a tool's or its own).
    Error,
}

/// One step of an agent's work, normalized across agent CLIs (the task's `agent_*` events).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// Text the assistant wrote.
    AgentText {
        /// The text.
        text: String,
    },
    /// The agent called a tool.
    AgentToolCall {
        /// The CLI's id of the call (pairs it with its result).
        call_id: String,
        /// Tool name (`Bash`, `Write`, …).
        tool: String,
        /// The input, shortened for one line (a command, a path).
        input: String,
    },
    /// A tool call's outcome.
    AgentToolResult {
        /// The id of the call.
        call_id: String,
        /// Whether the tool succeeded.
        ok: bool,
        /// The start of its output.
        output: String,
    },
    /// Cumulative usage so far, as the agent CLI reports it.
    AgentUsage {
        /// Tokens so far (cost as the CLI estimates it; the task's `usage` is the gateway's).
        usage: Usage,
    },
    /// What the turn changed in its workspace (after the agent's process ended; by type, size,
    /// mtime and mode, no contents read).
    AgentFilesChanged {
        /// The changed paths, sorted, at most [`AgentEvent::MAX_CHANGED_FILES`].
        files: Vec<ChangedPath>,
        /// How many more changed paths were left out.
        #[serde(default, skip_serializing_if = "is_zero")]
        more: u64,
    },
    /// The run ended.
    AgentResult {
        /// How.
        outcome: AgentOutcome,
        /// Turns the agent took.
        turns: u32,
        /// The final answer.
        text: String,
        /// The CLI's own session id, for resuming.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cli_session: Option<String>,
    },
}

impl AgentEvent {
    /// The event's `type`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::AgentText { .. } => "agent_text",
            Self::AgentToolCall { .. } => "agent_tool_call",
            Self::AgentToolResult { .. } => "agent_tool_result",
            Self::AgentUsage { .. } => "agent_usage",
            Self::AgentFilesChanged { .. } => "agent_files_changed",
            Self::AgentResult { .. } => "agent_result",
        }
    }

    /// Changed paths an [`AgentEvent::AgentFilesChanged`] lists at most.
    pub const MAX_CHANGED_FILES: usize = 1000;
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A path a turn changed, relative to the workspace.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedPath {
    /// The path.
    pub path: String,
    /// What happened to it.
    pub change: PathChange,
}

/// What happened to a path.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathChange {
    /// It is new.
    Added,
    /// Its contents (or symlink target) changed.
    Modified,
    /// It is gone.
    Removed,
    /// Only its permission bits changed.
    ModeChanged,
    /// It became another type (a file a directory, …).
    TypeChanged,
}

impl PathChange {
    /// A one-letter mark for listings (`A`, `M`, `D`, `m`, `T`).
    pub const fn mark(self) -> char {
        match self {
            Self::Added => 'A',
            Self::Modified => 'M',
            Self::Removed => 'D',
            Self::ModeChanged => 'm',
            Self::TypeChanged => 'T',
        }
    }
}

/// Identifies an agent session: the turns of one conversation, in one workspace (`ses_` and 32
/// hex digits).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "ses_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c"))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(format!("ses_{}", uuid::Uuid::new_v4().simple()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text that is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a session id (ses_ and 32 hex digits): {input:?}")]
pub struct ParseSessionIdError {
    /// What was given.
    pub input: String,
}

impl FromStr for SessionId {
    type Err = ParseSessionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.strip_prefix("ses_").is_some_and(|hex| {
            hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseSessionIdError {
                input: s.to_owned(),
            })
        }
    }
}

impl TryFrom<String> for SessionId {
    type Error = ParseSessionIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> Self {
        id.0
    }
}

/// An agent session as stored: which agent, where it works, and the agent CLI's own session id
/// (what a follow-up turn resumes).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// The agent CLI of every turn.
    pub kind: AgentKind,
    /// The workspace every turn works in (a name).
    pub workspace: String,
    /// The agent CLI's own session id, once a turn reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_session: Option<String>,
    /// The turns (task ids), oldest first.
    pub turns: Vec<TaskId>,
    /// What every turn used so far, as the gateway counted it.
    pub usage: Usage,
    /// When its first turn was submitted.
    pub created_at: Timestamp,
}

/// The audit record of one request the LLM gateway forwarded (never its body).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmRequest {
    /// The task whose token made it.
    pub task_id: TaskId,
    /// That task's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// The model asked for.
    pub model: String,
    /// The HTTP status the agent got.
    pub status: u16,
    /// What it used (one request: `requests` is 1 when it reached the upstream).
    pub usage: Usage,
    /// Milliseconds from receiving the request to its last byte.
    pub latency_ms: u64,
    /// When it ended.
    pub at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_events_have_the_api_names() {
        for kind in AgentKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        let event = AgentEvent::AgentToolCall {
            call_id: "t1".into(),
            tool: "Bash".into(),
            input: "ls".into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "agent_tool_call");
        assert_eq!(serde_json::from_value::<AgentEvent>(json).unwrap(), event);
    }

    #[test]
    fn agent_events_are_task_events_with_their_own_type() {
        let kind = crate::TaskEventKind::Agent(AgentEvent::AgentText { text: "hi".into() });
        let json = serde_json::to_value(&kind).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "agent_text", "text": "hi"})
        );
        assert_eq!(kind.name(), "agent_text");
        let back: crate::TaskEventKind = serde_json::from_value(json).unwrap();
        assert_eq!(back, kind);
        let state: crate::TaskEventKind =
            serde_json::from_str(r#"{"type":"command_started","index":0,"command":"x"}"#).unwrap();
        assert_eq!(state.name(), "command_started");
        assert!(serde_json::from_str::<crate::TaskEventKind>(r#"{"type":"nope"}"#).is_err());
        let event: crate::TaskEvent = serde_json::from_str(
            r#"{"id":7,"task_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","at":"2026-12-07T00:00:00.000Z","type":"agent_text","text":"hi"}"#,
        )
        .unwrap();
        assert_eq!(event.kind, kind);
    }

    #[test]
    fn session_ids_round_trip_and_refuse_other_text() {
        let id = SessionId::random();
        assert_eq!(id.as_str().parse::<SessionId>().unwrap(), id);
        assert!("ses_xyz".parse::<SessionId>().is_err());
        assert!("ws_0f4c1d3b9a8e4f6b8d2c7a1e5b3f9d0c"
            .parse::<SessionId>()
            .is_err());
    }

    #[test]
    fn budget_tokens_leave_cache_reads_out() {
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_input_tokens: 1000,
            cache_creation_input_tokens: 7,
            requests: 1,
            cost_usd: 0.0,
        };
        assert_eq!(usage.budget_tokens(), 22);
        assert_eq!(usage.add(&usage).budget_tokens(), 44);
        let spec: Result<AgentSpec, _> =
            serde_json::from_str(r#"{"kind":"claude-code","prompt":"hi","typo":1}"#);
        assert!(spec.is_err());
    }
}
