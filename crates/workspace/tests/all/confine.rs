//! Path confinement for the file API: traversal attempts refused, uploads atomic.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::Path;

use conductor_workspace::{
    open_in_workspace, remove_in_workspace, resolve_in_workspace, AtomicWriter, ConfineError,
    UploadOptions,
};

use crate::support::write;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ws");
    write(&root, "src/lib.rs", b"lib");
    write(tmp.path(), "secret", b"secret");
    symlink("../secret", root.join("up")).unwrap();
    symlink("/etc", root.join("abs")).unwrap();
    symlink("src", root.join("inside")).unwrap();
    symlink("../../..", root.join("src/deep")).unwrap();
    (tmp, root)
}

#[test]
fn traversal_attempts_are_refused() {
    let (_tmp, root) = setup();
    let r = |p: &str| resolve_in_workspace(&root, Path::new(p));
    assert!(matches!(
        r("../secret"),
        Err(ConfineError::ParentComponent(_))
    ));
    assert!(matches!(
        r("src/../../secret"),
        Err(ConfineError::ParentComponent(_))
    ));
    assert!(matches!(r("/etc/passwd"), Err(ConfineError::Absolute(_))));
    assert!(matches!(r("up"), Err(ConfineError::Escapes(_))));
    assert!(matches!(r("abs/passwd"), Err(ConfineError::Escapes(_))));
    assert!(matches!(
        r("abs/not-there-yet"),
        Err(ConfineError::Escapes(_))
    ));
    assert!(matches!(r("src/deep/etc"), Err(ConfineError::Escapes(_))));
    assert!(matches!(
        open_in_workspace(&root, Path::new("up")),
        Err(ConfineError::Escapes(_))
    ));
    assert!(matches!(
        open_in_workspace(&root, Path::new("a\0b")),
        Err(ConfineError::Nul(_))
    ));

    // Inside is fine, including through a symlink that stays inside, and new paths.
    assert_eq!(r("./src/lib.rs").unwrap(), root.join("src/lib.rs"));
    assert_eq!(r("inside/lib.rs").unwrap(), root.join("inside/lib.rs"));
    assert_eq!(r("new/dir/file").unwrap(), root.join("new/dir/file"));
    assert_eq!(r("").unwrap(), root);
    let mut contents = String::new();
    std::io::Read::read_to_string(
        &mut open_in_workspace(&root, Path::new("inside/lib.rs")).unwrap(),
        &mut contents,
    )
    .unwrap();
    assert_eq!(contents, "lib");
}

#[test]
fn uploads_are_atomic_confined_and_bounded() {
    let (tmp, root) = setup();
    let options = UploadOptions {
        create_parents: true,
        max_bytes: Some(10),
        mode: 0o600,
    };
    let mut upload = AtomicWriter::create(&root, Path::new("out/new.txt"), &options).unwrap();
    upload.write_all(b"hello").unwrap();
    // Not visible until committed.
    assert!(!root.join("out/new.txt").exists());
    upload.commit().unwrap();
    assert_eq!(fs::read(root.join("out/new.txt")).unwrap(), b"hello");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(root.join("out/new.txt"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Over the limit: refused, and the old file stays.
    let mut upload = AtomicWriter::create(&root, Path::new("out/new.txt"), &options).unwrap();
    let err = upload.write_all(b"far too many bytes").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
    drop(upload);
    assert_eq!(fs::read(root.join("out/new.txt")).unwrap(), b"hello");
    assert_eq!(
        fs::read_dir(root.join("out")).unwrap().count(),
        1,
        "temp file left behind"
    );

    // Replacing a symlink that points out replaces the link, never writes the target.
    let mut upload =
        AtomicWriter::create(&root, Path::new("up"), &UploadOptions::default()).unwrap();
    upload.write_all(b"mine").unwrap();
    upload.commit().unwrap();
    assert_eq!(fs::read(tmp.path().join("secret")).unwrap(), b"secret");
    assert_eq!(fs::read(root.join("up")).unwrap(), b"mine");

    // Through an escaping symlink, outside parents, onto a directory, onto the root: refused.
    let opts = UploadOptions {
        create_parents: true,
        ..Default::default()
    };
    assert!(matches!(
        AtomicWriter::create(&root, Path::new("abs/evil"), &opts),
        Err(ConfineError::Escapes(_))
    ));
    assert!(matches!(
        AtomicWriter::create(&root, Path::new("src/deep/tmp/evil"), &opts),
        Err(ConfineError::Escapes(_))
    ));
    assert!(matches!(
        AtomicWriter::create(&root, Path::new("../evil"), &opts),
        Err(ConfineError::ParentComponent(_))
    ));
    assert!(matches!(
        AtomicWriter::create(&root, Path::new("src"), &opts),
        Err(ConfineError::IsDirectory(_))
    ));
    assert!(matches!(
        AtomicWriter::create(&root, Path::new("."), &opts),
        Err(ConfineError::Root(_))
    ));
    assert!(matches!(
        AtomicWriter::create(&root, Path::new("missing/x"), &UploadOptions::default()),
        Err(ConfineError::NotFound(_))
    ));
}

#[test]
fn remove_never_follows_symlinks() {
    let (tmp, root) = setup();
    remove_in_workspace(&root, Path::new("abs")).unwrap();
    assert!(Path::new("/etc/passwd").exists());
    assert!(fs::symlink_metadata(root.join("abs")).is_err());
    symlink(tmp.path(), root.join("src/parent-link")).unwrap();
    remove_in_workspace(&root, Path::new("src")).unwrap();
    assert!(!root.join("src").exists());
    assert_eq!(fs::read(tmp.path().join("secret")).unwrap(), b"secret");
    assert!(matches!(
        remove_in_workspace(&root, Path::new("up/x")),
        Err(ConfineError::Escapes(_) | ConfineError::NotFound(_))
    ));
    assert!(matches!(
        remove_in_workspace(&root, Path::new("nothing")),
        Err(ConfineError::NotFound(_))
    ));
}
