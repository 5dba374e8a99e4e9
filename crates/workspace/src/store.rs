//! [`SnapshotStore`]: the snapshot store under one root directory, and the operations that only
//! read or delete manifests. Creation is in `snapshot.rs`, restore in `restore.rs`, diff in
//! `diff.rs`, garbage collection in `gc.rs`, export/import in `archive.rs`.
//!
//! Layout:
//!
//! ```text
//! <root>/
//!   store.lock            flock: shared for snapshot/restore/diff/export/import, exclusive for GC
//!   gc.generation         bumped by every GC before it deletes anything
//!   cas/ab/cdef…          blobs, 0444, named by BLAKE3 of their contents
//!   cas/tmp/              blobs being written (cleared by GC)
//!   snapshots/<id>.json   manifests (written durably: temp, fsync, rename, fsync dir)
//!   cache/<workspace>.bin   stat caches (accelerators, never trusted beyond their stat keys)
//! ```

use std::path::{Path, PathBuf};

use conductor_types::Timestamp;
use serde::Deserialize;

use crate::cas::Cas;
use crate::error::{at, Error};
use crate::fsutil;
use crate::hash::Hash;
use crate::lock::{self, LockGuard};
use crate::manifest::{Manifest, SnapshotId, SnapshotInfo, Summary, WorkspaceId};

/// How a store works.
#[derive(Debug, Clone)]
pub struct SnapshotStoreOptions {
    /// Threads that hash, copy and verify files (default: the available cores, at most 8).
    pub threads: usize,
}

impl Default for SnapshotStoreOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism()
                .map(|n| n.get().min(8))
                .unwrap_or(2),
        }
    }
}

/// A snapshot store rooted at one directory (`~/.conductor` in the standalone layout). Safe to
/// share between threads and to open from several processes at once: the store lock orders
/// snapshot creation against garbage collection.
#[derive(Debug)]
pub struct SnapshotStore {
    pub(crate) root: PathBuf,
    pub(crate) cas: Cas,
    pub(crate) snapshots: PathBuf,
    pub(crate) cache: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) pool: rayon::ThreadPool,
}

/// Blob counts, for quotas and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CasStats {
    /// Distinct blobs.
    pub blobs: u64,
    /// Their total length.
    pub bytes: u64,
}

/// The header of a manifest, read without building its entries.
#[derive(Deserialize)]
struct ManifestHeader {
    id: SnapshotId,
    name: String,
    workspace: WorkspaceId,
    created_at: Timestamp,
    summary: Summary,
}

impl SnapshotStore {
    /// Opens the store at `root`, creating its directories.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        Self::open_with(root, SnapshotStoreOptions::default())
    }

    /// Opens the store at `root` with `options`.
    pub fn open_with(
        root: impl Into<PathBuf>,
        options: SnapshotStoreOptions,
    ) -> Result<Self, Error> {
        let root = root.into();
        let snapshots = root.join("snapshots");
        let cache = root.join("cache");
        let tmp = root.join("tmp");
        for dir in [&snapshots, &cache, &tmp] {
            std::fs::create_dir_all(dir).map_err(at("create", dir))?;
        }
        let cas = Cas::open(root.join("cas"))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads.max(1))
            .thread_name(|i| format!("conductor-cas-{i}"))
            .build()
            .map_err(|e| Error::io("spawn", &root, std::io::Error::other(e)))?;
        Ok(Self {
            root,
            cas,
            snapshots,
            cache,
            tmp,
            pool,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this hash is stored (read-only file).
    pub fn blob_path(&self, hash: &Hash) -> PathBuf {
        self.cas.blob_path(hash)
    }

    pub(crate) fn manifest_path(&self, id: SnapshotId) -> PathBuf {
        self.snapshots.join(format!("{id}.json"))
    }

    pub(crate) fn lock_shared(&self) -> Result<LockGuard, Error> {
        lock::lock(&self.root.join("store.lock"), false)
    }

    pub(crate) fn lock_exclusive(&self) -> Result<LockGuard, Error> {
        lock::lock(&self.root.join("store.lock"), true)
    }

    /// The current GC generation (0 before the first GC).
    pub(crate) fn gc_generation(&self) -> u64 {
        std::fs::read_to_string(self.root.join("gc.generation"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn set_gc_generation(&self, generation: u64) -> Result<(), Error> {
        fsutil::write_atomic(
            &self.root,
            "gc.generation",
            generation.to_string().as_bytes(),
            true,
        )
        .map_err(at("write", self.root.join("gc.generation")))
    }

    /// Reads and checks the manifest of snapshot `id`.
    pub fn manifest(&self, id: SnapshotId) -> Result<Manifest, Error> {
        let path = self.manifest_path(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::SnapshotNotFound(id))
            }
            Err(e) => return Err(Error::io("read", path, e)),
        };
        parse_manifest(&bytes, &path)
    }

    /// Commits a manifest whose blobs are all published (hence durable, see `cas.rs`): it is
    /// written to a temp file, fsynced, renamed into place and the directory fsynced. A crash
    /// at any point leaves either no manifest or a complete one whose blobs are on disk.
    pub(crate) fn commit_manifest(&self, manifest: &Manifest) -> Result<(), Error> {
        let bytes = self.manifest_bytes(manifest)?;
        self.commit_manifest_bytes(manifest.id, &bytes)
    }

    /// The manifest's JSON (compact; deterministic: struct field order, entries sorted).
    pub(crate) fn manifest_bytes(&self, manifest: &Manifest) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(manifest).map_err(|e| Error::CorruptManifest {
            path: self.manifest_path(manifest.id),
            reason: e.to_string(),
        })
    }

    /// Writes manifest JSON durably (see [`SnapshotStore::commit_manifest`]).
    pub(crate) fn commit_manifest_bytes(&self, id: SnapshotId, bytes: &[u8]) -> Result<(), Error> {
        fsutil::write_atomic(&self.snapshots, &format!("{id}.json"), bytes, true)
            .map_err(at("write", self.manifest_path(id)))
    }

    /// The ids of every manifest file present.
    pub(crate) fn snapshot_ids(&self) -> Result<Vec<SnapshotId>, Error> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.snapshots).map_err(at("read", &self.snapshots))? {
            let entry = entry.map_err(at("read", &self.snapshots))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(id) = stem.parse() {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Every snapshot (of one workspace, or all), oldest first.
    pub fn list_snapshots(
        &self,
        workspace: Option<&WorkspaceId>,
    ) -> Result<Vec<SnapshotInfo>, Error> {
        let mut infos = Vec::new();
        for id in self.snapshot_ids()? {
            let path = self.manifest_path(id);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // Deleted since the directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", path, e)),
            };
            let header: ManifestHeader =
                serde_json::from_slice(&bytes).map_err(|e| Error::CorruptManifest {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if workspace.is_some_and(|w| *w != header.workspace) {
                continue;
            }
            infos.push(SnapshotInfo {
                id: header.id,
                name: header.name,
                workspace: header.workspace,
                created_at: header.created_at,
                summary: header.summary,
            });
        }
        infos.sort_by_key(|info| (info.created_at, info.id));
        Ok(infos)
    }

    /// Deletes snapshot `id`'s manifest (durably: the directory is fsynced, so a later GC can
    /// never free blobs of a manifest that comes back after a crash). Its blobs stay until
    /// [`SnapshotStore::gc`].
    pub fn delete_snapshot(&self, id: SnapshotId) -> Result<(), Error> {
        let path = self.manifest_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::SnapshotNotFound(id))
            }
            Err(e) => return Err(Error::io("remove", path, e)),
        }
        let dir = fsutil::open_dir(&self.snapshots).map_err(at("open", &self.snapshots))?;
        rustix::fs::fsync(&dir).map_err(at("fsync", &self.snapshots))
    }

    /// Counts the blobs in the store.
    pub fn cas_stats(&self) -> Result<CasStats, Error> {
        let blobs = self.cas.list()?;
        Ok(CasStats {
            blobs: blobs.len() as u64,
            bytes: blobs.iter().map(|b| b.size).sum(),
        })
    }

    /// Re-reads every blob of snapshot `id` and checks its hash and size.
    pub fn verify_snapshot(&self, id: SnapshotId) -> Result<(), Error> {
        let _lock = self.lock_shared()?;
        let manifest = self.manifest(id)?;
        let files: Vec<(Hash, u64)> = manifest
            .entries
            .iter()
            .filter_map(|e| match e.node {
                crate::manifest::Node::File { hash, size, .. } => Some((hash, size)),
                _ => None,
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        use rayon::prelude::*;
        self.pool.install(|| {
            files.par_iter().try_for_each_init(
                || vec![0u8; crate::cas::CHUNK],
                |buf, (hash, size)| {
                    self.cas
                        .copy_verified(hash, *size, &mut std::io::sink(), "verify", buf)
                },
            )
        })
    }

    /// Where a workspace's stat cache lives.
    pub(crate) fn cache_name(workspace: &WorkspaceId) -> String {
        format!("{}.bin", workspace.as_str())
    }
}

/// Parses and validates manifest bytes read from `path`.
pub(crate) fn parse_manifest(bytes: &[u8], path: &Path) -> Result<Manifest, Error> {
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::CorruptManifest {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    manifest
        .validate()
        .map_err(|reason| Error::CorruptManifest {
            path: path.to_path_buf(),
            reason,
        })?;
    Ok(manifest)
}
