//! Tasks: what a client submits to the orchestrator ([`TaskRequest`]), the validated spec the
//! orchestrator keeps ([`TaskSpec`]), and what a client reads back ([`Task`], [`TaskEvent`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    AgentEvent, AgentSpec, Budget, ExecutionStats, LimitName, NetworkPolicy, OutputStream,
    ParseIdError, ResourceLimits, SessionId, Usage,
};

/// Identifies one task for its whole life, across retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(uuid::Uuid);

impl TaskId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| ParseIdError {
                input: s.to_owned(),
            })
    }
}

/// A point in time, in milliseconds since the Unix epoch. Serialises as RFC 3339
/// (`2026-11-27T00:00:00.000Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current time. Only edges call this; core receives timestamps as arguments.
    pub fn now() -> Self {
        Self(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        )
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// Milliseconds from `earlier` to `self` (zero when `earlier` is later).
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = UNIX_EPOCH + Duration::from_millis(self.0);
        humantime::format_rfc3339_millis(time).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let time = humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)?;
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis();
        Ok(Self(millis as u64))
    }
}

/// Where a task is in its life. `queued → running → succeeded | failed | timed_out | cancelled |
/// interrupted`; a queued task may also be cancelled, and a failed, timed-out or interrupted one
/// goes back to queued while its retries last.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Accepted and waiting for an agent.
    Queued,
    /// An agent is running its commands.
    Running,
    /// Every command ran and exited 0 (or failures were allowed by `continue_on_error`).
    Succeeded,
    /// A command exited non-zero, or could not be run.
    Failed,
    /// The task's timeout passed.
    TimedOut,
    /// A client cancelled it.
    Cancelled,
    /// The server stopped or restarted while it ran.
    Interrupted,
}

impl TaskStatus {
    /// Every status, in life order.
    pub const ALL: [TaskStatus; 7] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
        Self::Interrupted,
    ];

    /// The name the API uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether the task has stopped (a retry may still send it back to `queued`).
    pub const fn is_finished(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A status name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status {input:?}: expected one of queued, running, succeeded, failed, timed_out, cancelled, interrupted")]
pub struct ParseStatusError {
    /// What was given.
    pub input: String,
}

impl FromStr for TaskStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError {
                input: s.to_owned(),
            })
    }
}

/// What kind of work a task is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// Shell commands in a sandbox (seed 001's name).
    #[default]
    IsolatedExecution,
    /// Shell commands (same as `isolated_execution`).
    Command,
    /// An AI coding agent working on `agent.prompt` in the workspace.
    Agent,
    /// An agent reviews code (`description`, optional `files`), through a prompt template.
    CodeReview,
    /// An agent refactors code (`description`, optional `files`), through a prompt template.
    Refactor,
    /// An agent writes tests (`description`, optional `files`), through a prompt template.
    TestGeneration,
    /// An agent analyses code and reports (`description`, optional `files`), through a prompt
    /// template.
    Analysis,
    /// An agent does what `description` says, through a prompt template.
    Generic,
}

impl TaskType {
    /// Whether the task runs an agent (instead of shell commands).
    pub const fn is_agent(self) -> bool {
        !matches!(self, Self::IsolatedExecution | Self::Command)
    }
}

/// A task as a client submits it (`POST /api/v1/tasks`, and `POST /tasks` in seed 001's shape).
/// Unknown fields are refused, so a typo is an error instead of a silently ignored setting.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// Defaults to `isolated_execution`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<TaskType>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 4096))]
    pub description: Option<String>,
    /// Where to run; only `host` exists until environments do. Defaults to `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Shell command lines, run in order in one workspace (1 to 1000, each at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub commands: Option<Vec<String>>,
    /// Run the remaining commands after one fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<bool>,
    /// CPU, memory, pids and disk limits (`{"cpus": 0.5, "memory": "512m"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceLimits>,
    /// Network access; defaults to what the environment allows (`full` on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPolicy>,
    /// Limit for the whole task: `"30s"`, `"5m"` or a number of seconds.
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::duration_schema))]
    pub timeout: Option<Duration>,
    /// Environment variables for every command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Environment variables whose values are redacted from stored output and never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, String>>,
    /// A named persistent workspace reused across tasks; absent means a fresh one per task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// A git repository cloned into the task's fresh workspace before its commands; after the
    /// task, `GET /api/v1/tasks/{id}/diff` shows what changed against the checked-out commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// Higher runs first; ties run in submission order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Free-form `key: value` labels, filterable in `GET /api/v1/tasks?label=key=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// How many times a failed, timed-out or interrupted task is run again (at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 10))]
    pub retries: Option<u32>,
    /// Service sidecars (seed 001: `["postgres:14", "redis:7"]`), started on a private network
    /// before the commands, each reachable by its name; container executors only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_items = 8))]
    pub services: Option<Vec<String>>,
    /// Environments defined by this request (seed 001's `environments: [{name, dockerfile}]`),
    /// for `environment` to name. The Dockerfile is translated at submission (a bad one is 422
    /// `invalid_dockerfile`); the environment is built before the task's first command unless
    /// a build of the same content exists, and shared by every task whose definition
    /// translates alike. A name that is an existing environment's must have its content (409
    /// `environment_conflict` otherwise). Needs an admin token (403 otherwise): a build runs
    /// the `RUN` steps as root on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<EnvironmentDefinition>>,
    /// The agent of an `agent` task: which CLI, the prompt and how it may work. The seed's task
    /// types (`code_review`, `refactor`, …) fill the prompt from `description` and `files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    /// Spending limits of an agent task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Files an agent task of a seed type is about (paths in the workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_items = 100))]
    pub files: Option<Vec<String>>,
}

/// An environment defined in a task request.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentDefinition {
    /// What the request's `environment` calls it: 1 to 64 of `a-z 0-9 - _ .`.
    pub name: String,
    /// Dockerfile text in the subset environments are built from: `FROM debian:bookworm`
    /// (or `python:3.11`, `node:18`), `RUN` (apt installs become packages), `ENV`, `ARG`,
    /// `WORKDIR`; no `COPY`/`ADD` and no multi-stage builds.
    pub dockerfile: String,
}

/// The environment a task defined in its request, as the server resolved it at submission.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineEnvironment {
    /// The name the request gave it (the task's `environment`).
    pub name: String,
    /// Its Dockerfile text.
    pub dockerfile: String,
    /// The environment it is built as: `inline-<content hash>`, shared by every definition
    /// that translates alike, or the name of an existing environment with the same content.
    pub build: String,
}

/// A git repository to clone into a task's workspace.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    /// A local path or a URL the host can reach.
    pub repository: String,
    /// A branch, tag or commit id (default: the repository's default branch).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A validated task, as stored and returned. Secret values are not part of it (only their names).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// What kind of work.
    pub task_type: TaskType,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where it runs.
    pub environment: String,
    /// Shell command lines, at least one.
    pub commands: Vec<String>,
    /// Run the remaining commands after one fails.
    pub continue_on_error: bool,
    /// Limits.
    pub resources: ResourceLimits,
    /// Network access.
    pub network: NetworkPolicy,
    /// Limit for the whole task; absent only on tasks stored before the server applied a
    /// default timeout.
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::duration_schema))]
    pub timeout: Option<Duration>,
    /// The limits in `resources` and `timeout` that the server filled in from its defaults
    /// (`[limits.default]`) because the request named none.
    #[serde(default)]
    pub defaults_applied: Vec<LimitName>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Names of the secret variables (values are kept apart and never returned).
    pub secret_names: Vec<String>,
    /// Named persistent workspace, or `None` for a fresh one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Repository cloned into the workspace before the commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// Service sidecars running while the commands run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// When `environment` was defined in the request: that definition and its build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_environment: Option<InlineEnvironment>,
    /// Higher runs first.
    pub priority: i32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Extra runs allowed after a failure, timeout or interruption.
    pub retries: u32,
    /// The agent of an agent task, its prompt resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    /// Spending limits of an agent task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Files an agent task of a seed type is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// The session an agent task is a turn of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// The previous turn of its session, for a follow-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<TaskId>,
}

/// Where a task is in its life: the part the state machine changes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// The status.
    pub status: TaskStatus,
    /// Why it has this status, when that needs saying (interrupted, cancelled, could not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// A stable, machine-readable code for why it did not succeed, when the orchestrator knows
    /// one (`status_reason` says it in words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<FailureCode>,
    /// How many times it has been started (1 on the first run).
    pub attempt: u32,
    /// The agent running it, or that ran it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The task's exit code: that of the failing command, or of the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When it was accepted.
    pub queued_at: Timestamp,
    /// When its current (or last) attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it reached its current finished status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl TaskState {
    /// A task just accepted.
    pub fn queued(at: Timestamp) -> Self {
        Self {
            status: TaskStatus::Queued,
            status_reason: None,
            failure_code: None,
            attempt: 0,
            agent_id: None,
            exit_code: None,
            queued_at: at,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Why a task did not succeed, as a stable code for programs (the `status_reason` next to it
/// is for people and may change wording).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The task filled its workspace's disk quota (its commands got `ENOSPC`).
    DiskQuotaExceeded,
    /// Its workspace (or the workspace's disk quota) could not be set up.
    WorkspaceUnavailable,
    /// Its `git` repository could not be cloned.
    GitCloneFailed,
    /// Its environment no longer exists on the server.
    EnvironmentMissing,
    /// Its environment, defined in the request, could not be built.
    EnvironmentBuildFailed,
    /// Its `services` could not be started or never became healthy.
    ServicesFailed,
    /// The orchestrator itself failed while running it.
    OrchestratorError,
    /// An agent task reached its token or cost budget.
    BudgetExceeded,
    /// An agent task stopped at its `max_turns`.
    MaxTurns,
    /// The model provider could not be reached (or kept answering 429/5xx).
    UpstreamUnavailable,
    /// The model provider refused the requests (a bad key, a 4xx).
    UpstreamRejected,
    /// The agent CLI exited without a result of its own.
    AgentCrashed,
}

impl FailureCode {
    /// Every code.
    pub const ALL: [FailureCode; 12] = [
        Self::DiskQuotaExceeded,
        Self::WorkspaceUnavailable,
        Self::GitCloneFailed,
        Self::EnvironmentMissing,
        Self::EnvironmentBuildFailed,
        Self::ServicesFailed,
        Self::OrchestratorError,
        Self::BudgetExceeded,
        Self::MaxTurns,
        Self::UpstreamUnavailable,
        Self::UpstreamRejected,
        Self::AgentCrashed,
    ];

    /// The name the API uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DiskQuotaExceeded => "disk_quota_exceeded",
            Self::WorkspaceUnavailable => "workspace_unavailable",
            Self::GitCloneFailed => "git_clone_failed",
            Self::EnvironmentMissing => "environment_missing",
            Self::EnvironmentBuildFailed => "environment_build_failed",
            Self::ServicesFailed => "services_failed",
            Self::OrchestratorError => "orchestrator_error",
            Self::BudgetExceeded => "budget_exceeded",
            Self::MaxTurns => "max_turns",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamRejected => "upstream_rejected",
            Self::AgentCrashed => "agent_crashed",
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A failure code that does not exist (a database written by a newer conductor, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure code {input:?}")]
pub struct ParseFailureCodeError {
    /// What was given.
    pub input: String,
}

impl FromStr for FailureCode {
    type Err = ParseFailureCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| ParseFailureCodeError {
                input: s.to_owned(),
            })
    }
}

/// The outcome of one command of one attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Position in `commands`, from 0.
    pub index: u32,
    /// Which attempt ran it.
    pub attempt: u32,
    /// The command line.
    pub command: String,
    /// Exit code (124 on timeout, 128 + N when killed by signal N); `None` when it never ran.
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The task's timeout ended it.
    pub timed_out: bool,
    /// The memory limit killed it.
    pub oom_killed: bool,
    /// Why it could not be run at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The executor that ran it (`docker`, or `namespace` when that is the environment's
    /// fallback and Docker was down); absent when it never ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// Measurements.
    pub stats: ExecutionStats,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
}

/// A task as the API returns it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Its status, attempt and phase timestamps.
    #[serde(flatten)]
    pub state: TaskState,
    /// What was asked for.
    pub spec: TaskSpec,
    /// Results of the current (or last) attempt's commands, in order.
    pub results: Vec<CommandResult>,
    /// What an agent task used of the model provider so far, as the gateway counted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One page of `GET /api/v1/tasks`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// Newest first.
    pub tasks: Vec<Task>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Identifies an event; increases monotonically across all tasks (SSE `id:` and `Last-Event-ID`).
pub type EventId = i64;

/// Something that happened to a task, in order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Position in the global event log.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub id: EventId,
    /// Which task.
    pub task_id: TaskId,
    /// When.
    pub at: Timestamp,
    /// What.
    #[serde(flatten)]
    pub kind: TaskEventKind,
}

/// What a [`TaskEvent`] says.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskEventKind {
    /// The status changed.
    State {
        /// The new status.
        status: TaskStatus,
        /// Which attempt.
        attempt: u32,
        /// Why, when that needs saying.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A command started.
    CommandStarted {
        /// Position in `commands`.
        index: u32,
        /// The command line.
        command: String,
    },
    /// A chunk of output (secrets already redacted).
    Output {
        /// Position in `commands`.
        index: u32,
        /// Which stream.
        stream: OutputStream,
        /// The text.
        text: String,
    },
    /// A line of the build of the task's environment (defined in its request), before its
    /// first command: `step 2/4: …`, the build's output, or that a cached build is used.
    EnvironmentBuild {
        /// The text, ending in a newline.
        text: String,
    },
    /// A command ended.
    CommandFinished {
        /// Position in `commands`.
        index: u32,
        /// Its exit code, `None` when it could not be run.
        exit_code: Option<i32>,
    },
    /// A step of an agent task (`agent_text`, `agent_tool_call`, `agent_tool_result`,
    /// `agent_usage`, `agent_result`).
    #[serde(untagged)]
    Agent(AgentEvent),
}

impl TaskEventKind {
    /// The event's `type` (the SSE event name).
    pub const fn name(&self) -> &'static str {
        match self {
            Self::State { .. } => "state",
            Self::CommandStarted { .. } => "command_started",
            Self::EnvironmentBuild { .. } => "environment_build",
            Self::Output { .. } => "output",
            Self::CommandFinished { .. } => "command_finished",
            Self::Agent(event) => event.name(),
        }
    }
}

/// One execution slot of the orchestrator.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// `agent-1`, `agent-2`, …
    pub id: String,
    /// Whether it is running a task.
    pub state: AgentState,
    /// The task it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// Where its task workspaces live.
    pub workspace_root: String,
    /// The id of its own (non-admin) token, whose secret is in `$CONDUCTOR_HOME/agents/<id>.token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Last time its state changed.
    pub updated_at: Timestamp,
}

/// What an agent is doing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Waiting for a task.
    Idle,
    /// Running a task.
    Busy,
    /// Not serving (server stopped).
    Offline,
}

impl AgentState {
    /// The name the API uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }
}

/// An API token as listed (the secret itself is shown once, at creation, and only its hash is kept).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id, used to revoke it.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// May manage tokens.
    pub admin: bool,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

/// `POST /api/v1/tokens` answer: the only time the secret is shown.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The token's listing.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token.
    pub token: String,
}

/// `{ "error": { "code", "message" } }`, the body of every error response.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiError,
}

/// A stable code and a message for humans.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, machine-readable (`invalid_field`, `not_found`, …).
    pub code: String,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

/// `Option<Duration>` as a human duration (`"1m 30s"`); reads that or a number of seconds.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Fraction(f64),
            Text(String),
        }
        let invalid = |what: String| {
            serde::de::Error::custom(format!(
                "invalid duration {what}: expected such as \"30s\", \"5m\" or a positive number of seconds"
            ))
        };
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Seconds(0)) => Err(invalid("0".to_owned())),
            Some(Raw::Seconds(n)) => Ok(Some(Duration::from_secs(n))),
            Some(Raw::Fraction(f)) if f.is_finite() && f > 0.0 && f < 1e12 => {
                Ok(Some(Duration::from_secs_f64(f)))
            }
            Some(Raw::Fraction(f)) => Err(invalid(f.to_string())),
            Some(Raw::Text(text)) => crate::parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn failure_code_names_round_trip() {
        for code in FailureCode::ALL {
            assert_eq!(code.as_str().parse::<FailureCode>(), Ok(code));
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{code}\""));
        }
        assert_eq!(
            "full".parse::<FailureCode>().unwrap_err().to_string(),
            "unknown failure code \"full\""
        );
    }

    #[test]
    fn timestamps_serialise_as_rfc3339_and_back() {
        let at = Timestamp(1_795_000_000_123);
        let json = serde_json::to_string(&at).unwrap();
        assert_eq!(json, "\"2026-11-18T11:06:40.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), at);
    }

    #[test]
    fn request_accepts_seed_001_shape_and_refuses_unknown_fields() {
        let seed = r#"{
            "task_type": "isolated_execution",
            "description": "Run Python tests",
            "environment": "python-dev",
            "commands": ["cd /workspace/src", "python -m pytest tests/"]
        }"#;
        let request: TaskRequest = serde_json::from_str(seed).unwrap();
        assert_eq!(
            request,
            TaskRequest {
                task_type: Some(TaskType::IsolatedExecution),
                description: Some("Run Python tests".into()),
                environment: Some("python-dev".into()),
                commands: Some(vec![
                    "cd /workspace/src".into(),
                    "python -m pytest tests/".into()
                ]),
                ..TaskRequest::default()
            }
        );
        let err = serde_json::from_str::<TaskRequest>(r#"{"comands": []}"#).unwrap_err();
        assert!(
            err.to_string().starts_with("unknown field `comands`"),
            "{err}"
        );
    }

    #[test]
    fn requests_serialise_only_what_is_set() {
        let request = TaskRequest {
            commands: Some(vec!["ls".into()]),
            timeout: Some(Duration::from_secs(90)),
            ..TaskRequest::default()
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(json, r#"{"commands":["ls"],"timeout":"1m 30s"}"#);
        assert_eq!(serde_json::from_str::<TaskRequest>(&json).unwrap(), request);
    }

    #[test]
    fn timeouts_read_text_or_seconds() {
        let read = |json: &str| serde_json::from_str::<TaskRequest>(json).map(|r| r.timeout);
        assert_eq!(
            read(r#"{"timeout": "90s"}"#).unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            read(r#"{"timeout": 5}"#).unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            read(r#"{"timeout": 0.5}"#).unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(read(r#"{"timeout": null}"#).unwrap(), None);
        for bad in [
            r#"{"timeout": 0}"#,
            r#"{"timeout": -1}"#,
            r#"{"timeout": "soon"}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
