//! The pure transform from an [`ExecutionRequest`] to an [`ExecPlan`]: validation, environment
//! resolution, rlimit defaults, and the sandbox's filesystem layout. No I/O: the host's
//! environment comes in as [`HostContext`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use conductor_types::{
    Bytes, Capability, EtcFile, ExecPlan, ExecutionRequest, ExecutorCapabilities, Mount,
    NetworkPolicy, Rlimit, RlimitResource, SandboxLayout,
};

use crate::ExecutorError;

/// Where the workspace appears inside a sandbox.
pub const SANDBOX_WORKSPACE: &str = "/workspace";
/// `PATH` unless the request sets or allow-lists another.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Size of the sandbox's `/tmp`.
const TMP_SIZE: Bytes = Bytes::mib(256);
/// Host system directories bound read-only when no rootfs is given.
const HOST_SYSTEM_DIRS: [&str; 7] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Host files under `/etc` that programs need and that hold no secrets.
const HOST_ETC_ENTRIES: [&str; 5] = [
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
];
/// Rootfs entries never bound from a rootfs: the sandbox makes its own.
/// `home` too: the sandbox's `/home` is its own, so `home` can be mounted at
/// [`ExecutionRequest::SANDBOX_HOME`] (a warm root makes that mount point ahead of time).
const ROOTFS_EXCLUDES: [&str; 7] = ["proc", "dev", "sys", "tmp", "run", "workspace", "home"];
/// The user name `/etc/passwd` gives [`ExecutionRequest::user`] (host directories only; a
/// rootfs brings its own `/etc`).
const SANDBOX_USER: &str = "conductor";

/// What the plan needs to know about the host, gathered by the caller.
#[derive(Debug, Clone, Default)]
pub struct HostContext {
    /// The host's environment (only allow-listed names are read).
    pub env: BTreeMap<String, String>,
}

/// Where the plan will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanTarget {
    /// Directly on the host, in the workspace directory.
    Host,
    /// In a sandbox with its own root filesystem and `/workspace`.
    Sandbox,
}

/// A request that cannot be turned into a plan, with the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No program given.
    #[error("command is empty: give a program to run")]
    EmptyCommand,
    /// An argument holds a NUL byte.
    #[error("argument {index} contains a NUL byte")]
    NulInArgument {
        /// Position in argv.
        index: usize,
    },
    /// A bad environment variable name or value.
    #[error("environment variable {name:?} is invalid: {reason}")]
    InvalidEnv {
        /// The name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A path that must be absolute is not.
    #[error("{field} must be an absolute path, got {path:?}")]
    NotAbsolute {
        /// Which field.
        field: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A limit of zero or otherwise impossible.
    #[error("limit {field} is invalid: {reason}")]
    InvalidLimit {
        /// Which limit.
        field: &'static str,
        /// What is wrong and what to use.
        reason: String,
    },
    /// A hostname that is not a DNS label.
    #[error("hostname {0:?} is invalid: use 1 to 63 letters, digits and hyphens")]
    InvalidHostname(String),
    /// A service reference no local service matches, or a service listed twice.
    #[error("{0}")]
    Services(String),
    /// A read-only path that would cover one of the sandbox's own mounts.
    #[error("read_only_paths: {0:?} would cover the sandbox's own /, /proc, /dev or /workspace")]
    ReservedPath(PathBuf),
    /// A rootfs on an executor without its own root filesystem.
    #[error("a rootfs needs a sandbox executor; the host executor runs on the host's filesystem")]
    RootfsOnHost,
}

/// Turns a request into a fully resolved plan for `target`.
pub fn plan(
    request: &ExecutionRequest,
    target: PlanTarget,
    host: &HostContext,
) -> Result<ExecPlan, PlanError> {
    validate_argv(&request.argv)?;
    require_absolute("workspace", &request.workspace)?;
    if let Some(rootfs) = &request.rootfs {
        if target == PlanTarget::Host {
            return Err(PlanError::RootfsOnHost);
        }
        require_absolute("rootfs", rootfs)?;
    }
    validate_limits(request)?;
    let cwd = match target {
        PlanTarget::Host => request.workspace.clone(),
        PlanTarget::Sandbox => PathBuf::from(SANDBOX_WORKSPACE),
    };
    let env = resolve_env(request, &cwd, host)?;
    let sandbox = match target {
        PlanTarget::Host => None,
        PlanTarget::Sandbox => Some(sandbox_layout(request)?),
    };
    Ok(ExecPlan {
        argv: request.argv.clone(),
        env,
        cwd,
        limits: request.limits.clone(),
        rlimits: resolve_rlimits(&request.limits.rlimits),
        network: request.network.clone(),
        timeout: request.timeout,
        sandbox,
    })
}

/// The first capability `request` needs that `capabilities` does not declare, with how a
/// message names it (`a memory limit`, `network policy full`); `None` when it has them all.
/// Limits are looked at before the network, then services.
pub fn missing_capability(
    request: &ExecutionRequest,
    capabilities: &ExecutorCapabilities,
) -> Option<(Capability, &'static str)> {
    let limits = &request.limits;
    let network = match request.network {
        NetworkPolicy::None => Some((Capability::NetworkNone, "network policy none")),
        NetworkPolicy::Localhost => {
            Some((Capability::NetworkLocalhost, "network policy localhost"))
        }
        NetworkPolicy::Allowlist(_) => {
            Some((Capability::NetworkAllowlist, "network policy allowlist"))
        }
        NetworkPolicy::Full => Some((Capability::NetworkFull, "network policy full")),
        NetworkPolicy::Host => Some((Capability::NetworkHost, "network policy host")),
    };
    let wanted = [
        limits.cpus.map(|_| (Capability::CpuLimit, "a cpu limit")),
        limits
            .memory
            .map(|_| (Capability::MemoryLimit, "a memory limit")),
        limits.pids.map(|_| (Capability::PidsLimit, "a pids limit")),
        limits.disk.map(|_| (Capability::DiskLimit, "a disk limit")),
        network,
        request
            .service_network
            .as_ref()
            .map(|_| (Capability::Services, "running services")),
        (!request.bridges.is_empty()).then_some((Capability::PortBridge, "a port bridge")),
        request
            .home
            .as_ref()
            .map(|_| (Capability::HomeMount, "a home directory mount")),
        request
            .user
            .map(|_| (Capability::RunAsUser, "running as a non-root user")),
    ];
    wanted
        .into_iter()
        .flatten()
        .find(|(capability, _)| !capabilities.supports(*capability))
}

/// Refuses a request that asks for something `capabilities` does not declare, naming it.
pub fn check_supported(
    request: &ExecutionRequest,
    executor: &'static str,
    capabilities: &ExecutorCapabilities,
) -> Result<(), ExecutorError> {
    match missing_capability(request, capabilities) {
        Some((_, what)) => Err(ExecutorError::Unsupported {
            executor,
            what: what.to_owned(),
        }),
        None => Ok(()),
    }
}

fn validate_argv(argv: &[String]) -> Result<(), PlanError> {
    match argv.first() {
        None => return Err(PlanError::EmptyCommand),
        Some(program) if program.is_empty() => return Err(PlanError::EmptyCommand),
        Some(_) => {}
    }
    match argv.iter().position(|arg| arg.contains('\0')) {
        Some(index) => Err(PlanError::NulInArgument { index }),
        None => Ok(()),
    }
}

fn require_absolute(field: &'static str, path: &Path) -> Result<(), PlanError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(PlanError::NotAbsolute {
            field,
            path: path.to_owned(),
        })
    }
}

fn validate_limits(request: &ExecutionRequest) -> Result<(), PlanError> {
    let limits = &request.limits;
    let invalid = |field, reason: &str| {
        Err(PlanError::InvalidLimit {
            field,
            reason: reason.to_owned(),
        })
    };
    if limits.memory.is_some_and(|m| m.get() < 4 * Bytes::MIB) {
        return invalid("memory", "must be at least 4m");
    }
    if limits.pids == Some(0) {
        return invalid("pids", "must be at least 1");
    }
    if limits.disk.is_some_and(|d| d.get() < Bytes::MIB) {
        return invalid("disk", "must be at least 1m");
    }
    if let Some(bad) = limits.rlimits.iter().find(|r| r.soft > r.hard) {
        return Err(PlanError::InvalidLimit {
            field: "rlimits",
            reason: format!(
                "{:?}: soft limit {} is above hard limit {}",
                bad.resource, bad.soft, bad.hard
            ),
        });
    }
    if let Some(hostname) = &request.hostname {
        let valid = !hostname.is_empty()
            && hostname.len() <= 63
            && hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !hostname.starts_with('-');
        if !valid {
            return Err(PlanError::InvalidHostname(hostname.clone()));
        }
    }
    Ok(())
}

fn validate_env_name(name: &str) -> Result<(), PlanError> {
    let reason = if name.is_empty() {
        Some("the name is empty")
    } else if name.contains('=') {
        Some("the name contains '='")
    } else if name.contains('\0') {
        Some("the name contains a NUL byte")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PlanError::InvalidEnv {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Defaults, then allow-listed host variables, then explicit ones; sorted by name.
fn resolve_env(
    request: &ExecutionRequest,
    cwd: &Path,
    host: &HostContext,
) -> Result<Vec<(String, String)>, PlanError> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), SANDBOX_PATH.to_owned());
    let home = match (&request.home, cwd == Path::new(SANDBOX_WORKSPACE)) {
        (Some(_), true) => ExecutionRequest::SANDBOX_HOME.to_owned(),
        _ => cwd.display().to_string(),
    };
    env.insert("HOME".to_owned(), home);
    for name in &request.env_allowlist {
        validate_env_name(name)?;
        if let Some(value) = host.env.get(name) {
            env.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in &request.env {
        validate_env_name(name)?;
        if value.contains('\0') {
            return Err(PlanError::InvalidEnv {
                name: name.clone(),
                reason: "the value contains a NUL byte",
            });
        }
        env.insert(name.clone(), value.clone());
    }
    Ok(env.into_iter().collect())
}

/// No core dumps by default; the request's rlimits replace defaults of the same resource.
fn resolve_rlimits(requested: &[Rlimit]) -> Vec<Rlimit> {
    let mut rlimits = BTreeMap::new();
    rlimits.insert(
        RlimitResource::Core,
        Rlimit {
            resource: RlimitResource::Core,
            soft: 0,
            hard: 0,
        },
    );
    for rlimit in requested {
        rlimits.insert(rlimit.resource, *rlimit);
    }
    rlimits.into_values().collect()
}

fn sandbox_layout(request: &ExecutionRequest) -> Result<SandboxLayout, PlanError> {
    let hostname = request
        .hostname
        .clone()
        .unwrap_or_else(|| format!("conductor-{}", request.id.short()));
    let mut mounts = Vec::new();
    let mut files = Vec::new();
    match &request.rootfs {
        Some(rootfs) => mounts.push(Mount::ReadOnlyBindChildren {
            source: rootfs.clone(),
            exclude: ROOTFS_EXCLUDES.iter().map(|s| (*s).to_owned()).collect(),
        }),
        None => {
            for dir in HOST_SYSTEM_DIRS.iter().chain(HOST_ETC_ENTRIES.iter()) {
                mounts.push(Mount::ReadOnlyBind {
                    source: dir.into(),
                    target: dir.into(),
                    optional: true,
                });
            }
            if request.network == NetworkPolicy::Full {
                mounts.push(Mount::ReadOnlyBind {
                    source: "/etc/resolv.conf".into(),
                    target: "/etc/resolv.conf".into(),
                    optional: true,
                });
            }
            files = minimal_etc(&hostname, request.user);
        }
    }
    mounts.push(Mount::Proc {
        target: "/proc".into(),
    });
    mounts.push(Mount::Dev {
        target: "/dev".into(),
    });
    mounts.push(Mount::Tmpfs {
        target: "/tmp".into(),
        size: TMP_SIZE,
        mode: 0o1777,
    });
    for path in &request.read_only_paths {
        require_absolute("read_only_paths", path)?;
        let reserved = ["/proc", "/dev", SANDBOX_WORKSPACE];
        if path == Path::new("/") || reserved.iter().any(|r| path.starts_with(r)) {
            return Err(PlanError::ReservedPath(path.clone()));
        }
        mounts.push(Mount::ReadOnlyBind {
            source: path.clone(),
            target: path.clone(),
            optional: false,
        });
    }
    // The workspace, then the home: the mounts a warm root attaches late, in this order.
    mounts.push(Mount::ReadWriteBind {
        source: request.workspace.clone(),
        target: SANDBOX_WORKSPACE.into(),
    });
    if let Some(home) = &request.home {
        require_absolute("home", home)?;
        mounts.push(Mount::ReadWriteBind {
            source: home.clone(),
            target: ExecutionRequest::SANDBOX_HOME.into(),
        });
    }
    Ok(SandboxLayout {
        hostname,
        mounts,
        files,
    })
}

fn minimal_etc(hostname: &str, user: Option<u32>) -> Vec<EtcFile> {
    let file = |path: &str, contents: String| EtcFile {
        path: path.into(),
        contents,
        mode: 0o644,
    };
    let mut passwd = format!(
        "root:x:0:0:root:{SANDBOX_WORKSPACE}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    );
    let mut group = "root:x:0:\nnogroup:x:65534:\n".to_owned();
    if let Some(uid) = user.filter(|uid| ![0, 65534].contains(uid)) {
        let home = ExecutionRequest::SANDBOX_HOME;
        passwd.push_str(&format!("{SANDBOX_USER}:x:{uid}:{uid}::{home}:/bin/sh\n"));
        group.push_str(&format!("{SANDBOX_USER}:x:{uid}:\n"));
    }
    vec![
        file("/etc/passwd", passwd),
        file("/etc/group", group),
        file("/etc/hostname", format!("{hostname}\n")),
        file(
            "/etc/hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
        ),
        file("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n".to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use conductor_types::{Cpus, ExecutionId, IsolationLevel};

    use super::*;

    fn request(argv: &[&str]) -> ExecutionRequest {
        let mut request = ExecutionRequest::new(
            argv.iter().map(|s| (*s).to_owned()).collect(),
            "/work/ws".into(),
        );
        request.id = "67e55044-10b1-426f-9247-bb680e5fe0c8"
            .parse::<ExecutionId>()
            .unwrap();
        request
    }

    fn host_env(pairs: &[(&str, &str)]) -> HostContext {
        HostContext {
            env: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn env_inherits_only_allowlisted_names_and_explicit_values_win() {
        let mut req = request(&["env"]);
        req.env_allowlist = vec!["LANG".into(), "MISSING".into(), "TOKEN".into()];
        req.env.insert("TOKEN".into(), "explicit".into());
        let host = host_env(&[
            ("LANG", "C.UTF-8"),
            ("SECRET", "hunter2"),
            ("TOKEN", "from-host"),
        ]);
        let plan = plan(&req, PlanTarget::Sandbox, &host).unwrap();
        assert_eq!(
            plan.env,
            vec![
                ("HOME".to_owned(), "/workspace".to_owned()),
                ("LANG".to_owned(), "C.UTF-8".to_owned()),
                ("PATH".to_owned(), SANDBOX_PATH.to_owned()),
                ("TOKEN".to_owned(), "explicit".to_owned()),
            ]
        );
    }

    #[test]
    fn host_target_works_in_the_workspace_itself() {
        let plan = plan(
            &request(&["true"]),
            PlanTarget::Host,
            &HostContext::default(),
        )
        .unwrap();
        assert_eq!(plan.cwd, PathBuf::from("/work/ws"));
        assert_eq!(plan.sandbox, None);
        assert!(plan
            .env
            .contains(&("HOME".to_owned(), "/work/ws".to_owned())));
    }

    #[test]
    fn sandbox_layout_binds_system_dirs_read_only_and_workspace_last() {
        let plan = plan(
            &request(&["true"]),
            PlanTarget::Sandbox,
            &HostContext::default(),
        )
        .unwrap();
        let layout = plan.sandbox.unwrap();
        assert_eq!(layout.hostname, "conductor-67e5504410b1");
        assert_eq!(
            layout.mounts.first(),
            Some(&Mount::ReadOnlyBind {
                source: "/usr".into(),
                target: "/usr".into(),
                optional: true
            })
        );
        assert_eq!(
            layout.mounts.last(),
            Some(&Mount::ReadWriteBind {
                source: "/work/ws".into(),
                target: "/workspace".into()
            })
        );
        assert!(!layout.mounts.iter().any(|m| matches!(m, Mount::ReadOnlyBind { source, .. } if source == Path::new("/etc/resolv.conf"))));
        let paths: Vec<_> = layout
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/etc/passwd",
                "/etc/group",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/nsswitch.conf"
            ]
        );
    }

    #[test]
    fn a_home_is_mounted_after_the_workspace_and_becomes_home() {
        let mut req = request(&["true"]);
        req.home = Some("/srv/sessions/s1/home".into());
        req.user = Some(1000);
        let plan = plan(&req, PlanTarget::Sandbox, &HostContext::default()).unwrap();
        let layout = plan.sandbox.unwrap();
        let n = layout.mounts.len();
        assert_eq!(
            &layout.mounts[n - 2..],
            &[
                Mount::ReadWriteBind {
                    source: "/work/ws".into(),
                    target: SANDBOX_WORKSPACE.into(),
                },
                Mount::ReadWriteBind {
                    source: "/srv/sessions/s1/home".into(),
                    target: "/home/conductor".into(),
                },
            ]
        );
        assert!(plan
            .env
            .contains(&("HOME".to_owned(), "/home/conductor".to_owned())));
        let passwd = layout
            .files
            .iter()
            .find(|f| f.path == Path::new("/etc/passwd"));
        assert_eq!(
            passwd.map(|f| f.contents.as_str()),
            Some(
                "root:x:0:0:root:/workspace:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                 conductor:x:1000:1000::/home/conductor:/bin/sh\n"
            )
        );
        req.home = Some("relative".into());
        assert_eq!(
            sandbox_layout(&req),
            Err(PlanError::NotAbsolute {
                field: "home",
                path: "relative".into()
            })
        );
    }

    #[test]
    fn bridges_home_and_user_need_their_capabilities() {
        let caps = ExecutorCapabilities {
            isolation_level: IsolationLevel::Container,
            platform: "linux".into(),
            supported: BTreeSet::from([Capability::NetworkNone]),
        };
        let refusal = |req: &ExecutionRequest| {
            check_supported(req, "docker", &caps).map_err(|e| e.to_string())
        };
        let mut req = request(&["true"]);
        assert_eq!(refusal(&req), Ok(()));
        req.bridges = vec![conductor_types::PortBridge {
            port: 4000,
            target: "/run/gateway.sock".into(),
        }];
        assert_eq!(
            refusal(&req),
            Err("a port bridge is not supported yet by the docker executor".to_owned())
        );
        req.bridges.clear();
        req.home = Some("/srv/home".into());
        assert_eq!(
            refusal(&req),
            Err("a home directory mount is not supported yet by the docker executor".to_owned())
        );
        req.home = None;
        req.user = Some(1000);
        assert_eq!(
            refusal(&req),
            Err(
                "running as a non-root user is not supported yet by the docker executor".to_owned()
            )
        );
    }

    #[test]
    fn read_only_paths_are_bound_at_their_own_path_before_the_workspace() {
        let mut req = request(&["true"]);
        req.read_only_paths = vec![PathBuf::from("/srv/repos/a")];
        let layout = sandbox_layout(&req).unwrap();
        let n = layout.mounts.len();
        assert_eq!(
            &layout.mounts[n - 2..],
            &[
                Mount::ReadOnlyBind {
                    source: "/srv/repos/a".into(),
                    target: "/srv/repos/a".into(),
                    optional: false,
                },
                Mount::ReadWriteBind {
                    source: req.workspace.clone(),
                    target: SANDBOX_WORKSPACE.into(),
                },
            ]
        );
        for bad in ["/", "/proc/1", "/workspace", "/dev"] {
            req.read_only_paths = vec![PathBuf::from(bad)];
            assert_eq!(
                sandbox_layout(&req),
                Err(PlanError::ReservedPath(PathBuf::from(bad))),
                "{bad}"
            );
        }
        req.read_only_paths = vec![PathBuf::from("repo")];
        assert!(matches!(
            sandbox_layout(&req),
            Err(PlanError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn rootfs_replaces_host_dirs_and_etc() {
        let mut req = request(&["true"]);
        req.rootfs = Some("/envs/python/rootfs".into());
        let layout = plan(&req, PlanTarget::Sandbox, &HostContext::default())
            .unwrap()
            .sandbox
            .unwrap();
        assert_eq!(
            layout.mounts[0],
            Mount::ReadOnlyBindChildren {
                source: "/envs/python/rootfs".into(),
                exclude: ROOTFS_EXCLUDES.iter().map(|s| (*s).to_owned()).collect(),
            }
        );
        assert!(layout.files.is_empty());
        assert_eq!(
            plan(&req, PlanTarget::Host, &HostContext::default()),
            Err(PlanError::RootfsOnHost)
        );
    }

    #[test]
    fn rlimits_default_to_no_core_dumps_and_requests_override() {
        let mut req = request(&["true"]);
        req.limits.rlimits = vec![Rlimit {
            resource: RlimitResource::Nofile,
            soft: 256,
            hard: 512,
        }];
        let plan = plan(&req, PlanTarget::Host, &HostContext::default()).unwrap();
        assert_eq!(
            plan.rlimits,
            vec![
                Rlimit {
                    resource: RlimitResource::Core,
                    soft: 0,
                    hard: 0
                },
                Rlimit {
                    resource: RlimitResource::Nofile,
                    soft: 256,
                    hard: 512
                },
            ]
        );
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let ctx = HostContext::default();
        assert_eq!(
            plan(&request(&[]), PlanTarget::Host, &ctx),
            Err(PlanError::EmptyCommand)
        );
        assert_eq!(
            plan(&request(&[""]), PlanTarget::Host, &ctx),
            Err(PlanError::EmptyCommand)
        );
        assert_eq!(
            plan(&request(&["echo", "a\0b"]), PlanTarget::Host, &ctx),
            Err(PlanError::NulInArgument { index: 1 })
        );
        let mut req = request(&["true"]);
        req.workspace = "relative".into();
        assert_eq!(
            plan(&req, PlanTarget::Host, &ctx),
            Err(PlanError::NotAbsolute {
                field: "workspace",
                path: "relative".into()
            })
        );
        let mut req = request(&["true"]);
        req.env.insert("A=B".into(), "x".into());
        assert_eq!(
            plan(&req, PlanTarget::Host, &ctx),
            Err(PlanError::InvalidEnv {
                name: "A=B".into(),
                reason: "the name contains '='"
            })
        );
        let mut req = request(&["true"]);
        req.limits.pids = Some(0);
        assert_eq!(
            plan(&req, PlanTarget::Host, &ctx),
            Err(PlanError::InvalidLimit {
                field: "pids",
                reason: "must be at least 1".into()
            })
        );
        let mut req = request(&["true"]);
        req.hostname = Some("bad_name".into());
        assert_eq!(
            plan(&req, PlanTarget::Sandbox, &ctx),
            Err(PlanError::InvalidHostname("bad_name".into()))
        );
    }

    #[test]
    fn check_supported_names_the_missing_capability() {
        let caps = ExecutorCapabilities {
            isolation_level: IsolationLevel::ProcessOnly,
            platform: "linux".into(),
            supported: BTreeSet::from([Capability::CpuLimit, Capability::NetworkHost]),
        };
        let mut req = request(&["true"]);
        req.network = NetworkPolicy::Host;
        req.limits.cpus = Some(Cpus::new(0.5).unwrap());
        assert!(check_supported(&req, "host", &caps).is_ok());
        req.limits.memory = Some(Bytes::mib(64));
        let err = check_supported(&req, "host", &caps).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a memory limit is not supported yet by the host executor"
        );
        req.limits.memory = None;
        req.network = NetworkPolicy::None;
        let err = check_supported(&req, "host", &caps).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network policy none is not supported yet by the host executor"
        );
        // `full` is a namespace of its own: an executor that cannot build one refuses it.
        req.network = NetworkPolicy::Full;
        let err = check_supported(&req, "host", &caps).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network policy full is not supported yet by the host executor"
        );
        req.network = NetworkPolicy::Host;
        req.service_network = Some("conductor-task-t1".into());
        let err = check_supported(&req, "host", &caps).unwrap_err();
        assert_eq!(
            err.to_string(),
            "running services is not supported yet by the host executor"
        );
    }
}
