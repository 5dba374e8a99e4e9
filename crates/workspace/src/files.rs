//! The file API's operations on a workspace, built on the confinement of [`crate::confine`]:
//! stat and directory listings as serialisable entries, a directory downloaded as a tar stream,
//! a tar uploaded into a directory, and delete.
//!
//! Paths from users go through the same checks everywhere: relative, no `..`, and resolved by
//! the kernel beneath the workspace root (`openat2(RESOLVE_BENEATH)`), so a symlink leading out
//! is refused ([`ConfineError::Escapes`]). Symlinks that stay inside are followed to reach the
//! path named, never while walking or deleting a tree.
//!
//! - Download ([`download_tar`]) walks by directory descriptor with `O_NOFOLLOW`: symlinks are
//!   stored as symlinks (never followed, in or out), fifos, sockets and devices are skipped and
//!   reported; a file that shrinks while read is padded with zeros to the size its header
//!   announced (so the archive stays well-formed), one that grows is cut. The walk is
//!   iterative and holds one directory descriptor whatever the depth; a path past
//!   [`MAX_PATH_LEN`] bytes ends it with [`FileError::TooDeep`].
//! - Upload ([`upload_tar`]) accepts regular files, directories and symlinks whose target stays
//!   inside the workspace (judged lexically from the link's place); absolute or `..` entry
//!   paths, hard links, devices and fifos are refused. Each file is written atomically
//!   ([`AtomicWriter`]), so a reader sees the old file or the whole new one; an error stops the
//!   upload, and files before it stay. The total size is bounded before anything is written.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use conductor_types::Timestamp;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use serde::Serialize;

use crate::confine::{
    create_dir_in_workspace, open_in_workspace, remove_in_workspace, AtomicWriter, ConfineError,
    UploadOptions,
};
use crate::fsutil;
use crate::path::MAX_PATH_LEN;

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path was refused or not found (see [`ConfineError`]).
    #[error(transparent)]
    Confine(#[from] ConfineError),
    /// A directory operation on something else.
    #[error("path {0:?} is not a directory")]
    NotADirectory(String),
    /// A non-recursive delete of a directory with entries.
    #[error("directory {0:?} is not empty (delete it recursively)")]
    NotEmpty(String),
    /// A tar entry that could place or point something outside the workspace, or a kind of
    /// file that is never accepted.
    #[error("tar entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        /// The entry's path as in the archive.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// An upload past its total size limit.
    #[error("upload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// An upload with more entries than allowed.
    #[error("upload exceeds the limit of {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// A download reached a path longer than [`MAX_PATH_LEN`] bytes (a tree too deep to
    /// download as one archive).
    #[error("{prefix}…: a path is longer than {max} bytes (a tree too deep to download); remove or flatten that tree")]
    TooDeep {
        /// The start of the path (its first 200 bytes, lossily decoded).
        prefix: String,
        /// The limit.
        max: usize,
    },
    /// The input is not a readable tar archive (or ended early).
    #[error("tar: {0}")]
    Archive(String),
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

fn io_err(op: &'static str, path: impl Into<String>) -> impl FnOnce(io::Error) -> FileError {
    let path = path.into();
    move |source| FileError::Io { op, path, source }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (`target` says where to).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character or block device.
    Device,
}

impl FileKind {
    fn of(stat: &Stat) -> Self {
        match fsutil::file_type(stat) {
            FileType::RegularFile => Self::File,
            FileType::Directory => Self::Dir,
            FileType::Symlink => Self::Symlink,
            FileType::Fifo => Self::Fifo,
            FileType::Socket => Self::Socket,
            _ => Self::Device,
        }
    }
}

/// One entry of a listing, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// The name (bytes that are not UTF-8 replaced by U+FFFD).
    pub name: String,
    /// What it is (a symlink is reported as a symlink, not as its target).
    pub kind: FileKind,
    /// Size in bytes (for a symlink, the length of its target).
    pub size: u64,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Last modification.
    pub mtime: Timestamp,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn entry(name: &[u8], stat: &Stat, target: Option<Vec<u8>>) -> FileEntry {
    let millis = (stat.st_mtime as i64)
        .saturating_mul(1000)
        .saturating_add(stat.st_mtime_nsec as i64 / 1_000_000);
    FileEntry {
        name: String::from_utf8_lossy(name).into_owned(),
        kind: FileKind::of(stat),
        size: stat.st_size as u64,
        mode: fsutil::perm_bits(stat),
        mtime: Timestamp(u64::try_from(millis).unwrap_or(0)),
        target: target.map(|t| String::from_utf8_lossy(&t).into_owned()),
    }
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The entry at `user_path` (following symlinks that stay inside, as a download would); the
/// root's name is empty.
pub fn stat(root: &Path, user_path: &Path) -> Result<FileEntry, FileError> {
    let file = open_in_workspace(root, user_path)?;
    let st = rustix::fs::fstat(&file).map_err(|e| io_err("stat", display(user_path))(e.into()))?;
    let name = user_path.file_name().map(OsStr::as_bytes).unwrap_or(b"");
    Ok(entry(name, &st, None))
}

/// The entries of the directory `user_path`, sorted by name; symlinks are listed as symlinks
/// with their targets.
pub fn list_dir(root: &Path, user_path: &Path) -> Result<Vec<FileEntry>, FileError> {
    let shown = display(user_path);
    let dir = open_dir(root, user_path)?;
    let mut names =
        fsutil::read_names(dir.as_fd()).map_err(|e| io_err("read", shown.clone())(e))?;
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::with_capacity(names.len());
    for (name, _) in names {
        let cname = c_name(&name, &shown)?;
        // Gone since the directory was read: not listed.
        let Some(st) = fsutil::lstat_at(dir.as_fd(), &cname).map_err(io_err("stat", &*shown))?
        else {
            continue;
        };
        let target = if FileKind::of(&st) == FileKind::Symlink {
            Some(read_link(dir.as_fd(), &cname, &shown)?)
        } else {
            None
        };
        entries.push(entry(&name, &st, target));
    }
    Ok(entries)
}

/// Opens `user_path` as a directory (confined), or [`FileError::NotADirectory`].
fn open_dir(root: &Path, user_path: &Path) -> Result<File, FileError> {
    let file = open_in_workspace(root, user_path)?;
    let st = rustix::fs::fstat(&file).map_err(|e| io_err("stat", display(user_path))(e.into()))?;
    if fsutil::file_type(&st) != FileType::Directory {
        return Err(FileError::NotADirectory(display(user_path)));
    }
    Ok(file)
}

fn c_name(name: &[u8], shown: &str) -> Result<CString, FileError> {
    CString::new(name).map_err(|_| FileError::Confine(ConfineError::Nul(shown.to_owned())))
}

fn read_link(dir: BorrowedFd<'_>, name: &CString, shown: &str) -> Result<Vec<u8>, FileError> {
    rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new())
        .map(CString::into_bytes)
        .map_err(|e| io_err("readlink", shown)(e.into()))
}

/// What [`download_tar`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TarStats {
    /// Entries written (directories, files, symlinks).
    pub entries: u64,
    /// File content bytes written.
    pub bytes: u64,
    /// Paths left out: fifos, sockets, devices.
    pub skipped: Vec<String>,
}

/// Writes the directory `user_path` of the workspace to `out` as a tar stream (GNU format;
/// entry paths relative to that directory, parents before children, names sorted; modes and
/// mtimes kept, owners 0). Returns `out` and what was written.
pub fn download_tar<W: Write>(
    root: &Path,
    user_path: &Path,
    out: W,
) -> Result<(W, TarStats), FileError> {
    let dir = open_dir(root, user_path)?;
    let mut builder = tar::Builder::new(out);
    let mut stats = TarStats::default();
    walk(&mut builder, dir.as_fd(), &mut stats)?;
    let out = builder
        .into_inner()
        .map_err(|e| FileError::Archive(e.to_string()))?;
    Ok((out, stats))
}

#[allow(clippy::unnecessary_cast)]
fn header(st: &Stat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(fsutil::perm_bits(st));
    header.set_mtime(u64::try_from(st.st_mtime as i64).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(size);
    header
}

/// One directory of a download being written: its path below the downloaded directory, the
/// names still to write (sorted, last first), and its descriptor while it is the deepest.
struct Frame {
    prefix: Vec<u8>,
    names: Vec<Vec<u8>>,
    fd: Option<OwnedFd>,
}

impl Frame {
    fn new(prefix: Vec<u8>, fd: OwnedFd) -> Result<Self, FileError> {
        let mut names: Vec<Vec<u8>> = fsutil::read_names(fd.as_fd())
            .map_err(io_err(
                "read",
                String::from_utf8_lossy(&prefix).into_owned(),
            ))?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Self {
            prefix,
            names,
            fd: Some(fd),
        })
    }
}

/// Writes everything below `base`, depth first, parents before children. Iterative: only the
/// deepest directory's descriptor stays open; a directory is reopened by its path beneath
/// `base` (never following a symlink) when the walk comes back to it. A path longer than
/// [`MAX_PATH_LEN`] ends the download with [`FileError::TooDeep`].
fn walk<W: Write>(
    builder: &mut tar::Builder<W>,
    base: BorrowedFd<'_>,
    stats: &mut TarStats,
) -> Result<(), FileError> {
    let top = reopen(base, b"").map_err(io_err("open", ""))?;
    let mut stack = vec![Frame::new(Vec::new(), top)?];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.pop() else {
            stack.pop();
            continue;
        };
        let dir = match frame.fd.take() {
            Some(fd) => fd,
            None => match reopen(base, &frame.prefix) {
                Ok(fd) => fd,
                // Moved, removed or replaced by a symlink since it was listed.
                Err(e) if is_vanished(&e) => {
                    stack.pop();
                    continue;
                }
                Err(e) => {
                    let shown = String::from_utf8_lossy(&frame.prefix).into_owned();
                    return Err(io_err("open", shown)(e));
                }
            },
        };
        let mut path = frame.prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        if path.len() > MAX_PATH_LEN {
            return Err(FileError::TooDeep {
                prefix: String::from_utf8_lossy(&frame.prefix[..frame.prefix.len().min(200)])
                    .into_owned(),
                max: MAX_PATH_LEN,
            });
        }
        match append_entry(builder, dir.as_fd(), &name, &path, stats)? {
            Some(child) => stack.push(Frame::new(path, child)?),
            None => frame.fd = Some(dir),
        }
    }
    Ok(())
}

/// The directory `prefix` beneath `base` (`base` itself for an empty prefix), following no
/// symlink.
fn reopen(base: BorrowedFd<'_>, prefix: &[u8]) -> io::Result<OwnedFd> {
    if prefix.is_empty() {
        return Ok(rustix::io::dup(base)?);
    }
    fsutil::open_beneath(base, prefix, fsutil::DIR_FLAGS)
}

/// Appends `dir/name` (at `path` in the archive); returns a directory's descriptor, to walk
/// it next.
fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    name: &[u8],
    path_bytes: &[u8],
    stats: &mut TarStats,
) -> Result<Option<OwnedFd>, FileError> {
    let archive = |e: io::Error| FileError::Archive(e.to_string());
    let path = Path::new(OsStr::from_bytes(path_bytes)).to_path_buf();
    let shown_path = String::from_utf8_lossy(path_bytes).into_owned();
    let shown = || shown_path.clone();
    let cname = c_name(name, &shown())?;
    let Some(st) = fsutil::lstat_at(dir, &cname).map_err(io_err("stat", shown()))? else {
        return Ok(None); // removed since the listing
    };
    match fsutil::file_type(&st) {
        FileType::Directory => {
            let child = match fsutil::open_dir_at(dir, &cname) {
                Ok(child) => child,
                // Replaced by a symlink or removed since the stat: not followed.
                Err(e) if is_vanished(&e) => return Ok(None),
                Err(e) => return Err(io_err("open", shown())(e)),
            };
            let mut h = header(&st, tar::EntryType::Directory, 0);
            builder
                .append_data(&mut h, &path, io::empty())
                .map_err(archive)?;
            stats.entries += 1;
            Ok(Some(child))
        }
        FileType::RegularFile => {
            let fd = match rustix::fs::openat(
                dir,
                cname.as_c_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::LOOP) => return Ok(None),
                Err(e) => return Err(io_err("open", shown())(e.into())),
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| io_err("stat", shown())(e.into()))?;
            if fsutil::file_type(&st) != FileType::RegularFile {
                stats.skipped.push(shown());
                return Ok(None);
            }
            #[allow(clippy::unnecessary_cast)]
            let size = st.st_size as u64;
            let mut h = header(&st, tar::EntryType::Regular, size);
            // Exactly `size` bytes whatever the file does meanwhile.
            let reader = File::from(fd).take(size).chain(io::repeat(0)).take(size);
            builder
                .append_data(&mut h, &path, reader)
                .map_err(archive)?;
            stats.entries += 1;
            stats.bytes += size;
            Ok(None)
        }
        FileType::Symlink => {
            let target = match rustix::fs::readlinkat(dir, cname.as_c_str(), Vec::new()) {
                Ok(target) => target,
                Err(Errno::NOENT | Errno::INVAL) => return Ok(None),
                Err(e) => return Err(io_err("readlink", shown())(e.into())),
            };
            let mut h = header(&st, tar::EntryType::Symlink, 0);
            let target = OsStr::from_bytes(target.as_bytes());
            builder
                .append_link(&mut h, &path, target)
                .map_err(archive)?;
            stats.entries += 1;
            Ok(None)
        }
        _ => {
            stats.skipped.push(shown());
            Ok(None)
        }
    }
}

fn is_vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::NOENT | Errno::LOOP | Errno::NOTDIR)
    )
}

/// Limits on a tar upload.
#[derive(Debug, Clone)]
pub struct TarUploadOptions {
    /// The most file content bytes, all files together (default 1 GiB).
    pub max_total_bytes: u64,
    /// The most entries (default 100 000).
    pub max_entries: u64,
}

impl Default for TarUploadOptions {
    fn default() -> Self {
        Self {
            max_total_bytes: 1024 * 1024 * 1024,
            max_entries: 100_000,
        }
    }
}

/// What [`upload_tar`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TarUploadStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// File content bytes written.
    pub bytes: u64,
}

/// Extracts the tar stream `input` into the directory `user_dir` of the workspace (created if
/// missing). Files are written atomically and replace what is there (a symlink in the way is
/// replaced, never written through); directory modes are applied at the end; file mtimes are
/// the upload's time and set-id bits are dropped. See the module documentation for what is
/// refused.
pub fn upload_tar<R: Read>(
    root: &Path,
    user_dir: &Path,
    input: R,
    options: &TarUploadOptions,
) -> Result<TarUploadStats, FileError> {
    let base = relative(user_dir).map_err(|reason| FileError::UnsafeEntry {
        entry: display(user_dir),
        reason,
    })?;
    create_dir_in_workspace(root, &base)?;
    open_dir(root, &base)?;

    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| FileError::Archive(e.to_string()))?;
    let mut stats = TarUploadStats::default();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let mut count = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| FileError::Archive(e.to_string()))?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        count += 1;
        if count > options.max_entries {
            return Err(FileError::TooManyEntries {
                limit: options.max_entries,
            });
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |reason| FileError::UnsafeEntry {
            entry: shown.clone(),
            reason,
        };
        let rel = relative(Path::new(OsStr::from_bytes(&raw))).map_err(unsafe_entry)?;
        let mode = crate::mode::sanitize_mode(entry.header().mode().unwrap_or(0o644));
        if rel.as_os_str().is_empty() {
            // `./` itself: the upload directory.
            if kind == tar::EntryType::Directory {
                dir_modes.push((base.clone(), mode));
            }
            continue;
        }
        let dest = base.join(&rel);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                if stats.bytes.saturating_add(size) > options.max_total_bytes {
                    return Err(FileError::TooLarge {
                        limit: options.max_total_bytes,
                    });
                }
                let upload = UploadOptions {
                    mode,
                    create_parents: true,
                    max_bytes: Some(size),
                };
                let mut writer = AtomicWriter::create(root, &dest, &upload)?;
                let copied = io::copy(&mut entry, &mut writer)
                    .map_err(|e| FileError::Archive(format!("{shown}: {e}")))?;
                if copied != size {
                    return Err(FileError::Archive(format!(
                        "{shown}: {copied} bytes where the header says {size}"
                    )));
                }
                writer.commit()?;
                stats.files += 1;
                stats.bytes += size;
            }
            tar::EntryType::Directory => {
                create_dir_in_workspace(root, &dest)?;
                dir_modes.push((dest, mode));
                stats.dirs += 1;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("a symlink without a target"))?
                    .into_owned();
                check_link_target(&base, &rel, &target).map_err(unsafe_entry)?;
                make_symlink(root, &dest, &target)?;
                stats.symlinks += 1;
            }
            tar::EntryType::Link => return Err(unsafe_entry("hard links are not accepted")),
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(unsafe_entry("device nodes are not accepted"))
            }
            tar::EntryType::Fifo => return Err(unsafe_entry("fifos are not accepted")),
            _ => return Err(unsafe_entry("unsupported entry type")),
        }
    }
    // Deepest first, so a read-only directory is closed only after its children are set.
    dir_modes.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (path, mode) in dir_modes {
        let dir = open_dir(root, &path)?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
            .map_err(|e| io_err("chmod", display(&path))(e.into()))?;
    }
    Ok(stats)
}

/// A path made of normal components only (`.` dropped): no root, no `..`.
fn relative(path: &Path) -> Result<PathBuf, &'static str> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err("the path contains a NUL byte");
    }
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("the path is absolute"),
        }
    }
    Ok(out)
}

/// Whether a symlink at `base/rel` with `target` stays inside the workspace, judged on the
/// path text: relative, and its `..` never climb above the workspace root.
fn check_link_target(base: &Path, rel: &Path, target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("a symlink with an empty target");
    }
    if target.contains(&0) {
        return Err("a symlink target with a NUL byte");
    }
    let target = Path::new(OsStr::from_bytes(target));
    let mut depth = base.join(rel).components().count().saturating_sub(1);
    for component in target.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err("a symlink with an absolute target")
            }
            Component::ParentDir => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("a symlink pointing out of the workspace")?;
            }
            Component::CurDir => {}
            Component::Normal(_) => depth += 1,
        }
    }
    Ok(())
}

/// Creates (or replaces) the symlink `user_path` → `target` atomically: made under a temporary
/// name in the confined parent directory, then renamed into place.
fn make_symlink(root: &Path, user_path: &Path, target: &[u8]) -> Result<(), FileError> {
    let shown = display(user_path);
    let parent = user_path.parent().unwrap_or(Path::new(""));
    let name = user_path
        .file_name()
        .ok_or_else(|| FileError::Confine(ConfineError::Root(shown.clone())))?;
    create_dir_in_workspace(root, parent)?;
    let dir = open_dir(root, parent)?;
    for _ in 0..16 {
        let tmp = fsutil::tmp_name(".conductor-link-");
        match rustix::fs::symlinkat(OsStr::from_bytes(target), &dir, tmp.as_str()) {
            Ok(()) => {}
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(io_err("symlink", shown)(e.into())),
        }
        return match rustix::fs::renameat(&dir, tmp.as_str(), &dir, name) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
                Err(match e {
                    Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => {
                        FileError::Confine(ConfineError::IsDirectory(shown))
                    }
                    e => io_err("rename", shown)(e.into()),
                })
            }
        };
    }
    Err(io_err("symlink", shown)(io::Error::from(
        io::ErrorKind::AlreadyExists,
    )))
}

/// Deletes `user_path`: a file or a symlink (the link, never its target), an empty directory,
/// or with `recursive` a whole tree (never following symlinks inside it). The workspace root
/// itself cannot be deleted.
pub fn delete(root: &Path, user_path: &Path, recursive: bool) -> Result<(), FileError> {
    if recursive {
        return Ok(remove_in_workspace(root, user_path)?);
    }
    let shown = display(user_path);
    let rel = relative(user_path).map_err(|_| {
        if user_path.is_absolute() {
            ConfineError::Absolute(shown.clone())
        } else {
            ConfineError::ParentComponent(shown.clone())
        }
    })?;
    let name = rel
        .file_name()
        .ok_or_else(|| ConfineError::Root(shown.clone()))?;
    let cname = c_name(name.as_bytes(), &shown)?;
    let dir = open_dir(root, rel.parent().unwrap_or(Path::new("")))?;
    let st = fsutil::lstat_at(dir.as_fd(), &cname)
        .map_err(io_err("stat", &*shown))?
        .ok_or_else(|| ConfineError::NotFound(shown.clone()))?;
    let flags = if fsutil::file_type(&st) == FileType::Directory {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    rustix::fs::unlinkat(&dir, cname.as_c_str(), flags).map_err(|e| match e {
        Errno::NOTEMPTY | Errno::EXIST => FileError::NotEmpty(shown),
        Errno::NOENT => FileError::Confine(ConfineError::NotFound(shown)),
        e => io_err("delete", shown)(e.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_are_judged_from_the_link_position() {
        let ok = |base: &str, rel: &str, target: &str| {
            check_link_target(Path::new(base), Path::new(rel), target.as_bytes())
        };
        assert_eq!(ok("", "a", "b"), Ok(()));
        assert_eq!(ok("", "d/a", "../b"), Ok(()));
        assert_eq!(ok("up", "d/a", "../../x"), Ok(()));
        assert_eq!(ok("", "d/a", "x/../../b"), Ok(()));
        assert!(ok("", "a", "../b").is_err());
        assert!(ok("up", "d/a", "../../../x").is_err());
        assert!(ok("", "d/a", "../x/../../b").is_err());
        assert!(ok("", "a", "/etc/passwd").is_err());
        assert!(ok("", "a", "").is_err());
    }

    #[test]
    fn relative_refuses_roots_and_parents() {
        assert_eq!(relative(Path::new("./a/./b")), Ok(PathBuf::from("a/b")));
        assert_eq!(relative(Path::new(".")), Ok(PathBuf::new()));
        assert!(relative(Path::new("/a")).is_err());
        assert!(relative(Path::new("a/../../b")).is_err());
    }
}
