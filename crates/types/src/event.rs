//! Events an executor streams while a command runs.

use serde::{Deserialize, Serialize};

use crate::ExecutionId;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Something that happened during an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    /// The command's process exists.
    Started {
        /// Which execution.
        execution_id: ExecutionId,
        /// Host pid of the outermost process, when there is one.
        pid: Option<u32>,
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A chunk of output, in the order it was read.
    Output {
        /// Which stream.
        stream: OutputStream,
        /// The bytes.
        data: Vec<u8>,
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
    },
}
