//! The fully resolved plan for one execution: what `conductor_core::plan` produces and executors
//! carry out. Data only; the sandbox helper reads it as JSON.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Bytes, NetworkPolicy, ResourceLimits, Rlimit};

/// Everything an executor needs to run one command, with every default already applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecPlan {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The complete environment, sorted by name.
    pub env: Vec<(String, String)>,
    /// Working directory, as the command sees it.
    pub cwd: PathBuf,
    /// Cgroup limits.
    pub limits: ResourceLimits,
    /// rlimits to set, defaults merged with the request's.
    pub rlimits: Vec<Rlimit>,
    /// Network access.
    pub network: NetworkPolicy,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// The filesystem and namespaces to build; `None` for executors that run on the host.
    pub sandbox: Option<SandboxLayout>,
}

/// How to assemble the sandbox's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLayout {
    /// Hostname in the sandbox's UTS namespace.
    pub hostname: String,
    /// Mounts, in the order to make them, onto an empty tmpfs root that becomes read-only once
    /// assembled.
    pub mounts: Vec<Mount>,
    /// Files written into the root before it becomes read-only (a minimal `/etc`).
    pub files: Vec<EtcFile>,
}

/// One step in building the sandbox root. Targets are absolute paths inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mount {
    /// Bind a host path read-only. A source that is a symlink is recreated as the same symlink;
    /// a missing source is skipped when `optional`.
    ReadOnlyBind {
        /// Host path.
        source: PathBuf,
        /// Sandbox path.
        target: PathBuf,
        /// Skip silently when the source does not exist.
        optional: bool,
    },
    /// Bind every top-level entry of a host directory (a rootfs) read-only at `/`, except the
    /// named ones; symlinks are recreated.
    ReadOnlyBindChildren {
        /// Host directory.
        source: PathBuf,
        /// Top-level names to leave out (`proc`, `dev`, …).
        exclude: Vec<String>,
    },
    /// Bind a host directory read-write (`nosuid`, `nodev`).
    ReadWriteBind {
        /// Host path.
        source: PathBuf,
        /// Sandbox path.
        target: PathBuf,
    },
    /// A fresh tmpfs (`nosuid`, `nodev`).
    Tmpfs {
        /// Sandbox path.
        target: PathBuf,
        /// Size limit.
        size: Bytes,
        /// Permission bits of its root, e.g. `0o1777`.
        mode: u32,
    },
    /// A fresh procfs for the sandbox's pid namespace.
    Proc {
        /// Sandbox path.
        target: PathBuf,
    },
    /// A minimal `/dev`: null, zero, full, random, urandom, tty, plus fd/stdin/stdout/stderr
    /// links, `shm` and `pts`.
    Dev {
        /// Sandbox path.
        target: PathBuf,
    },
}

/// A small file written into the sandbox root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcFile {
    /// Sandbox path, absolute.
    pub path: PathBuf,
    /// Contents.
    pub contents: String,
    /// Permission bits.
    pub mode: u32,
}
