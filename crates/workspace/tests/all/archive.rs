//! Export/import between two stores; hashes verified on import; unsafe entries refused.

use std::fs;
use std::io::Write;

use conductor_workspace::{Error, Hash, SnapshotOptions};

use crate::support::{self, bytes, read_tree, write};

fn exported(
    tmp: &std::path::Path,
) -> (
    conductor_workspace::SnapshotStore,
    conductor_workspace::Manifest,
    Vec<u8>,
) {
    let store = support::store(&tmp.join("a"));
    let dir = tmp.join("ws");
    write(&dir, "src/main.rs", b"fn main() {}\n");
    write(&dir, "data.bin", &bytes(7, 400 * 1024));
    write(&dir, "dup.bin", &bytes(7, 400 * 1024));
    fs::create_dir_all(dir.join("empty")).unwrap();
    std::os::unix::fs::symlink("src/main.rs", dir.join("link")).unwrap();
    let snap = store
        .create_snapshot(
            &support::ws("ws"),
            &dir,
            "exported",
            &SnapshotOptions::default(),
        )
        .unwrap();
    let archive = store.export(snap.manifest.id, Vec::new()).unwrap();
    (store, snap.manifest, archive)
}

#[test]
fn export_import_round_trip_between_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, manifest, archive) = exported(tmp.path());
    // Deterministic: the same snapshot exports to the same bytes.
    assert_eq!(source.export(manifest.id, Vec::new()).unwrap(), archive);

    let other = support::store(&tmp.path().join("b"));
    let imported = other.import(&archive[..]).unwrap();
    assert_eq!(imported, manifest);
    assert_eq!(other.cas_stats().unwrap().blobs, 2);
    other.verify_snapshot(manifest.id).unwrap();
    let target = tmp.path().join("restored");
    other.restore(manifest.id, &target).unwrap();
    assert_eq!(read_tree(&target), read_tree(&tmp.path().join("ws")));
    // Importing again is a no-op.
    assert_eq!(other.import(&archive[..]).unwrap(), manifest);
    assert_eq!(other.list_snapshots(None).unwrap().len(), 1);
}

/// Rebuilds an archive from (path, bytes) entries, with raw header names (so `..` and
/// absolute names can be written, which the tar crate's own setters refuse).
fn raw_archive(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..path.len()].copy_from_slice(path);
        header.set_size(data.len() as u64);
        header.set_mode(0o444);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap()
}

/// The entries of an exported archive.
fn entries_of(archive: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let raw = zstd::decode_all(archive).unwrap();
    let mut tar = tar::Archive::new(&raw[..]);
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path_bytes().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (path, data)
        })
        .collect()
}

#[test]
fn corrupt_blob_in_archive_is_detected_on_import() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, manifest, archive) = exported(tmp.path());
    let mut entries = entries_of(&archive);
    assert_eq!(entries[0].0, b"manifest.json");
    assert_eq!(entries.len(), 3);
    let flipped = entries
        .iter()
        .position(|(_, d)| d.len() == 400 * 1024)
        .unwrap();
    entries[flipped].1[100] ^= 0xff;
    let expected: Hash = std::str::from_utf8(&entries[flipped].0[6..])
        .unwrap()
        .parse()
        .unwrap();
    let refs: Vec<(&[u8], &[u8])> = entries.iter().map(|(p, d)| (&p[..], &d[..])).collect();
    let other = support::store(&tmp.path().join("b"));
    match other.import(&raw_archive(&refs)[..]) {
        Err(Error::CorruptBlob {
            expected: e,
            context: "import",
            ..
        }) => assert_eq!(e, expected),
        other => panic!("expected a corrupt blob, got {other:?}"),
    }
    assert!(other.list_snapshots(None).unwrap().is_empty());
    assert!(matches!(
        other.manifest(manifest.id),
        Err(Error::SnapshotNotFound(_))
    ));
    // Nothing corrupt was published.
    assert!(!other.blob_path(&expected).exists());
}

#[test]
fn unsafe_or_unexpected_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, archive) = exported(tmp.path());
    let entries = entries_of(&archive);
    let manifest = (&entries[0].0[..], &entries[0].1[..]);
    let other = support::store(&tmp.path().join("b"));
    for bad in [
        &b"../../etc/evil"[..],
        b"/etc/evil",
        b"blobs/../../evil",
        b"blobs/nothex",
        b"extra.txt",
    ] {
        let archive = raw_archive(&[manifest, (bad, b"payload")]);
        match other.import(&archive[..]) {
            Err(Error::UnsafeArchivePath(path)) => assert_eq!(path.as_bytes(), bad),
            other => panic!("{:?} accepted: {other:?}", String::from_utf8_lossy(bad)),
        }
    }
    // A manifest whose blobs are missing from the archive and the store.
    match other.import(&raw_archive(&[manifest])[..]) {
        Err(Error::MissingBlob(_)) => {}
        other => panic!("expected a missing blob, got {other:?}"),
    }
    // Not a manifest first.
    let archive = raw_archive(&[(b"../x", b"x")]);
    assert!(matches!(
        other.import(&archive[..]),
        Err(Error::UnsafeArchivePath(_))
    ));
    assert!(!tmp.path().join("etc").exists() && !tmp.path().join("evil").exists());
    // Garbage.
    let mut garbage = Vec::new();
    garbage.write_all(b"not zstd at all").unwrap();
    assert!(matches!(other.import(&garbage[..]), Err(Error::Archive(_))));
}
