//! Export and import of one snapshot as a single `.tar.zst`: `manifest.json` first, then
//! `blobs/<hash>` for each distinct blob it references, sorted, all with mode 0444 and mtime 0
//! (so the same snapshot always exports to the same bytes). Import accepts exactly that shape:
//! any other entry — absolute, with `..`, a link, an unknown name, a blob the manifest does not
//! reference — is refused, and every blob is hashed on the way in and must match its name.
//! Before any blob is written, the bytes the manifest declares (the sum of its files' sizes: what
//! a restore writes) must fit [`ImportOptions::max_bytes`], so a small archive that decompresses
//! or restores to gigabytes is refused with nothing left behind.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::error::Error;
use crate::hash::Hash;
use crate::manifest::{Manifest, Node, SnapshotId};
use crate::store::{parse_manifest, SnapshotStore};

/// zstd level for exports.
const ZSTD_LEVEL: i32 = 3;
/// The largest manifest an import accepts.
const MAX_MANIFEST: u64 = 256 * 1024 * 1024;

/// Default of [`ImportOptions::max_bytes`]: 2 GiB.
pub const DEFAULT_IMPORT_MAX: u64 = 2 << 30;

/// How [`SnapshotStore::import_with`] bounds an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    /// The most bytes of file contents a manifest may declare (the sum of its files' sizes,
    /// counted once per file even when files share a blob); more is [`Error::ImportTooLarge`].
    pub max_bytes: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_IMPORT_MAX,
        }
    }
}

/// The bytes of file contents a manifest declares: what restoring it writes.
fn declared_bytes(manifest: &Manifest) -> u64 {
    manifest
        .entries
        .iter()
        .filter_map(|e| match e.node {
            Node::File { size, .. } => Some(size),
            _ => None,
        })
        .fold(0u64, u64::saturating_add)
}

/// A reader that hashes and counts what passes through.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    len: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

fn archive_err(e: io::Error) -> Error {
    Error::Archive(e.to_string())
}

/// The distinct blobs of a manifest with their sizes.
fn blob_sizes(manifest: &Manifest) -> BTreeMap<Hash, u64> {
    manifest
        .entries
        .iter()
        .filter_map(|e| match e.node {
            Node::File { hash, size, .. } => Some((hash, size)),
            _ => None,
        })
        .collect()
}

impl SnapshotStore {
    /// Writes snapshot `id` to `out` as a `.tar.zst`, checking each blob's hash as it is read.
    /// Returns `out`.
    pub fn export<W: Write>(&self, id: SnapshotId, out: W) -> Result<W, Error> {
        let _lock = self.lock_shared()?;
        let manifest_path = self.manifest_path(id);
        let manifest_bytes = match std::fs::read(&manifest_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::SnapshotNotFound(id))
            }
            Err(e) => return Err(Error::io("read", manifest_path, e)),
        };
        let manifest = parse_manifest(&manifest_bytes, &manifest_path)?;
        let encoder = zstd::Encoder::new(out, ZSTD_LEVEL).map_err(archive_err)?;
        let mut builder = tar::Builder::new(encoder);
        builder.mode(tar::HeaderMode::Deterministic);
        append(
            &mut builder,
            "manifest.json",
            manifest_bytes.len() as u64,
            &manifest_bytes[..],
        )?;
        for (hash, size) in blob_sizes(&manifest) {
            let file = self.cas.open_blob(&hash)?;
            let mut reader = HashingReader {
                inner: file.take(size),
                hasher: blake3::Hasher::new(),
                len: 0,
            };
            append(&mut builder, &format!("blobs/{hash}"), size, &mut reader)?;
            let actual = Hash::from(reader.hasher.finalize());
            if actual != hash {
                return Err(Error::CorruptBlob {
                    expected: hash,
                    actual,
                    context: "export",
                });
            }
            if reader.len != size {
                return Err(Error::BlobSize {
                    hash,
                    expected: size,
                    actual: reader.len,
                });
            }
        }
        let encoder = builder.into_inner().map_err(archive_err)?;
        encoder.finish().map_err(archive_err)
    }

    /// Reads a snapshot exported by [`SnapshotStore::export`] from `input` into this store and
    /// returns its manifest (same id). Importing a snapshot that is already here with the same
    /// contents is a no-op; with different contents it is [`Error::SnapshotExists`]. Bounded by
    /// [`ImportOptions::default`].
    pub fn import<R: Read>(&self, input: R) -> Result<Manifest, Error> {
        self.import_with(input, &ImportOptions::default())
    }

    /// [`SnapshotStore::import`] bounded by `options`: a manifest declaring more than
    /// `options.max_bytes` is refused before any blob is written.
    pub fn import_with<R: Read>(
        &self,
        input: R,
        options: &ImportOptions,
    ) -> Result<Manifest, Error> {
        let _lock = self.lock_shared()?;
        let decoder = zstd::Decoder::new(input).map_err(archive_err)?;
        let mut archive = tar::Archive::new(decoder);
        let mut entries = archive.entries().map_err(archive_err)?;

        let mut first = entries
            .next()
            .ok_or_else(|| Error::Archive("empty archive".into()))?
            .map_err(archive_err)?;
        check_entry_path(&first.path_bytes())?;
        if &*first.path_bytes() != b"manifest.json" {
            return Err(Error::Archive(
                "the first entry must be manifest.json".into(),
            ));
        }
        if first.header().entry_type() != tar::EntryType::Regular || first.size() > MAX_MANIFEST {
            return Err(Error::Archive(
                "manifest.json must be a regular file of at most 256 MiB".into(),
            ));
        }
        let mut manifest_bytes = Vec::new();
        first
            .read_to_end(&mut manifest_bytes)
            .map_err(archive_err)?;
        drop(first);
        let manifest = parse_manifest(&manifest_bytes, &PathBuf::from("<archive>/manifest.json"))?;
        let declared = declared_bytes(&manifest);
        if declared > options.max_bytes {
            return Err(Error::ImportTooLarge {
                declared,
                limit: options.max_bytes,
            });
        }
        let sizes = blob_sizes(&manifest);
        let mut pending = Vec::new();
        let result = self.import_blobs(entries, &sizes, &mut pending);
        if let Err(e) = result {
            self.cas.discard(&pending);
            return Err(e);
        }
        self.cas.publish(&pending)?;

        for (hash, size) in &sizes {
            if !self.cas.contains(hash, *size)? {
                return Err(Error::MissingBlob(*hash));
            }
        }
        match self.manifest(manifest.id) {
            Ok(existing) if existing == manifest => return Ok(existing),
            Ok(_) => return Err(Error::SnapshotExists(manifest.id)),
            Err(Error::SnapshotNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.commit_manifest(&manifest)?;
        Ok(manifest)
    }

    fn import_blobs<R: Read>(
        &self,
        entries: tar::Entries<'_, R>,
        sizes: &BTreeMap<Hash, u64>,
        pending: &mut Vec<crate::cas::Pending>,
    ) -> Result<(), Error> {
        for entry in entries {
            let mut entry = entry.map_err(archive_err)?;
            let raw = entry.path_bytes().into_owned();
            check_entry_path(&raw)?;
            let hash = std::str::from_utf8(&raw)
                .ok()
                .and_then(|p| p.strip_prefix("blobs/"))
                .and_then(|hex| hex.parse::<Hash>().ok())
                .ok_or_else(|| {
                    Error::UnsafeArchivePath(String::from_utf8_lossy(&raw).into_owned())
                })?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(Error::Archive(format!(
                    "blobs/{hash} is not a regular file"
                )));
            }
            let Some(&size) = sizes.get(&hash) else {
                return Err(Error::Archive(format!(
                    "blob {hash} is not referenced by the manifest"
                )));
            };
            if entry.size() != size {
                return Err(Error::BlobSize {
                    hash,
                    expected: size,
                    actual: entry.size(),
                });
            }
            if self.cas.contains(&hash, size)? {
                continue;
            }
            let mut writer = self.cas.writer()?;
            if let Err(e) = io::copy(&mut entry, &mut writer) {
                self.cas.abort(writer);
                return Err(archive_err(e));
            }
            pending.push(self.cas.finish(writer, Some(hash))?);
        }

        Ok(())
    }
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> Result<(), Error> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o444);
    header.set_mtime(0);
    builder
        .append_data(&mut header, path, data)
        .map_err(archive_err)
}

/// Refuses absolute paths and `..` components before anything else is looked at.
fn check_entry_path(raw: &[u8]) -> Result<(), Error> {
    let unsafe_path = raw.first() == Some(&b'/')
        || raw.split(|&b| b == b'/' || b == b'\\').any(|c| c == b"..")
        || raw.contains(&0);
    if unsafe_path {
        return Err(Error::UnsafeArchivePath(
            String::from_utf8_lossy(raw).into_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_checked() {
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"blobs/../../x",
            b"a/..",
            b"..\\x",
        ] {
            assert!(
                matches!(check_entry_path(bad), Err(Error::UnsafeArchivePath(_))),
                "{bad:?}"
            );
        }
        assert!(check_entry_path(b"blobs/ab").is_ok());
    }
}
