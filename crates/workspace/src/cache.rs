//! The per-workspace stat cache (`<root>/cache/<workspace>.bin`, a private binary format): path → (size, mtime, ctime,
//! inode, device) → BLAKE3. A file whose stat key is unchanged since the last snapshot is not
//! read again, which is what makes an incremental snapshot cost a directory walk.
//!
//! Racy timestamps: file timestamps come from the kernel's coarse clock, so a file written
//! twice within one tick keeps the same mtime and ctime. A key is therefore only cached when
//! its ctime is strictly older than the file-system time taken *before* the file was read
//! (`fs_now` at the start of the snapshot): any later change to the file sets its ctime to at
//! least that time, so it cannot match the cached key. Files changed in the snapshot's own tick
//! are simply hashed again next time (git's "racily clean" rule).
//!
//! The cache is only an accelerator: it is written without fsync, and a missing, torn or
//! foreign-version cache file is treated as empty. A cached hash is trusted only while its blob
//! can exist: the cache records the GC generation it was written under, and after any GC the
//! snapshot checks that each cached blob is still present.

use std::collections::HashMap;
use std::path::Path;

use crate::fsutil::{self, StatKey};
use crate::hash::Hash;
use crate::path::RelPath;

/// File magic and format version: `CWSC` then a u32 version, little endian throughout.
const MAGIC: &[u8; 4] = b"CWSC";
const CACHE_VERSION: u32 = 1;

/// A loaded cache.
#[derive(Debug, Default)]
pub(crate) struct StatCache {
    entries: HashMap<RelPath, (StatKey, Hash)>,
    /// The GC generation the cache was written under.
    pub gc_generation: u64,
}

/// Reads little-endian fields from a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

impl StatCache {
    /// Reads `path`; anything unreadable is an empty cache.
    pub(crate) fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| Self::decode(&bytes))
            .unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC || r.u32()? != CACHE_VERSION {
            return None;
        }
        let gc_generation = r.u64()?;
        let count = r.u64()? as usize;
        let mut entries = HashMap::with_capacity(count.min(bytes.len() / 76));
        for _ in 0..count {
            let len = r.u32()? as usize;
            let path = RelPath::new(r.take(len)?).ok()?;
            let key = StatKey {
                size: r.u64()?,
                mtime_ns: r.u64()? as i64,
                ctime_ns: r.u64()? as i64,
                ino: r.u64()?,
                dev: r.u64()?,
            };
            let hash = Hash::from(blake3::Hash::from_bytes(r.take(32)?.try_into().ok()?));
            entries.insert(path, (key, hash));
        }
        r.0.is_empty().then_some(Self {
            entries,
            gc_generation,
        })
    }

    /// The cached hash of `path` if its stat key is exactly `key`.
    pub(crate) fn lookup(&self, path: &RelPath, key: &StatKey) -> Option<Hash> {
        match self.entries.get(path) {
            Some((cached, hash)) if cached == key => Some(*hash),
            _ => None,
        }
    }

    /// Encodes a new cache of `entries`, leaving out keys too recent to trust (`ctime_ns >=
    /// taken_at`, see the module docs).
    pub(crate) fn encode<'a>(
        gc_generation: u64,
        taken_at: i64,
        entries: impl Iterator<Item = (&'a RelPath, StatKey, Hash)>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 << 20);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&CACHE_VERSION.to_le_bytes());
        out.extend_from_slice(&gc_generation.to_le_bytes());
        let count_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        let mut count = 0u64;
        for (path, key, hash) in entries.filter(|(_, key, _)| key.ctime_ns < taken_at) {
            out.extend_from_slice(&(path.as_bytes().len() as u32).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            for field in [
                key.size,
                key.mtime_ns as u64,
                key.ctime_ns as u64,
                key.ino,
                key.dev,
            ] {
                out.extend_from_slice(&field.to_le_bytes());
            }
            out.extend_from_slice(hash.as_bytes());
            count += 1;
        }
        out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
        out
    }

    /// Replaces the cache file. Best effort: a failure only costs re-hashing later; written
    /// without fsync (a torn file fails to decode and counts as empty).
    pub(crate) fn save(dir: &Path, name: &str, bytes: &[u8]) {
        let _ = fsutil::write_atomic(dir, name, bytes, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_skips_racy_entries_and_rejects_torn_files() {
        let key = |ctime_ns| StatKey {
            size: 3,
            mtime_ns: -5,
            ctime_ns,
            ino: 7,
            dev: 9,
        };
        let old = RelPath::new(&b"dir/old \xff"[..]).unwrap();
        let racy = RelPath::new("racy").unwrap();
        let rows = [
            (&old, key(10), Hash::of(b"a")),
            (&racy, key(20), Hash::of(b"b")),
        ];
        let bytes = StatCache::encode(4, 20, rows.iter().cloned());
        let cache = StatCache::decode(&bytes).unwrap();
        assert_eq!(cache.gc_generation, 4);
        assert_eq!(cache.lookup(&old, &key(10)), Some(Hash::of(b"a")));
        assert_eq!(cache.lookup(&old, &key(11)), None);
        assert_eq!(cache.lookup(&racy, &key(20)), None);
        assert!(StatCache::decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(StatCache::decode(b"garbage").is_none());
    }
}
