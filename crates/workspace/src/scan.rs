//! Walking a workspace: every entry below a root directory with its `lstat` data, read through
//! directory descriptors (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), so a symlink is
//! recorded as a link and never followed, and a directory swapped for a symlink mid-walk is
//! refused rather than escaped through.
//!
//! The walk goes level by level (the directories of one depth listed in parallel, then the
//! next), never recursing, and opens each directory by its path beneath the root, so it holds
//! no descriptor per level. A path longer than [`MAX_PATH_LEN`] ends it with
//! [`Error::TooDeep`] before anything deeper is read: a task can build a chain of any depth,
//! and a manifest of full paths would grow with the square of it.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rayon::prelude::*;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use rustix::io::Errno;

use crate::error::{at, too_deep, Error};
use crate::fsutil::{self, StatKey};
use crate::manifest::SpecialKind;
use crate::path::{RelPath, MAX_PATH_LEN};

/// What a scanned entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanKind {
    File,
    Dir,
    Symlink(Vec<u8>),
    Special(SpecialKind),
}

/// One entry found by [`scan`].
#[derive(Debug, Clone)]
pub(crate) struct ScanEntry {
    pub path: RelPath,
    pub kind: ScanKind,
    pub mode: u32,
    pub key: StatKey,
}

/// A scanned tree: the root (still open, for reading files beneath it) and its entries sorted
/// by path.
#[derive(Debug)]
pub(crate) struct Scan {
    pub root: OwnedFd,
    pub root_mode: u32,
    pub entries: Vec<ScanEntry>,
}

/// Lists everything below `dir`, directories in parallel on `pool`. Entries that vanish during
/// the walk are left out; a directory that turns into a symlink during the walk is an error.
pub(crate) fn scan(dir: &Path, pool: &rayon::ThreadPool) -> Result<Scan, Error> {
    let root = match fsutil::open_dir(dir) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(code) if code == Errno::NOTDIR.raw_os_error() || code == Errno::LOOP.raw_os_error()) => {
            return Err(Error::NotADirectory(dir.to_path_buf()))
        }
        Err(e) => return Err(Error::io("open", dir, e)),
    };
    let root_stat = rustix::fs::fstat(&root).map_err(at("stat", dir))?;
    let mut entries = Vec::new();
    let mut level: Vec<Option<RelPath>> = vec![None];
    while !level.is_empty() {
        let listed: Vec<Listed> = pool.install(|| {
            level
                .into_par_iter()
                .map(|rel| scan_dir(root.as_fd(), dir, rel))
                .collect::<Result<_, Error>>()
        })?;
        level = Vec::new();
        for listed in listed {
            entries.extend(listed.entries);
            level.extend(listed.subdirs.into_iter().map(Some));
        }
    }
    entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok(Scan {
        root,
        root_mode: fsutil::recorded_mode(&root_stat),
        entries,
    })
}

/// One directory's entries, and its subdirectories (to list next).
struct Listed {
    entries: Vec<ScanEntry>,
    subdirs: Vec<RelPath>,
}

/// The entries of the directory `rel` (the root for `None`).
fn scan_dir(root: BorrowedFd<'_>, dir: &Path, rel: Option<RelPath>) -> Result<Listed, Error> {
    let empty = || Listed {
        entries: Vec::new(),
        subdirs: Vec::new(),
    };
    let dir_fd = match fsutil::open_dir_beneath(root, rel.as_ref()) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => return Ok(empty()),
        Err(e) => {
            return Err(match rel {
                Some(path) => Error::Changed {
                    path,
                    what: format!("directory could not be opened without following a link: {e}"),
                },
                None => Error::io("open", dir, e),
            })
        }
    };
    let dir_path = display_path(dir, rel.as_ref());
    let mut entries = Vec::new();
    let mut subdirs = Vec::new();
    for (name, _) in fsutil::read_names(dir_fd.as_fd()).map_err(at("read", &dir_path))? {
        let path = match &rel {
            Some(parent) if parent.as_bytes().len() + 1 + name.len() > MAX_PATH_LEN => {
                return Err(too_deep(parent.as_bytes()))
            }
            Some(parent) => parent.join(&name),
            None => RelPath::from_name(&name),
        };
        let Ok(c_name) = CString::new(name) else {
            continue;
        };
        let Some(stat) =
            fsutil::lstat_at(dir_fd.as_fd(), &c_name).map_err(at("stat", path.under(dir)))?
        else {
            continue;
        };
        let kind = match fsutil::file_type(&stat) {
            FileType::RegularFile => ScanKind::File,
            FileType::Directory => {
                subdirs.push(path.clone());
                ScanKind::Dir
            }
            FileType::Symlink => {
                match rustix::fs::readlinkat(dir_fd.as_fd(), c_name.as_c_str(), Vec::new()) {
                    Ok(target) => ScanKind::Symlink(target.into_bytes()),
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(Error::io("readlink", path.under(dir), e)),
                }
            }
            FileType::Fifo => ScanKind::Special(SpecialKind::Fifo),
            FileType::Socket => ScanKind::Special(SpecialKind::Socket),
            FileType::CharacterDevice => ScanKind::Special(SpecialKind::CharDevice),
            FileType::BlockDevice => ScanKind::Special(SpecialKind::BlockDevice),
            FileType::Unknown => ScanKind::Special(SpecialKind::CharDevice),
        };
        entries.push(ScanEntry {
            mode: if matches!(kind, ScanKind::Symlink(_)) {
                0o777
            } else {
                fsutil::recorded_mode(&stat)
            },
            key: StatKey::of(&stat),
            kind,
            path,
        });
    }
    Ok(Listed { entries, subdirs })
}

fn display_path(root: &Path, rel: Option<&RelPath>) -> PathBuf {
    match rel {
        Some(rel) => rel.under(root),
        None => root.to_path_buf(),
    }
}
