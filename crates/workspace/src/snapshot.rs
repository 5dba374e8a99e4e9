//! Snapshot creation: walk the workspace, reuse the hashes of files whose stat key is cached,
//! copy every other file into the CAS while hashing it (in parallel), then commit the manifest.
//!
//! # Consistency while a task is writing
//!
//! Each file is captured **per-file consistently**: it is read through one descriptor, and its
//! size, mtime and ctime are compared before and after the copy; if they moved (or the length
//! read differs from the size), the copy is thrown away and retried, up to
//! [`MAX_ATTEMPTS`] times, then the snapshot fails with [`Error::Unstable`]. So every file's
//! recorded bytes are bytes the file really held at one instant, never a torn mix of two
//! writes that the timestamps can see. The snapshot as a whole is *not* a single point in time
//! across files: a task writing `a` then `b` may be captured with the new `b` and the old `a`.
//! For a point-in-time view of a running task the caller freezes the task's cgroup
//! (`cgroup.freeze` / the v1 freezer) for the duration of [`SnapshotStore::create_snapshot`] and
//! thaws it afterwards; the executor owns the cgroup, and an incremental snapshot keeps the
//! freeze to tens of milliseconds. We do not copy-on-read the whole tree because it would cost a
//! full copy of every file on every snapshot, which is what the stat cache exists to avoid.
//!
//! # Safety of the walk
//!
//! Symlinks are recorded (their target bytes) and never followed; files are opened beneath the
//! workspace root with `RESOLVE_NO_SYMLINKS`, `O_NOFOLLOW` and `O_NONBLOCK`, and must still be
//! regular files once open. Fifos, sockets and devices are refused ([`SpecialFiles::Refuse`],
//! the default) or left out and listed in the manifest's `skipped` ([`SpecialFiles::Skip`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use conductor_types::Timestamp;
use rayon::prelude::*;
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::cache::StatCache;
use crate::cas::{Pending, CHUNK};
use crate::error::{at, Error};
use crate::fsutil::{self, StatKey};
use crate::hash::Hash;
use crate::manifest::{Entry, Manifest, Node, Skipped, SnapshotId, WorkspaceId, MANIFEST_VERSION};
use crate::scan::{self, ScanEntry, ScanKind};
use crate::store::SnapshotStore;

/// How many times a file that changes while being copied is tried.
pub const MAX_ATTEMPTS: u32 = 5;

/// What to do with fifos, sockets and device nodes in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpecialFiles {
    /// Fail the snapshot with [`Error::SpecialFile`] naming the first one.
    #[default]
    Refuse,
    /// Leave them out, listing them in [`Manifest::skipped`].
    Skip,
}

/// Options for [`SnapshotStore::create_snapshot`].
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Fifos, sockets and devices.
    pub special_files: SpecialFiles,
    /// Ignore the stat cache and read every file (it is still rewritten).
    pub rehash: bool,
}

/// What a snapshot cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Regular files whose hash came from the stat cache (not read).
    pub files_cached: u64,
    /// Regular files read and hashed.
    pub files_read: u64,
    /// Blobs this snapshot added to the store.
    pub blobs_added: u64,
    /// Bytes of those blobs.
    pub bytes_added: u64,
}

/// Where a snapshot's time went (for metrics and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotTimings {
    /// Lock, directory walk and stat-cache load.
    pub scan: Duration,
    /// Reading, hashing and copying the files the cache did not vouch for.
    pub read: Duration,
    /// Making new blobs durable, publishing them, writing the manifest.
    pub commit: Duration,
    /// Everything, the stat-cache save included.
    pub total: Duration,
}

/// A created snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Its manifest (as committed).
    pub manifest: Manifest,
    /// What it cost.
    pub stats: SnapshotStats,
    /// Where the time went.
    pub timings: SnapshotTimings,
}

/// The result of reading one file.
#[derive(Debug)]
pub(crate) struct ReadFile {
    pub hash: Hash,
    pub key: StatKey,
    pub mode: u32,
    /// In `Store` mode: the blob, present or waiting to be published.
    pub blob: Option<Pending>,
}

/// Whether a file read also stores its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMode {
    Store,
    HashOnly,
}

impl SnapshotStore {
    /// Snapshots the directory `dir` of workspace `workspace` as `name`.
    ///
    /// Holds the store lock shared, so it runs alongside other snapshots and restores but never
    /// alongside garbage collection. See the module docs for what is captured when the
    /// workspace is being written meanwhile.
    pub fn create_snapshot(
        &self,
        workspace: &WorkspaceId,
        dir: &Path,
        name: &str,
        options: &SnapshotOptions,
    ) -> Result<Snapshot, Error> {
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::InvalidName(name.to_owned()));
        }
        let started = Instant::now();
        let _lock = self.lock_shared()?;
        let generation = self.gc_generation();
        // Taken before any file is read; see cache.rs for why.
        let taken_at = fsutil::fs_now(&self.tmp).map_err(at("create", &self.tmp))?;
        let scan = scan::scan(dir, &self.pool)?;
        let cache_name = Self::cache_name(workspace);
        let cache = if options.rehash {
            StatCache::default()
        } else {
            StatCache::load(&self.cache.join(&cache_name))
        };
        let verify_cached = cache.gc_generation != generation;
        let scan_time = started.elapsed();

        let mut skipped = Vec::new();
        let mut known: Vec<Option<Hash>> = Vec::with_capacity(scan.entries.len());
        let mut to_read = Vec::new();
        for (index, entry) in scan.entries.iter().enumerate() {
            let mut hit = None;
            match &entry.kind {
                ScanKind::Special(kind) => match options.special_files {
                    SpecialFiles::Refuse => {
                        return Err(Error::SpecialFile {
                            path: entry.path.clone(),
                            kind: *kind,
                        })
                    }
                    SpecialFiles::Skip => skipped.push(Skipped {
                        path: entry.path.clone(),
                        kind: *kind,
                    }),
                },
                ScanKind::File => {
                    hit = cache.lookup(&entry.path, &entry.key);
                    if let Some(hash) = hit {
                        if verify_cached && !self.cas.contains(&hash, entry.key.size)? {
                            hit = None;
                        }
                    }
                    if hit.is_none() {
                        to_read.push(index);
                    }
                }
                ScanKind::Dir | ScanKind::Symlink(_) => {}
            }
            known.push(hit);
        }

        let root = scan.root.as_fd();
        let read_started = Instant::now();
        // Each worker keeps what it read even when a sibling fails, so that every temp blob
        // can be discarded on error.
        let outcomes: Vec<(usize, Result<Option<ReadFile>, Error>)> = self.pool.install(|| {
            to_read
                .par_iter()
                .map_init(
                    || vec![0u8; CHUNK],
                    |buf, &index| {
                        let entry = &scan.entries[index];
                        (index, read_file(self, root, entry, buf, ReadMode::Store))
                    },
                )
                .collect()
        });
        let mut fresh: Vec<Option<ReadFile>> = (0..scan.entries.len()).map(|_| None).collect();
        let mut vanished = vec![false; scan.entries.len()];
        let mut failure = None;
        for (index, outcome) in outcomes {
            match outcome {
                Ok(Some(file)) => fresh[index] = Some(file),
                Ok(None) => vanished[index] = true,
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let pending: Vec<Pending> = fresh
            .iter()
            .flatten()
            .filter_map(|f| f.blob.clone())
            .collect();
        if let Some(e) = failure {
            self.cas.discard(&pending);
            return Err(e);
        }
        let read_time = read_started.elapsed();
        let publish_started = Instant::now();

        let mut entries = Vec::with_capacity(scan.entries.len());
        let mut cache_rows = Vec::with_capacity(scan.entries.len());
        for (index, entry) in scan.entries.iter().enumerate() {
            let node = match &entry.kind {
                ScanKind::Special(_) => continue,
                ScanKind::Dir => Node::Dir,
                ScanKind::Symlink(target) => Node::Symlink {
                    target: target.clone(),
                },
                ScanKind::File if vanished[index] => continue,
                ScanKind::File => {
                    let (hash, key, mode) = match (&fresh[index], known[index]) {
                        (Some(file), _) => (file.hash, file.key, file.mode),
                        (None, Some(hash)) => (hash, entry.key, entry.mode),
                        (None, None) => continue,
                    };
                    cache_rows.push((&entry.path, key, hash));
                    entries.push(Entry {
                        path: entry.path.clone(),
                        mode,
                        node: Node::File {
                            size: key.size,
                            hash,
                            mtime_ns: key.mtime_ns,
                        },
                    });
                    continue;
                }
            };
            entries.push(Entry {
                path: entry.path.clone(),
                mode: entry.mode,
                node,
            });
        }
        drop_orphans(&mut entries);

        let manifest = Manifest {
            version: MANIFEST_VERSION,
            id: SnapshotId::new(),
            name: name.to_owned(),
            workspace: workspace.clone(),
            created_at: Timestamp::now(),
            root_mode: scan.root_mode,
            summary: Manifest::summarize(&entries),
            entries,
            skipped,
        };
        if let Err(reason) = manifest.validate() {
            self.cas.discard(&pending);
            return Err(Error::CorruptManifest {
                path: self.manifest_path(manifest.id),
                reason,
            });
        }
        // Blob fsyncs overlap with encoding; the manifest fsync overlaps with the cache write.
        let (added, (manifest_bytes, cache_bytes)) = self.pool.join(
            || self.cas.publish(&pending),
            || {
                (
                    self.manifest_bytes(&manifest),
                    StatCache::encode(generation, taken_at, cache_rows.iter().cloned()),
                )
            },
        );
        let added = added?;
        let manifest_bytes = manifest_bytes?;
        let (committed, ()) = self.pool.join(
            || self.commit_manifest_bytes(manifest.id, &manifest_bytes),
            || StatCache::save(&self.cache, &cache_name, &cache_bytes),
        );
        committed?;
        let commit_time = publish_started.elapsed();
        let mut stats = SnapshotStats {
            files_cached: known.iter().filter(|h| h.is_some()).count() as u64,
            files_read: fresh.iter().flatten().count() as u64
                + vanished.iter().filter(|v| **v).count() as u64,
            ..Default::default()
        };
        for (blob, added) in pending.iter().zip(added) {
            if added {
                stats.blobs_added += 1;
                stats.bytes_added += blob.len;
            }
        }
        let timings = SnapshotTimings {
            scan: scan_time,
            read: read_time,
            commit: commit_time,
            total: started.elapsed(),
        };
        Ok(Snapshot {
            manifest,
            stats,
            timings,
        })
    }
}

/// Entries whose parent directory vanished mid-walk cannot be restored; leave them out.
fn drop_orphans(entries: &mut Vec<Entry>) {
    let mut dirs: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    dirs.insert(Vec::new());
    entries.retain(|entry| {
        let keep = dirs.contains(entry.path.parent_bytes());
        if keep && entry.node == Node::Dir {
            dirs.insert(entry.path.as_bytes().to_vec());
        }
        keep
    });
}

/// Reads `buf.len()` bytes or up to end of file; returns how many.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads one regular file beneath `root`, hashing it and (in `Store` mode) copying it into the
/// CAS, retrying while it changes underneath. `None`: the file vanished.
pub(crate) fn read_file(
    store: &SnapshotStore,
    root: BorrowedFd<'_>,
    entry: &ScanEntry,
    buf: &mut [u8],
    mode: ReadMode,
) -> Result<Option<ReadFile>, Error> {
    let display = || entry.path.as_path().to_path_buf();
    for _ in 0..MAX_ATTEMPTS {
        let fd = match fsutil::open_beneath(root, entry.path.as_bytes(), fsutil::READ_FLAGS) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
                return Err(Error::Changed {
                    path: entry.path.clone(),
                    what: "became a symlink".into(),
                })
            }
            Err(e) => return Err(Error::io("open", display(), e)),
        };
        let before = rustix::fs::fstat(&fd).map_err(at("stat", display()))?;
        if fsutil::file_type(&before) != FileType::RegularFile {
            return Err(Error::Changed {
                path: entry.path.clone(),
                what: "no longer a regular file".into(),
            });
        }
        let key = StatKey::of(&before);
        let mut file = File::from(fd);
        let first = read_full(&mut file, buf).map_err(at("read", display()))?;
        let stable = |file: &File, len: u64| -> Result<bool, Error> {
            let after = rustix::fs::fstat(file).map_err(at("stat", display()))?;
            Ok(StatKey::of(&after) == key && len == key.size)
        };
        if first < buf.len() {
            // The whole file fits in the buffer: hash first, write only if new.
            if !stable(&file, first as u64)? {
                continue;
            }
            let bytes = &buf[..first];
            let (hash, blob) = match mode {
                ReadMode::Store => {
                    let blob = store.cas.put_bytes(bytes)?;
                    (blob.hash, Some(blob))
                }
                ReadMode::HashOnly => (Hash::of(bytes), None),
            };
            return Ok(Some(ReadFile {
                hash,
                key,
                mode: fsutil::recorded_mode(&before),
                blob,
            }));
        }
        let mut len = first as u64;
        match mode {
            ReadMode::HashOnly => {
                let mut hasher = blake3::Hasher::new();
                hasher.update(&buf[..first]);
                loop {
                    let n = read_full(&mut file, buf).map_err(at("read", display()))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    len += n as u64;
                }
                if !stable(&file, len)? {
                    continue;
                }
                return Ok(Some(ReadFile {
                    hash: Hash::from(hasher.finalize()),
                    key,
                    mode: fsutil::recorded_mode(&before),
                    blob: None,
                }));
            }
            ReadMode::Store => {
                let mut writer = store.cas.writer()?;
                let copied = (|| -> io::Result<u64> {
                    writer.write_all(&buf[..first])?;
                    let mut len = first as u64;
                    loop {
                        let n = read_full(&mut file, buf)?;
                        if n == 0 {
                            return Ok(len);
                        }
                        writer.write_all(&buf[..n])?;
                        len += n as u64;
                    }
                })();
                let len = match copied {
                    Ok(len) => len,
                    Err(e) => {
                        store.cas.abort(writer);
                        return Err(Error::io("copy", display(), e));
                    }
                };
                if !stable(&file, len)? {
                    store.cas.abort(writer);
                    continue;
                }
                let blob = store.cas.finish(writer, None)?;
                return Ok(Some(ReadFile {
                    hash: blob.hash,
                    key,
                    mode: fsutil::recorded_mode(&before),
                    blob: Some(blob),
                }));
            }
        }
    }
    Err(Error::Unstable {
        path: entry.path.clone(),
        attempts: MAX_ATTEMPTS,
    })
}
