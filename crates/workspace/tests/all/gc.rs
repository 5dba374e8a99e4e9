//! Garbage collection: unreferenced blobs go, referenced ones stay — also while snapshots are
//! being created concurrently and keep re-using blobs that GC is about to collect.

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use conductor_workspace::{Error, SnapshotOptions};

use crate::support::{self, bytes, write};

#[test]
fn gc_removes_exactly_the_unreferenced_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    let ws = support::ws("ws");
    write(&dir, "keep", b"kept by both");
    write(&dir, "old", b"only in the first snapshot");
    let first = store
        .create_snapshot(&ws, &dir, "one", &SnapshotOptions::default())
        .unwrap();
    fs::remove_file(dir.join("old")).unwrap();
    write(&dir, "new", b"only in the second");
    let second = store
        .create_snapshot(&ws, &dir, "two", &SnapshotOptions::default())
        .unwrap();
    assert_eq!(store.cas_stats().unwrap().blobs, 3);

    // Nothing to collect while both exist; a crashed writer's temp file is collected.
    fs::write(tmp.path().join("store/cas/tmp/blob-crashed"), b"partial").unwrap();
    let stats = store.gc().unwrap();
    assert_eq!(
        (
            stats.blobs_removed,
            stats.blobs_kept,
            stats.temp_files_removed
        ),
        (0, 3, 1)
    );

    store.delete_snapshot(first.manifest.id).unwrap();
    assert!(matches!(
        store.delete_snapshot(first.manifest.id),
        Err(Error::SnapshotNotFound(_))
    ));
    let stats = store.gc().unwrap();
    assert_eq!((stats.blobs_removed, stats.blobs_kept), (1, 2));
    assert_eq!(stats.bytes_freed, 26);
    store.verify_snapshot(second.manifest.id).unwrap();
    assert_eq!(
        store
            .list_snapshots(None)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        vec![second.manifest.id]
    );

    // The stat cache still names the collected blob's file? No: the file is gone. Re-creating
    // it must store the blob again even though a cache once knew its hash.
    write(&dir, "old", b"only in the first snapshot");
    let third = store
        .create_snapshot(&ws, &dir, "three", &SnapshotOptions::default())
        .unwrap();
    assert_eq!(third.stats.blobs_added, 1);
    store.verify_snapshot(third.manifest.id).unwrap();
}

#[test]
fn cached_hash_of_a_collected_blob_is_stored_again() {
    // Snapshot, delete it, GC: the workspace is unchanged, so the stat cache still has every
    // hash, but the blobs are gone; the next snapshot must notice and store them again.
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    let ws = support::ws("ws");
    write(&dir, "a", &bytes(1, 5000));
    write(&dir, "b", &bytes(2, 300 * 1024));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let first = store
        .create_snapshot(&ws, &dir, "one", &SnapshotOptions::default())
        .unwrap();
    store.delete_snapshot(first.manifest.id).unwrap();
    assert_eq!(store.gc().unwrap().blobs_removed, 2);
    let second = store
        .create_snapshot(&ws, &dir, "two", &SnapshotOptions::default())
        .unwrap();
    assert_eq!(second.stats.blobs_added, 2);
    store.verify_snapshot(second.manifest.id).unwrap();
}

#[test]
fn gc_never_deletes_a_referenced_blob_under_concurrent_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(support::store(&tmp.path().join("store")));
    let dir = tmp.path().join("ws");
    let ws = support::ws("ws");
    // Three states of one file cycle, so blobs are orphaned by deletion and then reused by
    // the next snapshot (from the stat cache or the CAS) while GC wants to collect them.
    let states: Vec<Vec<u8>> = (0..3).map(|i| bytes(100 + i, 4096 + i as usize)).collect();
    write(&dir, "stable", b"always here");

    let done = Arc::new(AtomicBool::new(false));
    let removed = Arc::new(AtomicU64::new(0));
    let collector = {
        let (store, done, removed) = (store.clone(), done.clone(), removed.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                for info in store.list_snapshots(None).unwrap() {
                    if info.name.starts_with("ephemeral") {
                        // May race with nothing: only the collector deletes.
                        store.delete_snapshot(info.id).unwrap();
                    }
                }
                removed.fetch_add(store.gc().unwrap().blobs_removed, Ordering::SeqCst);
            }
        })
    };

    let mut kept = Vec::new();
    for round in 0..150 {
        fs::write(dir.join("cycling"), &states[round % 3]).unwrap();
        fs::write(
            dir.join(format!("unique-{}", round % 2)),
            bytes(round as u64, 100),
        )
        .unwrap();
        let name = if round % 3 == 0 { "keep" } else { "ephemeral" };
        let snap = store
            .create_snapshot(
                &ws,
                &dir,
                &format!("{name}-{round}"),
                &SnapshotOptions::default(),
            )
            .unwrap();
        if name == "keep" {
            // A kept snapshot must be complete right away, whatever GC is doing.
            store.verify_snapshot(snap.manifest.id).unwrap();
            kept.push(snap.manifest.id);
        }
    }
    done.store(true, Ordering::SeqCst);
    collector.join().unwrap();

    assert!(
        removed.load(Ordering::SeqCst) > 0,
        "the collector never collected anything"
    );
    store.gc().unwrap();
    for id in kept {
        store.verify_snapshot(id).unwrap();
        let target = tmp.path().join(format!("restore-{id}"));
        store.restore(id, &target).unwrap();
        assert_eq!(fs::read(target.join("stable")).unwrap(), b"always here");
    }
}
