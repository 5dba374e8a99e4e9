//! Helpers: build trees, read them back into comparable values.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use conductor_workspace::{SnapshotStore, SnapshotStoreOptions, WorkspaceId};

/// What a tree holds, as compared by tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    File {
        mode: u32,
        content: Vec<u8>,
        mtime_ns: i64,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// Every entry below `root` (never following symlinks), plus the root's mode under the empty
/// path.
pub fn read_tree(root: &Path) -> BTreeMap<Vec<u8>, Item> {
    let mut out = BTreeMap::new();
    let meta = fs::symlink_metadata(root).unwrap();
    out.insert(
        Vec::new(),
        Item::Dir {
            mode: meta.mode() & 0o7777,
        },
    );
    walk(root, &[], &mut out);
    out
}

fn walk(dir: &Path, prefix: &[u8], out: &mut BTreeMap<Vec<u8>, Item>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let item = if meta.file_type().is_symlink() {
            Item::Symlink {
                target: fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            }
        } else if meta.is_dir() {
            walk(&path, &rel, out);
            Item::Dir {
                mode: meta.mode() & 0o7777,
            }
        } else {
            Item::File {
                mode: meta.mode() & 0o7777,
                content: fs::read(&path).unwrap(),
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            }
        };
        out.insert(rel, item);
    }
}

pub fn path_of(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn store(dir: &Path) -> SnapshotStore {
    SnapshotStore::open_with(dir, SnapshotStoreOptions { threads: 2 }).unwrap()
}

pub fn ws(id: &str) -> WorkspaceId {
    WorkspaceId::new(id).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Makes every directory below `root` (and root) writable, so tests can mutate trees with
/// read-only directories even when not running as root.
pub fn make_writable(root: &Path) {
    let meta = fs::symlink_metadata(root).unwrap();
    if meta.is_dir() {
        chmod(root, (meta.mode() & 0o7777) | 0o700);
        for entry in fs::read_dir(root).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                make_writable(&entry.path());
            }
        }
    }
}
