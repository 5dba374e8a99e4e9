//! The store lock: `flock` on `<root>/store.lock`. Everything that writes or reads blobs
//! (snapshot, restore, diff, export, import, verify) holds it shared; garbage collection holds
//! it exclusive. The kernel drops a crashed process's lock, so a crash never wedges the store.

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::FlockOperation;

use crate::error::{at, Error};

/// A held lock; released on drop.
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: File,
}

/// Takes the lock on `path`, waiting for it. Each call opens the file anew, so two threads of
/// one process exclude each other exactly like two processes do.
pub(crate) fn lock(path: &Path, exclusive: bool) -> Result<LockGuard, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(at("open", path))?;
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    rustix::fs::flock(&file, op).map_err(at("flock", path))?;
    Ok(LockGuard { _file: file })
}
