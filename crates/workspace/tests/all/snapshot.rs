//! Snapshot creation: what is recorded, special files, symlinks never followed, listing.

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;

use conductor_workspace::{
    Entry, Error, Hash, Node, RelPath, Skipped, SnapshotOptions, SpecialFiles, SpecialKind,
};

use crate::support::{self, chmod, write};

#[test]
fn records_files_dirs_symlinks_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    write(&dir, "bin/run", b"#!/bin/sh\n");
    chmod(&dir.join("bin/run"), 0o755);
    fs::create_dir_all(dir.join("empty")).unwrap();
    chmod(&dir.join("empty"), 0o700);
    // A symlink out of the workspace is recorded as a link, not followed.
    symlink("/etc/passwd", dir.join("passwd")).unwrap();
    let snap = store
        .create_snapshot(
            &support::ws("ws"),
            &dir,
            "before-deployment",
            &SnapshotOptions::default(),
        )
        .unwrap();
    let mtime = |p: &str| {
        let m = fs::metadata(dir.join(p)).unwrap();
        std::os::unix::fs::MetadataExt::mtime(&m) * 1_000_000_000
            + std::os::unix::fs::MetadataExt::mtime_nsec(&m)
    };
    let p = |s: &str| RelPath::new(s).unwrap();
    assert_eq!(
        snap.manifest.entries,
        vec![
            Entry {
                path: p("bin"),
                mode: 0o755,
                node: Node::Dir
            },
            Entry {
                path: p("bin/run"),
                mode: 0o755,
                node: Node::File {
                    size: 10,
                    hash: Hash::of(b"#!/bin/sh\n"),
                    mtime_ns: mtime("bin/run")
                },
            },
            Entry {
                path: p("empty"),
                mode: 0o700,
                node: Node::Dir
            },
            Entry {
                path: p("passwd"),
                mode: 0o777,
                node: Node::Symlink {
                    target: b"/etc/passwd".to_vec()
                }
            },
        ]
    );
    assert_eq!(snap.manifest.name, "before-deployment");
    assert_eq!(store.manifest(snap.manifest.id).unwrap(), snap.manifest);
    let listed = store.list_snapshots(Some(&support::ws("ws"))).unwrap();
    assert_eq!(
        listed,
        vec![conductor_workspace::SnapshotInfo::from(&snap.manifest)]
    );
    assert!(store
        .list_snapshots(Some(&support::ws("other")))
        .unwrap()
        .is_empty());
    // The manifest file is where the layout says.
    assert!(tmp
        .path()
        .join(format!("store/snapshots/{}.json", snap.manifest.id))
        .is_file());
}

#[test]
fn special_files_are_refused_or_skipped_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    write(&dir, "f", b"x");
    fs::create_dir(dir.join("run")).unwrap();
    let _listener = UnixListener::bind(dir.join("run/agent.sock")).unwrap();
    let ws = support::ws("ws");
    match store.create_snapshot(&ws, &dir, "s", &SnapshotOptions::default()) {
        Err(Error::SpecialFile {
            path,
            kind: SpecialKind::Socket,
        }) => {
            assert_eq!(path, RelPath::new("run/agent.sock").unwrap())
        }
        other => panic!("expected the socket to be refused, got {other:?}"),
    }
    assert!(store.list_snapshots(None).unwrap().is_empty());
    let options = SnapshotOptions {
        special_files: SpecialFiles::Skip,
        ..Default::default()
    };
    let snap = store.create_snapshot(&ws, &dir, "s", &options).unwrap();
    assert_eq!(
        snap.manifest.skipped,
        vec![Skipped {
            path: RelPath::new("run/agent.sock").unwrap(),
            kind: SpecialKind::Socket
        }]
    );
    assert_eq!(snap.manifest.entries.len(), 2);
}

#[test]
fn workspace_root_must_be_a_directory_not_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let real = tmp.path().join("real");
    write(&real, "f", b"x");
    symlink(&real, tmp.path().join("link")).unwrap();
    let ws = support::ws("ws");
    let options = SnapshotOptions::default();
    assert!(matches!(
        store.create_snapshot(&ws, &tmp.path().join("link"), "s", &options),
        Err(Error::NotADirectory(_))
    ));
    assert!(matches!(
        store.create_snapshot(&ws, &real.join("f"), "s", &options),
        Err(Error::NotADirectory(_))
    ));
    assert!(matches!(
        store.create_snapshot(&ws, &real, "", &options),
        Err(Error::InvalidName(_))
    ));
}
