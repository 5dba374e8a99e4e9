//! Isolation levels and what an executor can enforce.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How strongly an executor separates work from the host, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Runs directly on the host.
    None,
    /// Own process group and session, rlimits, cgroup; shares the host's filesystem and network.
    ProcessOnly,
    /// Additionally a separate root filesystem (chroot-like).
    Filesystem,
    /// Namespaces, cgroups, seccomp, dropped capabilities.
    Container,
    /// A virtual machine.
    Vm,
}

impl fmt::Display for IsolationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::ProcessOnly => "process_only",
            Self::Filesystem => "filesystem",
            Self::Container => "container",
            Self::Vm => "vm",
        })
    }
}

/// One thing an executor may or may not enforce or report. The conformance suite skips (with
/// the reason) every test whose capability the executor does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `limits.cpus` is enforced as a CPU quota.
    CpuLimit,
    /// `limits.memory` is enforced, and an OOM kill is reported as `oom_killed`.
    MemoryLimit,
    /// `limits.pids` is enforced.
    PidsLimit,
    /// `limits.disk` is enforced.
    DiskLimit,
    /// `NetworkPolicy::None` is enforced: nothing outside the sandbox is reachable.
    NetworkNone,
    /// `NetworkPolicy::Localhost` is enforced.
    NetworkLocalhost,
    /// `NetworkPolicy::Allowlist` is enforced.
    NetworkAllowlist,
    /// `NetworkPolicy::Full` is enforced: outbound through a namespace of its own, never the
    /// host's loopback or addresses, link-local metadata or other sandboxes.
    NetworkFull,
    /// `NetworkPolicy::Host`: the host's own network (the host executor's only policy).
    NetworkHost,
    /// System directories are read-only.
    ReadOnlyRoot,
    /// Host files outside the workspace (such as the user's home) are not visible.
    HostFilesHidden,
    /// Only the sandbox's own processes are visible.
    PidIsolation,
    /// Sandbox root maps to an unprivileged host uid.
    UserMapping,
    /// The sandbox has its own hostname.
    HostnameIsolation,
    /// A seccomp filter denies dangerous system calls.
    Seccomp,
    /// The whole process tree is killed on timeout or cancel, including daemonised children.
    KillsProcessTree,
    /// `stats.cpu_time_us` is measured.
    CpuTimeStats,
    /// `stats.peak_memory_bytes` is measured.
    PeakMemoryStats,
    /// `stats.disk_read_bytes` / `disk_write_bytes` are measured.
    DiskIoStats,
    /// The executor can snapshot and restore a workspace.
    Snapshots,
    /// Service sidecars: the executor runs requests on a `service_network` (see
    /// `core::ServiceRunner`).
    Services,
    /// `bridges`: ports on the sandbox's own loopback forwarded to host Unix sockets.
    PortBridge,
    /// `home`: a host directory mounted read-write as the command's `HOME`.
    HomeMount,
    /// `user`: the command runs as a non-root uid of the sandbox (see
    /// `ExecutionRequest::user` for which uid).
    RunAsUser,
}

/// What an executor declares about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorCapabilities {
    /// The executor's isolation level.
    pub isolation_level: IsolationLevel,
    /// `linux`, `macos`, …
    pub platform: String,
    /// Everything it enforces or reports.
    pub supported: BTreeSet<Capability>,
}

impl ExecutorCapabilities {
    /// Whether `capability` is declared.
    pub fn supports(&self, capability: Capability) -> bool {
        self.supported.contains(&capability)
    }
}
