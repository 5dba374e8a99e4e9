//! Disk-quota filesystems kept for the next fresh workspace.
//!
//! A fresh workspace with a disk limit is a filesystem of its own. Making one costs a
//! `mkfs.ext4` and a loop mount (≈ 60 + 35 ms here, most of a trivial task's time in the
//! server), so they are reused: each lives at `quota/pool/<id>.img`, mounted on
//! `quota/pool/<id>/`, and a task's workspace directory is a bind mount of its root
//! ([`QuotaFs::bind_on`], one system call). After the task, the bind is removed, the
//! filesystem emptied ([`QuotaFs::reset`]: every file unlinked, the root back to `root:root
//! 0755` without extended attributes) and kept for the next task asking for the same size. At
//! most `capacity` are kept (one per slot, plus one); one that cannot be emptied, that is past
//! the capacity, or whose image holds more than [`KEEP_ALLOCATED_MAX`] of the host's disk (a
//! sparse image keeps the blocks a task once wrote: destroying it gives them back) is
//! destroyed. A server that stops destroys them all; after a crash,
//! recovery does ([`QuotaPool::clear`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use conductor_types::TaskId;
use conductor_workspace::QuotaFs;

/// Host disk an emptied image may still hold (its sparse file's allocated blocks) and be kept.
pub(crate) const KEEP_ALLOCATED_MAX: u64 = 256 << 20;

/// Quota filesystems ready for fresh workspaces, and those lent to running tasks.
#[derive(Debug)]
pub(crate) struct QuotaPool {
    dir: PathBuf,
    capacity: usize,
    keep_allocated_max: u64,
    idle: Mutex<Vec<Kept>>,
    lent: Mutex<HashMap<TaskId, Kept>>,
    /// Set by [`QuotaPool::close`]: nothing is kept any more.
    closed: AtomicBool,
}

/// One kept filesystem: mounted on its own directory under the pool.
#[derive(Debug)]
struct Kept {
    fs: QuotaFs,
    size: u64,
    /// Its device number, read once from the mount table at creation ([`QuotaFs::device`]).
    device: u64,
}

impl QuotaPool {
    /// A pool under `<workspace_root>/quota/pool` keeping at most `capacity` filesystems.
    pub fn new(workspace_root: &Path, capacity: usize) -> Self {
        Self {
            dir: workspace_root.join("quota").join("pool"),
            capacity,
            keep_allocated_max: KEEP_ALLOCATED_MAX,
            idle: Mutex::new(Vec::new()),
            lent: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Blocking. Makes `workspace` (an existing, empty directory) a filesystem of `size` bytes
    /// for `task`: a kept one when there is one of that size, else a new one. Returns a handle
    /// on it as the workspace (usage, fullness).
    pub fn lend(&self, task: TaskId, size: u64, workspace: &Path) -> Result<QuotaFs, String> {
        let kept = self.take(size);
        let kept = match kept {
            Some(kept) => kept,
            None => self.create(size)?,
        };
        if let Err(error) = kept.fs.bind_on(kept.device, workspace) {
            destroy(kept);
            return Err(error.to_string());
        }
        let handle = QuotaFs::open(kept.fs.image(), workspace).map_err(|e| e.to_string())?;
        self.lent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(task, kept);
        Ok(handle)
    }

    /// Blocking. After `task`: removes the bind on `workspace`, empties the filesystem and
    /// keeps it (or destroys it). `false` when no filesystem of the pool was lent to `task`.
    pub fn give_back(&self, task: TaskId, workspace: &Path) -> bool {
        let Some(kept) = self
            .lent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&task)
        else {
            return false;
        };
        if let Err(error) = conductor_workspace::unbind(workspace) {
            tracing::warn!(path = %workspace.display(), %error, "could not unmount a workspace");
            destroy(kept);
            return true;
        }
        if let Err(error) = kept.fs.reset(kept.device) {
            tracing::warn!(image = %kept.fs.image().display(), %error, "could not empty a quota filesystem; removing it");
            destroy(kept);
            return true;
        }
        let allocated = std::fs::metadata(kept.fs.image())
            .map(|meta| std::os::unix::fs::MetadataExt::blocks(&meta) * 512)
            .unwrap_or(u64::MAX);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.capacity
            && !self.closed.load(Ordering::Acquire)
            && allocated <= self.keep_allocated_max
        {
            idle.push(kept);
        } else {
            drop(idle);
            destroy(kept);
        }
        true
    }

    /// Blocking. Destroys every kept filesystem, and whatever a previous run left under the
    /// pool's directory (mounts first). Lent ones are the running tasks': left alone.
    pub fn clear(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        idle.into_iter().for_each(destroy);
        let lent = self.lent.lock().unwrap_or_else(PoisonError::into_inner);
        let in_use: Vec<&Path> = lent.values().map(|kept| kept.fs.image()).collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "img") || in_use.contains(&path.as_path()) {
                continue;
            }
            let mountpoint = path.with_extension("");
            match QuotaFs::open(&path, &mountpoint) {
                Ok(fs) => destroy(Kept {
                    fs,
                    size: 0,
                    device: 0,
                }),
                Err(error) => {
                    tracing::warn!(image = %path.display(), %error, "could not remove a disk-quota image")
                }
            }
        }
    }

    /// Blocking, when the server stops (its tasks have ended): removes the binds on
    /// `slots_root`'s workspaces, destroys every filesystem, and keeps none from now on.
    pub fn close(&self, slots_root: &Path) {
        self.closed.store(true, Ordering::Release);
        for point in conductor_workspace::mounts_under(slots_root) {
            if let Err(error) = conductor_workspace::unbind(&point) {
                tracing::warn!(path = %point.display(), %error, "could not unmount a workspace");
            }
        }
        let lent: Vec<Kept> = self
            .lent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, kept)| kept)
            .collect();
        lent.into_iter().for_each(destroy);
        self.clear();
    }

    fn take(&self, size: u64) -> Option<Kept> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let index = idle.iter().position(|kept| kept.size == size)?;
        Some(idle.swap_remove(index))
    }

    fn create(&self, size: u64) -> Result<Kept, String> {
        let id = conductor_types::ExecutionId::random();
        let image = self.dir.join(format!("{id}.img"));
        let mountpoint = self.dir.join(id.to_string());
        std::fs::create_dir_all(&mountpoint)
            .map_err(|e| format!("creating {}: {e}", mountpoint.display()))?;
        let fs = match QuotaFs::create(&image, &mountpoint, size) {
            Ok(fs) => fs,
            Err(error) => {
                let _ = std::fs::remove_dir(&mountpoint);
                return Err(error.to_string());
            }
        };
        match fs.device() {
            Ok(device) => Ok(Kept { fs, size, device }),
            Err(error) => {
                destroy(Kept {
                    fs,
                    size,
                    device: 0,
                });
                Err(error.to_string())
            }
        }
    }
}

/// Unmounts and removes a filesystem, and its mount point.
fn destroy(kept: Kept) {
    let mountpoint = kept.fs.mountpoint().to_owned();
    let image = kept.fs.image().to_owned();
    if let Err(error) = kept.fs.destroy() {
        tracing::warn!(image = %image.display(), %error, "could not remove a disk-quota image");
        return;
    }
    let _ = std::fs::remove_dir(mountpoint);
}

/// A pool dropped without [`QuotaPool::close`] (a scheduler that was never shut down) still
/// destroys what it kept; lent filesystems are their tasks' and stay.
impl Drop for QuotaPool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        idle.into_iter().for_each(destroy);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    fn images(pool: &QuotaPool) -> usize {
        std::fs::read_dir(&pool.dir)
            .map(|dir| {
                dir.flatten()
                    .filter(|e| e.path().extension().is_some_and(|ext| ext == "img"))
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn an_image_that_grew_on_the_host_is_destroyed_not_kept() {
        if !nix::unistd::geteuid().is_root()
            || std::process::Command::new("mkfs.ext4")
                .arg("-V")
                .output()
                .is_err()
        {
            eprintln!("skipped: quota filesystems need root and mkfs.ext4");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let mut pool = QuotaPool::new(root.path(), 2);
        pool.keep_allocated_max = 2 << 20;
        let workspace = root.path().join("ws");
        let size = 32 << 20;

        // A task that writes little: its filesystem is kept, and lent again.
        std::fs::create_dir(&workspace).unwrap();
        let task = TaskId::random();
        pool.lend(task, size, &workspace).unwrap();
        std::fs::write(workspace.join("small"), b"x").unwrap();
        assert!(pool.give_back(task, &workspace));
        assert_eq!((images(&pool), pool.idle.lock().unwrap().len()), (1, 1));

        // A task that writes 8 MiB: the image holds them on the host, so it goes.
        let task = TaskId::random();
        pool.lend(task, size, &workspace).unwrap();
        assert_eq!(pool.idle.lock().unwrap().len(), 0, "the kept one was lent");
        assert_eq!(std::fs::read_dir(&workspace).unwrap().count(), 0);
        let data = vec![1u8; 8 << 20];
        std::fs::write(workspace.join("big"), &data).unwrap();
        nix::unistd::sync();
        assert!(pool.give_back(task, &workspace));
        assert_eq!((images(&pool), pool.idle.lock().unwrap().len()), (0, 0));
        // Not lent: nothing to give back.
        assert!(!pool.give_back(TaskId::random(), &workspace));
        pool.close(&root.path().join("agents"));
    }
}
