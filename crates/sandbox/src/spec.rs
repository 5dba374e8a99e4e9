//! The `SandboxSpec`: everything the helper needs, sent by the executor as JSON over the channel
//! socket (the helper's standard input), and the framing both sides use.

use std::io::{Read, Write};
use std::path::PathBuf;

use conductor_types::{ExecPlan, NetworkPolicy, Rlimit, SandboxLayout};
use serde::{Deserialize, Serialize};

/// Largest spec the helper accepts (argv and env included).
pub const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;

/// Default first host uid/gid of the sandbox's 65536-id range when the helper runs as root.
pub const DEFAULT_UID_BASE: u32 = 2_000_000_000;

/// Number of ids mapped when the helper runs as root.
pub const MAPPED_IDS: u32 = 65_536;

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
    /// Whether to give the sandbox its own network namespace (everything but `Full`).
    pub new_network: bool,
    /// An empty host directory where the sandbox's root tmpfs is mounted before `pivot_root`.
    pub root_dir: PathBuf,
    /// cgroup `cgroup.procs` files the helper joins before it forks anything.
    pub cgroup_procs: Vec<PathBuf>,
    /// First host uid/gid of the mapped range when the helper runs as root.
    pub uid_base: u32,
    /// Whether to install the default seccomp filter.
    pub seccomp: bool,
    /// A host directory to give (recursively, `lchown`) to the sandbox's root before the
    /// command starts, so it can write there; set when the helper runs as root.
    pub workspace_owner: Option<WorkspaceOwner>,
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
    /// The spec is larger than [`MAX_SPEC_BYTES`].
    #[error("sandbox spec is larger than {MAX_SPEC_BYTES} bytes")]
    TooLarge,
    /// Reading or writing the channel failed.
    #[error("sandbox spec channel: {0}")]
    Io(String),
}

impl SandboxSpec {
    /// Builds the spec for a sandbox plan.
    pub fn from_plan(
        plan: &ExecPlan,
        root_dir: PathBuf,
        cgroup_procs: Vec<PathBuf>,
        uid_base: u32,
    ) -> Result<Self, SpecError> {
        let layout = plan.sandbox.clone().ok_or(SpecError::NoLayout)?;
        Ok(Self {
            argv: plan.argv.clone(),
            env: plan.env.clone(),
            cwd: plan.cwd.clone(),
            rlimits: plan.rlimits.clone(),
            layout,
            new_network: plan.network != NetworkPolicy::Full,
            root_dir,
            cgroup_procs,
            uid_base,
            seccomp: true,
            workspace_owner: None,
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
        let mut bytes = Vec::new();
        reader
            .take(MAX_SPEC_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| SpecError::Io(e.to_string()))?;
        if bytes.len() as u64 > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge);
        }
        serde_json::from_slice(&bytes).map_err(|e| SpecError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use conductor_types::{Bytes, EtcFile, Mount, ResourceLimits, RlimitResource};

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
        let spec = SandboxSpec::from_plan(
            &plan,
            "/run/conductor/x".into(),
            vec!["/sys/fs/cgroup/pids/conductor/x/cgroup.procs".into()],
            DEFAULT_UID_BASE,
        )
        .unwrap();
        assert_eq!(
            spec,
            SandboxSpec {
                argv: plan.argv.clone(),
                env: plan.env.clone(),
                cwd: "/workspace".into(),
                rlimits: plan.rlimits.clone(),
                layout: plan.sandbox.clone().unwrap(),
                new_network: true,
                root_dir: "/run/conductor/x".into(),
                cgroup_procs: vec!["/sys/fs/cgroup/pids/conductor/x/cgroup.procs".into()],
                uid_base: DEFAULT_UID_BASE,
                seccomp: true,
                workspace_owner: None,
            }
        );
        let mut wire = Vec::new();
        spec.write_to(&mut wire).unwrap();
        assert_eq!(SandboxSpec::read_from(&wire[..]).unwrap(), spec);
    }

    #[test]
    fn full_network_keeps_the_host_network_namespace() {
        let plan = sample_plan(NetworkPolicy::Full);
        let spec = SandboxSpec::from_plan(&plan, "/r".into(), vec![], 1).unwrap();
        assert!(!spec.new_network);
    }

    #[test]
    fn host_plans_and_garbage_are_refused() {
        let mut plan = sample_plan(NetworkPolicy::None);
        plan.sandbox = None;
        assert_eq!(
            SandboxSpec::from_plan(&plan, "/r".into(), vec![], 1),
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
