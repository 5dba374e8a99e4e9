//! The content-addressed blob store under `<root>/cas`: a blob's name is the BLAKE3 hex of its
//! bytes, sharded by the first two digits (`cas/ab/cdef…`). Blobs are read-only (0444) and
//! immutable: one is written to `cas/tmp/` and renamed into place with `RENAME_NOREPLACE`, so
//! its name never shows partial contents and identical bytes are stored once, whoever writes
//! them. Blobs are written sparsely (`sparse`): zero blocks are holes, so a file that is mostly
//! holes costs the store only its data.
//!
//! Durability: a blob is **published only once its bytes are durable**. Writers hand back
//! [`Pending`] blobs; [`Cas::publish`] makes a batch durable — an `fsync` per blob for a few,
//! one `syncfs` for many (one journal commit instead of thousands) — then renames them into
//! place and makes the names durable (fsync of the shard directories, or a second `syncfs`).
//! So a blob that another snapshot finds present is already on disk, and a manifest committed
//! after `publish` never names bytes a power loss could take back.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::error::{at, Error};
use crate::fsutil;
use crate::hash::Hash;
use crate::sparse;

/// Bytes read or written per system call when copying.
pub(crate) const CHUNK: usize = 256 * 1024;

/// The blob store. Cheap to share between threads (`&Cas`).
#[derive(Debug)]
pub(crate) struct Cas {
    dir: PathBuf,
    dir_fd: OwnedFd,
    tmp_fd: OwnedFd,
}

/// A blob being written: hashed as it is written, published by [`Cas::commit`].
#[derive(Debug)]
pub(crate) struct BlobWriter {
    name: String,
    file: File,
    hasher: blake3::Hasher,
    len: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sparse::write(&self.file, buf)?;
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Up to this many new blobs are made durable one `fsync` each; more take one `syncfs`.
const FEW: usize = 32;

/// A finished blob: already present (`tmp: None`), or written to `cas/tmp/<tmp>` and waiting
/// for [`Cas::publish`].
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub hash: Hash,
    pub len: u64,
    tmp: Option<String>,
}

/// One blob found by [`Cas::list`].
#[derive(Debug)]
pub(crate) struct ListedBlob {
    pub hash: Hash,
    pub size: u64,
}

impl Cas {
    /// Opens (creating if needed) the store in `dir`.
    pub(crate) fn open(dir: PathBuf) -> Result<Self, Error> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(at("create", &tmp))?;
        let dir_fd = fsutil::open_dir(&dir).map_err(at("open", &dir))?;
        let tmp_fd = fsutil::open_dir(&tmp).map_err(at("open", &tmp))?;
        Ok(Self {
            dir,
            dir_fd,
            tmp_fd,
        })
    }

    /// `ab/cdef…`, relative to the store.
    fn rel_name(hash: &Hash) -> String {
        let hex = hash.to_hex();
        format!("{}/{}", &hex[..2], &hex[2..])
    }

    /// Where the blob `hash` lives.
    pub(crate) fn blob_path(&self, hash: &Hash) -> PathBuf {
        self.dir.join(Self::rel_name(hash))
    }

    /// Whether the blob is present with `size` bytes. A blob of another length (a file torn by
    /// a power loss before the batch sync) counts as absent, and is replaced when written again.
    pub(crate) fn contains(&self, hash: &Hash, size: u64) -> Result<bool, Error> {
        let name = Self::rel_name(hash);
        match rustix::fs::statat(&self.dir_fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(fsutil::file_type(&stat) == FileType::RegularFile
                && fsutil::StatKey::of(&stat).size == size),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io("stat", self.blob_path(hash), e)),
        }
    }

    /// Opens the blob for reading.
    pub(crate) fn open_blob(&self, hash: &Hash) -> Result<File, Error> {
        let name = Self::rel_name(hash);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.dir_fd, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::NOENT) => Err(Error::MissingBlob(*hash)),
            Err(e) => Err(Error::io("open", self.blob_path(hash), e)),
        }
    }

    /// Starts a new blob in `cas/tmp`.
    pub(crate) fn writer(&self) -> Result<BlobWriter, Error> {
        let (name, file) = fsutil::create_tmp_at(self.tmp_fd.as_fd(), "blob-", 0o600)
            .map_err(at("create", self.dir.join("tmp")))?;
        Ok(BlobWriter {
            name,
            file,
            hasher: blake3::Hasher::new(),
            len: 0,
        })
    }

    /// Throws a writer away.
    pub(crate) fn abort(&self, writer: BlobWriter) {
        drop(writer.file);
        let _ = rustix::fs::unlinkat(&self.tmp_fd, writer.name.as_str(), AtFlags::empty());
    }

    /// Finishes a written blob: checks `expected` (discarding bytes that hash to something
    /// else), and returns it as pending publication, or as present when the store has it.
    pub(crate) fn finish(
        &self,
        writer: BlobWriter,
        expected: Option<Hash>,
    ) -> Result<Pending, Error> {
        let hash = Hash::from(writer.hasher.finalize());
        let len = writer.len;
        if let Some(expected) = expected {
            if expected != hash {
                self.abort(writer);
                return Err(Error::CorruptBlob {
                    expected,
                    actual: hash,
                    context: "import",
                });
            }
        }
        if self.contains(&hash, len)? {
            self.abort(writer);
            return Ok(Pending {
                hash,
                len,
                tmp: None,
            });
        }
        if let Err(e) = sparse::finish(&writer.file, len) {
            let path = self.dir.join("tmp").join(&writer.name);
            self.abort(writer);
            return Err(Error::io("truncate", path, e));
        }
        if let Err(e) = rustix::fs::fchmod(&writer.file, Mode::from_raw_mode(0o444)) {
            let path = self.dir.join("tmp").join(&writer.name);
            self.abort(writer);
            return Err(Error::io("chmod", path, e));
        }
        drop(writer.file);
        Ok(Pending {
            hash,
            len,
            tmp: Some(writer.name),
        })
    }

    /// Stores bytes already in memory: present, or pending publication.
    pub(crate) fn put_bytes(&self, bytes: &[u8]) -> Result<Pending, Error> {
        let hash = Hash::of(bytes);
        if self.contains(&hash, bytes.len() as u64)? {
            return Ok(Pending {
                hash,
                len: bytes.len() as u64,
                tmp: None,
            });
        }
        let mut writer = self.writer()?;
        if let Err(e) = writer.write_all(bytes) {
            let path = self.dir.join("tmp").join(&writer.name);
            self.abort(writer);
            return Err(Error::io("write", path, e));
        }
        self.finish(writer, Some(hash))
    }

    /// Makes `pending` blobs durable, then publishes them under their hashes and makes the
    /// names durable. Returns, per blob, whether this call added it (false: already present,
    /// or published first by a concurrent writer). On error the unpublished temp files are
    /// removed.
    pub(crate) fn publish(&self, pending: &[Pending]) -> Result<Vec<bool>, Error> {
        let result = self.publish_inner(pending);
        if result.is_err() {
            self.discard(pending);
        }
        result
    }

    fn publish_inner(&self, pending: &[Pending]) -> Result<Vec<bool>, Error> {
        let new: Vec<&Pending> = pending.iter().filter(|p| p.tmp.is_some()).collect();
        let few = new.len() <= FEW;
        if few {
            for blob in &new {
                let tmp = blob.tmp.as_deref().unwrap_or_default();
                let path = self.dir.join("tmp").join(tmp);
                let fd = rustix::fs::openat(
                    &self.tmp_fd,
                    tmp,
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(at("open", &path))?;
                rustix::fs::fsync(&fd).map_err(at("fsync", &path))?;
            }
        } else {
            self.sync()?;
        }
        let mut added = Vec::with_capacity(pending.len());
        let mut shards = std::collections::BTreeSet::new();
        let mut created_shard = false;
        for blob in pending {
            match &blob.tmp {
                None => added.push(false),
                Some(tmp) => {
                    let (was_added, created) = self.rename_into_place(tmp, &blob.hash, blob.len)?;
                    if was_added {
                        shards.insert(blob.hash.to_hex()[..2].to_owned());
                    }
                    created_shard |= created;
                    added.push(was_added);
                }
            }
        }
        if new.is_empty() {
            return Ok(added);
        }
        if few {
            for shard in &shards {
                let path = self.dir.join(shard);
                let fd = fsutil::open_dir(&path).map_err(at("open", &path))?;
                rustix::fs::fsync(&fd).map_err(at("fsync", &path))?;
            }
            if created_shard {
                rustix::fs::fsync(&self.dir_fd).map_err(at("fsync", &self.dir))?;
            }
        } else {
            self.sync()?;
        }
        Ok(added)
    }

    /// Removes the temp files of blobs that will not be published.
    pub(crate) fn discard(&self, pending: &[Pending]) {
        for tmp in pending.iter().filter_map(|p| p.tmp.as_deref()) {
            let _ = rustix::fs::unlinkat(&self.tmp_fd, tmp, AtFlags::empty());
        }
    }

    /// Renames `tmp/<tmp>` to the blob's name, creating its shard directory when needed.
    /// Returns (added, created a shard directory).
    fn rename_into_place(&self, tmp: &str, hash: &Hash, len: u64) -> Result<(bool, bool), Error> {
        let name = Self::rel_name(hash);
        let mut created = false;
        for _ in 0..3 {
            let renamed = match rustix::fs::renameat_with(
                &self.tmp_fd,
                tmp,
                &self.dir_fd,
                name.as_str(),
                RenameFlags::NOREPLACE,
            ) {
                // A file system without RENAME_NOREPLACE: link (fails if present), unlink.
                Err(Errno::INVAL) => rustix::fs::linkat(
                    &self.tmp_fd,
                    tmp,
                    &self.dir_fd,
                    name.as_str(),
                    AtFlags::empty(),
                )
                .map(|()| {
                    let _ = rustix::fs::unlinkat(&self.tmp_fd, tmp, AtFlags::empty());
                }),
                other => other,
            };
            match renamed {
                Ok(()) => return Ok((true, created)),
                Err(Errno::NOENT) => {
                    let shard = &name[..2];
                    match rustix::fs::mkdirat(&self.dir_fd, shard, Mode::from_raw_mode(0o755)) {
                        Ok(()) => created = true,
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(Error::io("mkdir", self.dir.join(shard), e)),
                    }
                }
                Err(Errno::EXIST) => {
                    if self.contains(hash, len)? {
                        // Someone else stored the same bytes first.
                        let _ = rustix::fs::unlinkat(&self.tmp_fd, tmp, AtFlags::empty());
                        return Ok((false, created));
                    }
                    // A torn blob (wrong length): replace it.
                    rustix::fs::renameat(&self.tmp_fd, tmp, &self.dir_fd, name.as_str())
                        .map_err(at("rename", self.blob_path(hash)))?;
                    return Ok((true, created));
                }
                Err(e) => return Err(Error::io("rename", self.blob_path(hash), e)),
            }
        }
        Err(Error::io(
            "rename",
            self.blob_path(hash),
            io::Error::new(io::ErrorKind::NotFound, "shard directory keeps vanishing"),
        ))
    }

    /// Reads the whole blob, checking it hashes to its name and has `size` bytes, into `sink`.
    pub(crate) fn copy_verified(
        &self,
        hash: &Hash,
        size: u64,
        sink: &mut dyn Write,
        context: &'static str,
        buf: &mut [u8],
    ) -> Result<(), Error> {
        let mut file = self.open_blob(hash)?;
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        loop {
            let n = match file.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", self.blob_path(hash), e)),
            };
            hasher.update(&buf[..n]);
            sink.write_all(&buf[..n])
                .map_err(|e| Error::io("write", PathBuf::from(format!("<{context}>")), e))?;
            len += n as u64;
        }
        let actual = Hash::from(hasher.finalize());
        if actual != *hash {
            return Err(Error::CorruptBlob {
                expected: *hash,
                actual,
                context,
            });
        }
        if len != size {
            return Err(Error::BlobSize {
                hash: *hash,
                expected: size,
                actual: len,
            });
        }
        Ok(())
    }

    /// Flushes every blob written so far to stable storage (`syncfs` on the store's file
    /// system: one journal commit instead of one `fsync` per blob).
    pub(crate) fn sync(&self) -> Result<(), Error> {
        rustix::fs::syncfs(&self.dir_fd).map_err(at("syncfs", &self.dir))
    }

    /// Every blob in the store. Entries that are not blob names are ignored.
    pub(crate) fn list(&self) -> Result<Vec<ListedBlob>, Error> {
        let mut blobs = Vec::new();
        for (shard, kind) in
            fsutil::read_names(self.dir_fd.as_fd()).map_err(at("read", &self.dir))?
        {
            if kind != FileType::Directory || shard.len() != 2 || shard == b"tmp" {
                continue;
            }
            let Ok(shard_name) = CString::new(shard.clone()) else {
                continue;
            };
            let shard_path = self.dir.join(String::from_utf8_lossy(&shard).as_ref());
            let shard_fd = fsutil::open_dir_at(self.dir_fd.as_fd(), &shard_name)
                .map_err(at("open", &shard_path))?;
            for (rest, _) in
                fsutil::read_names(shard_fd.as_fd()).map_err(at("read", &shard_path))?
            {
                let mut hex = shard.clone();
                hex.extend_from_slice(&rest);
                let Some(hash) = std::str::from_utf8(&hex).ok().and_then(|h| h.parse().ok()) else {
                    continue;
                };
                let size =
                    match rustix::fs::statat(&shard_fd, rest.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                    {
                        Ok(stat) => fsutil::StatKey::of(&stat).size,
                        Err(Errno::NOENT) => continue,
                        Err(e) => {
                            return Err(Error::io(
                                "stat",
                                shard_path.join(String::from_utf8_lossy(&rest).as_ref()),
                                e,
                            ))
                        }
                    };
                blobs.push(ListedBlob { hash, size });
            }
        }
        Ok(blobs)
    }

    /// Deletes a blob (GC only, under the exclusive lock). Missing is fine.
    pub(crate) fn remove(&self, hash: &Hash) -> Result<(), Error> {
        match rustix::fs::unlinkat(
            &self.dir_fd,
            Self::rel_name(hash).as_str(),
            AtFlags::empty(),
        ) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io("unlink", self.blob_path(hash), e)),
        }
    }

    /// Deletes every temporary file (GC only: under the exclusive lock no writer is active, so
    /// anything in `tmp/` was left by a crash). Returns how many.
    pub(crate) fn clear_tmp(&self) -> Result<u64, Error> {
        let tmp = self.dir.join("tmp");
        let mut removed = 0;
        for (name, _) in fsutil::read_names(self.tmp_fd.as_fd()).map_err(at("read", &tmp))? {
            let Ok(name) = CString::new(name) else {
                continue;
            };
            fsutil::remove_at(self.tmp_fd.as_fd(), &name).map_err(at("remove", &tmp))?;
            removed += 1;
        }
        Ok(removed)
    }
}
