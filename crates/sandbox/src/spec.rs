//! What the executor sends the helper over the channel socket (the helper's standard input), and
//! the framing both sides use:
//!
//! 1. a [`Prelude`] (a 4-byte little-endian length, then JSON): the cgroup to join and the
//!    [`HelperMode`]: for the namespace executor, what the helper needs to create the sandbox's
//!    user, pid, uts, ipc and network namespaces; for the host executor, nothing more. A warm
//!    helper gets it when it starts and does that work while it waits;
//! 2. the execution itself (JSON up to the end of the stream): a [`SandboxSpec`] in namespace
//!    mode, a [`HostSpec`] in host mode.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use conductor_types::{ExecPlan, Mount, Rlimit, SandboxLayout};
use serde::{Deserialize, Serialize};

/// Largest spec the helper accepts (argv and env included).
pub const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;

/// Default first host uid/gid of the sandbox's 65536-id range when the helper runs as root.
pub const DEFAULT_UID_BASE: u32 = 2_000_000_000;

/// Number of ids mapped when the helper runs as root.
pub const MAPPED_IDS: u32 = 65_536;

/// Largest prelude the helper accepts.
const MAX_PRELUDE_BYTES: u32 = 64 * 1024;

/// What the helper needs before the execution is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prelude {
    /// What the helper builds, and which spec it then expects.
    pub mode: HelperMode,
    /// cgroup `cgroup.procs` files the helper joins before it forks anything.
    pub cgroup_procs: Vec<PathBuf>,
    /// A root for init to build before the execution comes (namespace mode, as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prebuilt: Option<PrebuiltRoot>,
}

/// A sandbox root that a warm helper's init builds ahead of time: every mount of the layout but
/// the late ones, then `pivot_root`. The execution's spec must have exactly these mounts, then
/// one read-write bind at `workspace` and, optionally, one at `home`: the helper clones those
/// host directories' mounts (`open_tree`) and init attaches them (`move_mount`), writes the
/// `/etc` files and the hostname, and makes the root read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrebuiltRoot {
    /// An empty host directory the root tmpfs is mounted on before `pivot_root`.
    pub root_dir: PathBuf,
    /// The mounts to make, in order.
    pub mounts: Vec<Mount>,
    /// Where the workspace goes, inside the sandbox.
    pub workspace: PathBuf,
    /// Where a home directory may go, inside the sandbox (its mount point is made ahead of time;
    /// the mount only when the execution has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<PathBuf>,
}

/// The host directories a layout binds at a prebuilt root's late mount points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateMounts<'a> {
    /// Bound at the root's `workspace`.
    pub workspace: &'a Path,
    /// Bound at the root's `home`, when the layout has one.
    pub home: Option<&'a Path>,
}

impl PrebuiltRoot {
    /// The template of `layout`: its mounts without the last, which must be the read-write
    /// workspace bind; `None` for a layout of another shape.
    pub fn template(layout: &SandboxLayout) -> Option<(Vec<Mount>, PathBuf)> {
        match layout.mounts.split_last() {
            Some((Mount::ReadWriteBind { target, .. }, rest)) => {
                Some((rest.to_vec(), target.clone()))
            }
            _ => None,
        }
    }

    /// The host directories `layout` binds at the late mount points, when the rest of its
    /// mounts are this root's; otherwise why the layout cannot use it.
    pub fn late_mounts_of<'a>(&self, layout: &'a SandboxLayout) -> Result<LateMounts<'a>, String> {
        late_mounts_in(&self.mounts, &self.workspace, self.home.as_deref(), layout).ok_or_else(
            || "the execution's mounts are not the ones the warm sandbox was built with".to_owned(),
        )
    }
}

/// The host directories `layout` binds at `workspace` and then, optionally, at `home` as its
/// last mounts, when its other mounts are exactly `mounts` (a root prebuilt from them fits the
/// layout).
pub fn late_mounts_in<'a>(
    mounts: &[Mount],
    workspace: &Path,
    home: Option<&Path>,
    layout: &'a SandboxLayout,
) -> Option<LateMounts<'a>> {
    let bind_at = |mount: &'a Mount, place: &Path| match mount {
        Mount::ReadWriteBind { source, target } if target == place => Some(source.as_path()),
        _ => None,
    };
    let all = &layout.mounts;
    let home_source = match (all.last(), home) {
        (Some(last), Some(home)) => bind_at(last, home),
        _ => None,
    };
    let rest = &all[..all.len() - usize::from(home_source.is_some())];
    let (last, rest) = rest.split_last()?;
    let workspace = bind_at(last, workspace)?;
    (rest == mounts).then_some(LateMounts {
        workspace,
        home: home_source,
    })
}

/// The two kinds of helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum HelperMode {
    /// The host executor's: no namespaces; on the [`HostSpec`] the helper becomes the command
    /// (own session, rlimits, working directory, environment, `execve`).
    Host,
    /// The namespace executor's: the helper creates the sandbox's namespaces and init, which
    /// builds the sandbox from the [`SandboxSpec`].
    Namespaces {
        /// Whether to give the sandbox its own network namespace (always, since `full` is a
        /// namespace of its own too; kept for helpers of an older executor).
        new_network: bool,
        /// First host uid/gid of the mapped range when the helper runs as root.
        uid_base: u32,
    },
}

impl Prelude {
    /// The namespace-mode prelude for a plan: every policy gets a network namespace of its own
    /// (`full` gets a veth into it, see [`SandboxSpec::interface`]).
    pub fn for_plan(_plan: &ExecPlan, cgroup_procs: Vec<PathBuf>, uid_base: u32) -> Self {
        Self {
            mode: HelperMode::Namespaces {
                new_network: true,
                uid_base,
            },
            cgroup_procs,
            prebuilt: None,
        }
    }

    /// Writes the prelude frame to `writer`.
    pub fn write_to(&self, mut writer: impl Write) -> Result<(), SpecError> {
        let json = serde_json::to_vec(self).map_err(|e| SpecError::Malformed(e.to_string()))?;
        let len = u32::try_from(json.len())
            .ok()
            .filter(|len| *len <= MAX_PRELUDE_BYTES)
            .ok_or(SpecError::TooLarge)?;
        let mut frame = len.to_le_bytes().to_vec();
        frame.extend_from_slice(&json);
        writer
            .write_all(&frame)
            .map_err(|e| SpecError::Io(e.to_string()))
    }

    /// Reads exactly one prelude frame from `reader`, leaving the rest of the stream unread.
    pub fn read_from(mut reader: impl Read) -> Result<Self, SpecError> {
        let mut len = [0u8; 4];
        reader
            .read_exact(&mut len)
            .map_err(|e| SpecError::Io(e.to_string()))?;
        let len = u32::from_le_bytes(len);
        if len > MAX_PRELUDE_BYTES {
            return Err(SpecError::TooLarge);
        }
        let mut json = vec![0u8; len as usize];
        reader
            .read_exact(&mut json)
            .map_err(|e| SpecError::Io(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| SpecError::Malformed(e.to_string()))
    }
}

/// One sandboxed execution, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Program and arguments; `argv[0]` is searched in `PATH` from `env` when it has no `/`.
    pub argv: Vec<String>,
    /// The command's complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// rlimits to apply (only ever lowered).
    pub rlimits: Vec<Rlimit>,
    /// Hostname, mounts and files of the sandbox.
    pub layout: SandboxLayout,
    /// An empty host directory where the sandbox's root tmpfs is mounted before `pivot_root`.
    pub root_dir: PathBuf,
    /// Whether to install the default seccomp filter.
    pub seccomp: bool,
    /// Host directories to give (recursively, `lchown`) to the sandbox's root or to the
    /// command's user before the command starts, so it can write there; set when the helper
    /// runs as root.
    #[serde(default)]
    pub owners: Vec<WorkspaceOwner>,
    /// The uid (and gid) the command runs as inside the sandbox; `None`: the sandbox's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// Ports init listens on at `127.0.0.1` in the sandbox's network namespace before the
    /// command starts; it passes the listeners out over the channel ([`crate::bridge`]) and
    /// keeps no copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bridges: Vec<u16>,
    /// The veth the helper moves into the sandbox's network namespace before the command
    /// starts (network `full`: outbound through the host's NAT, see the namespace executor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<SandboxInterface>,
}

/// One end of a veth pair the executor made on the host: the helper moves it into the
/// sandbox's network namespace, where it becomes `eth0` with `address/prefix` and a default
/// route through `gateway` (the host end's address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInterface {
    /// The `ip` binary (iproute2) that does it.
    pub ip_binary: PathBuf,
    /// The end's name on the host.
    pub peer: String,
    /// The sandbox's address.
    pub address: std::net::Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The host end's address.
    pub gateway: std::net::Ipv4Addr,
}

/// One execution on the host (the helper in [`HelperMode::Host`] becomes its command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    /// Program and arguments; `argv[0]` is searched in `PATH` from `env` when it has no `/`.
    pub argv: Vec<String>,
    /// The command's complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory (the workspace).
    pub cwd: PathBuf,
    /// rlimits to set, as given.
    pub rlimits: Vec<Rlimit>,
}

impl HostSpec {
    /// The spec for a host plan.
    pub fn from_plan(plan: &ExecPlan) -> Self {
        Self {
            argv: plan.argv.clone(),
            env: plan.env.clone(),
            cwd: plan.cwd.clone(),
            rlimits: plan.rlimits.clone(),
        }
    }

    /// Encodes the spec as JSON (the whole channel message after the prelude).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SpecError> {
        serde_json::to_vec(self).map_err(|e| SpecError::Malformed(e.to_string()))
    }

    /// Reads a spec up to the end of `reader`'s stream.
    pub fn read_from(reader: impl Read) -> Result<Self, SpecError> {
        serde_json::from_slice(&read_spec_bytes(reader)?)
            .map_err(|e| SpecError::Malformed(e.to_string()))
    }
}

/// Who the workspace should belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceOwner {
    /// The host directory.
    pub path: PathBuf,
    /// Host uid and gid to give it.
    pub uid: u32,
}

/// A plan the helper cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The plan was made for the host, without a sandbox layout.
    #[error("the plan has no sandbox layout: plan it with PlanTarget::Sandbox")]
    NoLayout,
    /// The spec could not be encoded or decoded.
    #[error("sandbox spec is malformed: {0}")]
    Malformed(String),
    /// The spec is larger than [`MAX_SPEC_BYTES`] (or the prelude than its own limit).
    #[error("sandbox spec is too large (at most {MAX_SPEC_BYTES} bytes)")]
    TooLarge,
    /// Reading or writing the channel failed.
    #[error("sandbox spec channel: {0}")]
    Io(String),
}

impl SandboxSpec {
    /// Builds the spec for a sandbox plan.
    pub fn from_plan(plan: &ExecPlan, root_dir: PathBuf) -> Result<Self, SpecError> {
        let layout = plan.sandbox.clone().ok_or(SpecError::NoLayout)?;
        Ok(Self {
            argv: plan.argv.clone(),
            env: plan.env.clone(),
            cwd: plan.cwd.clone(),
            rlimits: plan.rlimits.clone(),
            layout,
            root_dir,
            seccomp: true,
            owners: Vec::new(),
            user: None,
            bridges: Vec::new(),
            interface: None,
        })
    }

    /// Encodes the spec as JSON (the whole channel message; the writer then shuts down its side).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SpecError> {
        serde_json::to_vec(self).map_err(|e| SpecError::Malformed(e.to_string()))
    }

    /// Writes the spec to `writer`.
    pub fn write_to(&self, mut writer: impl Write) -> Result<(), SpecError> {
        writer
            .write_all(&self.to_bytes()?)
            .map_err(|e| SpecError::Io(e.to_string()))
    }

    /// Reads a spec up to the end of `reader`'s stream.
    pub fn read_from(reader: impl Read) -> Result<Self, SpecError> {
        Self::from_bytes(&read_spec_bytes(reader)?)
    }

    /// Decodes a spec read with [`read_spec_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SpecError> {
        serde_json::from_slice(bytes).map_err(|e| SpecError::Malformed(e.to_string()))
    }
}

/// Reads an encoded spec up to the end of `reader`'s stream, refusing one larger than
/// [`MAX_SPEC_BYTES`].
pub fn read_spec_bytes(reader: impl Read) -> Result<Vec<u8>, SpecError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SpecError::Io(e.to_string()))?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(SpecError::TooLarge);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use conductor_types::{Bytes, EtcFile, Mount, NetworkPolicy, ResourceLimits, RlimitResource};

    use super::*;

    pub(crate) fn sample_plan(network: NetworkPolicy) -> ExecPlan {
        ExecPlan {
            argv: vec!["echo".into(), "hi".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/workspace".into(),
            limits: ResourceLimits::default(),
            rlimits: vec![Rlimit {
                resource: RlimitResource::Core,
                soft: 0,
                hard: 0,
            }],
            network,
            timeout: None,
            sandbox: Some(SandboxLayout {
                hostname: "box".into(),
                mounts: vec![
                    Mount::Proc {
                        target: "/proc".into(),
                    },
                    Mount::Tmpfs {
                        target: "/tmp".into(),
                        size: Bytes::mib(1),
                        mode: 0o1777,
                    },
                ],
                files: vec![EtcFile {
                    path: "/etc/hostname".into(),
                    contents: "box\n".into(),
                    mode: 0o644,
                }],
            }),
        }
    }

    #[test]
    fn spec_from_plan_round_trips_through_the_channel_encoding() {
        let plan = sample_plan(NetworkPolicy::None);
        let spec = SandboxSpec::from_plan(&plan, "/run/conductor/x".into()).unwrap();
        assert_eq!(
            spec,
            SandboxSpec {
                argv: plan.argv.clone(),
                env: plan.env.clone(),
                cwd: "/workspace".into(),
                rlimits: plan.rlimits.clone(),
                layout: plan.sandbox.clone().unwrap(),
                root_dir: "/run/conductor/x".into(),
                seccomp: true,
                owners: Vec::new(),
                user: None,
                bridges: Vec::new(),
                interface: None,
            }
        );
        let mut wire = Vec::new();
        spec.write_to(&mut wire).unwrap();
        assert_eq!(SandboxSpec::read_from(&wire[..]).unwrap(), spec);
    }

    #[test]
    fn full_network_gets_a_network_namespace_of_its_own() {
        let procs = vec![PathBuf::from(
            "/sys/fs/cgroup/pids/conductor/x/cgroup.procs",
        )];
        let full = Prelude::for_plan(&sample_plan(NetworkPolicy::Full), procs.clone(), 7);
        assert_eq!(
            full,
            Prelude {
                mode: HelperMode::Namespaces {
                    new_network: true,
                    uid_base: 7,
                },
                cgroup_procs: procs,
                prebuilt: None,
            }
        );
        assert_eq!(
            Prelude::for_plan(&sample_plan(NetworkPolicy::None), vec![], 7).mode,
            HelperMode::Namespaces {
                new_network: true,
                uid_base: 7,
            }
        );
    }

    #[test]
    fn a_host_prelude_and_spec_cross_the_channel() {
        let prelude = Prelude {
            mode: HelperMode::Host,
            cgroup_procs: vec!["/sys/fs/cgroup/pids/conductor/x/cgroup.procs".into()],
            prebuilt: None,
        };
        let mut plan = sample_plan(NetworkPolicy::Full);
        plan.sandbox = None;
        let spec = HostSpec::from_plan(&plan);
        assert_eq!(
            spec,
            HostSpec {
                argv: vec!["echo".into(), "hi".into()],
                env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                cwd: "/workspace".into(),
                rlimits: plan.rlimits.clone(),
            }
        );
        let mut wire = Vec::new();
        prelude.write_to(&mut wire).unwrap();
        wire.extend(spec.to_bytes().unwrap());
        let mut reader = &wire[..];
        assert_eq!(Prelude::read_from(&mut reader).unwrap(), prelude);
        assert_eq!(HostSpec::read_from(reader).unwrap(), spec);
    }

    #[test]
    fn a_prebuilt_root_takes_only_layouts_with_its_mounts_and_a_workspace() {
        let usr = Mount::ReadOnlyBind {
            source: "/usr".into(),
            target: "/usr".into(),
            optional: true,
        };
        let workspace = |source: &str| Mount::ReadWriteBind {
            source: source.into(),
            target: "/workspace".into(),
        };
        let layout = |mounts: Vec<Mount>| SandboxLayout {
            hostname: "h".into(),
            mounts,
            files: Vec::new(),
        };
        let (mounts, target) =
            PrebuiltRoot::template(&layout(vec![usr.clone(), workspace("/w/1")])).unwrap();
        let root = PrebuiltRoot {
            root_dir: "/run/warm".into(),
            mounts,
            workspace: target,
            home: Some("/home/conductor".into()),
        };
        assert_eq!(root.mounts, vec![usr.clone()]);
        assert_eq!(
            root.late_mounts_of(&layout(vec![usr.clone(), workspace("/w/2")])),
            Ok(LateMounts {
                workspace: Path::new("/w/2"),
                home: None
            })
        );
        let home = Mount::ReadWriteBind {
            source: "/h/2".into(),
            target: "/home/conductor".into(),
        };
        assert_eq!(
            root.late_mounts_of(&layout(vec![usr.clone(), workspace("/w/2"), home.clone()])),
            Ok(LateMounts {
                workspace: Path::new("/w/2"),
                home: Some(Path::new("/h/2"))
            })
        );
        // A home, but a root made without a place for one: not this root.
        let homeless = PrebuiltRoot {
            home: None,
            ..root.clone()
        };
        assert!(homeless
            .late_mounts_of(&layout(vec![usr.clone(), workspace("/w/2"), home.clone()]))
            .is_err());
        // Another mount, a missing one, or no workspace at the end: not this root.
        let proc = Mount::Proc {
            target: "/proc".into(),
        };
        for other in [
            vec![usr.clone(), proc.clone(), workspace("/w/2")],
            vec![workspace("/w/2")],
            vec![usr.clone()],
            vec![usr.clone(), home.clone()],
            vec![usr.clone(), home.clone(), workspace("/w/2")],
            vec![
                usr.clone(),
                Mount::ReadWriteBind {
                    source: "/w/2".into(),
                    target: "/elsewhere".into(),
                },
            ],
        ] {
            assert!(
                root.late_mounts_of(&layout(other.clone())).is_err(),
                "{other:?}"
            );
        }
        assert_eq!(PrebuiltRoot::template(&layout(vec![usr, proc])), None);
    }

    #[test]
    fn the_prelude_frame_leaves_the_spec_behind_it_unread() {
        let prelude = Prelude::for_plan(&sample_plan(NetworkPolicy::None), vec![], 7);
        let spec = SandboxSpec::from_plan(&sample_plan(NetworkPolicy::None), "/r".into()).unwrap();
        let mut wire = Vec::new();
        prelude.write_to(&mut wire).unwrap();
        spec.write_to(&mut wire).unwrap();
        let mut reader = &wire[..];
        assert_eq!(Prelude::read_from(&mut reader).unwrap(), prelude);
        assert_eq!(SandboxSpec::read_from(reader).unwrap(), spec);
    }

    #[test]
    fn oversized_or_truncated_preludes_are_refused() {
        let mut huge = (MAX_PRELUDE_BYTES + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert_eq!(Prelude::read_from(&huge[..]), Err(SpecError::TooLarge));
        let mut short = 10u32.to_le_bytes().to_vec();
        short.extend_from_slice(b"{}");
        assert!(matches!(
            Prelude::read_from(&short[..]),
            Err(SpecError::Io(_))
        ));
    }

    #[test]
    fn host_plans_and_garbage_are_refused() {
        let mut plan = sample_plan(NetworkPolicy::None);
        plan.sandbox = None;
        assert_eq!(
            SandboxSpec::from_plan(&plan, "/r".into()),
            Err(SpecError::NoLayout)
        );
        assert!(matches!(
            SandboxSpec::read_from(&b"{\"argv\":"[..]),
            Err(SpecError::Malformed(_))
        ));
        assert!(matches!(
            SandboxSpec::read_from(&b""[..]),
            Err(SpecError::Malformed(_))
        ));
    }
}
