//! Path confinement for the file API: user-supplied paths resolved strictly inside a workspace.
//!
//! A user path must be relative and must not contain `..`; it is then resolved by the kernel
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from a descriptor of the workspace
//! root, so a symlink (anywhere on the path, including the last component) that points outside
//! the workspace — absolute, or relative with enough `..` — fails with `EXDEV`, which we report
//! as [`ConfineError::Escapes`]. Symlinks that stay inside are followed.
//!
//! [`resolve_in_workspace`] returns a checked path, but a path is checked at one moment and used
//! at another: if a task may be changing the workspace, do the I/O with [`open_in_workspace`],
//! [`remove_in_workspace`] and [`AtomicWriter`], which act on the descriptors they resolved.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::fsutil;

/// Why a user path was refused or could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The path is absolute.
    #[error("path {0:?} is absolute; workspace paths are relative")]
    Absolute(String),
    /// The path has a `..` component.
    #[error("path {0:?} contains `..`")]
    ParentComponent(String),
    /// The path has a NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    /// A symlink on the path leads out of the workspace.
    #[error("path {0:?} leads out of the workspace through a symlink")]
    Escapes(String),
    /// Nothing there (or a parent is missing).
    #[error("path {0:?} not found in the workspace")]
    NotFound(String),
    /// The operation needs a file name and the path names the workspace root.
    #[error("path {0:?} names the workspace root")]
    Root(String),
    /// An upload onto an existing directory.
    #[error("path {0:?} is a directory")]
    IsDirectory(String),
    /// An upload past its size limit.
    #[error("upload to {path:?} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The upload's path.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// A system call failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The user path.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// A user path split into checked components.
struct UserPath {
    display: String,
    /// Normalised (`.` dropped), relative, possibly empty (the root).
    rel: PathBuf,
}

fn check(user_path: &Path) -> Result<UserPath, ConfineError> {
    let display = user_path.to_string_lossy().into_owned();
    if user_path.as_os_str().as_bytes().contains(&0) {
        return Err(ConfineError::Nul(display));
    }
    let mut rel = PathBuf::new();
    for component in user_path.components() {
        match component {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err(ConfineError::ParentComponent(display)),
            Component::RootDir | Component::Prefix(_) => {
                return Err(ConfineError::Absolute(display))
            }
        }
    }
    Ok(UserPath { display, rel })
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// `openat2` beneath `root`, retrying `EAGAIN`, with errors translated for `display`.
fn open2(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    display: &str,
) -> Result<OwnedFd, ConfineError> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut result =
        rustix::fs::openat2(root, rel, flags | OFlags::CLOEXEC, Mode::empty(), RESOLVE);
    for _ in 0..8 {
        if !matches!(result, Err(Errno::AGAIN)) {
            break;
        }
        result = rustix::fs::openat2(root, rel, flags | OFlags::CLOEXEC, Mode::empty(), RESOLVE);
    }
    result.map_err(|e| translate(e, "open", display))
}

fn translate(errno: Errno, op: &'static str, display: &str) -> ConfineError {
    match errno {
        Errno::XDEV | Errno::LOOP => ConfineError::Escapes(display.to_owned()),
        Errno::NOENT | Errno::NOTDIR => ConfineError::NotFound(display.to_owned()),
        other => ConfineError::Io {
            op,
            path: display.to_owned(),
            source: other.into(),
        },
    }
}

fn open_root(root: &Path, display: &str) -> Result<OwnedFd, ConfineError> {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ConfineError::Io {
        op: "open workspace",
        path: display.to_owned(),
        source: e.into(),
    })
}

/// Resolves `user_path` inside the workspace `root`: refuses absolute paths, `..` and NUL, and
/// any path that a symlink leads out of the workspace. The path need not exist, but its deepest
/// existing ancestor must resolve inside the workspace. Returns `root` joined with the
/// normalised path.
pub fn resolve_in_workspace(root: &Path, user_path: &Path) -> Result<PathBuf, ConfineError> {
    let user = check(user_path)?;
    let root_fd = open_root(root, &user.display)?;
    let mut probe = user.rel.clone();
    loop {
        match open2(root_fd.as_fd(), &probe, OFlags::PATH, &user.display) {
            Ok(_) => return Ok(root.join(&user.rel)),
            Err(ConfineError::NotFound(_)) if probe.pop() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Opens `user_path` inside the workspace for reading (a file or a directory), with the same
/// checks as [`resolve_in_workspace`], atomically with the check.
pub fn open_in_workspace(root: &Path, user_path: &Path) -> Result<File, ConfineError> {
    let user = check(user_path)?;
    let root_fd = open_root(root, &user.display)?;
    let fd = open2(
        root_fd.as_fd(),
        &user.rel,
        OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
        &user.display,
    )?;
    Ok(File::from(fd))
}

/// `user_path` checked, its parent directory opened beneath `root`, and its last component.
fn open_parent(
    root: &Path,
    user_path: &Path,
) -> Result<(UserPath, OwnedFd, CString), ConfineError> {
    let user = check(user_path)?;
    let (parent, name) = split(&user)?;
    let root_fd = open_root(root, &user.display)?;
    let dir = open2(
        root_fd.as_fd(),
        &parent,
        OFlags::RDONLY | OFlags::DIRECTORY,
        &user.display,
    )?;
    Ok((user, dir, name))
}

/// The version ([`crate::version`]) of what is at `user_path` now, a symlink not followed
/// (`None`: nothing there; a missing parent is `NotFound`).
pub fn version_in_workspace(root: &Path, user_path: &Path) -> Result<Option<String>, ConfineError> {
    let (user, dir, name) = open_parent(root, user_path)?;
    fsutil::lstat_at(dir.as_fd(), &name)
        .map(|st| st.as_ref().map(crate::version::of_stat))
        .map_err(|e| io_err("stat", &user.display, e))
}

/// Removes `user_path` (a file, a symlink — not its target — or a whole directory tree, never
/// following symlinks inside it) from the workspace.
pub fn remove_in_workspace(root: &Path, user_path: &Path) -> Result<(), ConfineError> {
    let (user, dir, name) = open_parent(root, user_path)?;
    if fsutil::lstat_at(dir.as_fd(), &name)
        .map_err(|e| io_err("stat", &user.display, e))?
        .is_none()
    {
        return Err(ConfineError::NotFound(user.display));
    }
    fsutil::remove_at(dir.as_fd(), &name).map_err(|e| io_err("remove", &user.display, e))
}

fn io_err(op: &'static str, display: &str, source: io::Error) -> ConfineError {
    ConfineError::Io {
        op,
        path: display.to_owned(),
        source,
    }
}

/// The parent (relative, maybe empty) and last component of a non-root user path.
fn split(user: &UserPath) -> Result<(PathBuf, CString), ConfineError> {
    let name = user
        .rel
        .file_name()
        .ok_or_else(|| ConfineError::Root(user.display.clone()))?;
    let name =
        CString::new(name.as_bytes()).map_err(|_| ConfineError::Nul(user.display.clone()))?;
    let parent = user.rel.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((parent, name))
}

/// How [`AtomicWriter::create`] writes.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Permission bits of the new file (default 0o644), through [`crate::sanitize_mode`]: set-id,
    /// sticky and world-write bits are dropped.
    pub mode: u32,
    /// Create missing parent directories (0o755), confined like the path itself.
    pub create_parents: bool,
    /// Refuse to write more than this many bytes.
    pub max_bytes: Option<u64>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            mode: 0o644,
            create_parents: false,
            max_bytes: None,
        }
    }
}

/// An upload in progress: bytes go to a temporary file in the destination's directory, and
/// [`AtomicWriter::commit`] renames it over the destination, so readers see the old file or the
/// whole new one. Dropped without `commit`, the temporary file is removed.
#[derive(Debug)]
pub struct AtomicWriter {
    dir: OwnedFd,
    tmp: String,
    name: CString,
    file: Option<File>,
    display: String,
    mode: u32,
    written: u64,
    limit: Option<u64>,
}

impl AtomicWriter {
    /// Starts an upload to `user_path` inside the workspace `root`.
    pub fn create(
        root: &Path,
        user_path: &Path,
        options: &UploadOptions,
    ) -> Result<Self, ConfineError> {
        let user = check(user_path)?;
        let (parent, name) = split(&user)?;
        let root_fd = open_root(root, &user.display)?;
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let dir = match open2(root_fd.as_fd(), &parent, dir_flags, &user.display) {
            Err(ConfineError::NotFound(_)) if options.create_parents => {
                make_parents(root_fd.as_fd(), &parent, &user.display)?
            }
            other => other?,
        };
        if let Some(stat) =
            fsutil::lstat_at(dir.as_fd(), &name).map_err(|e| io_err("stat", &user.display, e))?
        {
            if fsutil::file_type(&stat) == FileType::Directory {
                return Err(ConfineError::IsDirectory(user.display));
            }
        }
        let (tmp, file) = fsutil::create_tmp_at(dir.as_fd(), ".conductor-upload-", 0o600)
            .map_err(|e| io_err("create", &user.display, e))?;
        Ok(Self {
            dir,
            tmp,
            name,
            file: Some(file),
            display: user.display,
            mode: crate::mode::sanitize_mode(options.mode),
            written: 0,
            limit: options.max_bytes,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The version ([`crate::version`]) the upload will have once committed (the rename keeps
    /// its inode and mtime).
    pub fn version(&self) -> Result<String, ConfineError> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io_err("stat", &self.display, io::Error::other("already committed")))?;
        let st = rustix::fs::fstat(file).map_err(|e| io_err("stat", &self.display, e.into()))?;
        Ok(crate::version::of_stat(&st))
    }

    /// The version of what is at the upload's path now (`None`: nothing), looked at without
    /// following a symlink there: what a commit would replace.
    pub fn replaced_version(&self) -> Result<Option<String>, ConfineError> {
        fsutil::lstat_at(self.dir.as_fd(), &self.name)
            .map(|st| st.as_ref().map(crate::version::of_stat))
            .map_err(|e| io_err("stat", &self.display, e))
    }

    /// Sets the mode and renames the file into place.
    pub fn commit(mut self) -> Result<(), ConfineError> {
        let Some(file) = self.file.take() else {
            return Err(io_err(
                "commit",
                &self.display,
                io::Error::other("already closed"),
            ));
        };
        rustix::fs::fchmod(&file, Mode::from_raw_mode(self.mode))
            .map_err(|e| io_err("chmod", &self.display, e.into()))?;
        drop(file);
        rustix::fs::renameat(
            &self.dir,
            self.tmp.as_str(),
            &self.dir,
            self.name.as_c_str(),
        )
        .map_err(|e| io_err("rename", &self.display, e.into()))?;
        self.tmp.clear();
        Ok(())
    }
}

impl Write for AtomicWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.limit {
            if self.written + buf.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    ConfineError::TooLarge {
                        path: self.display.clone(),
                        limit,
                    },
                ));
            }
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("upload already committed"))?;
        let n = file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            drop(self.file.take());
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// Creates the directory `user_path` inside the workspace, with any missing parents (mode
/// 0o755, like `mkdir -p`), every step resolved beneath the root; an existing directory is
/// fine.
pub fn create_dir_in_workspace(root: &Path, user_path: &Path) -> Result<(), ConfineError> {
    let user = check(user_path)?;
    let root_fd = open_root(root, &user.display)?;
    make_parents(root_fd.as_fd(), &user.rel, &user.display).map(drop)
}

/// Creates each missing directory of `parent` beneath `root`, every step resolved beneath the
/// root, and returns the last one opened.
fn make_parents(
    root: BorrowedFd<'_>,
    parent: &Path,
    display: &str,
) -> Result<OwnedFd, ConfineError> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let mut current = open2(root, Path::new(""), dir_flags, display)?;
    let mut prefix = PathBuf::new();
    for component in parent.components() {
        let name: &OsStr = component.as_os_str();
        prefix.push(name);
        match rustix::fs::mkdirat(&current, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(translate(e, "mkdir", display)),
        }
        current = open2(root, &prefix, dir_flags, display)?;
    }
    Ok(current)
}
