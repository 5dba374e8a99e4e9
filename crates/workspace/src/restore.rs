//! Restore: make a directory exactly what a snapshot recorded — contents, modes, file mtimes,
//! symlinks, empty directories — removing whatever the snapshot does not have.
//!
//! Safety: the target is only ever touched through directory descriptors opened with
//! `O_NOFOLLOW` (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the target root), so a
//! symlink planted in the target is removed or replaced, never written through. Each file and
//! symlink is written under a temporary name (`.conductor-restore-*`) in its directory and
//! renamed over the old entry, so a reader sees the old or the new file, never half of one;
//! blobs are copied (never linked), so later edits in the workspace cannot reach the store, and
//! every blob is hashed while it is copied, so a corrupt blob fails the restore instead of
//! landing in the workspace; zero blocks are written as holes (`sparse`), so a sparse file comes
//! back sparse. Directory modes are applied last, deepest first, so read-only
//! directories can still be filled. Restored data is not fsynced: a workspace is not the
//! store, and a crash mid-restore is repaired by restoring again.
//!
//! Modes go through [`sanitize_mode`] (an imported manifest may ask for any bits): no set-id,
//! sticky or world-write bit is ever restored.
//!
//! Uid/gid, xattrs, hard links (each path becomes its own file), directory and symlink mtimes
//! are not recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps};
use rustix::io::Errno;

use crate::cas::CHUNK;
use crate::error::{at, Error};
use crate::fsutil;
use crate::manifest::{Entry, Manifest, Node, SnapshotId};
use crate::mode::sanitize_mode;
use crate::path::RelPath;
use crate::sparse::{self, SparseSink};
use crate::store::SnapshotStore;

/// Prefix of the temporary names restore writes in the target.
pub(crate) const TMP_PREFIX: &str = ".conductor-restore-";

/// Files written per work item (each item opens its directory once).
const BATCH: usize = 128;

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Regular files written.
    pub files: u64,
    /// Symlinks written.
    pub symlinks: u64,
    /// Directories created (existing ones are kept).
    pub dirs_created: u64,
    /// Entries removed because the snapshot does not have them (a removed tree counts once).
    pub removed: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
}

impl SnapshotStore {
    /// Restores snapshot `id` into `target` (created if missing; the same workspace or another
    /// directory). Holds the store lock shared.
    pub fn restore(&self, id: SnapshotId, target: &Path) -> Result<RestoreStats, Error> {
        let _lock = self.lock_shared()?;
        let manifest = self.manifest(id)?;
        self.restore_manifest(&manifest, target)
    }

    pub(crate) fn restore_manifest(
        &self,
        manifest: &Manifest,
        target: &Path,
    ) -> Result<RestoreStats, Error> {
        std::fs::create_dir_all(target).map_err(at("create", target))?;
        let root = fsutil::open_dir(target).map_err(|e| {
            if matches!(e.raw_os_error(), Some(c) if c == Errno::LOOP.raw_os_error() || c == Errno::NOTDIR.raw_os_error())
            {
                Error::NotADirectory(target.to_path_buf())
            } else {
                Error::io("open", target, e)
            }
        })?;
        rustix::fs::fchmod(
            &root,
            Mode::from_raw_mode(0o700 | sanitize_mode(manifest.root_mode)),
        )
        .map_err(at("chmod", target))?;

        let mut children: BTreeMap<&[u8], BTreeMap<&[u8], &Entry>> = BTreeMap::new();
        children.insert(b"", BTreeMap::new());
        for entry in &manifest.entries {
            if entry.node == Node::Dir {
                children.entry(entry.path.as_bytes()).or_default();
            }
            children
                .entry(entry.path.parent_bytes())
                .or_default()
                .insert(entry.path.file_name(), entry);
        }

        // Phase 1, top down: remove what should not be there, create directories.
        let mut stats = RestoreStats::default();
        let mut jobs: BTreeMap<&[u8], Vec<&Entry>> = BTreeMap::new();
        for (dir, wanted) in &children {
            let dir_rel = (!dir.is_empty()).then(|| RelPath::from_bytes_unchecked(dir));
            let dir_path = display(target, dir_rel.as_ref());
            let dir_fd = fsutil::open_dir_beneath(root.as_fd(), dir_rel.as_ref())
                .map_err(at("open", &dir_path))?;
            let existing = fsutil::read_names(dir_fd.as_fd()).map_err(at("read", &dir_path))?;
            let mut present = BTreeSet::new();
            for (name, _) in existing {
                if wanted.contains_key(name.as_slice()) {
                    present.insert(name);
                    continue;
                }
                let c_name = c_name(&name, &dir_path)?;
                fsutil::remove_at(dir_fd.as_fd(), &c_name).map_err(at(
                    "remove",
                    dir_path.join(String::from_utf8_lossy(&name).as_ref()),
                ))?;
                stats.removed += 1;
            }
            for (name, entry) in wanted {
                let c_name = c_name(name, &dir_path)?;
                let path = entry.path.under(target);
                let current = if present.contains(*name) {
                    fsutil::lstat_at(dir_fd.as_fd(), &c_name).map_err(at("stat", &path))?
                } else {
                    None
                };
                let current_type = current.as_ref().map(fsutil::file_type);
                match entry.node {
                    Node::Dir => match current {
                        Some(stat) if current_type == Some(FileType::Directory) => {
                            if fsutil::perm_bits(&stat) & 0o700 != 0o700 {
                                fsutil::chmod_dir_at(dir_fd.as_fd(), &c_name, 0o700)
                                    .map_err(at("chmod", &path))?;
                            }
                        }
                        _ => {
                            if current.is_some() {
                                fsutil::remove_at(dir_fd.as_fd(), &c_name)
                                    .map_err(at("remove", &path))?;
                            }
                            rustix::fs::mkdirat(
                                &dir_fd,
                                c_name.as_c_str(),
                                Mode::from_raw_mode(0o700),
                            )
                            .map_err(at("mkdir", &path))?;
                            stats.dirs_created += 1;
                        }
                    },
                    Node::File { .. } | Node::Symlink { .. } => {
                        // A rename cannot replace a directory: clear it first.
                        if current_type == Some(FileType::Directory) {
                            fsutil::remove_at(dir_fd.as_fd(), &c_name)
                                .map_err(at("remove", &path))?;
                        }
                        jobs.entry(dir).or_default().push(entry);
                    }
                }
            }
        }

        // Phase 2, in parallel: files and symlinks, in batches per directory.
        let batches: Vec<(&[u8], &[&Entry])> = jobs
            .iter()
            .flat_map(|(dir, entries)| entries.chunks(BATCH).map(move |chunk| (*dir, chunk)))
            .collect();
        let written: Vec<RestoreStats> = self.pool.install(|| {
            batches
                .par_iter()
                .map_init(
                    || vec![0u8; CHUNK],
                    |buf, (dir, entries)| self.write_batch(root.as_fd(), target, dir, entries, buf),
                )
                .collect::<Result<_, Error>>()
        })?;
        for batch in written {
            stats.files += batch.files;
            stats.symlinks += batch.symlinks;
            stats.bytes += batch.bytes;
        }

        // Phase 3, deepest first: directory modes (they may remove our write permission).
        for entry in manifest.entries.iter().rev() {
            if entry.node == Node::Dir {
                let path = entry.path.under(target);
                let fd = fsutil::open_dir_beneath(root.as_fd(), Some(&entry.path))
                    .map_err(at("open", &path))?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(sanitize_mode(entry.mode)))
                    .map_err(at("chmod", &path))?;
            }
        }
        rustix::fs::fchmod(
            &root,
            Mode::from_raw_mode(sanitize_mode(manifest.root_mode)),
        )
        .map_err(at("chmod", target))?;
        Ok(stats)
    }

    fn write_batch(
        &self,
        root: BorrowedFd<'_>,
        target: &Path,
        dir: &[u8],
        entries: &[&Entry],
        buf: &mut [u8],
    ) -> Result<RestoreStats, Error> {
        let dir_rel = (!dir.is_empty()).then(|| RelPath::from_bytes_unchecked(dir));
        let dir_fd = fsutil::open_dir_beneath(root, dir_rel.as_ref())
            .map_err(at("open", display(target, dir_rel.as_ref())))?;
        let mut stats = RestoreStats::default();
        for entry in entries {
            let path = entry.path.under(target);
            let name = c_name(entry.path.file_name(), &path)?;
            match &entry.node {
                Node::File {
                    size,
                    hash,
                    mtime_ns,
                } => {
                    let (tmp, file) = fsutil::create_tmp_at(dir_fd.as_fd(), TMP_PREFIX, 0o600)
                        .map_err(at("create", &path))?;
                    let result = self
                        .cas
                        .copy_verified(hash, *size, &mut SparseSink(&file), "restore", buf)
                        .and_then(|()| {
                            sparse::finish(&file, *size).map_err(at("truncate", &path))?;
                            rustix::fs::fchmod(
                                &file,
                                Mode::from_raw_mode(sanitize_mode(entry.mode)),
                            )
                            .map_err(at("chmod", &path))?;
                            let mtime = Timespec {
                                tv_sec: mtime_ns.div_euclid(1_000_000_000),
                                tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
                            };
                            let times = Timestamps {
                                last_access: mtime,
                                last_modification: mtime,
                            };
                            rustix::fs::futimens(&file, &times).map_err(at("utimens", &path))?;
                            drop(file);
                            rustix::fs::renameat(&dir_fd, tmp.as_str(), &dir_fd, name.as_c_str())
                                .map_err(at("rename", &path))
                        });
                    if let Err(e) = result {
                        let _ = rustix::fs::unlinkat(&dir_fd, tmp.as_str(), AtFlags::empty());
                        return Err(e);
                    }
                    stats.files += 1;
                    stats.bytes += size;
                }
                Node::Symlink { target: link } => {
                    let tmp = symlink_tmp(&dir_fd, link).map_err(at("symlink", &path))?;
                    if let Err(e) =
                        rustix::fs::renameat(&dir_fd, tmp.as_str(), &dir_fd, name.as_c_str())
                    {
                        let _ = rustix::fs::unlinkat(&dir_fd, tmp.as_str(), AtFlags::empty());
                        return Err(Error::io("rename", path, e));
                    }
                    stats.symlinks += 1;
                }
                Node::Dir => {}
            }
        }
        Ok(stats)
    }
}

/// Creates a symlink to `link` under a fresh temporary name in `dir`.
fn symlink_tmp(dir: &OwnedFd, link: &[u8]) -> std::io::Result<String> {
    for _ in 0..16 {
        let tmp = fsutil::tmp_name(TMP_PREFIX);
        match rustix::fs::symlinkat(link, dir, tmp.as_str()) {
            Ok(()) => return Ok(tmp),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary name",
    ))
}

fn c_name(name: &[u8], context: &Path) -> Result<CString, Error> {
    CString::new(name).map_err(|e| Error::io("name", context, std::io::Error::other(e)))
}

fn display(root: &Path, rel: Option<&RelPath>) -> PathBuf {
    rel.map_or_else(|| root.to_path_buf(), |rel| rel.under(root))
}
