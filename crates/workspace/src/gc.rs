//! Garbage collection: delete the blobs no manifest references.
//!
//! # Why GC never deletes a referenced blob
//!
//! A snapshot (and an import) holds the store lock **shared** from before it looks at the CAS
//! until after its manifest is committed; GC holds it **exclusive** for its whole run. So when
//! GC runs, no snapshot is between "found or wrote blob X" and "committed the manifest naming
//! X": every blob is either named by a manifest already on disk — which GC reads, keeping X —
//! or by no manifest, and none can appear until GC releases the lock. A snapshot that starts
//! after GC finds deleted blobs missing (`contains` is checked at use, and cached hashes are
//! re-checked after any GC thanks to the generation number GC bumps before deleting), so it
//! writes them again. GC refuses to run if any manifest cannot be parsed, rather than guess
//! what it references.
//!
//! # Crash safety
//!
//! GC only unlinks whole blobs that no manifest names and temp files that no writer owns, each
//! unlink atomic; it never rewrites a manifest or a referenced blob. A crash mid-GC leaves some
//! garbage for the next run, nothing else. A crash mid-snapshot leaves unreferenced blobs and
//! temp files (collected later) and no manifest, because the manifest is committed last, after
//! its blobs were made durable and published (a blob is renamed into `cas/` only once its bytes
//! are on disk, see `cas.rs`), so no manifest can name bytes a crash takes back. Deleting a
//! snapshot fsyncs the manifest directory, so a deleted manifest cannot reappear after a crash with
//! its blobs already collected.

use std::collections::HashSet;

use serde::Deserialize;

use crate::error::{at, Error};
use crate::hash::Hash;
use crate::store::{parse_manifest, SnapshotStore};

/// What a GC run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Manifests read.
    pub manifests: u64,
    /// Blobs kept (referenced).
    pub blobs_kept: u64,
    /// Blobs deleted.
    pub blobs_removed: u64,
    /// Bytes freed by those.
    pub bytes_freed: u64,
    /// Temporary files left by crashed writers, deleted.
    pub temp_files_removed: u64,
}

/// Just the hashes of a manifest (fast to parse).
#[derive(Deserialize)]
struct HashesOnly {
    entries: Vec<HashOnly>,
}

#[derive(Deserialize)]
struct HashOnly {
    #[serde(default)]
    hash: Option<Hash>,
}

impl SnapshotStore {
    /// Deletes every blob that no snapshot references, and temp files left by crashes. Waits
    /// for running snapshots, restores, exports and imports to finish, and makes new ones wait.
    pub fn gc(&self) -> Result<GcStats, Error> {
        let _lock = self.lock_exclusive()?;
        let mut stats = GcStats::default();
        let generation = self.gc_generation() + 1;
        self.set_gc_generation(generation)?;

        let mut referenced: HashSet<Hash> = HashSet::new();
        for id in self.snapshot_ids()? {
            let path = self.manifest_path(id);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", path, e)),
            };
            let hashes: HashesOnly = match serde_json::from_slice(&bytes) {
                Ok(hashes) => hashes,
                // Unparseable: let the full parser say precisely why, and stop.
                Err(e) => {
                    parse_manifest(&bytes, &path)?;
                    return Err(Error::CorruptManifest {
                        path,
                        reason: e.to_string(),
                    });
                }
            };
            referenced.extend(hashes.entries.into_iter().filter_map(|e| e.hash));
            stats.manifests += 1;
        }

        stats.temp_files_removed = self.cas.clear_tmp()?;
        // Manifest temp files too: no writer holds the lock.
        for entry in std::fs::read_dir(&self.snapshots).map_err(at("read", &self.snapshots))? {
            let entry = entry.map_err(at("read", &self.snapshots))?;
            if entry.file_name().as_encoded_bytes().starts_with(b".tmp-") {
                let _ = std::fs::remove_file(entry.path());
                stats.temp_files_removed += 1;
            }
        }

        for blob in self.cas.list()? {
            if referenced.contains(&blob.hash) {
                stats.blobs_kept += 1;
            } else {
                self.cas.remove(&blob.hash)?;
                stats.blobs_removed += 1;
                stats.bytes_freed += blob.size;
            }
        }
        Ok(stats)
    }
}
