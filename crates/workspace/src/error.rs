//! `Error`: every way a store operation (snapshot, restore, diff, delete, GC, export, import)
//! can fail, each variant carrying what was being done and to what.

use std::io;
use std::path::PathBuf;

use crate::hash::Hash;
use crate::manifest::{SnapshotId, SpecialKind};
use crate::path::RelPath;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `rename`, …).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error the system returned.
        source: io::Error,
    },
    /// The workspace directory (or restore target) is not a directory, or is a symlink.
    #[error("{0}: not a directory (symlinks are not followed)")]
    NotADirectory(PathBuf),
    /// A special file in the workspace and [`crate::SpecialFiles::Refuse`] in force.
    #[error("{path}: {kind} cannot be snapshotted (remove it, or skip special files)")]
    SpecialFile {
        /// Where it is in the workspace.
        path: RelPath,
        /// What it is.
        kind: SpecialKind,
    },
    /// A file kept changing while it was being copied, past the retries.
    #[error("{path}: changed while being copied {attempts} times; stop the writer or freeze the task's cgroup")]
    Unstable {
        /// The file.
        path: RelPath,
        /// How many copies were tried.
        attempts: u32,
    },
    /// An entry changed type (or vanished) between the directory scan and reading it.
    #[error("{path}: changed during the snapshot ({what})")]
    Changed {
        /// The entry.
        path: RelPath,
        /// What was seen.
        what: String,
    },
    /// A path in the tree longer than [`crate::MAX_PATH_LEN`] bytes: a tree too deep to
    /// snapshot or diff (the walk stops there instead of going deeper).
    #[error("{prefix}…: a path in the workspace is longer than {max} bytes (a tree too deep to snapshot); remove or flatten that tree")]
    TooDeep {
        /// The start of the path (its first 200 bytes, lossily decoded).
        prefix: String,
        /// The limit.
        max: usize,
    },
    /// A snapshot name that is empty, longer than 256 bytes or has control characters.
    #[error("invalid snapshot name {0:?}: 1 to 256 bytes without control characters")]
    InvalidName(String),
    /// No snapshot with this id.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(SnapshotId),
    /// Import of a snapshot whose id exists with different contents.
    #[error("snapshot {0} already exists with different contents")]
    SnapshotExists(SnapshotId),
    /// A manifest that cannot be read back.
    #[error("manifest {path}: {reason}")]
    CorruptManifest {
        /// Its file (or the archive entry).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A blob a manifest names is not in the store.
    #[error("blob {0} is missing from the store")]
    MissingBlob(Hash),
    /// Contents that do not hash to their name.
    #[error("blob {expected} is corrupt: its contents hash to {actual} ({context})")]
    CorruptBlob {
        /// The name (the hash the manifest expects).
        expected: Hash,
        /// What the bytes hash to.
        actual: Hash,
        /// Where it was read (`restore`, `import`, `export`, `verify`).
        context: &'static str,
    },
    /// A blob whose length differs from the manifest's size for it.
    #[error("blob {hash} has {actual} bytes where the manifest says {expected}")]
    BlobSize {
        /// The blob.
        hash: Hash,
        /// The manifest's size.
        expected: u64,
        /// The blob's length.
        actual: u64,
    },
    /// An import whose manifest declares more bytes of files than the import limit.
    #[error(
        "the snapshot declares {declared} bytes of files, over the import limit of {limit} bytes"
    )]
    ImportTooLarge {
        /// The sum of the manifest's file sizes.
        declared: u64,
        /// The limit.
        limit: u64,
    },
    /// An archive entry whose path is absolute, has `..`, or is not one this format writes.
    #[error("archive entry {0:?} refused: only manifest.json and blobs/<hash> are allowed")]
    UnsafeArchivePath(String),
    /// An archive that is not a snapshot export.
    #[error("archive: {0}")]
    Archive(String),
}

impl Error {
    /// An `Io` error for `op` on `path`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}

/// [`Error::TooDeep`] for a path past the limit that starts with `path`.
pub(crate) fn too_deep(path: &[u8]) -> Error {
    Error::TooDeep {
        prefix: String::from_utf8_lossy(&path[..path.len().min(200)]).into_owned(),
        max: crate::path::MAX_PATH_LEN,
    }
}

/// `map_err` shorthand: `.map_err(at("open", &path))`.
pub(crate) fn at<E: Into<io::Error>>(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(E) -> Error {
    let path = path.into();
    move |source| Error::io(op, path, source)
}
