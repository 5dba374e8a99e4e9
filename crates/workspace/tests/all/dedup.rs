//! Deduplication, proven by blob counts, and the stat cache proven by what gets read.

use std::fs;

use conductor_workspace::{CasStats, SnapshotOptions, SnapshotStats};

use crate::support::{self, bytes, write};

#[test]
fn identical_files_across_workspaces_are_one_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let big = bytes(1, 600 * 1024);
    for name in ["ws1", "ws2"] {
        let dir = tmp.path().join(name);
        write(&dir, "lib/shared.bin", &big);
        write(&dir, "small.txt", b"same small file");
        write(&dir, "copy-of-small.txt", b"same small file");
    }
    write(&tmp.path().join("ws2"), "own.txt", b"only in ws2");

    let first = store
        .create_snapshot(
            &support::ws("ws1"),
            &tmp.path().join("ws1"),
            "s",
            &SnapshotOptions::default(),
        )
        .unwrap();
    assert_eq!(first.stats.blobs_added, 2);
    let second = store
        .create_snapshot(
            &support::ws("ws2"),
            &tmp.path().join("ws2"),
            "s",
            &SnapshotOptions::default(),
        )
        .unwrap();
    assert_eq!(second.stats.blobs_added, 1, "only own.txt is new");
    assert_eq!(
        store.cas_stats().unwrap(),
        CasStats {
            blobs: 3,
            bytes: big.len() as u64 + 15 + 11
        }
    );
}

#[test]
fn snapshot_after_a_small_change_stores_and_reads_only_the_change() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    for i in 0..200 {
        write(
            &dir,
            &format!("d{}/f{i}.txt", i % 7),
            &bytes(i, 1000 + i as usize * 10),
        );
    }
    write(&dir, "big.bin", &bytes(999, 700 * 1024));
    let ws = support::ws("ws");
    let first = store
        .create_snapshot(&ws, &dir, "one", &SnapshotOptions::default())
        .unwrap();
    assert_eq!(first.stats.files_read, 201);
    let blobs = store.cas_stats().unwrap().blobs;
    assert_eq!(blobs, 201);

    // Let the coarse clock move past the first snapshot's tick so its cache entries are
    // trusted (files written in the snapshot's own tick are re-read by design).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let unchanged = store
        .create_snapshot(&ws, &dir, "two", &SnapshotOptions::default())
        .unwrap();
    assert_eq!(unchanged.stats.blobs_added, 0);
    assert_eq!(
        unchanged.stats.files_cached + unchanged.stats.files_read,
        201
    );

    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&dir, "d3/f3.txt", b"changed");
    let mut big = fs::read(dir.join("big.bin")).unwrap();
    big[12345] ^= 1;
    fs::write(dir.join("big.bin"), &big).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let third = store
        .create_snapshot(&ws, &dir, "three", &SnapshotOptions::default())
        .unwrap();
    assert_eq!(
        third.stats,
        SnapshotStats {
            files_cached: 199,
            files_read: 2,
            blobs_added: 2,
            bytes_added: 7 + big.len() as u64,
        }
    );
    assert_eq!(store.cas_stats().unwrap().blobs, blobs + 2);
    // The earlier snapshots still restore exactly.
    let back = tmp.path().join("back");
    store.restore(first.manifest.id, &back).unwrap();
    assert_eq!(fs::read(back.join("d3/f3.txt")).unwrap(), bytes(3, 1030));
}

#[test]
fn same_size_same_mtime_rewrite_is_still_seen() {
    // The cache key includes ctime and inode: restoring the old mtime after a same-length
    // rewrite must not fool the next snapshot.
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    write(&dir, "f", b"aaaa");
    let path = dir.join("f");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let ws = support::ws("ws");
    store
        .create_snapshot(&ws, &dir, "one", &SnapshotOptions::default())
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&path, b"bbbb").unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let second = store
        .create_snapshot(&ws, &dir, "two", &SnapshotOptions::default())
        .unwrap();
    assert_eq!(second.stats.files_read, 1);
    let entry = &second.manifest.entries[0];
    assert_eq!(
        entry.node,
        conductor_workspace::Node::File {
            size: 4,
            hash: conductor_workspace::Hash::of(b"bbbb"),
            mtime_ns: fs::metadata(&path)
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64,
        }
    );
}
