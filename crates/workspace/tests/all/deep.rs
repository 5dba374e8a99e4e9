//! Trees deeper than any recursion or descriptor budget (a task can make them with `mkdir d;
//! cd d` in a loop): every walk either handles them or ends in a typed error, never an abort.
//! Chains are built with `mkdirat` from the previous level's descriptor, so the tests
//! themselves never hit `PATH_MAX`.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use conductor_workspace::{
    clone_at, diff_against, download_tar, remove_in_workspace, remove_tree, tree_size, Change,
    DiffAgainst, Error, FileError, GitError, GitOptions, SnapshotOptions, MAX_PATH_LEN,
};
use rustix::fs::{Mode, OFlags};

use crate::support::{self, write};

/// Deep enough to overflow a thread's stack through recursion and to pass the usual
/// descriptor limit (1024) with one descriptor per level.
const DEPTH: usize = 10_000;

/// Runs `f` on a thread with a small stack: a walk that recurses overflows it long before
/// 10 000 levels (and the abort fails the whole test binary, which is the point).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Makes `depth` nested directories named `name` below `root` and returns the deepest one's
/// descriptor.
fn chain(root: &Path, name: &str, depth: usize) -> OwnedFd {
    let mut dir =
        rustix::fs::open(root, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(
            &dir,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
    }
    dir
}

/// Writes `content` to `dir/name`.
fn put(dir: &OwnedFd, name: &str, content: &[u8]) {
    let fd = rustix::fs::openat(
        dir.as_fd(),
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    std::fs::File::from(fd).write_all(content).unwrap();
}

/// A workspace with two files and a chain of `DEPTH` directories holding a file at the bottom.
fn deep_workspace(parent: &Path) -> PathBuf {
    let dir = parent.join("ws");
    write(&dir, "top.txt", b"0123456789");
    write(&dir, "src/lib.rs", b"fn f() {}\n");
    let bottom = chain(&dir, "d", DEPTH);
    put(&bottom, "leaf", &[7u8; 1234]);
    dir
}

fn assert_too_deep<T: std::fmt::Debug>(result: Result<T, Error>) {
    match result {
        Err(Error::TooDeep { prefix, max }) => {
            assert_eq!(max, MAX_PATH_LEN);
            assert!(prefix.starts_with("d/d/d/"), "{prefix}");
        }
        other => panic!("expected a too-deep error, got {other:?}"),
    }
}

#[test]
fn deep_snapshot_and_diff_end_in_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    write(&dir, "top.txt", b"before");
    let snap = store
        .create_snapshot(
            &support::ws("w"),
            &dir,
            "shallow",
            &SnapshotOptions::default(),
        )
        .unwrap();
    let bottom = chain(&dir, "d", DEPTH);
    put(&bottom, "leaf", b"x");
    drop(bottom);

    let options = SnapshotOptions::default();
    assert_too_deep(store.create_snapshot(&support::ws("w"), &dir, "deep", &options));
    assert_too_deep(store.diff(snap.manifest.id, DiffAgainst::Directory(&dir)));
    // The store still works, and nothing of the refused snapshot was kept.
    assert_eq!(store.list_snapshots(None).unwrap().len(), 1);
    store.restore(snap.manifest.id, &dir).unwrap();
    let restored = support::read_tree(&dir);
    assert_eq!(restored.len(), 2, "{restored:?}");
}

#[test]
fn deep_restore_replaces_a_deep_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let source = tmp.path().join("source");
    write(&source, "d/kept.txt", b"kept");
    write(&source, "other.txt", b"other");
    let snap = store
        .create_snapshot(&support::ws("w"), &source, "s", &SnapshotOptions::default())
        .unwrap();
    // The target holds a deep chain under the same name as a directory the snapshot has, and
    // one under a name it does not have; one level on the way is not even searchable.
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).unwrap();
    drop(chain(&target, "d", DEPTH));
    let bottom = chain(&target, "gone", DEPTH);
    put(&bottom, "leaf", b"x");
    drop(bottom);
    support::chmod(&target.join("gone/gone/gone"), 0o000);

    let id = snap.manifest.id;
    let target_dir = target.clone();
    let stats = on_small_stack(move || store.restore(id, &target_dir)).unwrap();
    assert_eq!(stats.files, 2);
    assert_eq!(support::read_tree(&target), support::read_tree(&source));
}

#[test]
fn deep_trees_are_measured_and_removed_at_any_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deep_workspace(tmp.path());
    let measured = dir.clone();
    let size = on_small_stack(move || tree_size(&measured)).unwrap();
    assert_eq!(size, 10 + 10 + 1234);

    // The file API's recursive delete of a deep directory.
    let root = dir.clone();
    on_small_stack(move || remove_in_workspace(&root, Path::new("d"))).unwrap();
    assert!(!dir.join("d").exists());
    assert_eq!(tree_size(&dir).unwrap(), 20);

    // A whole workspace, with a directory that has no permissions at all on the way.
    let bottom = chain(&dir, "e", DEPTH);
    put(&bottom, "leaf", b"x");
    drop(bottom);
    support::chmod(&dir.join("e/e"), 0o000);
    let removed = dir.clone();
    on_small_stack(move || remove_tree(&removed)).unwrap();
    assert!(!dir.exists());
    // Missing is fine.
    remove_tree(&dir).unwrap();
    assert_eq!(tree_size(&dir).unwrap(), 0);
}

#[test]
fn deep_download_ends_in_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deep_workspace(tmp.path());
    let root = dir.clone();
    let result = on_small_stack(move || download_tar(&root, Path::new(""), Vec::new()).map(drop));
    match result {
        Err(FileError::TooDeep { prefix, max }) => {
            assert_eq!(max, MAX_PATH_LEN);
            assert!(prefix.starts_with("d/d/d/"), "{prefix}");
        }
        other => panic!("expected a too-deep error, got {other:?}"),
    }
}

#[test]
fn removal_never_goes_through_a_mount_point() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ws");
    write(&dir, "sub/file", b"x");
    let mountpoint = dir.join("sub/mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mountpoint)
        .status()
        .unwrap();
    assert!(mounted.success());
    std::fs::write(mountpoint.join("host-file"), b"keep").unwrap();

    let result = remove_tree(&dir);
    let kept = std::fs::read(mountpoint.join("host-file"));
    let unmounted = Command::new("umount").arg(&mountpoint).status().unwrap();
    assert!(unmounted.success());
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("mnt: a mount point inside the tree"),
        "{message}"
    );
    assert_eq!(kept.unwrap(), b"keep");
    // Unmounted, the tree goes.
    remove_tree(&dir).unwrap();
    assert!(!dir.exists());
}

/// A chain of `d` whose deepest file's path is exactly `MAX_PATH_LEN` bytes long.
fn chain_at_the_limit(dir: &Path) {
    // (depth) times "d/", then the file name: 2 * 2046 + 3 = 4095.
    let depth = 2046;
    let bottom = chain(dir, "d", depth);
    put(&bottom, "fff", b"at the limit");
    assert_eq!(depth * 2 + 3, MAX_PATH_LEN);
}

#[test]
fn deep_trees_up_to_the_path_limit_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    write(&dir, "top.txt", b"top");
    chain_at_the_limit(&dir);
    let options = SnapshotOptions::default();
    let snap = on_small_stack({
        let dir = dir.clone();
        move || {
            store
                .create_snapshot(&support::ws("w"), &dir, "limit", &options)
                .map(|s| (s, store))
        }
    });
    let (snap, store) = snap.unwrap();
    assert_eq!(snap.manifest.summary.files, 2);
    assert_eq!(snap.manifest.entries.len(), 2046 + 2);
    let none: Vec<Change> = Vec::new();
    assert_eq!(
        store
            .diff(snap.manifest.id, DiffAgainst::Directory(&dir))
            .unwrap(),
        none
    );

    // Restored elsewhere, and exported to another store and restored from there.
    let restored = tmp.path().join("restored");
    store.restore(snap.manifest.id, &restored).unwrap();
    assert_eq!(
        store
            .diff(snap.manifest.id, DiffAgainst::Directory(&restored))
            .unwrap(),
        none
    );
    let archive = store.export(snap.manifest.id, Vec::new()).unwrap();
    let other = support::store(&tmp.path().join("other"));
    assert_eq!(other.import(&archive[..]).unwrap(), snap.manifest);
    let again = tmp.path().join("again");
    other.restore(snap.manifest.id, &again).unwrap();
    assert_eq!(
        other
            .diff(snap.manifest.id, DiffAgainst::Directory(&again))
            .unwrap(),
        none
    );

    // One byte more is refused, before anything is stored.
    let mut bottom =
        rustix::fs::open(&dir, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for _ in 0..2046 {
        bottom = rustix::fs::openat(
            &bottom,
            "d",
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
    }
    put(&bottom, "ffff", b"past the limit");
    let options = SnapshotOptions::default();
    assert_too_deep(store.create_snapshot(&support::ws("w"), &dir, "past", &options));
}

#[test]
fn deep_import_refuses_a_path_past_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(&tmp.path().join("store"));
    let dir = tmp.path().join("ws");
    let long = "a".repeat(200);
    write(&dir, &long, b"x");
    let snap = store
        .create_snapshot(&support::ws("w"), &dir, "s", &SnapshotOptions::default())
        .unwrap();
    let archive = store.export(snap.manifest.id, Vec::new()).unwrap();
    // The same archive with the file's path made longer than the limit (one component of
    // 4096 bytes: not a name a file system takes, but what a crafted manifest can say).
    let raw = zstd::decode_all(&archive[..]).unwrap();
    let mut tar = tar::Archive::new(&raw[..]);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        let path = entry.path_bytes().into_owned();
        if path == b"manifest.json" {
            let text = String::from_utf8(data).unwrap();
            assert!(text.contains(&long));
            data = text
                .replace(&long, &"a".repeat(MAX_PATH_LEN + 1))
                .into_bytes();
        }
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, &data[..]).unwrap();
    }
    let crafted = zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap();
    let other = support::store(&tmp.path().join("other"));
    match other.import(&crafted[..]) {
        Err(Error::CorruptManifest { reason, .. }) => {
            assert!(reason.contains("longer than 4095 bytes"), "{reason}")
        }
        other => panic!("expected a refused manifest, got {other:?}"),
    }
    assert!(other.list_snapshots(None).unwrap().is_empty());
}

#[test]
fn deep_git_diff_is_correct_or_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    write(&origin, "a.txt", b"one\n");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(&origin)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &origin)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    let ws = tmp.path().join("ws");
    // The origin is a local path: it must be listed, as `[git] allow_local` would.
    let options = GitOptions {
        allow_local: vec![tmp.path().to_path_buf()],
        ..GitOptions::default()
    };
    let checkout = clone_at(origin.to_str().unwrap(), None, &ws, &options).unwrap();
    let bottom = chain(&ws, "d", DEPTH);
    put(&bottom, "leaf", b"x");
    drop(bottom);
    write(&ws, "a.txt", b"two\n");

    // git's own walk of the work tree stops at its path limits: whatever it reports or
    // refuses, the caller gets a value or a typed error, and the change it can see is there.
    let workspace = ws.clone();
    let base = checkout.commit.clone();
    let outcome = on_small_stack(move || diff_against(&workspace, &base, &options));
    match outcome {
        Ok(diff) => assert!(
            diff.files.iter().any(|f| f.path == "a.txt"),
            "{:?}",
            diff.files
        ),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    // And the deep workspace goes away.
    remove_tree(&ws).unwrap();
    assert!(!ws.exists());
}

/// A repository whose one file lies 2046 directories deep: git stores and sends it (below its
/// tree-depth limit) but cannot check it out (the path passes `PATH_MAX`).
fn deep_origin(parent: &Path) -> PathBuf {
    let origin = parent.join("deep-origin");
    std::fs::create_dir(&origin).unwrap();
    let git = |args: &[&str], input: Option<Vec<u8>>| {
        let mut child = Command::new("git")
            .current_dir(&origin)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &origin)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(&input).unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success(), "git {args:?}");
    };
    git(&["init", "-q"], None);
    let path = format!("{}leaf", "d/".repeat(2046));
    let stream = format!(
        "commit refs/heads/main\ncommitter T <t@example.invalid> 0 +0000\ndata 2\nm\n\
         M 100644 inline {path}\ndata 2\nx\n\n"
    );
    git(&["fast-import", "--quiet"], Some(stream.into_bytes()));
    git(&["symbolic-ref", "HEAD", "refs/heads/main"], None);
    origin
}

/// Clones [`deep_origin`]: git cannot write the file and still exits 0; the clone fails with a
/// typed error, and what git had written (a chain 2 000 levels deep) is removed.
fn clone_of_a_too_deep_repository_fails_cleanly(parent: &Path) {
    let origin = deep_origin(parent);
    let dest = parent.join("clone");
    let result = clone_at(
        origin.to_str().unwrap(),
        None,
        &dest,
        &GitOptions {
            allow_local: vec![parent.to_path_buf()],
            ..GitOptions::default()
        },
    );
    match result {
        Err(GitError::IncompleteCheckout { path, missing, .. }) => {
            assert_eq!(missing, 1);
            assert!(path.starts_with("d/d/d/"), "{path}");
        }
        other => panic!("expected an incomplete checkout, got {other:?}"),
    }
    assert!(!dest.exists());
}

#[test]
fn deep_git_clone_of_a_too_deep_repository_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    clone_of_a_too_deep_repository_fails_cleanly(tmp.path());
}

/// The child half of [`deep_walks_hold_a_bounded_number_of_descriptors`]: run alone, under a
/// descriptor limit of 64, by that test.
#[test]
#[ignore = "run by deep_walks_hold_a_bounded_number_of_descriptors under `ulimit -n 64`"]
fn deep_child_under_a_low_descriptor_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deep_workspace(tmp.path());
    assert_eq!(tree_size(&dir).unwrap(), 1254);
    assert!(matches!(
        download_tar(&dir, Path::new(""), Vec::new()),
        Err(FileError::TooDeep { .. })
    ));
    let store = support::store(&tmp.path().join("store"));
    let options = SnapshotOptions::default();
    assert!(matches!(
        store.create_snapshot(&support::ws("w"), &dir, "deep", &options),
        Err(Error::TooDeep { .. })
    ));
    remove_tree(&dir).unwrap();
    assert!(!dir.exists());
    clone_of_a_too_deep_repository_fails_cleanly(tmp.path());
}

#[test]
fn deep_walks_hold_a_bounded_number_of_descriptors() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" "$@""#)
        .arg(&exe)
        .args([
            "deep::deep_child_under_a_low_descriptor_limit",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
