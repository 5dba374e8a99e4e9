//! Named workspaces as a domain, apart from HTTP: the record in the store and the directory on
//! disk ([`NamedDirs`]) made and removed together, the policy on disk quotas (a root server
//! bounds every workspace; a quota is at least `MIN_QUOTA_BYTES` and at most `[limits.max]
//! disk`), and a task's workspace resolved at submission. The handlers, the scheduler and
//! `serve` call it through [`crate::Scheduler::workspaces`]; it knows nothing of either.

use conductor_core::{LimitError, LimitPolicy, Store, StoreError};
use conductor_types::{Bytes as Size, LimitName, Timestamp, Workspace, WorkspaceId};
use conductor_workspace::{self as cw, CleanupPolicy, QuotaFs};

use super::quota::NamedDirs;

/// Why a workspace operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkspaceError {
    /// A field has a bad value (422 `invalid_field`).
    #[error("{field}: {message}")]
    InvalidField {
        /// The field's path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A disk quota this server cannot give (422 `not_supported`).
    #[error("{field}: {message}")]
    NotSupported {
        /// The field's path.
        field: String,
        /// Why not.
        message: String,
    },
    /// A quota above `[limits.max] disk` (422 `limit_exceeded`).
    #[error(transparent)]
    LimitExceeded(#[from] LimitError),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The directory or quota filesystem of a new workspace could not be made (its record was
    /// removed again).
    #[error("creating workspace {name}: {reason}")]
    Setup {
        /// The workspace.
        name: String,
        /// What failed.
        reason: String,
    },
}

/// The named workspaces of one server: records in `store`, directories under the workspace
/// root. Cheap: borrowed from the scheduler for one operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workspaces<'a> {
    store: &'a dyn Store,
    dirs: NamedDirs<'a>,
    /// Whether the server makes quota filesystems (it runs as root).
    disk_quotas: bool,
    limits: &'a LimitPolicy,
}

impl<'a> Workspaces<'a> {
    /// Over `store`, with directories under `workspace_root`.
    pub(crate) fn new(
        store: &'a dyn Store,
        workspace_root: &'a std::path::Path,
        disk_quotas: bool,
        limits: &'a LimitPolicy,
    ) -> Self {
        Self {
            store,
            dirs: NamedDirs::new(workspace_root),
            disk_quotas,
            limits,
        }
    }

    /// Where the directories are.
    pub(crate) fn dirs(&self) -> NamedDirs<'a> {
        self.dirs
    }

    /// Turns a request's name or id into a workspace record, creating a named workspace the
    /// first time a task names it (`keep`, owned by `owner`, the submitting token; with `disk`
    /// as its quota when the task asks for one). A text of the id form must name an existing
    /// workspace. A task's `disk` must fit the workspace's quota: refused when it has none or a
    /// smaller one.
    pub(crate) async fn resolve_for_task(
        &self,
        field: &str,
        id_or_name: &str,
        owner: &str,
        disk: Option<Size>,
    ) -> Result<Workspace, WorkspaceError> {
        let found = match self.store.find_workspace(id_or_name).await? {
            Some(found) => found,
            None if id_or_name.parse::<WorkspaceId>().is_ok() => {
                return Err(WorkspaceError::InvalidField {
                    field: field.to_owned(),
                    message: format!("no workspace has the id {id_or_name}"),
                })
            }
            None => {
                let new = new_workspace(id_or_name.to_owned(), CleanupPolicy::Keep, owner, disk);
                match self.create(new).await {
                    Ok(created) => created,
                    Err(error) => match self.store.find_workspace(id_or_name).await? {
                        // Created by a concurrent request meanwhile.
                        Some(found) => found,
                        None => return Err(error),
                    },
                }
            }
        };
        if let Some(disk) = disk {
            check_fits(&found, disk)?;
        }
        Ok(found)
    }

    /// Stores a new workspace and makes its directory (a quota filesystem when it has a
    /// `disk`, or when the server enforces quotas and has a default disk); when the directory
    /// cannot be made, the record is removed again.
    pub(crate) async fn create(&self, mut new: Workspace) -> Result<Workspace, WorkspaceError> {
        if new.disk.is_none() && self.disk_quotas {
            // No workspace of a root server is unbounded: one created without a quota gets the
            // default disk (`[limits.default] disk`), which its tasks then share.
            new.disk = self.limits.default.disk;
        }
        if let Some(disk) = new.disk {
            check_quota(disk, self.disk_quotas, self.limits.max.disk)?;
        }
        self.store.create_workspace(&new).await?;
        let made = self.dirs.create(&new.name, new.disk.map(Size::get)).await;
        if let Err(reason) = made {
            if let Err(undo) = self.store.delete_workspace(&new.id).await {
                tracing::warn!(workspace = %new.name, error = %undo, "could not remove a workspace whose directory failed");
            }
            if let Err(undo) = self.dirs.remove(&new.name).await {
                tracing::warn!(workspace = %new.name, error = %undo, "could not clean up a workspace whose directory failed");
            }
            return Err(WorkspaceError::Setup {
                name: new.name,
                reason,
            });
        }
        Ok(new)
    }

    /// Makes sure a named workspace's directory exists and, when it has a disk quota, that its
    /// filesystem is mounted there. Returns the quota filesystem, if any.
    pub(crate) async fn prepare_dir(
        &self,
        workspace: &Workspace,
    ) -> Result<Option<QuotaFs>, String> {
        self.dirs
            .prepare(&workspace.name, workspace.disk.is_some())
            .await
    }

    /// Removes a named workspace's directory, its quota filesystem first (the record is the
    /// caller's).
    pub(crate) async fn remove_dir(&self, name: &str) -> Result<(), String> {
        self.dirs.remove(name).await
    }

    /// Mounts the quota filesystem of every named workspace that has one (at server start).
    pub(crate) async fn mount_quotas(&self) {
        let workspaces = match self.store.list_workspaces().await {
            Ok(workspaces) => workspaces,
            Err(error) => {
                tracing::warn!(%error, "could not list workspaces to mount their disk quotas");
                return;
            }
        };
        for workspace in workspaces.iter().filter(|w| w.disk.is_some()) {
            if let Err(error) = self.prepare_dir(workspace).await {
                tracing::warn!(workspace = %workspace.name, %error, "could not mount a workspace's disk quota");
            }
        }
    }

    /// Unmounts the quota filesystem of every named workspace (at a graceful stop).
    pub(crate) async fn unmount_quotas(&self) {
        let Ok(workspaces) = self.store.list_workspaces().await else {
            return;
        };
        for workspace in workspaces.into_iter().filter(|w| w.disk.is_some()) {
            if let Err(error) = self.dirs.unmount(&workspace.name).await {
                tracing::warn!(workspace = %workspace.name, %error, "could not unmount a workspace's disk quota");
            }
        }
    }
}

/// A new workspace record owned by `owner` (a token id).
pub(crate) fn new_workspace(
    name: String,
    cleanup: CleanupPolicy,
    owner: &str,
    disk: Option<Size>,
) -> Workspace {
    Workspace {
        id: WorkspaceId::random(),
        name,
        cleanup: cleanup.to_string(),
        created_at: Timestamp::now(),
        last_used_at: None,
        size_bytes: None,
        owner: Some(owner.to_owned()),
        disk,
    }
}

/// A workspace's quota: only on a server that makes quota filesystems, at least
/// `MIN_QUOTA_BYTES`, and bounded as a task's disk is: by `MAX_DISK` and by `max`
/// (`[limits.max] disk`).
fn check_quota(disk: Size, disk_quotas: bool, max: Option<Size>) -> Result<(), WorkspaceError> {
    let field = || "disk".to_owned();
    if !disk_quotas {
        return Err(WorkspaceError::NotSupported {
            field: field(),
            message: "disk quotas are loop-mounted filesystems and need a server running as root"
                .to_owned(),
        });
    }
    if disk.get() < cw::MIN_QUOTA_BYTES {
        return Err(WorkspaceError::InvalidField {
            field: field(),
            message: format!(
                "{disk} is below the smallest disk quota, {}",
                Size(cw::MIN_QUOTA_BYTES)
            ),
        });
    }
    if disk > conductor_types::MAX_DISK {
        return Err(WorkspaceError::InvalidField {
            field: field(),
            message: format!("must be at most {}", conductor_types::MAX_DISK),
        });
    }
    match max {
        Some(max) if disk > max => Err(WorkspaceError::LimitExceeded(LimitError {
            limit: LimitName::Disk,
            asked: disk.to_string(),
            max: max.to_string(),
        })),
        _ => Ok(()),
    }
}

/// A task's `resources.disk` against the quota of the named workspace it runs in.
fn check_fits(workspace: &Workspace, disk: Size) -> Result<(), WorkspaceError> {
    let field = "resources.disk".to_owned();
    match workspace.disk {
        Some(quota) if disk <= quota => Ok(()),
        Some(quota) => Err(WorkspaceError::InvalidField {
            field,
            message: format!(
                "asks for {disk} but workspace {} has a disk quota of {quota}: a task shares its named workspace's quota",
                workspace.name
            ),
        }),
        None => Err(WorkspaceError::NotSupported {
            field,
            message: format!(
                "workspace {} has no disk quota: create the workspace with one (POST /api/v1/workspaces {{\"name\", \"disk\"}}) or leave out \"workspace\" to run in a fresh workspace of that size",
                workspace.name
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(disk: Option<Size>) -> Workspace {
        new_workspace("site".to_owned(), CleanupPolicy::Keep, "tok_1", disk)
    }

    #[test]
    fn a_quota_needs_a_root_server_and_stays_between_the_minimum_and_the_maximum() {
        let gib = Size::mib(1024);
        assert!(matches!(
            check_quota(gib, false, None),
            Err(WorkspaceError::NotSupported { field, .. }) if field == "disk"
        ));
        assert!(matches!(
            check_quota(Size(cw::MIN_QUOTA_BYTES - 1), true, None),
            Err(WorkspaceError::InvalidField { field, .. }) if field == "disk"
        ));
        let refused = check_quota(Size::mib(2048), true, Some(gib));
        assert!(matches!(
            refused,
            Err(WorkspaceError::LimitExceeded(LimitError {
                limit: LimitName::Disk,
                ..
            }))
        ));
        assert!(check_quota(gib, true, Some(gib)).is_ok());
    }

    #[test]
    fn a_task_disk_must_fit_its_named_workspace_quota() {
        let gib = Size::mib(1024);
        assert!(check_fits(&named(Some(gib)), gib).is_ok());
        assert!(matches!(
            check_fits(&named(Some(gib)), Size::mib(2048)),
            Err(WorkspaceError::InvalidField { field, .. }) if field == "resources.disk"
        ));
        assert!(matches!(
            check_fits(&named(None), gib),
            Err(WorkspaceError::NotSupported { field, .. }) if field == "resources.disk"
        ));
    }
}
