//! File-system helpers shared by snapshot, restore and the CAS: descriptor-relative opens that
//! never follow symlinks, stat keys, temp names, atomic file replacement; tree removal lives in `walk.rs`.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::path::RelPath;

/// Flags for reading a directory without following a symlink in its place.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Flags for reading a regular file that may have been replaced by a symlink or a fifo.
pub(crate) const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// Opens the directory `path` (the last component must not be a symlink).
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, DIR_FLAGS, Mode::empty())?)
}

/// Opens the directory `name` in `dir`, refusing a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// Opens `rel` beneath `root` with `flags`, following no symlink anywhere on the way (a symlink
/// component fails with `ELOOP`). Uses `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and
/// on kernels without it walks component by component with `O_NOFOLLOW`.
pub(crate) fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve) {
        Err(Errno::NOSYS) => {}
        Err(Errno::AGAIN) => {
            // openat2 may ask for a retry when a rename raced the lookup.
            return Ok(rustix::fs::openat2(
                root,
                rel,
                flags,
                Mode::empty(),
                resolve,
            )?);
        }
        other => return Ok(other?),
    }
    let mut components = rel.split(|&b| b == b'/').peekable();
    let mut dir: Option<OwnedFd> = None;
    while let Some(component) = components.next() {
        if component.is_empty() || component == b"." || component == b".." {
            return Err(io::Error::from_raw_os_error(libc_exdev()));
        }
        let parent = dir.as_ref().map_or(root, |fd| fd.as_fd());
        if components.peek().is_none() {
            return Ok(rustix::fs::openat(
                parent,
                component,
                flags | OFlags::NOFOLLOW,
                Mode::empty(),
            )?);
        }
        dir = Some(rustix::fs::openat(
            parent,
            component,
            DIR_FLAGS,
            Mode::empty(),
        )?);
    }
    Err(io::Error::from_raw_os_error(Errno::INVAL.raw_os_error()))
}

fn libc_exdev() -> i32 {
    Errno::XDEV.raw_os_error()
}

/// Opens the directory `rel` (or the root itself for `None`) beneath `root`, following no
/// symlink.
pub(crate) fn open_dir_beneath(root: BorrowedFd<'_>, rel: Option<&RelPath>) -> io::Result<OwnedFd> {
    match rel {
        None => Ok(rustix::io::dup(root)?),
        Some(rel) => open_beneath(root, rel.as_bytes(), DIR_FLAGS),
    }
}

/// What identifies a file's version cheaply: if none of these changed, neither did the bytes
/// (given the racy-timestamp rule in `cache.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StatKey {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
impl StatKey {
    pub(crate) fn of(stat: &Stat) -> Self {
        Self {
            size: stat.st_size as u64,
            mtime_ns: stat.st_mtime as i64 * 1_000_000_000 + stat.st_mtime_nsec as i64,
            ctime_ns: stat.st_ctime as i64 * 1_000_000_000 + stat.st_ctime_nsec as i64,
            ino: stat.st_ino as u64,
            dev: stat.st_dev as u64,
        }
    }
}

/// Permission bits of a stat (`mode & 0o7777`).
#[allow(clippy::unnecessary_cast)]
pub(crate) fn perm_bits(stat: &Stat) -> u32 {
    (stat.st_mode as u32) & 0o7777
}

/// The mode a snapshot records for a file or directory: its permission bits through
/// [`crate::sanitize_mode`], so no set-id bit is ever recorded (nor restored).
pub(crate) fn recorded_mode(stat: &Stat) -> u32 {
    crate::mode::sanitize_mode(perm_bits(stat))
}

/// The file type of a stat.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode as _)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`, `None` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A name for a temporary file unlikely to collide (pid, counter, clock); callers create it
/// with `O_EXCL` and retry on `EEXIST`.
pub(crate) fn tmp_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}-{n}-{nanos:x}", std::process::id())
}

/// Creates a new file for writing in `dir` under a fresh temporary name with `prefix`.
pub(crate) fn create_tmp_at(
    dir: BorrowedFd<'_>,
    prefix: &str,
    mode: u32,
) -> io::Result<(String, File)> {
    for _ in 0..16 {
        let name = tmp_name(prefix);
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(dir, name.as_str(), flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => return Ok((name, File::from(fd))),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name",
    ))
}

/// Replaces `dir/name` with `bytes` atomically (temp file, rename). With `durable`, the file is
/// fsynced before the rename and the directory after it, so the new contents survive a power
/// loss once this returns.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir_fd = open_dir(dir)?;
    let (tmp, mut file) = create_tmp_at(dir_fd.as_fd(), ".tmp-", 0o644)?;
    let result = (|| {
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        rustix::fs::renameat(&dir_fd, tmp.as_str(), &dir_fd, name)?;
        if durable {
            rustix::fs::fsync(&dir_fd)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(&dir_fd, tmp.as_str(), AtFlags::empty());
    }
    result
}

/// The names in a directory, `.` and `..` excluded.
pub(crate) fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, FileType)>> {
    let mut reader = Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((name.to_vec(), entry.file_type()));
        }
    }
    Ok(names)
}

/// Removes `dir/name` whatever it is, a whole directory tree included, at any depth and
/// with a bounded number of descriptors (see `walk.rs`).
pub(crate) use crate::walk::remove_at;

/// Sets the mode of the directory `dir/name` without following a symlink in its place: through
/// a descriptor when it can be opened, else with `fchmodat(AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn chmod_dir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    match open_dir_at(dir, name) {
        Ok(fd) => Ok(rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?),
        Err(_) => Ok(rustix::fs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(mode),
            AtFlags::SYMLINK_NOFOLLOW,
        )?),
    }
}

/// The file system's idea of "now": the ctime of a file just touched in `dir`. Timestamps come
/// from the kernel's coarse clock, so this is what a file written now would carry.
pub(crate) fn fs_now(dir: &Path) -> io::Result<i64> {
    let dir_fd = open_dir(dir)?;
    let (name, file) = create_tmp_at(dir_fd.as_fd(), ".clock-", 0o600)?;
    let stat = rustix::fs::fstat(&file);
    let _ = rustix::fs::unlinkat(&dir_fd, name.as_str(), AtFlags::empty());
    Ok(StatKey::of(&stat?).ctime_ns)
}
