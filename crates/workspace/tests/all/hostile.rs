//! Task-made and API-made content on the host: no set-id, sticky or world-write bit survives
//! the file API, tar upload, snapshot, restore or import; sparse files stay sparse; imports are
//! bounded by what they declare before anything is written.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use conductor_workspace::{
    upload_tar, AtomicWriter, Error, ImportOptions, Manifest, Node, SnapshotOptions,
    TarUploadOptions, UploadOptions, DEFAULT_IMPORT_MAX, STRIPPED_BITS,
};

use crate::support::{self, chmod, write};

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Every (path, mode) below and including `root` with a set-id, sticky or world-write bit.
fn stripped_bits_in(root: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.mode() & STRIPPED_BITS != 0 {
            found.push((path.display().to_string(), meta.mode() & 0o7777));
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    found
}

#[test]
fn file_api_writes_never_keep_set_id_sticky_or_world_write_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for (name, asked, expected) in [
        ("suid", 0o6755, 0o755),
        ("all", 0o7777, 0o775),
        ("world", 0o666, 0o664),
        ("plain", 0o640, 0o640),
    ] {
        let options = UploadOptions {
            mode: asked,
            ..UploadOptions::default()
        };
        let mut writer = AtomicWriter::create(root, Path::new(name), &options).unwrap();
        writer.write_all(b"#!/bin/sh\n").unwrap();
        writer.commit().unwrap();
        assert_eq!(mode(&root.join(name)), expected, "{name} asked {asked:o}");
    }
}

#[test]
fn tar_upload_never_keeps_set_id_sticky_or_world_write_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry_type, mode) in [
        ("d/", tar::EntryType::Directory, 0o7777),
        ("d/suid", tar::EntryType::Regular, 0o6755),
        ("t/", tar::EntryType::Directory, 0o1777),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry_type);
        header.set_mode(mode);
        header.set_size(if entry_type == tar::EntryType::Regular {
            3
        } else {
            0
        });
        header.set_cksum();
        let data: &[u8] = if entry_type == tar::EntryType::Regular {
            b"abc"
        } else {
            b""
        };
        builder.append_data(&mut header, path, data).unwrap();
    }
    let archive = builder.into_inner().unwrap();
    let root = tmp.path().join("ws");
    fs::create_dir(&root).unwrap();
    upload_tar(
        &root,
        Path::new("up"),
        &archive[..],
        &TarUploadOptions::default(),
    )
    .unwrap();
    let up = root.join("up");
    assert_eq!(
        [
            mode(&up.join("d")),
            mode(&up.join("d/suid")),
            mode(&up.join("t"))
        ],
        [0o775, 0o755, 0o775]
    );
    assert_eq!(stripped_bits_in(&root), Vec::<(String, u32)>::new());
}

#[test]
fn a_tasks_set_id_file_is_neither_recorded_nor_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let ws = tmp.path().join("ws");
    write(&ws, "bin/suid", b"#!/bin/sh\nid\n");
    write(&ws, "shared/x", b"x");
    chmod(&ws.join("bin/suid"), 0o6755);
    chmod(&ws.join("shared"), 0o1777);
    chmod(&ws, 0o2777);
    let snap = store
        .create_snapshot(&support::ws("ws"), &ws, "suid", &SnapshotOptions::default())
        .unwrap();
    let modes: Vec<(String, u32)> = snap
        .manifest
        .entries
        .iter()
        .map(|e| (e.path.to_string(), e.mode))
        .collect();
    assert_eq!(
        (snap.manifest.root_mode, modes),
        (
            0o775,
            vec![
                ("bin".into(), 0o755),
                ("bin/suid".into(), 0o755),
                ("shared".into(), 0o775),
                ("shared/x".into(), 0o644),
            ]
        )
    );
    let other = tmp.path().join("other");
    store.restore(snap.manifest.id, &other).unwrap();
    assert_eq!(stripped_bits_in(&other), Vec::<(String, u32)>::new());
    assert_eq!(mode(&other.join("bin/suid")), 0o755);
    // Diffing the live tree against its snapshot sees no mode change either.
    let changes = store
        .diff(
            snap.manifest.id,
            conductor_workspace::DiffAgainst::Directory(&ws),
        )
        .unwrap();
    assert_eq!(changes, vec![]);
}

/// Exports a snapshot of a small tree, rewrites its manifest with `edit`, and packs it again.
fn crafted_archive(tmp: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let store = support::store(&tmp.join("source"));
    let ws = tmp.join("crafted-ws");
    write(&ws, "d/f", b"payload");
    let snap = store
        .create_snapshot(&support::ws("ws"), &ws, "x", &SnapshotOptions::default())
        .unwrap();
    let archive = store.export(snap.manifest.id, Vec::new()).unwrap();
    let raw = zstd::decode_all(&archive[..]).unwrap();
    let mut entries = Vec::new();
    for entry in tar::Archive::new(&raw[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path_bytes().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        entries.push((path, data));
    }
    let mut manifest: serde_json::Value = serde_json::from_slice(&entries[0].1).unwrap();
    edit(&mut manifest);
    entries[0].1 = serde_json::to_vec(&manifest).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o444);
        builder
            .append_data(
                &mut header,
                String::from_utf8_lossy(path).as_ref(),
                &data[..],
            )
            .unwrap();
    }
    zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap()
}

#[test]
fn an_imported_manifest_asking_for_07777_restores_without_those_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = crafted_archive(tmp.path(), |m| {
        m["root_mode"] = 0o7777.into();
        for entry in m["entries"].as_array_mut().unwrap() {
            entry["mode"] = if entry["type"] == "dir" {
                0o7777
            } else {
                0o6777
            }
            .into();
        }
    });
    let store = support::store(&tmp.path().join("imported"));
    let manifest = store.import(&archive[..]).unwrap();
    assert_eq!(manifest.root_mode, 0o7777);
    let target = tmp.path().join("target");
    store.restore(manifest.id, &target).unwrap();
    assert_eq!(
        [
            mode(&target),
            mode(&target.join("d")),
            mode(&target.join("d/f"))
        ],
        [0o775, 0o775, 0o775]
    );
    assert_eq!(stripped_bits_in(&target), Vec::<(String, u32)>::new());
}

fn file_sizes(manifest: &Manifest) -> Vec<u64> {
    manifest
        .entries
        .iter()
        .filter_map(|e| match e.node {
            Node::File { size, .. } => Some(size),
            _ => None,
        })
        .collect()
}

/// Nothing but the store's own empty directories.
fn assert_empty_store(store: &conductor_workspace::SnapshotStore) {
    assert_eq!(store.list_snapshots(None).unwrap(), vec![]);
    assert_eq!(store.cas_stats().unwrap().blobs, 0);
    let tmp = store.root().join("cas/tmp");
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "{}", tmp.display());
}

#[test]
fn a_decompression_bomb_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    // 64 MiB of zeros exports to a few kilobytes.
    let source = support::store(&tmp.path().join("source"));
    let ws = tmp.path().join("ws");
    fs::create_dir(&ws).unwrap();
    fs::File::create(ws.join("zeros"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let snap = source
        .create_snapshot(&support::ws("ws"), &ws, "bomb", &SnapshotOptions::default())
        .unwrap();
    let archive = source.export(snap.manifest.id, Vec::new()).unwrap();
    assert!(archive.len() < 64 * 1024, "{} bytes", archive.len());

    let store = support::store(&tmp.path().join("dest"));
    let limit = ImportOptions {
        max_bytes: 16 << 20,
    };
    match store.import_with(&archive[..], &limit) {
        Err(Error::ImportTooLarge { declared, limit }) => {
            assert_eq!((declared, limit), (64 << 20, 16 << 20));
        }
        other => panic!("expected ImportTooLarge, got {other:?}"),
    }
    assert_empty_store(&store);
    // Within the limit it imports.
    let roomy = ImportOptions {
        max_bytes: 64 << 20,
    };
    assert_eq!(
        file_sizes(&store.import_with(&archive[..], &roomy).unwrap()),
        vec![64 << 20]
    );
}

#[test]
fn declared_sizes_count_every_file_and_the_default_limit_holds() {
    let tmp = tempfile::tempdir().unwrap();
    // One small blob named by many files restores to many times its size.
    let archive = crafted_archive(tmp.path(), |m| {
        let entries = m["entries"].as_array_mut().unwrap();
        let file = entries[1].clone();
        for i in 0..9 {
            let mut copy = file.clone();
            copy["path"] = format!("d/g{i}").into();
            entries.push(copy);
        }
        m["summary"]["files"] = 10.into();
        m["summary"]["bytes"] = 70.into();
    });
    let store = support::store(&tmp.path().join("dest"));
    match store.import_with(&archive[..], &ImportOptions { max_bytes: 69 }) {
        Err(Error::ImportTooLarge {
            declared: 70,
            limit: 69,
        }) => {}
        other => panic!("expected ImportTooLarge, got {other:?}"),
    }
    assert_empty_store(&store);

    // A manifest declaring 2.5 GB is refused by the default limit (no blob needed to say so).
    let archive = crafted_archive(&tmp.path().join("big"), |m| {
        m["entries"][1]["size"] = 2_500_000_000u64.into();
        m["summary"]["bytes"] = 2_500_000_000u64.into();
    });
    match store.import(&archive[..]) {
        Err(Error::ImportTooLarge { declared, limit }) => {
            assert_eq!((declared, limit), (2_500_000_000, DEFAULT_IMPORT_MAX));
        }
        other => panic!("expected ImportTooLarge, got {other:?}"),
    }
    // Sizes that overflow when summed are refused as corrupt, not a panic.
    let archive = crafted_archive(&tmp.path().join("overflow"), |m| {
        let entries = m["entries"].as_array_mut().unwrap();
        let mut copy = entries[1].clone();
        copy["path"] = "d/g".into();
        entries.push(copy);
        for i in [1, 2] {
            entries[i]["size"] = u64::MAX.into();
        }
        m["summary"]["files"] = 2.into();
        m["summary"]["bytes"] = u64::MAX.into();
    });
    assert!(matches!(
        store.import(&archive[..]),
        Err(Error::ImportTooLarge { .. } | Error::CorruptManifest { .. })
    ));
    assert_empty_store(&store);
}

#[test]
fn sparse_files_are_stored_and_restored_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let ws = tmp.path().join("ws");
    fs::create_dir(&ws).unwrap();
    // `truncate -s 256M` with a little data in the middle and at the end.
    let len: u64 = 256 << 20;
    let file = fs::File::create(ws.join("sparse")).unwrap();
    file.set_len(len).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"middle", 100 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"end", len - 3).unwrap();
    drop(file);
    let snap = store
        .create_snapshot(
            &support::ws("ws"),
            &ws,
            "sparse",
            &SnapshotOptions::default(),
        )
        .unwrap();
    let Node::File { hash, size, .. } = snap.manifest.entries[0].node else {
        panic!("not a file: {:?}", snap.manifest.entries[0]);
    };
    assert_eq!(size, len);
    let allocated = |path: &Path| fs::metadata(path).unwrap().blocks() * 512;
    let blob = store.blob_path(&hash);
    assert_eq!(fs::metadata(&blob).unwrap().len(), len);
    assert!(
        allocated(&blob) <= 1 << 20,
        "blob allocates {} bytes",
        allocated(&blob)
    );

    let target = tmp.path().join("target");
    store.restore(snap.manifest.id, &target).unwrap();
    let restored = target.join("sparse");
    assert_eq!(fs::metadata(&restored).unwrap().len(), len);
    assert!(
        allocated(&restored) <= 1 << 20,
        "restore allocates {}",
        allocated(&restored)
    );
    let back = fs::read(&restored).unwrap();
    assert_eq!(&back[(100 << 20)..(100 << 20) + 6], b"middle");
    assert_eq!(&back[back.len() - 3..], b"end");
    assert_eq!(back.iter().filter(|&&b| b != 0).count(), 9);
    store.verify_snapshot(snap.manifest.id).unwrap();
}

#[test]
fn quota_filesystems_are_mounted_nosuid_and_nodev() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: quota filesystems are loop mounts and need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    fs::create_dir(&ws).unwrap();
    let quota = conductor_workspace::QuotaFs::create(
        &tmp.path().join("ws.img"),
        &ws,
        conductor_workspace::MIN_QUOTA_BYTES,
    )
    .unwrap();
    let point = fs::canonicalize(&ws).unwrap();
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let options: Vec<String> = table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (Path::new(fields[4]) == point).then(|| fields[5].to_owned())
        })
        .collect();
    quota.destroy().unwrap();
    assert_eq!(options.len(), 1, "{options:?}");
    let flags: Vec<&str> = options[0].split(',').collect();
    assert!(
        flags.contains(&"nosuid") && flags.contains(&"nodev"),
        "{options:?}"
    );
}
