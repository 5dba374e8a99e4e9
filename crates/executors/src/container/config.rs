//! How a container executor is set up ([`ContainerConfig`]) and what it declares it enforces
//! and measures ([`capabilities`]), both known before it connects to its engine.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use conductor_types::{Capability, ExecutorCapabilities, IsolationLevel};

use super::engine::EngineKind;
use super::services::ServicesConfig;

/// The uid and gid commands run as by default: unprivileged and unused on the host (the same
/// range the namespace executor maps its sandbox root to).
pub const DEFAULT_USER: u32 = 2_000_000_000;

/// How a container executor is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Docker or Podman.
    pub engine: EngineKind,
    /// The engine's API socket.
    pub socket: PathBuf,
    /// The image every execution runs (an environment's `conductor-env/<name>:<hash>`).
    pub image: String,
    /// uid and gid the command runs as; the workspace is handed to them before each run.
    pub user: (u32, u32),
    /// The engine's user-namespace mode (`userns_mode`: Podman's `auto`, `keep-id`, …). With
    /// one, the in-container user maps to a host uid the executor does not know, so the
    /// workspace is not handed over: the mode must make it usable (a rootless engine's
    /// `keep-id` excepted: see `rootless`).
    pub userns: Option<String>,
    /// The uid and gid of a rootless engine (Podman run by an unprivileged user; the owner of
    /// its socket), `None` for a rootful one. See [`ContainerConfig::for_socket`].
    pub rootless: Option<(u32, u32)>,
    /// Where the cgroup filesystem is mounted.
    pub cgroup_root: PathBuf,
    /// The cgroup under which each execution's cgroup is made.
    pub cgroup_parent: String,
    /// Where output past the in-memory limit is spooled.
    pub spool_dir: PathBuf,
    /// Warm containers kept started and waiting (see `pool`); 0 starts every one cold.
    pub warm_pool: usize,
    /// How many executions a warm container serves, reset in between, before it is removed
    /// (see `resident`); 0 never reuses one.
    pub warm_reuse: u32,
    /// Where the warm containers' slot directories are made (see `pool`).
    pub pool_dir: PathBuf,
    /// The service sidecars' images and health timeout (see `services`).
    pub services: ServicesConfig,
    /// Where the seccomp profile is written for an engine that takes it as a path (Podman);
    /// the engine must be able to read it.
    pub seccomp_dir: PathBuf,
}

impl ContainerConfig {
    /// Defaults for `engine` running `image`: the engine's rootful socket, the unprivileged
    /// default user, no user namespace, no warm pool (one-shot use would start a warm container
    /// only to remove it).
    pub fn new(engine: EngineKind, image: impl Into<String>) -> Self {
        Self::for_socket(engine, image, engine.default_socket())
    }

    /// [`ContainerConfig::new`] on `socket`. A socket owned by another user than root is a
    /// rootless engine's: commands then run as that user (`userns` `keep-id`, so its uid is the
    /// same inside), and the executor makes no cgroups (an unprivileged engine cannot use
    /// them): the engine gets the limits, which it enforces on cgroup v2 only, and no stats
    /// are measured (see [`capabilities`]).
    pub fn for_socket(engine: EngineKind, image: impl Into<String>, socket: PathBuf) -> Self {
        let rootless = std::fs::metadata(&socket)
            .ok()
            .map(|meta| (meta.uid(), meta.gid()))
            .filter(|(uid, _)| *uid != 0);
        Self {
            engine,
            socket,
            image: image.into(),
            user: rootless.unwrap_or((DEFAULT_USER, DEFAULT_USER)),
            userns: rootless.map(|_| "keep-id".to_owned()),
            rootless,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "conductor".to_owned(),
            spool_dir: std::env::temp_dir().join("conductor-spool"),
            warm_pool: 0,
            warm_reuse: 0,
            pool_dir: PathBuf::from("/run/conductor/container-pool").join(engine.name()),
            services: ServicesConfig::default(),
            seccomp_dir: PathBuf::from("/run/conductor/container-seccomp"),
        }
    }

    /// Why an executor of this configuration cannot be made, if it cannot (checked before
    /// connecting anything).
    pub(crate) fn unsupported(&self) -> Option<String> {
        if self.rootless.is_some() && self.engine == EngineKind::Docker {
            return Some(
                "rootless Docker (its socket is not root's; rootless Podman is supported)"
                    .to_owned(),
            );
        }
        if self.rootless.is_some() && self.warm_pool > 0 {
            return Some(
                "a warm pool with rootless Podman (set warm_pool = 0 for this environment)"
                    .to_owned(),
            );
        }
        if self.warm_reuse > 0 && self.userns.is_some() {
            return Some("warm_reuse together with a user-namespace mode (the agent must be root in the container and the commands' user known)".to_owned());
        }
        None
    }
}

/// What a container executor of `config` enforces and measures (known before it connects).
pub fn capabilities(config: &ContainerConfig) -> ExecutorCapabilities {
    let mut supported = BTreeSet::from([
        Capability::CpuLimit,
        Capability::MemoryLimit,
        Capability::PidsLimit,
        Capability::NetworkNone,
        Capability::ReadOnlyRoot,
        Capability::HostFilesHidden,
        Capability::PidIsolation,
        Capability::HostnameIsolation,
        Capability::KillsProcessTree,
        Capability::CpuTimeStats,
        Capability::PeakMemoryStats,
        Capability::DiskIoStats,
        Capability::Services,
        Capability::Seccomp,
    ]);
    // The home is a bind like the workspace (a warm container's slot has one waiting).
    supported.insert(Capability::HomeMount);
    if config.user.0 != 0 {
        supported.insert(Capability::UserMapping);
        // Every command already runs as the executor's own non-root user, which no host
        // account shares; a request's `user` gets that one (see `ExecutionRequest::user`).
        supported.insert(Capability::RunAsUser);
    }
    // `full`'s bridge is kept off the host by rules only root can install. Port bridges join
    // the container's network namespace, which needs root and a rootful engine's container
    // (a rootless engine's belongs to its user's namespace), and a waiting (warm) container,
    // which needs cgroups of ours (see `bridged`).
    if config.rootless.is_none() && nix::unistd::Uid::effective().is_root() {
        supported.insert(Capability::NetworkFull);
        supported.insert(Capability::PortBridge);
    }
    if config.rootless.is_some() {
        // No cgroup of ours: nothing measured, and the engine enforces limits on v2 only.
        for measured in [
            Capability::CpuTimeStats,
            Capability::PeakMemoryStats,
            Capability::DiskIoStats,
            Capability::Services,
        ] {
            supported.remove(&measured);
        }
        if !config.cgroup_root.join("cgroup.controllers").is_file() {
            for limit in [
                Capability::CpuLimit,
                Capability::MemoryLimit,
                Capability::PidsLimit,
            ] {
                supported.remove(&limit);
            }
        }
    }
    ExecutorCapabilities {
        isolation_level: IsolationLevel::Container,
        platform: std::env::consts::OS.to_owned(),
        supported,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_socket_not_owned_by_root_is_a_rootless_engines() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let rootful = ContainerConfig::for_socket(EngineKind::Podman, "i", socket.clone());
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: handing the socket to another user needs root");
            return;
        }
        assert_eq!(rootful.rootless, None);
        assert_eq!(rootful.user, (DEFAULT_USER, DEFAULT_USER));
        assert!(capabilities(&rootful).supports(Capability::PeakMemoryStats));
        std::os::unix::fs::chown(&socket, Some(1234), Some(2345)).unwrap();
        let rootless = ContainerConfig::for_socket(EngineKind::Podman, "i", socket);
        assert_eq!(rootless.rootless, Some((1234, 2345)));
        assert_eq!(rootless.user, (1234, 2345));
        assert_eq!(rootless.userns.as_deref(), Some("keep-id"));
        let declared = capabilities(&rootless);
        for missing in [
            Capability::PeakMemoryStats,
            Capability::CpuTimeStats,
            Capability::Services,
        ] {
            assert!(!declared.supports(missing), "{missing:?}");
        }
        // Limits only where the engine enforces them: cgroup v2.
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").is_file();
        assert_eq!(declared.supports(Capability::MemoryLimit), v2);
        assert!(declared.supports(Capability::Seccomp));
    }
}
