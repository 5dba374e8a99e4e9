//! Property: any tree (modes, symlinks, empty dirs, unicode and non-UTF-8 names, small and
//! multi-chunk files) → snapshot → arbitrary mutation → restore gives back exactly the tree,
//! in place and into a new directory; the diff against the mutated tree is empty after restore.
//! "Exactly" up to the modes: set-id, sticky and world-write bits never come back
//! (`sanitize_mode`), so the expected tree is the original with its modes sanitized.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use conductor_workspace::{sanitize_mode, DiffAgainst, SnapshotOptions};
use proptest::prelude::*;

use crate::support::{self, bytes, chmod, make_writable, path_of, read_tree, Item};

#[derive(Debug, Clone)]
enum Spec {
    File { mode: u32, content: Content },
    Dir { mode: u32 },
    Symlink { target: &'static str },
}

#[derive(Debug, Clone)]
enum Content {
    Small(Vec<u8>),
    /// Seeded bytes, large enough to take the streaming copy path (> 256 KiB).
    Large(u64, usize),
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Small(b) => b.clone(),
            Content::Large(seed, len) => bytes(*seed, *len),
        }
    }
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "a",
            "b",
            "sub",
            "Ünïcødé",
            "日本語",
            "🦀 crab",
            "sp ace",
            ".hidden",
            "-dash",
            "x.tmp"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        Just(b"raw\xff\xfe".to_vec()),
        "[a-z]{1,6}".prop_map(String::into_bytes),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let mode = prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o444, 0o700, 0o4755, 0o640]);
    let dir_mode = prop::sample::select(vec![0o755u32, 0o700, 0o555, 0o1777, 0o2750]);
    prop_oneof![
        4 => (mode.clone(), prop::collection::vec(any::<u8>(), 0..600))
            .prop_map(|(mode, c)| Spec::File { mode, content: Content::Small(c) }),
        1 => (mode, any::<u64>(), 256 * 1024..400 * 1024usize)
            .prop_map(|(mode, seed, len)| Spec::File { mode, content: Content::Large(seed, len) }),
        2 => dir_mode.prop_map(|mode| Spec::Dir { mode }),
        1 => prop::sample::select(vec!["a", "../outside", "/etc/passwd", "missing/deep", "sub/x"])
            .prop_map(|target| Spec::Symlink { target }),
    ]
}

fn tree() -> impl Strategy<Value = Vec<(Vec<Vec<u8>>, Spec)>> {
    prop::collection::vec((prop::collection::vec(name(), 1..4), spec()), 0..24)
}

/// Builds `specs` under `root` (creating parents 0755; skipping conflicting entries); sets
/// directory modes last, deepest first.
fn build(root: &Path, specs: &[(Vec<Vec<u8>>, Spec)], replace: bool) {
    let mut dir_modes = Vec::new();
    for (components, spec) in specs {
        let rel = components.join(&b'/');
        let path = path_of(root, &rel);
        let mut parent_ok = true;
        for depth in 1..components.len() {
            let parent = path_of(root, &components[..depth].join(&b'/'));
            match fs::symlink_metadata(&parent) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) if replace => {
                    fs::remove_file(&parent).unwrap();
                    fs::create_dir(&parent).unwrap();
                }
                Ok(_) => {
                    parent_ok = false;
                    break;
                }
                Err(_) => fs::create_dir(&parent).unwrap(),
            }
        }
        if !parent_ok {
            continue;
        }
        if let Ok(meta) = fs::symlink_metadata(&path) {
            if !replace {
                continue;
            }
            if meta.is_dir() {
                make_writable(&path);
                fs::remove_dir_all(&path).unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
        }
        match spec {
            Spec::File { mode, content } => {
                fs::write(&path, content.bytes()).unwrap();
                chmod(&path, *mode);
            }
            Spec::Dir { mode } => {
                fs::create_dir(&path).unwrap();
                dir_modes.push((path.clone(), *mode));
            }
            Spec::Symlink { target } => symlink(target, &path).unwrap(),
        }
    }
    dir_modes.sort_by_key(|(path, _)| std::cmp::Reverse(path.as_os_str().len()));
    for (path, mode) in dir_modes {
        // A later entry of the same tree may have replaced the directory.
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            chmod(&path, mode);
        }
    }
}

/// `tree` as restore gives it back: every file and directory mode through `sanitize_mode`.
fn sanitized(
    tree: std::collections::BTreeMap<Vec<u8>, Item>,
) -> std::collections::BTreeMap<Vec<u8>, Item> {
    tree.into_iter()
        .map(|(path, item)| {
            let item = match item {
                Item::File {
                    mode,
                    content,
                    mtime_ns,
                } => Item::File {
                    mode: sanitize_mode(mode),
                    content,
                    mtime_ns,
                },
                Item::Dir { mode } => Item::Dir {
                    mode: sanitize_mode(mode),
                },
                link => link,
            };
            (path, item)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_mutate_restore_is_identity(
        original in tree(),
        mutation in tree(),
        deletions in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        root_mode in prop::sample::select(vec![0o755u32, 0o700, 0o750]),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let store = support::store(&tmp.path().join("store"));
        let ws = tmp.path().join("ws");
        fs::create_dir(&ws).unwrap();
        build(&ws, &original, false);
        chmod(&ws, root_mode);
        let before = sanitized(read_tree(&ws));

        let snap = store
            .create_snapshot(&support::ws("w"), &ws, "before", &SnapshotOptions::default())
            .unwrap();
        prop_assert_eq!(snap.manifest.entries.len(), before.len() - 1);

        // Mutate: overlay another tree (replacing conflicts), delete some entries, chmod root.
        make_writable(&ws);
        build(&ws, &mutation, true);
        make_writable(&ws);
        let paths: Vec<Vec<u8>> = read_tree(&ws).into_keys().filter(|p| !p.is_empty()).collect();
        for index in &deletions {
            if paths.is_empty() { break; }
            let path = path_of(&ws, index.get::<Vec<u8>>(&paths));
            if let Ok(meta) = fs::symlink_metadata(&path) {
                if meta.is_dir() { make_writable(&path); fs::remove_dir_all(&path).unwrap(); }
                else { fs::remove_file(&path).unwrap(); }
            }
        }
        chmod(&ws, 0o711);

        store.restore(snap.manifest.id, &ws).unwrap();
        prop_assert_eq!(&read_tree(&ws), &before);
        prop_assert_eq!(store.diff(snap.manifest.id, DiffAgainst::Directory(&ws)).unwrap(), vec![]);

        let fresh = tmp.path().join("fresh/nested");
        store.restore(snap.manifest.id, &fresh).unwrap();
        prop_assert_eq!(&read_tree(&fresh), &before);

        make_writable(&ws);
        make_writable(&fresh);
    }
}
