//! The file API helpers: listings, tar download and upload, delete — and traversal attempts.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use conductor_types::Timestamp;
use conductor_workspace::{
    delete, download_tar, list_dir, stat, upload_tar, ConfineError, FileEntry, FileError, FileKind,
    TarStats, TarUploadOptions, TarUploadStats,
};
use rustix::fs::{AtFlags, Timespec, Timestamps};

use crate::support::{chmod, read_tree, write, Item};

const MTIME: i64 = 1_700_000_000;

/// Sets the mtime of `path` (not following a symlink) to [`MTIME`].
fn pin_mtime(path: &Path) {
    let t = Timespec {
        tv_sec: MTIME,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A workspace `ws` next to a directory `outside` holding a secret.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    write(&ws, "src/main.rs", b"fn main() {}\n");
    write(&ws, "src/deep/x.txt", b"x");
    write(&ws, "run.sh", b"#!/bin/sh\n");
    chmod(&ws.join("run.sh"), 0o750);
    write(tmp.path(), "outside/secret", b"secret");
    symlink("src", ws.join("in-link")).unwrap();
    symlink("../outside", ws.join("out-link")).unwrap();
    symlink("/etc/passwd", ws.join("abs-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        ws.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    (tmp, ws)
}

fn entry(name: &str, kind: FileKind, size: u64, mode: u32, target: Option<&str>) -> FileEntry {
    FileEntry {
        name: name.into(),
        kind,
        size,
        mode,
        mtime: Timestamp(MTIME as u64 * 1000),
        target: target.map(str::to_owned),
    }
}

#[test]
fn listing_reports_each_entry_without_following_symlinks() {
    let (_tmp, ws) = setup();
    for name in ["src", "run.sh", "in-link", "out-link", "abs-link", "pipe"] {
        pin_mtime(&ws.join(name));
    }
    chmod(&ws.join("src"), 0o755);
    pin_mtime(&ws.join("src"));
    let listing = list_dir(&ws, Path::new("")).unwrap();
    assert_eq!(
        listing,
        vec![
            entry(
                "abs-link",
                FileKind::Symlink,
                11,
                0o777,
                Some("/etc/passwd")
            ),
            entry("in-link", FileKind::Symlink, 3, 0o777, Some("src")),
            entry("out-link", FileKind::Symlink, 10, 0o777, Some("../outside")),
            entry("pipe", FileKind::Fifo, 0, 0o600, None),
            entry("run.sh", FileKind::File, 10, 0o750, None),
            entry("src", FileKind::Dir, listing[5].size, 0o755, None),
        ]
    );
    assert_eq!(
        serde_json::to_value(&listing[1]).unwrap(),
        serde_json::json!({
            "name": "in-link", "kind": "symlink", "size": 3, "mode": 0o777,
            "mtime": "2023-11-14T22:13:20.000Z", "target": "src"
        })
    );

    // Through a symlink that stays inside: fine; out of the workspace: refused.
    let names: Vec<String> = list_dir(&ws, Path::new("in-link"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["deep", "main.rs"]);
    assert_eq!(stat(&ws, Path::new("in-link")).unwrap().kind, FileKind::Dir);
    assert_eq!(stat(&ws, Path::new("run.sh")).unwrap().size, 10);
    let refused = |p: &str| list_dir(&ws, Path::new(p)).unwrap_err();
    assert!(matches!(
        refused("out-link"),
        FileError::Confine(ConfineError::Escapes(_))
    ));
    assert!(matches!(
        refused("../outside"),
        FileError::Confine(ConfineError::ParentComponent(_))
    ));
    assert!(matches!(
        refused("/etc"),
        FileError::Confine(ConfineError::Absolute(_))
    ));
    assert!(matches!(refused("run.sh"), FileError::NotADirectory(_)));
    assert!(matches!(
        refused("missing"),
        FileError::Confine(ConfineError::NotFound(_))
    ));
}

/// An archive's entries: path → (type, mode, contents or link target).
fn read_archive(bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap();
        let data = match entry.link_name_bytes() {
            Some(link) => link.into_owned(),
            None => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                data
            }
        };
        out.insert(path, (kind, mode, data));
    }
    out
}

#[test]
fn download_stores_symlinks_as_symlinks_and_never_leaves_the_workspace() {
    let (_tmp, ws) = setup();
    chmod(&ws.join("src"), 0o755);
    chmod(&ws.join("src/deep"), 0o700);
    chmod(&ws.join("src/main.rs"), 0o644);
    chmod(&ws.join("src/deep/x.txt"), 0o600);
    let long = "a-rather-long-directory-name-to-need-a-gnu-long-name-header/".repeat(3);
    write(&ws, &format!("{long}file"), b"long");
    chmod(&ws.join(&long).join("file"), 0o644);

    let (bytes, stats) = download_tar(&ws, Path::new(""), Vec::new()).unwrap();
    assert_eq!(
        stats,
        TarStats {
            entries: 12,
            bytes: 13 + 10 + 1 + 4,
            skipped: vec!["pipe".into()],
        }
    );
    let mut archive = read_archive(&bytes);
    // The long-named directories: present, mode 0o755 as created by `write`.
    let long_dirs: Vec<String> = archive
        .keys()
        .filter(|k| k.starts_with("a-rather") && !k.ends_with("/file"))
        .cloned()
        .collect();
    assert_eq!(long_dirs.len(), 3);
    for dir in long_dirs {
        assert_eq!(
            archive.remove(&dir).unwrap(),
            (tar::EntryType::Directory, 0o755, vec![])
        );
    }
    use tar::EntryType::{Directory, Regular, Symlink};
    let expected: BTreeMap<String, (tar::EntryType, u32, Vec<u8>)> = [
        ("abs-link", (Symlink, 0o777, &b"/etc/passwd"[..])),
        ("in-link", (Symlink, 0o777, b"src")),
        ("out-link", (Symlink, 0o777, b"../outside")),
        ("run.sh", (Regular, 0o750, b"#!/bin/sh\n")),
        ("src", (Directory, 0o755, b"")),
        ("src/deep", (Directory, 0o700, b"")),
        ("src/deep/x.txt", (Regular, 0o600, b"x")),
        ("src/main.rs", (Regular, 0o644, b"fn main() {}\n")),
        (&format!("{long}file"), (Regular, 0o644, b"long")),
    ]
    .into_iter()
    .map(|(p, (k, m, d))| (p.to_owned(), (k, m, d.to_vec())))
    .collect();
    assert_eq!(archive, expected);
    assert!(
        !bytes.windows(6).any(|w| w == b"secret"),
        "the outside file leaked"
    );

    // A subdirectory, reached through a symlink that stays inside.
    let (bytes, _) = download_tar(&ws, Path::new("in-link/deep"), Vec::new()).unwrap();
    let names: Vec<String> = read_archive(&bytes).into_keys().collect();
    assert_eq!(names, ["x.txt"]);

    let refused = |p: &str| download_tar(&ws, Path::new(p), Vec::new()).unwrap_err();
    assert!(matches!(
        refused("out-link"),
        FileError::Confine(ConfineError::Escapes(_))
    ));
    assert!(matches!(
        refused("src/../.."),
        FileError::Confine(ConfineError::ParentComponent(_))
    ));
    assert!(matches!(refused("run.sh"), FileError::NotADirectory(_)));
}

/// A tree without mtimes, for comparing an upload with its source.
fn shape(root: &Path) -> BTreeMap<Vec<u8>, Item> {
    read_tree(root)
        .into_iter()
        .map(|(k, v)| match v {
            Item::File { mode, content, .. } => (
                k,
                Item::File {
                    mode,
                    content,
                    mtime_ns: 0,
                },
            ),
            other => (k, other),
        })
        .collect()
}

#[test]
fn download_then_upload_round_trips_a_tree() {
    let (tmp, ws) = setup();
    fs::remove_file(ws.join("pipe")).unwrap();
    chmod(&ws.join("src/deep"), 0o555);
    let (bytes, _) = download_tar(&ws, Path::new(""), Vec::new()).unwrap();

    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    chmod(&other, 0o755);
    // Absolute symlink targets are refused on the way in: this tree has one.
    let err = upload_tar(
        &other,
        Path::new(""),
        &bytes[..],
        &TarUploadOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, FileError::UnsafeEntry { entry, .. } if entry == "abs-link"),
        "{err}"
    );
    fs::remove_file(ws.join("abs-link")).unwrap();
    // So is a link out of the workspace.
    fs::remove_file(ws.join("out-link")).unwrap();
    let (bytes, _) = download_tar(&ws, Path::new(""), Vec::new()).unwrap();
    let fresh = tmp.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    chmod(&fresh, 0o755);
    let stats = upload_tar(
        &fresh,
        Path::new(""),
        &bytes[..],
        &TarUploadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        stats,
        TarUploadStats {
            files: 3,
            dirs: 2,
            symlinks: 1,
            bytes: 24
        }
    );
    chmod(&ws, 0o755);
    assert_eq!(shape(&fresh), shape(&ws));

    // Into a subdirectory that does not exist yet.
    let stats = upload_tar(
        &fresh,
        Path::new("nested/copy"),
        &bytes[..],
        &TarUploadOptions::default(),
    )
    .unwrap();
    assert_eq!(stats.files, 3);
    assert_eq!(
        fs::read(fresh.join("nested/copy/src/main.rs")).unwrap(),
        b"fn main() {}\n"
    );
}

/// A tar entry written byte by byte, so paths the `tar` crate would refuse can be made.
fn raw(kind: tar::EntryType, path: &[u8], link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..path.len()].copy_from_slice(path);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0; 1024]);
    out
}

#[test]
fn uploads_refuse_traversal_links_out_and_special_files() {
    let (tmp, ws) = setup();
    let outside = tmp.path().join("outside");
    let before_outside = read_tree(&outside);
    let before_etc = fs::read("/etc/passwd").unwrap();
    let opts = TarUploadOptions::default();
    let upload = |entries: &[Vec<u8>]| upload_tar(&ws, Path::new(""), &archive(entries)[..], &opts);
    use tar::EntryType::{Block, Char, Fifo, Link, Regular, Symlink};

    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("../evil", vec![raw(Regular, b"../evil", b"", b"pwned")]),
        (
            "src/../../evil",
            vec![raw(Regular, b"src/../../evil", b"", b"pwned")],
        ),
        ("/tmp/evil", vec![raw(Regular, b"/tmp/evil", b"", b"pwned")]),
        ("l", vec![raw(Symlink, b"l", b"/etc", b"")]),
        ("d/l", vec![raw(Symlink, b"d/l", b"../../outside", b"")]),
        ("l2", vec![raw(Symlink, b"l2", b"src/../../outside", b"")]),
        ("h", vec![raw(Link, b"h", b"/etc/passwd", b"")]),
        ("dev", vec![raw(Char, b"dev", b"", b"")]),
        ("blk", vec![raw(Block, b"blk", b"", b"")]),
        ("fifo", vec![raw(Fifo, b"fifo", b"", b"")]),
    ];
    for (name, entries) in cases {
        let err = upload(&entries).unwrap_err();
        assert!(
            matches!(&err, FileError::UnsafeEntry { entry, .. } if entry == name),
            "{name}: {err}"
        );
    }
    // Writing through a symlink already in the workspace that leads out: refused by the kernel.
    let err = upload(&[raw(Regular, b"out-link/planted", b"", b"pwned")]).unwrap_err();
    assert!(
        matches!(err, FileError::Confine(ConfineError::Escapes(_))),
        "{err}"
    );
    // A file over an escaping symlink replaces the link; the target is untouched.
    upload(&[raw(Regular, b"abs-link", b"", b"mine")]).unwrap();
    assert_eq!(fs::read(ws.join("abs-link")).unwrap(), b"mine");
    assert!(!fs::symlink_metadata(ws.join("abs-link"))
        .unwrap()
        .is_symlink());
    // A symlink that stays inside, and a file written through it.
    let stats = upload(&[
        raw(Symlink, b"d/ok", b"../src/deep", b""),
        raw(Regular, b"d/ok/y.txt", b"", b"why"),
    ])
    .unwrap();
    assert_eq!((stats.symlinks, stats.files), (1, 1));
    assert_eq!(fs::read(ws.join("src/deep/y.txt")).unwrap(), b"why");

    assert_eq!(read_tree(&outside), before_outside);
    assert_eq!(fs::read("/etc/passwd").unwrap(), before_etc);
    assert!(!tmp.path().join("evil").exists());
    assert!(!Path::new("/tmp/evil").exists());
}

#[test]
fn uploads_are_bounded_and_atomic_per_file() {
    let (_tmp, ws) = setup();
    use tar::EntryType::{Directory, Regular};
    let limits = TarUploadOptions {
        max_total_bytes: 10,
        max_entries: 3,
    };
    let two_files = archive(&[
        raw(Regular, b"up/one", b"", b"123456"),
        raw(Regular, b"up/two", b"", b"789012"),
    ]);
    let err = upload_tar(&ws, Path::new(""), &two_files[..], &limits).unwrap_err();
    assert!(matches!(err, FileError::TooLarge { limit: 10 }), "{err}");
    // The first file is whole, the second absent, no temporary file left.
    let names: Vec<String> = list_dir(&ws, Path::new("up"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["one"]);
    assert_eq!(fs::read(ws.join("up/one")).unwrap(), b"123456");

    let many = archive(&[
        raw(Directory, b"a/", b"", b""),
        raw(Directory, b"b/", b"", b""),
        raw(Directory, b"c/", b"", b""),
        raw(Directory, b"d/", b"", b""),
    ]);
    let err = upload_tar(&ws, Path::new("many"), &many[..], &limits).unwrap_err();
    assert!(
        matches!(err, FileError::TooManyEntries { limit: 3 }),
        "{err}"
    );

    // A truncated archive: the file it was writing never appears, the old one stays.
    write(&ws, "keep.txt", b"old");
    let mut cut = raw(Regular, b"keep.txt", b"", &[b'n'; 600]);
    cut.truncate(512 + 100);
    let err = upload_tar(&ws, Path::new(""), &cut[..], &TarUploadOptions::default()).unwrap_err();
    assert!(matches!(err, FileError::Archive(_)), "{err}");
    assert_eq!(fs::read(ws.join("keep.txt")).unwrap(), b"old");
    let leftovers: Vec<String> = list_dir(&ws, Path::new(""))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.starts_with(".conductor"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());

    // Directory modes land after their contents, so a read-only directory still gets its files.
    let mut ro = raw(Directory, b"ro/", b"", b"");
    let mut header = tar::Header::from_byte_slice(&ro[..512]).clone();
    header.set_mode(0o555);
    header.set_cksum();
    ro[..512].copy_from_slice(header.as_bytes());
    let tree = archive(&[ro, raw(Regular, b"ro/inside", b"", b"in")]);
    upload_tar(&ws, Path::new(""), &tree[..], &TarUploadOptions::default()).unwrap();
    assert_eq!(fs::read(ws.join("ro/inside")).unwrap(), b"in");
    let mode = fs::metadata(ws.join("ro")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o555);
}

#[test]
fn delete_is_confined_and_never_follows_symlinks() {
    let (tmp, ws) = setup();
    let outside = tmp.path().join("outside");

    // The link goes, its target stays.
    delete(&ws, Path::new("out-link"), false).unwrap();
    assert!(fs::symlink_metadata(ws.join("out-link")).is_err());
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");

    let err = delete(&ws, Path::new("src"), false).unwrap_err();
    assert!(matches!(err, FileError::NotEmpty(_)), "{err}");
    assert!(ws.join("src/main.rs").exists());

    // A tree with a symlink to the outside inside it: removed, the outside kept.
    symlink(&outside, ws.join("src/deep/escape")).unwrap();
    delete(&ws, Path::new("src"), true).unwrap();
    assert!(!ws.join("src").exists());
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");

    fs::create_dir(ws.join("empty")).unwrap();
    delete(&ws, Path::new("empty"), false).unwrap();
    delete(&ws, Path::new("run.sh"), false).unwrap();
    assert!(!ws.join("empty").exists() && !ws.join("run.sh").exists());

    for recursive in [false, true] {
        let refused = |p: &str| delete(&ws, Path::new(p), recursive).unwrap_err();
        assert!(matches!(
            refused("../outside"),
            FileError::Confine(ConfineError::ParentComponent(_))
        ));
        assert!(matches!(
            refused("/etc/passwd"),
            FileError::Confine(ConfineError::Absolute(_))
        ));
        assert!(matches!(
            refused(""),
            FileError::Confine(ConfineError::Root(_))
        ));
        assert!(matches!(
            refused("nothing"),
            FileError::Confine(ConfineError::NotFound(_))
        ));
    }
    // Through a link that leads out: refused, not deleted outside.
    symlink(&outside, ws.join("again")).unwrap();
    let err = delete(&ws, Path::new("again/secret"), false).unwrap_err();
    assert!(
        matches!(err, FileError::Confine(ConfineError::Escapes(_))),
        "{err}"
    );
    assert!(outside.join("secret").exists());
    assert!(ws.exists());
}
