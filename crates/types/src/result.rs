//! What an execution produced.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ExecutionId, IsolationLevel};

/// The outcome of one execution.
///
/// Conventions: a timeout gives exit code 124 and `timed_out`; death by signal N gives 128 + N
/// and `signal: N`; a kill by the memory limit sets `oom_killed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionResult {
    /// Which execution.
    pub execution_id: ExecutionId,
    /// The executor's name (`host`, `namespace`, …).
    pub executor: String,
    /// The executor's isolation level.
    pub isolation_level: IsolationLevel,
    /// Exit code, following the conventions above.
    pub exit_code: i32,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    /// The timeout fired.
    pub timed_out: bool,
    /// `cancel` was called.
    pub cancelled: bool,
    /// The memory limit killed it.
    pub oom_killed: bool,
    /// Standard output (lossy UTF-8), at most the request's output limit, with a marker line at
    /// the end when truncated.
    pub stdout: String,
    /// Standard error, as `stdout`.
    pub stderr: String,
    /// Sizes and spool file of standard output.
    pub stdout_info: StreamSummary,
    /// Sizes and spool file of standard error.
    pub stderr_info: StreamSummary,
    /// Measurements.
    pub stats: ExecutionStats,
}

impl ExecutionResult {
    /// A run of `execution_id` on `executor` that exited with `exit_code`, with no output kept
    /// and nothing measured: the base that executors and test doubles fill in.
    pub fn exited(
        execution_id: ExecutionId,
        executor: impl Into<String>,
        isolation_level: IsolationLevel,
        exit_code: i32,
    ) -> Self {
        Self {
            execution_id,
            executor: executor.into(),
            isolation_level,
            exit_code,
            signal: None,
            timed_out: false,
            cancelled: false,
            oom_killed: false,
            stdout: String::new(),
            stderr: String::new(),
            stdout_info: StreamSummary::default(),
            stderr_info: StreamSummary::default(),
            stats: ExecutionStats::default(),
        }
    }
}

/// The size of one output stream and where its full text is when it was too big for memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Bytes the command wrote.
    pub total_bytes: u64,
    /// Whether the in-memory text is cut short.
    pub truncated: bool,
    /// The file holding the stream (its first `spool_limit` bytes), when truncated.
    pub spool_path: Option<PathBuf>,
    /// Whether the spool file stopped at the spool limit (it then holds only the stream's start).
    #[serde(default)]
    pub spool_truncated: bool,
}

/// Measurements of one execution. `None` (absent in JSON) means the executor could not measure it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionStats {
    /// Wall-clock time from start to exit.
    pub duration_ms: u64,
    /// User plus system CPU time of the whole tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_us: Option<u64>,
    /// Highest memory use of the whole tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Bytes read from block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_write_bytes: Option<u64>,
}
