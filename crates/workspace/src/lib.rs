//! Workspaces for Conductor: snapshots in a content-addressed store of file contents (BLAKE3,
//! stored once however many workspaces and snapshots hold them), snapshot manifests, exact
//! restore, diff, garbage collection, `.tar.zst` export/import; path confinement and the file
//! API's operations; disk quotas on loop-mounted images; git checkouts and diffs; the cleanup
//! policy; removing and measuring trees at any depth. Pure library, Linux only, no server types:
//! the server and CLI map their workspace records onto [`WorkspaceId`] and a directory.
//!
//! ```no_run
//! use conductor_workspace::{DiffAgainst, SnapshotOptions, SnapshotStore, WorkspaceId};
//! # fn main() -> Result<(), conductor_workspace::Error> {
//! let store = SnapshotStore::open("/home/me/.conductor")?;
//! let ws = WorkspaceId::new("ws-1").expect("valid id");
//! let dir = std::path::Path::new("/home/me/.conductor/workspaces/ws-1");
//! let snap = store.create_snapshot(&ws, dir, "before-deployment", &SnapshotOptions::default())?;
//! // … the agent breaks things …
//! let changes = store.diff(snap.manifest.id, DiffAgainst::Directory(dir))?;
//! store.restore(snap.manifest.id, dir)?;
//! # Ok(()) }
//! ```
//!
//! Module map: `store` (the [`SnapshotStore`], layout, list/delete), `snapshot` (create;
//! consistency under concurrent writers), `cache` (stat cache, racy-timestamp rule), `cas` (blobs),
//! `restore`, `diff`, `gc` (the lock argument), `archive` (export/import), `confine` (file
//! API paths), `files` (listing, tar download/upload, delete), `quota` (loop-mounted ext4
//! images), `git` (clone at a ref, diff against it), `policy` (cleanup policy and the
//! sweeper's decision, pure), `walk` (removing and measuring trees at any depth, iteratively),
//! `command` (running external tools), `manifest`/`path`/`hash` (the data), `mode` (which
//! permission bits user content keeps on the host), `sparse` (zero blocks stored and restored
//! as holes).

mod archive;
mod cache;
mod cas;
mod changes;
mod command;
pub mod confine;
mod diff;
mod error;
pub mod files;
mod fsutil;
mod gc;
pub mod git;
pub mod gitsource;
mod hash;
mod lock;
mod manifest;
mod mode;
mod path;
pub mod policy;
pub mod quota;
mod restore;
mod scan;
mod snapshot;
mod sparse;
mod store;
pub mod version;
mod walk;

pub use archive::{ImportOptions, DEFAULT_IMPORT_MAX};
pub use changes::{tree_state, TreeState};
pub use confine::{
    create_dir_in_workspace, open_in_workspace, remove_in_workspace, resolve_in_workspace,
    version_in_workspace, AtomicWriter, ConfineError, UploadOptions,
};
pub use diff::{diff_entries, Change, ChangeKind, DiffAgainst, EntryMeta};
pub use error::Error;
pub use files::{
    delete, download_tar, list_dir, stat, upload_tar, FileEntry, FileError, FileKind, TarStats,
    TarUploadOptions, TarUploadStats,
};
pub use gc::GcStats;
pub use git::{
    clone_at, diff_against, ChangedFile, Checkout, FileChange, GitDiff, GitError, GitOptions,
    RefKind,
};
pub use gitsource::{
    check_source, GitSandbox, GitSource, SandboxedGit, SandboxedOutput, SourceError,
    SANDBOX_WORKSPACE,
};
pub use hash::{Hash, ParseHashError};
pub use manifest::{
    Entry, EntryType, Manifest, Node, ParseIdError, Skipped, SnapshotId, SnapshotInfo, SpecialKind,
    Summary, WorkspaceId, MANIFEST_VERSION,
};
pub use mode::{sanitize_mode, STRIPPED_BITS};
pub use path::{InvalidPath, RelPath, MAX_PATH_LEN};
pub use policy::{
    due, plan_sweep, CleanupPolicy, Due, ParsePolicyError, SweepCandidate, SweepPlan,
};
pub use quota::{
    mounts_under, unbind, DiskUsage, MountState, QuotaError, QuotaFs, MIN_QUOTA_BYTES,
};
pub use restore::RestoreStats;
pub use snapshot::{
    Snapshot, SnapshotOptions, SnapshotStats, SnapshotTimings, SpecialFiles, MAX_ATTEMPTS,
};
pub use store::{CasStats, SnapshotStore, SnapshotStoreOptions};

/// The old name of [`SnapshotStore`] (kept one release): the server has a task store
/// (`conductor_core::Store`) and an environment store (`conductor_envs::EnvStore`) too.
#[deprecated(note = "renamed SnapshotStore")]
pub type Store = SnapshotStore;

/// The old name of [`SnapshotStoreOptions`] (kept one release).
#[deprecated(note = "renamed SnapshotStoreOptions")]
pub type StoreOptions = SnapshotStoreOptions;
pub use walk::{remove_contents, remove_tree, tree_size, TreeError};
