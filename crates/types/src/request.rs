//! What a caller asks an executor to run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::{Bytes, ExecutionId, NetworkPolicy, ResourceLimits};

/// One command to run in one sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRequest {
    /// Names this execution (for `cancel`).
    pub id: ExecutionId,
    /// Program and arguments; `argv[0]` is looked up in the sandbox's `PATH`.
    pub argv: Vec<String>,
    /// Variables set explicitly. They win over inherited ones.
    pub env: BTreeMap<String, String>,
    /// Names of host variables passed through when set on the host. Nothing else is inherited.
    pub env_allowlist: Vec<String>,
    /// Host directory the command works in (mounted at `/workspace` in sandboxes). Must exist.
    pub workspace: PathBuf,
    /// A root filesystem directory to use instead of the host's system directories.
    pub rootfs: Option<PathBuf>,
    /// Host directories bound read-only at the same path in the sandbox (a local repository
    /// a clone reads). Only the namespace executor takes them; the host executor sees the
    /// host anyway; container executors refuse them.
    pub read_only_paths: Vec<PathBuf>,
    /// Resource limits.
    pub limits: ResourceLimits,
    /// Network access.
    pub network: NetworkPolicy,
    /// Wall-clock limit: past it the whole tree is killed and the exit code is 124.
    pub timeout: Option<Duration>,
    /// Bytes of each of stdout and stderr kept in memory; the rest is spooled to a file.
    pub output_limit: Bytes,
    /// Bytes of each of stdout and stderr spooled to a file at most; past it the spool stops
    /// growing and the summary says so (`StreamSummary::spool_truncated`).
    pub spool_limit: Bytes,
    /// Hostname inside the sandbox (default: `conductor-<short id>`).
    pub hostname: Option<String>,
    /// The private network of the task's services (`core::ServiceSet::network`): the sandbox
    /// joins it and reaches each service by name. Only executors declaring
    /// `Capability::Services` accept it.
    pub service_network: Option<String>,
    /// Ports on the sandbox's own loopback forwarded to host Unix sockets for the run's whole
    /// life (the LLM gateway, the egress proxy). Only executors declaring
    /// `Capability::PortBridge` accept them.
    pub bridges: Vec<PortBridge>,
    /// A host directory mounted read-write at [`ExecutionRequest::SANDBOX_HOME`], the command's
    /// `HOME` (an agent's private state, kept outside the workspace). Only executors declaring
    /// `Capability::HomeMount` accept it.
    pub home: Option<PathBuf>,
    /// Runs the command as a non-root user inside the sandbox instead of its root; the
    /// workspace and the home are handed to it. The namespace executor, which maps uids of
    /// its own, uses this uid (and the same gid); docker and podman run every command as
    /// their configured non-root user already (uid 2000000000 by default, which no host
    /// account shares, or a rootless engine's user) and keep that one rather than take a uid
    /// that may be a host account's. Only executors declaring `Capability::RunAsUser` accept
    /// it.
    pub user: Option<u32>,
}

/// `127.0.0.1:port` inside the sandbox's network namespace accepts TCP connections for the
/// run's whole life, and each is forwarded to the host Unix socket `target`, which the sandbox
/// cannot see. Works with every network policy, `none` included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortBridge {
    /// The port on the sandbox's loopback.
    pub port: u16,
    /// The host Unix socket each connection is forwarded to.
    pub target: PathBuf,
}

impl ExecutionRequest {
    /// Default bytes of each stream kept in memory.
    pub const DEFAULT_OUTPUT_LIMIT: Bytes = Bytes::mib(1);
    /// Default bytes of each stream spooled to disk.
    pub const DEFAULT_SPOOL_LIMIT: Bytes = Bytes::mib(64);
    /// Where [`ExecutionRequest::home`] appears inside a sandbox.
    pub const SANDBOX_HOME: &'static str = "/home/conductor";

    /// A request with a fresh id, no limits, no network and no inherited environment.
    pub fn new(argv: Vec<String>, workspace: PathBuf) -> Self {
        Self {
            id: ExecutionId::random(),
            argv,
            env: BTreeMap::new(),
            env_allowlist: Vec::new(),
            workspace,
            rootfs: None,
            read_only_paths: Vec::new(),
            limits: ResourceLimits::default(),
            network: NetworkPolicy::None,
            timeout: None,
            output_limit: Self::DEFAULT_OUTPUT_LIMIT,
            spool_limit: Self::DEFAULT_SPOOL_LIMIT,
            hostname: None,
            service_network: None,
            bridges: Vec::new(),
            home: None,
            user: None,
        }
    }
}
