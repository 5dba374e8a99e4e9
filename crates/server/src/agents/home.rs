//! Each session's agent home on the host: `<sessions>/<session id>/home`, 0700, mounted as the
//! agent's `HOME` (outside the workspace, so snapshots and diffs never carry transcripts), and the
//! files an adapter asks for written into it. The agent controls what is in its home between
//! turns, so every write is confined beneath it: no symlink it planted is followed.
//!
//! As root the home is a filesystem of its own for each turn: `<session>/home.img`, a sparse
//! ext4 image of [`HOME_QUOTA`] loop-mounted on the home (`conductor_workspace::QuotaFs`), so an
//! agent that fills its home gets `ENOSPC` and the server's disk never sees more. It is mounted
//! before the turn and unmounted after it ([`HomeMount::release`]), so sessions hold no loop
//! device between turns. A session made before homes had quotas keeps its home as it is.

use std::io::Write;
use std::path::{Path, PathBuf};

use conductor_agents::HomeFile;
use conductor_types::SessionId;
use conductor_workspace::{AtomicWriter, QuotaFs, UploadOptions};

/// The size of each session's home filesystem (sparse: the host holds only what is written).
pub const HOME_QUOTA: u64 = 1 << 30;

/// A session's home, ready for a turn.
#[derive(Debug)]
pub(crate) struct HomeMount {
    /// The home directory (the mount point when it has a quota).
    pub path: PathBuf,
    quota: Option<QuotaFs>,
}

impl HomeMount {
    /// Unmounts the home's filesystem (nothing to do without a quota).
    pub(crate) fn release(mut self) -> Result<(), String> {
        match self.quota.take() {
            Some(fs) => fs.unmount().map(|_| ()).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

impl Drop for HomeMount {
    /// A turn that failed before [`HomeMount::release`] still leaves no mount behind.
    fn drop(&mut self) {
        if let Some(fs) = self.quota.take() {
            if let Err(error) = fs.unmount() {
                tracing::warn!(%error, "unmounting an agent's home");
            }
        }
    }
}

/// Makes session `id`'s home (if new), mounts its filesystem of `quota` bytes (as root), and
/// writes `files` into it.
pub(crate) fn prepare_home(
    sessions: &Path,
    id: &SessionId,
    files: &[HomeFile],
    quota: u64,
) -> Result<HomeMount, String> {
    let session = sessions.join(id.as_str());
    let home = session.join("home");
    crate::hostdirs::make_private(&[session.clone(), home.clone()])
        .map_err(|e| format!("making the session's home: {e}"))?;
    // Held from here on: a failed write below unmounts it on the way out.
    let mounted = HomeMount {
        quota: mount_quota(&session, &home, quota)?,
        path: home.clone(),
    };
    let options = UploadOptions {
        mode: 0o600,
        create_parents: true,
        max_bytes: Some(1024 * 1024),
    };
    for file in files {
        let write = || -> Result<(), String> {
            let mut writer = AtomicWriter::create(&home, Path::new(&file.path), &options)
                .map_err(|e| e.to_string())?;
            writer
                .write_all(file.contents.as_bytes())
                .map_err(|e| e.to_string())?;
            writer.commit().map_err(|e| e.to_string())
        };
        write().map_err(|e| format!("writing {} in the agent's home: {e}", file.path))?;
    }
    Ok(mounted)
}

/// Mounts `<session>/home.img` on `home`, making it on a session's first turn; `None` when not
/// root, or for a session whose home was made without one.
fn mount_quota(session: &Path, home: &Path, size: u64) -> Result<Option<QuotaFs>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let image = session.join("home.img");
    let failed = |e: conductor_workspace::quota::QuotaError| {
        format!("mounting the agent's home filesystem: {e}")
    };
    if image.exists() {
        let fs = QuotaFs::open(&image, home).map_err(failed)?;
        fs.mount().map_err(failed)?;
        return Ok(Some(fs));
    }
    let empty = std::fs::read_dir(home)
        .map(|mut entries| entries.next().is_none())
        .map_err(|e| format!("reading the agent's home: {e}"))?;
    if !empty {
        tracing::warn!(home = %home.display(), "a session home made before homes had quotas keeps none");
        return Ok(None);
    }
    QuotaFs::create(&image, home, size)
        .map(Some)
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use conductor_workspace::MIN_QUOTA_BYTES;

    use super::*;

    fn file(path: &str) -> HomeFile {
        HomeFile {
            path: path.into(),
            contents: "x = 1\n".into(),
        }
    }

    #[test]
    fn files_land_beneath_the_home_and_planted_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let id = SessionId::random();
        let home = prepare_home(
            dir.path(),
            &id,
            &[file(".codex/config.toml")],
            MIN_QUOTA_BYTES,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(home.path.join(".codex/config.toml")).unwrap(),
            "x = 1\n"
        );
        // The agent replaces its config directory with a link out of its home.
        std::fs::remove_dir_all(home.path.join(".codex")).unwrap();
        std::os::unix::fs::symlink(outside.path(), home.path.join(".codex")).unwrap();
        home.release().unwrap();
        let again = prepare_home(
            dir.path(),
            &id,
            &[file(".codex/config.toml")],
            MIN_QUOTA_BYTES,
        );
        assert!(again.is_err());
        assert!(!outside.path().join("config.toml").exists());
        assert!(prepare_home(dir.path(), &id, &[file("../escape")], MIN_QUOTA_BYTES).is_err());
    }

    #[test]
    fn as_root_a_full_home_is_enospc_and_unmounted_after_the_turn() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: a home filesystem needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let id = SessionId::random();
        let home = prepare_home(dir.path(), &id, &[], MIN_QUOTA_BYTES).unwrap();
        let path = home.path.clone();
        let mut big = std::fs::File::create(path.join("fill")).unwrap();
        let chunk = vec![7u8; 1 << 20];
        let full = (0..(MIN_QUOTA_BYTES >> 20) + 8)
            .map(|_| big.write_all(&chunk))
            .find_map(Result::err)
            .expect("the home filled up");
        assert_eq!(full.raw_os_error(), Some(nix::libc::ENOSPC));
        drop(big);
        home.release().unwrap();
        // Unmounted: the directory is empty on the host; the next turn sees the file again.
        assert!(!path.join("fill").exists());
        let next = prepare_home(dir.path(), &id, &[], MIN_QUOTA_BYTES).unwrap();
        assert!(next.path.join("fill").exists());
        next.release().unwrap();
        assert!(dir.path().join(id.as_str()).join("home.img").is_file());
    }
}
