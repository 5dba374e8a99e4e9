//! Diff: what changed between two snapshots, or between a snapshot and a directory now. Both
//! sides are sorted entry lists, merged in one pass. Contents compare by hash (symlinks by
//! target); mtimes are ignored; a symlink's mode is ignored (Linux ignores it too).

use std::os::fd::AsFd;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cache::StatCache;
use crate::cas::CHUNK;
use crate::error::Error;
use crate::manifest::{Entry, EntryType, Node, SnapshotId};
use crate::path::RelPath;
use crate::scan::{self, ScanKind};
use crate::snapshot::{read_file, ReadMode};
use crate::store::SnapshotStore;

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the newer side.
    Added,
    /// Only in the older side.
    Removed,
    /// Same type, different contents (or symlink target); the mode may have changed too.
    Modified,
    /// Same type and contents, different mode.
    ModeChanged,
    /// A file became a directory, a symlink a file, …
    TypeChanged,
}

/// An entry as a diff shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// File, directory or symlink.
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// Permission bits.
    pub mode: u32,
    /// Length, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl From<&Entry> for EntryMeta {
    fn from(entry: &Entry) -> Self {
        Self {
            entry_type: entry.node.entry_type(),
            mode: entry.mode,
            size: match entry.node {
                Node::File { size, .. } => Some(size),
                _ => None,
            },
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The path.
    pub path: RelPath,
    /// What happened.
    pub kind: ChangeKind,
    /// The older side's entry, unless added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<EntryMeta>,
    /// The newer side's entry, unless removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<EntryMeta>,
}

/// The newer side of a diff.
#[derive(Debug, Clone, Copy)]
pub enum DiffAgainst<'a> {
    /// Another snapshot.
    Snapshot(SnapshotId),
    /// A directory as it is now (typically the workspace).
    Directory(&'a Path),
}

/// The changes from `old` to `new` (both sorted by path, as manifests are), sorted by path.
pub fn diff_entries(old: &[Entry], new: &[Entry]) -> Vec<Change> {
    let mut changes = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.path.cmp(&b.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                changes.push(change(
                    &old[i].path,
                    ChangeKind::Removed,
                    Some(&old[i]),
                    None,
                ));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                changes.push(change(&new[j].path, ChangeKind::Added, None, Some(&new[j])));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (a, b) = (&old[i], &new[j]);
                let kind = match (&a.node, &b.node) {
                    (
                        Node::File {
                            hash: h1, size: s1, ..
                        },
                        Node::File {
                            hash: h2, size: s2, ..
                        },
                    ) => {
                        if h1 != h2 || s1 != s2 {
                            Some(ChangeKind::Modified)
                        } else if a.mode != b.mode {
                            Some(ChangeKind::ModeChanged)
                        } else {
                            None
                        }
                    }
                    (Node::Dir, Node::Dir) => (a.mode != b.mode).then_some(ChangeKind::ModeChanged),
                    (Node::Symlink { target: t1 }, Node::Symlink { target: t2 }) => {
                        (t1 != t2).then_some(ChangeKind::Modified)
                    }
                    _ => Some(ChangeKind::TypeChanged),
                };
                if let Some(kind) = kind {
                    changes.push(change(&a.path, kind, Some(a), Some(b)));
                }
                i += 1;
                j += 1;
            }
        }
    }
    changes
}

fn change(
    path: &RelPath,
    kind: ChangeKind,
    before: Option<&Entry>,
    after: Option<&Entry>,
) -> Change {
    Change {
        path: path.clone(),
        kind,
        before: before.map(EntryMeta::from),
        after: after.map(EntryMeta::from),
    }
}

impl SnapshotStore {
    /// The changes from snapshot `from` to `against` (another snapshot, or a directory now).
    ///
    /// Against a directory, files are hashed (nothing is stored) except those whose stat key
    /// matches the snapshot's workspace stat cache; special files are left out.
    pub fn diff(&self, from: SnapshotId, against: DiffAgainst<'_>) -> Result<Vec<Change>, Error> {
        let old = self.manifest(from)?;
        let new_entries = match against {
            DiffAgainst::Snapshot(id) => self.manifest(id)?.entries,
            DiffAgainst::Directory(dir) => {
                let cache = StatCache::load(&self.cache.join(Self::cache_name(&old.workspace)));
                self.current_entries(dir, &cache)?
            }
        };
        Ok(diff_entries(&old.entries, &new_entries))
    }

    /// The entries of `dir` as a snapshot would record them, without storing anything.
    fn current_entries(&self, dir: &Path, cache: &StatCache) -> Result<Vec<Entry>, Error> {
        let scan = scan::scan(dir, &self.pool)?;
        let root = scan.root.as_fd();
        let hashed: Vec<Option<Entry>> = self.pool.install(|| {
            scan.entries
                .par_iter()
                .map_init(
                    || vec![0u8; CHUNK],
                    |buf, entry| -> Result<Option<Entry>, Error> {
                        let node = match &entry.kind {
                            ScanKind::Special(_) => return Ok(None),
                            ScanKind::Dir => Node::Dir,
                            ScanKind::Symlink(target) => Node::Symlink {
                                target: target.clone(),
                            },
                            ScanKind::File => {
                                let (hash, key, mode) = match cache.lookup(&entry.path, &entry.key)
                                {
                                    Some(hash) => (hash, entry.key, entry.mode),
                                    None => {
                                        match read_file(self, root, entry, buf, ReadMode::HashOnly)?
                                        {
                                            Some(file) => (file.hash, file.key, file.mode),
                                            None => return Ok(None),
                                        }
                                    }
                                };
                                return Ok(Some(Entry {
                                    path: entry.path.clone(),
                                    mode,
                                    node: Node::File {
                                        size: key.size,
                                        hash,
                                        mtime_ns: key.mtime_ns,
                                    },
                                }));
                            }
                        };
                        Ok(Some(Entry {
                            path: entry.path.clone(),
                            mode: entry.mode,
                            node,
                        }))
                    },
                )
                .collect::<Result<_, Error>>()
        })?;
        Ok(hashed.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;

    fn entry(path: &str, mode: u32, node: Node) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            mode,
            node,
        }
    }

    fn file(content: &[u8]) -> Node {
        Node::File {
            size: content.len() as u64,
            hash: Hash::of(content),
            mtime_ns: 0,
        }
    }

    #[test]
    fn every_kind_of_change() {
        let old = vec![
            entry("chmod", 0o644, file(b"x")),
            entry("dir", 0o755, Node::Dir),
            entry("edit", 0o644, file(b"old")),
            entry("gone", 0o644, file(b"x")),
            entry(
                "link",
                0o777,
                Node::Symlink {
                    target: b"a".to_vec(),
                },
            ),
            entry("same", 0o644, file(b"x")),
            entry("turn", 0o644, file(b"x")),
        ];
        let new = vec![
            entry("chmod", 0o755, file(b"x")),
            entry("dir", 0o700, Node::Dir),
            entry("edit", 0o644, file(b"new")),
            entry(
                "link",
                0o777,
                Node::Symlink {
                    target: b"b".to_vec(),
                },
            ),
            entry("new", 0o644, file(b"y")),
            entry("same", 0o644, file(b"x")),
            entry("turn", 0o755, Node::Dir),
        ];
        let got: Vec<(String, ChangeKind)> = diff_entries(&old, &new)
            .into_iter()
            .map(|c| (c.path.to_string(), c.kind))
            .collect();
        use ChangeKind::*;
        assert_eq!(
            got,
            vec![
                ("chmod".into(), ModeChanged),
                ("dir".into(), ModeChanged),
                ("edit".into(), Modified),
                ("gone".into(), Removed),
                ("link".into(), Modified),
                ("new".into(), Added),
                ("turn".into(), TypeChanged),
            ]
        );
        assert!(diff_entries(&new, &new).is_empty());
    }
}
