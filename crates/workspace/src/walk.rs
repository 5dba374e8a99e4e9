//! Walks over trees a task made, at any depth: [`remove_tree`], [`remove_contents`] and
//! [`tree_size`] (and the crate's `remove_at`, which restore, the file API and the CAS use).
//!
//! A task can build a directory chain as deep as its inodes allow, so nothing here recurses
//! and nothing holds a descriptor per level (at 10 000 levels either overflows a thread's
//! stack or hits the descriptor limit, as `std::fs::remove_dir_all` does). The walk keeps one
//! descriptor open, the directory it is in; for each level above it, the name it came through,
//! the directory's identity (device, inode) and the names of the subdirectories still to visit.
//! It goes down with `openat(O_NOFOLLOW)`, so a symlink is never followed, and back up through
//! `..`, which must be the directory it came from: a tree reshaped meanwhile stops the walk with
//! an error instead of letting it wander above where it started. Removal never goes into a
//! mount point (a bind mount left inside a workspace would lead to the host's files): it stops
//! with an error naming it.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, StatxAttributes, StatxFlags};
use rustix::io::Errno;

use crate::fsutil;

/// A failed walk over a tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A system call failed (or a directory moved while the walk was below it).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`remove`, `measure`).
        op: &'static str,
        /// The tree.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A path without a parent and a name (`/`, `..`): never removed.
    #[error("{0}: refusing to remove a path without a parent directory and a name")]
    NoName(PathBuf),
}

/// Removes `path` whatever it is, a whole directory tree included, at any depth, never
/// following a symlink (a symlink is removed, not what it points to). Directories without
/// write or search permission are made accessible first. Missing is fine.
pub fn remove_tree(path: &Path) -> Result<(), TreeError> {
    let fail = |source| TreeError::Io {
        op: "remove",
        path: path.to_path_buf(),
        source,
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(TreeError::NoName(path.to_path_buf()));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let parent = match std::fs::File::open(parent) {
        Ok(dir) => OwnedFd::from(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(e)),
    };
    let name = cstring(std::os::unix::ffi::OsStrExt::as_bytes(name)).map_err(fail)?;
    remove_at(parent.as_fd(), &name).map_err(fail)
}

/// Removes everything inside the directory `path`, keeping it, at any depth (as
/// [`remove_tree`]). A missing `path` is empty.
pub fn remove_contents(path: &Path) -> Result<(), TreeError> {
    let top = match fsutil::open_dir(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(TreeError::Io {
                op: "open",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    walk(top, &mut Remover).map_err(|source| TreeError::Io {
        op: "remove",
        path: path.to_path_buf(),
        source,
    })
}

/// Bytes of the regular files below the directory `path` (their lengths), at any depth,
/// symlinks not followed; entries that vanish meanwhile are left out. A missing `path` is 0.
pub fn tree_size(path: &Path) -> Result<u64, TreeError> {
    let fail = |source| TreeError::Io {
        op: "measure",
        path: path.to_path_buf(),
        source,
    };
    let top = match fsutil::open_dir(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(fail(e)),
    };
    let mut sizer = Sizer { total: 0 };
    walk(top, &mut sizer).map_err(fail)?;
    Ok(sizer.total)
}

/// Removes `dir/name` whatever it is, as [`remove_tree`] does.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let Some(top) = Remover.open(dir, name)? else {
        return Ok(());
    };
    walk(top, &mut Remover)?;
    Remover.leave(dir, name)
}

/// What a walk does at each directory.
trait Visit {
    /// On entering the directory `dir` (once): deal with its other entries and return the
    /// subdirectories to go into.
    fn enter(&mut self, dir: BorrowedFd<'_>) -> io::Result<Vec<CString>>;
    /// Opens the subdirectory `dir/name`; `None` skips it (gone, or no longer a directory).
    fn open(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<OwnedFd>>;
    /// After everything below `dir/name` was visited.
    fn leave(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()>;
}

/// One directory on the way down from the top.
struct Level {
    /// Its name in its parent (empty for the top).
    name: CString,
    /// Device and inode, checked when coming back up through `..`.
    id: (u64, u64),
    /// Subdirectories not visited yet.
    pending: Vec<CString>,
}

/// Visits every directory below `top`, depth first, children before their parent's `leave`.
/// Holds one descriptor (two while changing directory) whatever the depth.
fn walk(top: OwnedFd, visit: &mut impl Visit) -> io::Result<()> {
    let mut levels = vec![Level {
        name: CString::default(),
        id: identity(top.as_fd())?,
        pending: visit.enter(top.as_fd())?,
    }];
    let mut current = top;
    while let Some(level) = levels.last_mut() {
        if let Some(name) = level.pending.pop() {
            if let Some(child) = visit.open(current.as_fd(), &name)? {
                let id = identity(child.as_fd())?;
                let pending = visit.enter(child.as_fd())?;
                levels.push(Level { name, id, pending });
                current = child;
            }
            continue;
        }
        let Some(done) = levels.pop() else { break };
        let Some(parent) = levels.last() else { break };
        let up = fsutil::open_dir_at(current.as_fd(), c"..")?;
        if identity(up.as_fd())? != parent.id {
            return Err(io::Error::other(
                "a directory was moved while the walk was below it; retry once nothing writes to the tree",
            ));
        }
        current = up;
        visit.leave(current.as_fd(), &done.name)?;
    }
    Ok(())
}

#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn identity(dir: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let stat = rustix::fs::fstat(dir)?;
    Ok((stat.st_dev as u64, stat.st_ino as u64))
}

fn cstring(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(Errno::INVAL.raw_os_error()))
}

/// Removes everything it visits.
struct Remover;

impl Visit for Remover {
    fn enter(&mut self, dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
        let mut subdirs = Vec::new();
        for (name, kind) in fsutil::read_names(dir)? {
            let name = cstring(&name)?;
            if kind == FileType::Directory {
                subdirs.push(name);
                continue;
            }
            match rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                // A directory the listing did not type.
                Err(Errno::ISDIR) => subdirs.push(name),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(subdirs)
    }

    fn open(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<OwnedFd>> {
        let Some(stat) = fsutil::lstat_at(dir, name)? else {
            return Ok(None);
        };
        if fsutil::file_type(&stat) != FileType::Directory {
            return match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        if is_mount_root(dir, name, &stat)? {
            return Err(io::Error::other(format!(
                "{}: a mount point inside the tree; unmount it first (nothing is removed through a mount)",
                name.to_string_lossy()
            )));
        }
        if fsutil::perm_bits(&stat) & 0o700 != 0o700 {
            fsutil::chmod_dir_at(dir, name, 0o700)?;
        }
        match fsutil::open_dir_at(dir, name) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn leave(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether the directory `dir/name` (whose `lstat` is `stat`) is the root of a mount: by
/// `statx`'s `STATX_ATTR_MOUNT_ROOT`, or where the kernel lacks it (before 5.8) by a device
/// other than its parent's.
#[allow(clippy::unnecessary_cast)]
fn is_mount_root(dir: BorrowedFd<'_>, name: &CStr, stat: &rustix::fs::Stat) -> io::Result<bool> {
    let flags = AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW;
    match rustix::fs::statx(dir, name, flags, StatxFlags::empty()) {
        Ok(x) if x.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            return Ok(x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
        }
        Ok(_) | Err(Errno::NOSYS) => {}
        Err(e) => return Err(e.into()),
    }
    let parent = rustix::fs::fstat(dir)?;
    Ok(parent.st_dev as u64 != stat.st_dev as u64)
}

/// Adds up the lengths of regular files.
struct Sizer {
    total: u64,
}

impl Visit for Sizer {
    #[allow(clippy::unnecessary_cast)]
    fn enter(&mut self, dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
        let mut subdirs = Vec::new();
        for (name, _) in fsutil::read_names(dir)? {
            let name = cstring(&name)?;
            let Some(stat) = fsutil::lstat_at(dir, &name)? else {
                continue;
            };
            match fsutil::file_type(&stat) {
                FileType::Directory => subdirs.push(name),
                FileType::RegularFile => {
                    self.total = self.total.saturating_add(stat.st_size as u64);
                }
                _ => {}
            }
        }
        Ok(subdirs)
    }

    fn open(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<OwnedFd>> {
        match fsutil::open_dir_at(dir, name) {
            Ok(fd) => Ok(Some(fd)),
            Err(e)
                if matches!(
                    e.raw_os_error().map(Errno::from_raw_os_error),
                    Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn leave(&mut self, _dir: BorrowedFd<'_>, _name: &CStr) -> io::Result<()> {
        Ok(())
    }
}
