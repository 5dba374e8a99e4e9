//! Plain data shared by every Conductor crate.
//!
//! Nothing here performs I/O. Values that come from users (sizes such as `512m`, durations such as
//! `30s`, CPU fractions) are parsed once, here, into newtypes, so the rest of the code never
//! re-validates them.

mod agent;
mod event;
mod executor;
mod ids;
mod isolation;
mod limits;
mod network;
#[cfg(feature = "openapi")]
pub mod openapi;
mod plan;
mod request;
mod result;
mod size;
mod task;
mod time;
mod workspace;

pub use agent::{
    AgentEvent, AgentKind, AgentOutcome, AgentSpec, Budget, ChangedPath, LlmRequest,
    ParseSessionIdError, PathChange, Session, SessionId, Usage,
};
pub use event::{ExecEvent, OutputStream};
pub use executor::{ExecutorKind, ParseExecutorKindError};
pub use ids::{EventId, ExecutionId, ParseIdError, TaskId};
pub use isolation::{Capability, ExecutorCapabilities, IsolationLevel};
pub use limits::{
    Cpus, LimitName, ParseCpusError, ResourceLimits, Rlimit, RlimitResource, MAX_DISK, MAX_MEMORY,
    MAX_PIDS,
};
pub use network::{FullNetworkRange, NetworkPolicy, ParseNetworkError};
pub use plan::{EtcFile, ExecPlan, Mount, SandboxLayout};
pub use request::{ExecutionRequest, PortBridge};
pub use result::{ExecutionResult, ExecutionStats, StreamSummary};
pub use size::{Bytes, ParseSizeError};
#[allow(deprecated)]
pub use task::{Agent, AgentState};
pub use task::{
    ApiError, ApiErrorBody, CommandResult, CreatedToken, EnvironmentDefinition, FailureCode,
    GitSource, InlineEnvironment, ParseFailureCodeError, ParseStatusError, Slot, SlotState, Task,
    TaskEvent, TaskEventKind, TaskPage, TaskRequest, TaskSpec, TaskState, TaskStatus, TaskType,
    TokenInfo,
};
pub use time::{parse_duration, ParseDurationError, Timestamp};
pub use workspace::{ParseWorkspaceIdError, Workspace, WorkspaceId, WorkspaceRequest};
