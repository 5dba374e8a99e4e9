//! What a run changed in a directory, cheaply: the directory's shape before and after (one
//! [`scan`] each: `lstat` data through directory descriptors, symlinks never followed, no
//! recursion), compared by type, size, mtime, mode and symlink target — no file is read. An
//! agent turn reports its changed files this way (a snapshot would hash every file).
//!
//! A file rewritten with the same size within the same mtime tick reads as unchanged; a file
//! only touched reads as modified. Directories count only when added, removed or re-moded: their
//! mtime moves with every entry made in them.

use std::path::Path;

use crate::diff::ChangeKind;
use crate::error::Error;
use crate::path::RelPath;
use crate::scan::{scan, ScanKind};

/// A directory's shape at one moment (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct TreeState {
    entries: Vec<(RelPath, Shape)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    File { size: u64, mtime_ns: i64, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: Vec<u8> },
    Special,
}

impl Shape {
    fn same_type(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// The shape of everything below `dir`.
pub fn tree_state(dir: &Path) -> Result<TreeState, Error> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .map_err(|e| Error::io("starting the walk", dir, std::io::Error::other(e)))?;
    let scanned = scan(dir, &pool)?;
    let entries = scanned
        .entries
        .into_iter()
        .map(|entry| {
            let shape = match entry.kind {
                ScanKind::File => Shape::File {
                    size: entry.key.size,
                    mtime_ns: entry.key.mtime_ns,
                    mode: entry.mode,
                },
                ScanKind::Dir => Shape::Dir { mode: entry.mode },
                ScanKind::Symlink(target) => Shape::Symlink { target },
                ScanKind::Special(_) => Shape::Special,
            };
            (entry.path, shape)
        })
        .collect();
    Ok(TreeState { entries })
}

impl TreeState {
    /// The paths that differ from this state to `after`, sorted by path.
    pub fn changes_to(&self, after: &TreeState) -> Vec<(String, ChangeKind)> {
        let (old, new) = (&self.entries, &after.entries);
        let mut changes = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let order = match (old.get(i), new.get(j)) {
                (Some(a), Some(b)) => a.0.cmp(&b.0),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    changes.push((old[i].0.to_string(), ChangeKind::Removed));
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    changes.push((new[j].0.to_string(), ChangeKind::Added));
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if let Some(kind) = compare(&old[i].1, &new[j].1) {
                        changes.push((old[i].0.to_string(), kind));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        changes
    }
}

fn compare(before: &Shape, after: &Shape) -> Option<ChangeKind> {
    if !before.same_type(after) {
        return Some(ChangeKind::TypeChanged);
    }
    match (before, after) {
        (
            Shape::File {
                size: s1,
                mtime_ns: t1,
                mode: m1,
            },
            Shape::File {
                size: s2,
                mtime_ns: t2,
                mode: m2,
            },
        ) => {
            if s1 != s2 || t1 != t2 {
                Some(ChangeKind::Modified)
            } else {
                (m1 != m2).then_some(ChangeKind::ModeChanged)
            }
        }
        (Shape::Dir { mode: m1 }, Shape::Dir { mode: m2 }) => {
            (m1 != m2).then_some(ChangeKind::ModeChanged)
        }
        (Shape::Symlink { target: t1 }, Shape::Symlink { target: t2 }) => {
            (t1 != t2).then_some(ChangeKind::Modified)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn added_modified_removed_moded_and_retyped_paths_are_found_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("same"), "1").unwrap();
        std::fs::write(root.join("edited"), "1").unwrap();
        std::fs::write(root.join("gone"), "1").unwrap();
        std::fs::write(root.join("moded"), "1").unwrap();
        std::fs::write(root.join("becomes-dir"), "1").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink("same", root.join("link")).unwrap();
        let before = tree_state(root).unwrap();
        std::fs::write(root.join("edited"), "22").unwrap();
        std::fs::remove_file(root.join("gone")).unwrap();
        std::fs::set_permissions(root.join("moded"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::remove_file(root.join("becomes-dir")).unwrap();
        std::fs::create_dir(root.join("becomes-dir")).unwrap();
        // A new file in a directory moves the directory's mtime: only the file counts.
        std::fs::write(root.join("sub/new"), "n").unwrap();
        std::fs::remove_file(root.join("link")).unwrap();
        std::os::unix::fs::symlink("edited", root.join("link")).unwrap();
        let after = tree_state(root).unwrap();
        let changes = before.changes_to(&after);
        let expected = [
            ("becomes-dir", ChangeKind::TypeChanged),
            ("edited", ChangeKind::Modified),
            ("gone", ChangeKind::Removed),
            ("link", ChangeKind::Modified),
            ("moded", ChangeKind::ModeChanged),
            ("sub/new", ChangeKind::Added),
        ]
        .map(|(path, kind)| (path.to_owned(), kind));
        assert_eq!(changes, expected);
        assert!(after.changes_to(&after).is_empty());
    }

    #[test]
    fn a_symlinked_root_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("ws")).unwrap();
        assert!(tree_state(&dir.path().join("ws")).is_err());
    }
}
