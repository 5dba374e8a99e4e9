//! The prepare stage: everything a task's commands need before the first one runs — its
//! environment's executor (built first when the request defined it, `builds.rs`), its secrets,
//! its workspace directory, a disk quota (a fresh workspace's own filesystem, or the named
//! workspace's, mounted again), the `git` checkout and the services — as one [`PreparedRun`].
//! A step that fails refuses the task with its failure code; nothing here decides what runs.
//!
//! Undoing it: [`PreparedRun::teardown`] stops the services (the last thing set up) before the
//! task's end is recorded; dropping the value without it stops them in the background. The
//! fresh workspace itself (directory, quota image) outlives the value on purpose: it is removed
//! after the slot is freed (`cleanup.rs`), so the next task need not wait for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use conductor_core::{Redactor, StoreError, CWD_FILE};
use conductor_types::{Bytes, FailureCode, GitSource, Task, Timestamp};
use conductor_workspace::{clone_at, Checkout, QuotaFs};

use super::execute::{RunStep, ShellStep};
use super::requests::RequestContext;
use crate::scheduler::services::Services;
use crate::scheduler::Scheduler;

/// What the prepare stage made of a task.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Ready for its first command.
    Ready(Box<PreparedRun>),
    /// It cannot run: the failure code and reason it ends with.
    Refused(FailureCode, String),
    /// Cancelled or interrupted meanwhile (waiting for its environment's build).
    Stopped,
}

/// A task ready to run its commands, and what was set up for it.
#[derive(Debug)]
pub(crate) struct PreparedRun {
    /// What runs each command.
    pub step: Arc<dyn RunStep>,
    /// The task's secrets, as variables.
    pub secrets: BTreeMap<String, String>,
    /// Takes the secrets out of stored output and reasons.
    pub redactor: Redactor,
    /// The workspace directory.
    pub workspace: PathBuf,
    /// The quota filesystem the workspace is, with its size.
    pub quota: Option<(QuotaFs, Bytes)>,
    /// The repository and the commit cloned into the workspace.
    pub checkout: Option<(String, Checkout)>,
    /// The started services (stopped by [`PreparedRun::teardown`], or on drop).
    pub services: Option<Services>,
}

impl PreparedRun {
    /// What every command's request gets from this run.
    pub(crate) fn request_context<'a>(&'a self, scheduler: &'a Scheduler) -> RequestContext<'a> {
        RequestContext {
            workspace: &self.workspace,
            secrets: &self.secrets,
            disk_enforced_by_workspace: self.quota.is_some(),
            services: self.services.as_ref().and_then(Services::set),
            output_limit: scheduler.config.output_limit,
            spool_limit: scheduler.config.spool_limit,
        }
    }

    /// Undoes what can be undone before the task's end is recorded, in reverse order of the
    /// set-up: the services are stopped. Idempotent.
    pub(crate) async fn teardown(&mut self) {
        if let Some(services) = self.services.take() {
            services.stop().await;
        }
    }
}

impl Scheduler {
    /// Prepares `task` for its first command (see the module's documentation).
    pub(super) async fn prepare(&self, task: &Task) -> Result<Prepared, StoreError> {
        use Prepared::Refused;
        let spec = &task.spec;
        // Built first when the request defined it and no build of its content exists.
        let executor = match self.task_executor(task).await? {
            Ok(Some(executor)) => executor,
            Ok(None) => return Ok(Prepared::Stopped),
            Err((code, reason)) => return Ok(Refused(code, reason)),
        };
        let secrets = if spec.secret_names.is_empty() {
            BTreeMap::new()
        } else {
            self.store.task_secrets(task.id).await?
        };
        let redactor = Redactor::new(secrets.values().cloned());
        let workspace = self.workspace_dir(task);
        // One or two mkdirs: cheaper inline than a hop to the blocking pool on the start path.
        if let Err(error) = std::fs::create_dir_all(&workspace) {
            let reason = format!(
                "could not create workspace {}: {error}",
                workspace.display()
            );
            return Ok(Refused(FailureCode::WorkspaceUnavailable, reason));
        }
        let quota = match self.workspace_quota(task).await? {
            Ok(quota) => quota,
            Err(reason) => return Ok(Refused(FailureCode::WorkspaceUnavailable, reason)),
        };
        // `git`: cloned into the fresh workspace before the commands.
        let checkout = match &spec.git {
            Some(git) => match self.clone_git(git, &workspace).await {
                Ok(checkout) => Some((git.repository.clone(), checkout)),
                Err(error) => {
                    let reason = format!("could not clone {}: {error}", git.repository);
                    return Ok(Refused(FailureCode::GitCloneFailed, reason));
                }
            },
            None => None,
        };
        if let Some(name) = &spec.workspace {
            self.reset_named(name, &workspace).await;
        }
        // Services: healthy before the first command, stopped when the task is over.
        let services = match Services::start(&executor, task).await {
            Ok(services) => services,
            Err(reason) => {
                return Ok(Refused(
                    FailureCode::ServicesFailed,
                    redactor.redact(&reason),
                ));
            }
        };
        Ok(Prepared::Ready(Box::new(PreparedRun {
            step: Arc::new(ShellStep::new(executor)),
            secrets,
            redactor,
            workspace,
            quota,
            checkout,
            services,
        })))
    }

    /// The task's disk quota: for `resources.disk` on a fresh workspace, its own filesystem of
    /// that size; for a named workspace with a quota, its filesystem, mounted (again, after a
    /// restart) before the sandbox is built (the API made sure the task's `resources.disk`
    /// fits it). `Ok(Err(reason))` when it cannot be set up.
    async fn workspace_quota(
        &self,
        task: &Task,
    ) -> Result<Result<Option<(QuotaFs, Bytes)>, String>, StoreError> {
        let spec = &task.spec;
        let Some(name) = &spec.workspace else {
            return Ok(match spec.resources.disk {
                Some(disk) if self.config.disk_quotas => match self.mount_quota(task, disk).await {
                    Ok(quota) => Ok(Some((quota, disk))),
                    Err(error) => Err(format!("could not set up the disk quota: {error}")),
                },
                _ => Ok(None),
            });
        };
        let Some(named) = self.store.find_workspace(name).await? else {
            return Ok(Ok(None));
        };
        Ok(
            match (named.disk, self.workspaces().prepare_dir(&named).await) {
                (Some(disk), Ok(Some(fs))) => Ok(Some((fs, disk))),
                (_, Ok(_)) => Ok(None),
                (_, Err(error)) => Err(format!("could not prepare workspace {name}: {error}")),
            },
        )
    }

    /// Clones `git` into `workspace` (on the blocking pool, as `[git]` allows).
    async fn clone_git(&self, git: &GitSource, workspace: &Path) -> Result<Checkout, String> {
        let (source, dest) = (git.clone(), workspace.to_owned());
        let options = self.config.git.clone_options();
        tokio::task::spawn_blocking(move || {
            clone_at(
                &source.repository,
                source.reference.as_deref(),
                &dest,
                &options?,
            )
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|cloned| cloned)
    }

    /// A named workspace is used now, and may hold the directory a previous task ended in: the
    /// task starts at the root.
    async fn reset_named(&self, name: &str, workspace: &Path) {
        if let Err(error) = self.store.touch_workspace(name, Timestamp::now()).await {
            tracing::warn!(workspace = %name, %error, "could not record the workspace's use");
        }
        if let Err(error) = tokio::fs::remove_file(workspace.join(CWD_FILE)).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, "could not reset the task's working directory");
            }
        }
    }

    /// A named workspace is shared by the tasks that name it (`named/<name>`); a fresh one
    /// lives under the workspace root of the slot running the task (`agents/<slot>/<task id>`).
    pub(super) fn workspace_dir(&self, task: &Task) -> PathBuf {
        match &task.spec.workspace {
            Some(name) => self.named_workspace_dir(name),
            None => self.slot_root(slot_of(task)).join(task.id.to_string()),
        }
    }

    /// Where the disk-quota image of the task's fresh workspace is.
    pub(super) fn quota_image(&self, task: &Task) -> PathBuf {
        crate::scheduler::quota_image(&self.config.workspace_root, slot_of(task), task.id)
    }

    /// Makes the task's fresh (empty) workspace a filesystem of `disk` bytes: one the pool
    /// kept when it has one of that size (`quota_pool.rs`), else a new one.
    async fn mount_quota(&self, task: &Task, disk: Bytes) -> Result<QuotaFs, String> {
        let pool = Arc::clone(&self.quota_pool);
        let (id, workspace) = (task.id, self.workspace_dir(task));
        tokio::task::spawn_blocking(move || pool.lend(id, disk.get(), &workspace))
            .await
            .map_err(|e| e.to_string())?
    }
}

/// The slot a task was started on (the store calls it the task's agent).
fn slot_of(task: &Task) -> &str {
    task.state.slot_id.as_deref().unwrap_or("unassigned")
}
