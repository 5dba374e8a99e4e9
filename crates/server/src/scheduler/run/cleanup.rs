//! After a task, off its slot's time: a fresh workspace (the task's alone) is removed, its
//! quota filesystem emptied and kept for the next task (`quota_pool.rs`) first; a named workspace is measured (its size is
//! what the task left), or swept when its policy is `delete`.

use std::path::PathBuf;
use std::sync::Arc;

use conductor_types::Task;

use crate::scheduler::Scheduler;

impl Scheduler {
    /// Cleans up after `task` in the background (its slot is free already).
    pub(super) fn after_task(self: &Arc<Self>, task: &Task) {
        let dir = self.workspace_dir(task);
        match task.spec.workspace.clone() {
            Some(name) => {
                let scheduler = Arc::clone(self);
                tokio::spawn(async move { scheduler.after_named(name, dir).await });
            }
            None => {
                let image = self.quota_image(task);
                let (pool, id) = (Arc::clone(&self.quota_pool), task.id);
                // Removing can take milliseconds on a filesystem that discards freed blocks.
                tokio::task::spawn_blocking(move || {
                    // A kept quota filesystem is emptied for the next task; the directory it
                    // was bound on is empty then.
                    pool.give_back(id, &dir);
                    remove_fresh(image, dir);
                });
            }
        }
    }

    /// Sweeps a `delete` workspace now that its task is over, or records its size.
    async fn after_named(self: Arc<Self>, name: String, dir: PathBuf) {
        let workspace = match self.store.find_workspace(&name).await {
            Ok(Some(workspace)) => workspace,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(workspace = %name, %error, "could not read the workspace");
                return;
            }
        };
        // `delete`: removed now that its task is over (unless another one uses it).
        if workspace.cleanup == "delete" {
            if let Err(error) = self.sweep_workspaces().await {
                tracing::error!(%error, "sweeping workspaces failed");
            }
            return;
        }
        match tokio::task::spawn_blocking(move || conductor_workspace::tree_size(&dir)).await {
            Ok(Ok(bytes)) => {
                let recorded = self.store.set_workspace_size(&workspace.id, bytes).await;
                if let Err(error) = recorded {
                    tracing::warn!(workspace = %name, %error, "could not record the workspace's size");
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(workspace = %name, %error, "could not measure the workspace")
            }
            Err(error) => {
                tracing::warn!(workspace = %name, %error, "could not measure the workspace")
            }
        }
    }
}

/// Removes a fresh workspace `dir`: its disk-quota `image` (if any) unmounted and removed first.
fn remove_fresh(image: PathBuf, dir: PathBuf) {
    if image.exists() {
        let destroyed = conductor_workspace::QuotaFs::open(&image, &dir)
            .and_then(conductor_workspace::QuotaFs::destroy);
        if let Err(error) = destroyed {
            tracing::warn!(image = %image.display(), %error, "could not remove a disk-quota image");
        }
    }
    // A task-made tree: removed at any depth (std's remove_dir_all recurses).
    if let Err(error) = conductor_workspace::remove_tree(&dir) {
        tracing::warn!(path = %dir.display(), %error, "could not remove a workspace");
    }
}
