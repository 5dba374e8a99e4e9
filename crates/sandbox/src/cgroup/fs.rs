//! The only place the cgroup manager touches the filesystem: reads, writes, mkdir and rmdir of
//! cgroupfs paths, each turned into a [`CgroupError`] that names the path and what was tried.
//!
//! Writes open the file without `O_CREAT`: on a real cgroupfs the kernel creates every control
//! file on `mkdir`, so a missing file means a missing controller, never something to create. Test
//! fixtures therefore pre-create the files a kernel would.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::CgroupError;

/// Writes `value` to an existing control file in one `write(2)`, as cgroupfs requires.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_raw(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Like [`write`], but a control file that does not exist is not an error: returns `false`.
pub(crate) fn write_if_present(path: &Path, value: &str) -> Result<bool, CgroupError> {
    match write_raw(path, value) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CgroupError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        }),
    }
}

pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    let written = file.write(value.as_bytes())?;
    if written != value.len() {
        return Err(io::Error::new(
            ErrorKind::WriteZero,
            format!("short write: {written} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

/// Reads a whole control file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a control file that may legitimately be absent (controller or kernel feature missing).
pub(crate) fn read_if_present(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates one cgroup directory. An existing directory is reused (its control files are then
/// overwritten by the caller). Permission problems become [`CgroupError::NotWritable`].
pub(crate) fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) if is_permission(&source) => Err(CgroupError::NotWritable {
            path: path.to_owned(),
            source,
        }),
        Err(source) => Err(CgroupError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates `base/relative` one component at a time (like `mkdir -p`, but `base` must exist).
pub(crate) fn mkdir_all(base: &Path, relative: &Path) -> Result<PathBuf, CgroupError> {
    let mut dir = base.to_owned();
    for component in relative.components() {
        dir.push(component);
        mkdir(&dir)?;
    }
    Ok(dir)
}

/// Removes an empty cgroup directory, retrying on `EBUSY` (the kernel releases a cgroup shortly
/// after its last process is reaped) until `deadline`. A directory already gone is fine.
pub(crate) fn rmdir(path: &Path, deadline: Instant) -> Result<(), CgroupError> {
    let mut pause = Duration::from_micros(200);
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

pub(crate) fn is_permission(e: &io::Error) -> bool {
    e.kind() == ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS)
}
