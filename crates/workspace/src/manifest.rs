//! Snapshot manifests: what a snapshot is. A manifest lists every entry of a workspace (regular
//! files with size, mode, mtime and BLAKE3 hash; directories, including empty ones; symlinks
//! with their target) sorted by path, plus the special files that were skipped. It is stored as
//! deterministic JSON under `snapshots/<id>.json`; the blobs it names live in `cas/`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use conductor_types::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::hash::Hash;
use crate::path::{RelPath, WireBytes};

/// The manifest format written by this version.
pub const MANIFEST_VERSION: u32 = 1;

/// A snapshot's id (a UUID); also its manifest's file name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(Uuid);

/// Text that is not a snapshot id or workspace id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {text:?}: {reason}")]
pub struct ParseIdError {
    /// `snapshot id` or `workspace id`.
    pub what: &'static str,
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl SnapshotId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for SnapshotId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for SnapshotId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uuid = Uuid::try_parse(text).map_err(|_| ParseIdError {
            what: "snapshot id",
            text: text.to_owned(),
            reason: "not a uuid",
        })?;
        // Only the hyphenated lowercase spelling: it is a file name.
        if uuid.hyphenated().to_string() != text {
            return Err(ParseIdError {
                what: "snapshot id",
                text: text.to_owned(),
                reason: "not in lowercase hyphenated form",
            });
        }
        Ok(Self(uuid))
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotId({self})")
    }
}

impl Serialize for SnapshotId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SnapshotId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The workspace a snapshot was taken of: 1–128 of `[A-Za-z0-9._-]`, not starting with `.`
/// (it names the workspace's stat cache file). The server's workspace ids and names fit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceId(String);

impl WorkspaceId {
    /// Checks and wraps `text`.
    pub fn new(text: impl Into<String>) -> Result<Self, ParseIdError> {
        let text = text.into();
        let fail = |reason| {
            Err(ParseIdError {
                what: "workspace id",
                text: text.clone(),
                reason,
            })
        };
        if text.is_empty() || text.len() > 128 {
            return fail("must be 1 to 128 characters");
        }
        if text.starts_with('.') {
            return fail("must not start with `.`");
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return fail("only ASCII letters, digits, `.`, `_` and `-` are allowed");
        }
        Ok(Self(text))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WorkspaceId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkspaceId({})", self.0)
    }
}

impl Serialize for WorkspaceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WorkspaceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// One entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireEntry", into = "WireEntry")]
pub struct Entry {
    /// Where it is, relative to the workspace root.
    pub path: RelPath,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`); `0o777` for a
    /// symlink, whose mode Linux ignores.
    pub mode: u32,
    /// What it is.
    pub node: Node,
}

/// The kind of an entry and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file whose contents are the blob `hash`.
    File {
        /// Length in bytes.
        size: u64,
        /// BLAKE3 of the contents.
        hash: Hash,
        /// Modification time in nanoseconds since the epoch; restored, ignored by diff.
        mtime_ns: i64,
    },
    /// A directory (its contents are the entries below it; it may be empty).
    Dir,
    /// A symbolic link, recorded and restored as its target bytes, never followed.
    Symlink {
        /// The target exactly as `readlink` returned it.
        target: Vec<u8>,
    },
}

/// The type of an entry, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

impl Node {
    /// The entry's type.
    pub fn entry_type(&self) -> EntryType {
        match self {
            Node::File { .. } => EntryType::File,
            Node::Dir => EntryType::Dir,
            Node::Symlink { .. } => EntryType::Symlink,
        }
    }
}

/// The flat JSON form of an [`Entry`] (fast to parse; checked into an `Entry` on load).
#[derive(Serialize, Deserialize)]
struct WireEntry {
    path: RelPath,
    #[serde(rename = "type")]
    kind: EntryType,
    mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<Hash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<WireBytes>,
}

impl TryFrom<WireEntry> for Entry {
    type Error = String;

    fn try_from(wire: WireEntry) -> Result<Self, String> {
        if wire.mode > 0o7777 {
            return Err(format!("{}: mode {:o} out of range", wire.path, wire.mode));
        }
        let node = match wire.kind {
            EntryType::File => Node::File {
                size: wire
                    .size
                    .ok_or_else(|| format!("{}: file without size", wire.path))?,
                hash: wire
                    .hash
                    .ok_or_else(|| format!("{}: file without hash", wire.path))?,
                mtime_ns: wire.mtime_ns.unwrap_or(0),
            },
            EntryType::Dir => Node::Dir,
            EntryType::Symlink => {
                let target = wire
                    .target
                    .ok_or_else(|| format!("{}: symlink without target", wire.path))?
                    .decode()?;
                if target.is_empty() || target.contains(&0) {
                    return Err(format!("{}: invalid symlink target", wire.path));
                }
                Node::Symlink { target }
            }
        };
        Ok(Entry {
            path: wire.path,
            mode: wire.mode,
            node,
        })
    }
}

impl From<Entry> for WireEntry {
    fn from(entry: Entry) -> Self {
        let mut wire = WireEntry {
            kind: entry.node.entry_type(),
            path: entry.path,
            mode: entry.mode,
            size: None,
            hash: None,
            mtime_ns: None,
            target: None,
        };
        match entry.node {
            Node::File {
                size,
                hash,
                mtime_ns,
            } => {
                wire.size = Some(size);
                wire.hash = Some(hash);
                wire.mtime_ns = Some(mtime_ns);
            }
            Node::Dir => {}
            Node::Symlink { target } => wire.target = Some(WireBytes::encode(&target)),
        }
        wire
    }
}

/// The kind of a special file (something that is not a file, directory or symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialKind {
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

impl fmt::Display for SpecialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecialKind::Fifo => "fifo",
            SpecialKind::Socket => "socket",
            SpecialKind::CharDevice => "character device",
            SpecialKind::BlockDevice => "block device",
        })
    }
}

/// A special file left out of a snapshot taken with [`crate::SpecialFiles::Skip`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Where it was.
    pub path: RelPath,
    /// What it was.
    pub kind: SpecialKind,
}

/// Counts over a manifest's entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files.
    pub files: u64,
    /// Directories (the root not included).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Sum of the regular files' sizes.
    pub bytes: u64,
}

/// A snapshot: its identity and every entry of the workspace at the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// The snapshot's id.
    pub id: SnapshotId,
    /// The name given at creation (`before-deployment`).
    pub name: String,
    /// The workspace it was taken of.
    pub workspace: WorkspaceId,
    /// When it was taken.
    pub created_at: Timestamp,
    /// Permission bits of the workspace root directory.
    pub root_mode: u32,
    /// Counts, kept in the file so listing does not need the entries.
    pub summary: Summary,
    /// Every entry below the root, sorted by path bytes (so parents before children).
    pub entries: Vec<Entry>,
    /// Special files that were skipped rather than refused.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

impl Manifest {
    /// Counts over `entries`.
    pub fn summarize(entries: &[Entry]) -> Summary {
        let mut summary = Summary::default();
        for entry in entries {
            match entry.node {
                Node::File { size, .. } => {
                    summary.files += 1;
                    summary.bytes = summary.bytes.saturating_add(size);
                }
                Node::Dir => summary.dirs += 1,
                Node::Symlink { .. } => summary.symlinks += 1,
            }
        }
        summary
    }

    /// The distinct blobs the snapshot references.
    pub fn hashes(&self) -> BTreeSet<Hash> {
        self.entries
            .iter()
            .filter_map(|entry| match entry.node {
                Node::File { hash, .. } => Some(hash),
                _ => None,
            })
            .collect()
    }

    /// Checks what restore relies on: a known version, entries strictly sorted (hence unique),
    /// every entry's parent present as a directory, the summary matching.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != MANIFEST_VERSION {
            return Err(format!("unsupported manifest version {}", self.version));
        }
        if self.root_mode > 0o7777 {
            return Err(format!("root mode {:o} out of range", self.root_mode));
        }
        let mut dirs: BTreeSet<&[u8]> = BTreeSet::new();
        dirs.insert(b"");
        for pair in self.entries.windows(2) {
            if pair[0].path >= pair[1].path {
                return Err(format!(
                    "entries not sorted: {} before {}",
                    pair[0].path, pair[1].path
                ));
            }
        }
        for entry in &self.entries {
            if !dirs.contains(entry.path.parent_bytes()) {
                return Err(format!("{}: parent is not a directory entry", entry.path));
            }
            if entry.node == Node::Dir {
                dirs.insert(entry.path.as_bytes());
            }
        }
        if Self::summarize(&self.entries) != self.summary {
            return Err("summary does not match the entries".into());
        }
        Ok(())
    }
}

/// What listing shows of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot's id.
    pub id: SnapshotId,
    /// Its name.
    pub name: String,
    /// The workspace it was taken of.
    pub workspace: WorkspaceId,
    /// When it was taken.
    pub created_at: Timestamp,
    /// Counts of its entries.
    pub summary: Summary,
}

impl From<&Manifest> for SnapshotInfo {
    fn from(manifest: &Manifest) -> Self {
        Self {
            id: manifest.id,
            name: manifest.name.clone(),
            workspace: manifest.workspace.clone(),
            created_at: manifest.created_at,
            summary: manifest.summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            mode: 0o644,
            node: Node::File {
                size: content.len() as u64,
                hash: Hash::of(content),
                mtime_ns: 7,
            },
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            id: "5f0c1c2e-8d43-4a53-9d55-0b9c3e4f2a11".parse().unwrap(),
            name: "before-deployment".into(),
            workspace: WorkspaceId::new("ws-1").unwrap(),
            created_at: Timestamp(1_700_000_000_000),
            root_mode: 0o755,
            summary: Manifest::summarize(&entries),
            entries,
            skipped: vec![],
        }
    }

    #[test]
    fn json_is_flat_and_round_trips() {
        let m = manifest(vec![
            Entry {
                path: RelPath::new("d").unwrap(),
                mode: 0o700,
                node: Node::Dir,
            },
            file("d/a", b"x"),
            Entry {
                path: RelPath::new("d/l").unwrap(),
                mode: 0o777,
                node: Node::Symlink {
                    target: b"../\xff".to_vec(),
                },
            },
        ]);
        m.validate().unwrap();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json["entries"],
            serde_json::json!([
                {"path": "d", "type": "dir", "mode": 0o700},
                {"path": "d/a", "type": "file", "mode": 0o644, "size": 1,
                 "hash": Hash::of(b"x").to_hex(), "mtime_ns": 7},
                {"path": "d/l", "type": "symlink", "mode": 0o777, "target": {"hex": "2e2e2fff"}},
            ])
        );
        assert_eq!(json["created_at"], "2023-11-14T22:13:20.000Z");
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn validate_refuses_orphans_and_disorder() {
        assert!(manifest(vec![file("d/a", b"x")])
            .validate()
            .unwrap_err()
            .contains("parent"));
        assert!(manifest(vec![file("b", b"x"), file("a", b"x")])
            .validate()
            .unwrap_err()
            .contains("sorted"));
        let mut m = manifest(vec![file("a", b"x")]);
        m.summary.bytes = 9;
        assert!(m.validate().is_err());
    }

    #[test]
    fn ids_parse_strictly() {
        assert!("5F0C1C2E-8D43-4A53-9D55-0B9C3E4F2A11"
            .parse::<SnapshotId>()
            .is_err());
        assert!("../x".parse::<SnapshotId>().is_err());
        assert!(WorkspaceId::new("../x").is_err());
        assert!(WorkspaceId::new(".hidden").is_err());
        assert!(WorkspaceId::new("").is_err());
        assert_eq!(WorkspaceId::new("ws_1.a-b").unwrap().as_str(), "ws_1.a-b");
    }
}
