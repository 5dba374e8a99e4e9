//! What a container executor and its warm pool's background refill share ([`Inner`]), with the
//! steps every execution takes whatever its container: the workspace handed to the container's
//! user, the create settings, the start reported and the output captured, the kill.
//! The rest of `Inner` is by concern: the cold start in `cold`, the warm pool in `warm`, the
//! resident containers' runs in `reuse`.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use conductor_core::{EventSender, ExecutorError};
use conductor_types::{ExecEvent, ExecPlan, ExecutionRequest, Rlimit};

use super::cgroup::ExecutionCgroups;
use super::config::ContainerConfig;
use super::engine::Engine;
use super::guard::ContainerGuard;
use super::idle::PoolState;
use super::oom::OomWatch;
use super::pool::Slot;
use super::seccomp_option::SeccompOption;
use super::spec::{ContainerSettings, LABEL_EXECUTION, LABEL_OWNER};
use crate::output::now_ms;
use crate::run::OutputCapture;

/// What the executor and its warm pool's background refill share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ContainerConfig,
    pub(crate) engine: Engine,
    /// The executor's cgroups (`None` for a rootless engine).
    pub(crate) cgroups: Option<ExecutionCgroups>,
    pub(crate) owner: String,
    pub(crate) engine_rlimits: Vec<Rlimit>,
    /// The plan warm containers are made for (see `warm::Inner::fits`).
    pub(crate) template: ExecPlan,
    pub(crate) pool: std::sync::Mutex<PoolState>,
    /// Woken whenever a warm container has been made (or failed to be).
    pub(crate) pool_changed: tokio::sync::Notify,
    /// The `seccomp=` security option's value (see `seccomp`), shared with the services.
    pub(crate) seccomp: Arc<SeccompOption>,
    /// The `full` network, made (with the host's rules) before the first `full` container.
    pub(crate) full_network: tokio::sync::OnceCell<()>,
}

/// A container whose command has been started: what the rest of an execution needs.
pub(crate) struct Launched {
    pub(crate) guard: ContainerGuard,
    pub(crate) id: String,
    pub(crate) attached: bollard::container::AttachContainerResults,
    pub(crate) oom: Option<OomWatch>,
    pub(crate) warm: bool,
    /// The execution's port bridges (warm containers only, see `bridged`).
    pub(crate) bridges: Option<crate::bridge::Bridges>,
}

impl Inner {
    /// The executor's cgroups: there are none with a rootless engine (which takes no warm
    /// pool, the other user).
    pub(crate) fn cgroups(&self) -> Result<&ExecutionCgroups, ExecutorError> {
        self.cgroups
            .as_ref()
            .ok_or_else(|| self.setup("making a cgroup", "a rootless engine uses none of ours"))
    }

    /// Reports the command started and captures its output.
    pub(crate) async fn started(
        &self,
        request: &ExecutionRequest,
        events: &EventSender,
        stdout: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        stderr: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> OutputCapture {
        let _ = events
            .send(ExecEvent::Started {
                execution_id: request.id.clone(),
                pid: None,
                at_ms: now_ms(),
            })
            .await;
        OutputCapture::start(stdout, stderr, &self.config.spool_dir, request, events)
    }

    /// SIGKILLs container `id` (a timeout or cancel): its init and everything in it end.
    pub(crate) async fn kill(&self, id: &str) {
        if let Err(e) = self.engine.kill(id).await {
            tracing::debug!(error = %e, "killing the container (it may have exited)");
        }
    }

    /// Binds the request's workspace and home on `slot` (and so into its warm container).
    pub(crate) async fn bind_workspace(
        &self,
        slot: &Slot,
        request: &ExecutionRequest,
    ) -> Result<(), ExecutorError> {
        let stage = "binding the workspace into a warm container";
        let (slot, workspace) = (slot.clone(), request.workspace.clone());
        let home = request.home.clone();
        tokio::task::spawn_blocking(move || slot.bind(&workspace, home.as_deref()))
            .await
            .map_err(|e| self.setup(stage, e))?
            .map_err(|e| self.setup(stage, format!("{}: {e}", request.workspace.display())))
    }

    pub(crate) fn setup(&self, stage: &str, reason: impl std::fmt::Display) -> ExecutorError {
        ExecutorError::Setup {
            stage: stage.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// Hands the workspace and the home to the container user (unless a user namespace maps
    /// it).
    pub(crate) async fn hand_over_workspace(
        &self,
        request: &ExecutionRequest,
    ) -> Result<(), ExecutorError> {
        // keep-id of a rootless engine keeps the user's uid: the workspace goes to it.
        if self.config.userns.is_some() && self.config.rootless.is_none() {
            return Ok(());
        }
        let (uid, gid) = self.config.user;
        for path in std::iter::once(&request.workspace).chain(&request.home) {
            let owned = path.clone();
            tokio::task::spawn_blocking(move || chown_tree(&owned, uid, gid))
                .await
                .map_err(|e| self.setup("handing the workspace to the container user", e))?
                .map_err(|e| {
                    ExecutorError::io(format!("handing {} to uid {uid}", path.display()), e)
                })?;
        }
        Ok(())
    }

    /// The create settings for a container labelled with `execution`.
    pub(crate) fn settings<'a>(
        &'a self,
        execution: &str,
        user: &'a str,
        cgroup_parent: Option<&'a str>,
        workspace: &'a str,
    ) -> ContainerSettings<'a> {
        ContainerSettings {
            executor: self.config.engine.name(),
            engine: self.config.engine,
            image: &self.config.image,
            user,
            userns: self.config.userns.as_deref(),
            cgroup_parent,
            workspace,
            home: None,
            labels: HashMap::from([
                (LABEL_EXECUTION.to_owned(), execution.to_owned()),
                (LABEL_OWNER.to_owned(), self.owner.clone()),
            ]),
            default_rlimits: self.engine_rlimits.clone(),
            service_network: None,
            extra_hosts: Vec::new(),
            seccomp: &self.seccomp.value,
        }
    }

    pub(crate) fn user(&self) -> String {
        format!("{}:{}", self.config.user.0, self.config.user.1)
    }
}

/// `lchown -R uid:gid` through descriptors, iteratively, never following symlinks, refusing
/// files linked from elsewhere (`conductor_sandbox::handover`).
fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    conductor_sandbox::handover::hand_over(path, uid, gid)
        .map(|_| ())
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn chown_tree_hands_over_everything_without_following_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: chown needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file"), "x").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        chown_tree(dir.path(), 4242, 4343).unwrap();
        for path in ["", "sub", "sub/file", "link"] {
            let meta = std::fs::symlink_metadata(dir.path().join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{path}");
        }
        assert_eq!(std::fs::metadata(outside.path()).unwrap().uid(), 0);
        // A hard link to a file outside: refused, the file left as it was.
        std::fs::hard_link(outside.path(), dir.path().join("sub/hard")).unwrap();
        let err = chown_tree(dir.path(), 4242, 4343).unwrap_err();
        assert!(err.to_string().contains("has 2 hard links"), "{err}");
        assert_eq!(std::fs::metadata(outside.path()).unwrap().uid(), 0);
    }
}
