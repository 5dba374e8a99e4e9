//! Restore safety: symlinks planted in the target are replaced, never written through;
//! corrupt or missing blobs fail the restore.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use conductor_workspace::{Error, RestoreStats, SnapshotOptions};

use crate::support::{self, read_tree, write};

#[test]
fn planted_symlinks_are_replaced_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    write(&dir, "sub/file", b"inside");
    write(&dir, "top", b"top");
    let snap = store
        .create_snapshot(&support::ws("ws"), &dir, "s", &SnapshotOptions::default())
        .unwrap();
    let expected = read_tree(&dir);

    // An attacker-controlled task replaces `sub` with a symlink to a directory outside, and
    // `top` with a symlink to a file outside.
    let outside = tmp.path().join("outside");
    write(&outside, "file", b"precious");
    write(&outside, "victim", b"precious too");
    fs::remove_dir_all(dir.join("sub")).unwrap();
    symlink(&outside, dir.join("sub")).unwrap();
    fs::remove_file(dir.join("top")).unwrap();
    symlink(outside.join("victim"), dir.join("top")).unwrap();
    write(&dir, "added-later/x", b"x");

    let stats = store.restore(snap.manifest.id, &dir).unwrap();
    assert_eq!(
        stats,
        RestoreStats {
            files: 2,
            symlinks: 0,
            dirs_created: 1,
            removed: 1,
            bytes: 9
        }
    );
    assert_eq!(read_tree(&dir), expected);
    assert_eq!(fs::read(outside.join("file")).unwrap(), b"precious");
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"precious too");
}

#[test]
fn target_that_is_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    write(&dir, "f", b"x");
    let snap = store
        .create_snapshot(&support::ws("ws"), &dir, "s", &SnapshotOptions::default())
        .unwrap();
    let link = tmp.path().join("link");
    symlink(tmp.path().join("elsewhere"), &link).unwrap();
    fs::create_dir(tmp.path().join("elsewhere")).unwrap();
    assert!(matches!(
        store.restore(snap.manifest.id, &link),
        Err(Error::NotADirectory(_))
    ));
    assert_eq!(
        fs::read_dir(tmp.path().join("elsewhere")).unwrap().count(),
        0
    );
}

#[test]
fn corrupt_or_missing_blob_fails_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    write(&dir, "f", b"original contents");
    write(&dir, "g", b"other contents");
    let snap = store
        .create_snapshot(&support::ws("ws"), &dir, "s", &SnapshotOptions::default())
        .unwrap();
    let hash = conductor_workspace::Hash::of(b"original contents");
    let blob = store.blob_path(&hash);
    assert_eq!(
        fs::metadata(&blob).unwrap().permissions().mode() & 0o777,
        0o444
    );
    // Same length, different bytes: only the hash can tell.
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, b"ORIGINAL contents").unwrap();

    let target = tmp.path().join("target");
    write(&target, "f", b"previous f");
    match store.restore(snap.manifest.id, &target) {
        Err(Error::CorruptBlob {
            expected,
            context: "restore",
            ..
        }) => assert_eq!(expected, hash),
        other => panic!("expected a corrupt blob error, got {other:?}"),
    }
    // The file that failed was not replaced by the corrupt bytes.
    assert_eq!(fs::read(target.join("f")).unwrap(), b"previous f");
    assert!(matches!(
        store.verify_snapshot(snap.manifest.id),
        Err(Error::CorruptBlob { .. })
    ));

    fs::remove_file(&blob).unwrap();
    assert!(
        matches!(store.restore(snap.manifest.id, &target), Err(Error::MissingBlob(h)) if h == hash)
    );
}
