//! The directories of named workspaces on disk, no records: `<root>/named/<name>`, and for a
//! workspace with a disk quota its ext4 image `<root>/named-quota/<name>.img` loop-mounted on
//! that directory (`conductor_workspace::QuotaFs`). Every call runs on the blocking pool; the
//! errors are the reasons the callers put in their messages.

use std::path::{Path, PathBuf};

use conductor_workspace::QuotaFs;

/// Where the named workspaces of one server live.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NamedDirs<'a> {
    root: &'a Path,
}

impl<'a> NamedDirs<'a> {
    /// The layout under `workspace_root`.
    pub(crate) fn new(workspace_root: &'a Path) -> Self {
        Self {
            root: workspace_root,
        }
    }

    /// `<root>/named/<name>`: the directory of named workspace `name`.
    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.root.join("named").join(name)
    }

    /// `<root>/named-quota/<name>.img`: the disk-quota image of named workspace `name`.
    pub(crate) fn image(&self, name: &str) -> PathBuf {
        self.root.join("named-quota").join(format!("{name}.img"))
    }

    /// Makes the directory of a new workspace, with its quota filesystem of `disk` bytes.
    pub(crate) async fn create(&self, name: &str, disk: Option<u64>) -> Result<(), String> {
        let (dir, image) = (self.dir(name), self.image(name));
        blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            if let Some(disk) = disk {
                if let Some(parent) = image.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                }
                QuotaFs::create(&image, &dir, disk)
                    .map_err(|e| format!("setting up the disk quota: {e}"))?;
            }
            Ok(())
        })
        .await
    }

    /// Makes sure the directory exists and, when the workspace has a disk quota (`quota`), that
    /// its filesystem is mounted there (idempotent). Returns the quota filesystem, if any.
    pub(crate) async fn prepare(&self, name: &str, quota: bool) -> Result<Option<QuotaFs>, String> {
        let (dir, image) = (self.dir(name), self.image(name));
        blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            if !quota {
                return Ok(None);
            }
            let fs = QuotaFs::open(&image, &dir).map_err(|e| e.to_string())?;
            fs.mount()
                .map_err(|e| format!("mounting the disk quota: {e}"))?;
            Ok(Some(fs))
        })
        .await
    }

    /// Removes the directory, its quota filesystem (unmounted, image removed) first.
    pub(crate) async fn remove(&self, name: &str) -> Result<(), String> {
        let (dir, image) = (self.dir(name), self.image(name));
        blocking(move || {
            if image.exists() {
                QuotaFs::open(&image, &dir)
                    .and_then(QuotaFs::destroy)
                    .map_err(|e| format!("removing the disk quota: {e}"))?;
            }
            // At any depth, never following a symlink (see conductor_workspace::remove_tree).
            conductor_workspace::remove_tree(&dir).map_err(|e| e.to_string())
        })
        .await
    }

    /// Unmounts the quota filesystem (the image stays).
    pub(crate) async fn unmount(&self, name: &str) -> Result<(), String> {
        let (dir, image) = (self.dir(name), self.image(name));
        blocking(move || {
            QuotaFs::open(&image, &dir)
                .and_then(|fs| fs.unmount())
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
    }
}

/// Runs `work` on the blocking pool; a panic there is a reason like the others.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("a blocking task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_workspace_and_its_image_sit_apart_under_the_root() {
        let dirs = NamedDirs::new(Path::new("/home/ws"));
        assert_eq!(dirs.dir("site"), PathBuf::from("/home/ws/named/site"));
        assert_eq!(
            dirs.image("site"),
            PathBuf::from("/home/ws/named-quota/site.img")
        );
    }

    #[tokio::test]
    async fn prepare_without_a_quota_makes_the_directory_and_remove_takes_it_away() {
        let root = tempfile::tempdir().unwrap();
        let dirs = NamedDirs::new(root.path());
        assert!(dirs.prepare("site", false).await.unwrap().is_none());
        std::fs::write(dirs.dir("site").join("a"), "x").unwrap();
        assert!(dirs.dir("site").is_dir());
        dirs.remove("site").await.unwrap();
        assert!(!dirs.dir("site").exists());
    }
}
