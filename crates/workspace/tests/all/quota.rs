//! Disk quotas for real: loop-mounted ext4 images (root only; skipped with the reason otherwise).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use conductor_workspace::{MountState, QuotaError, QuotaFs};

const MIB: u64 = 1024 * 1024;

fn root_or_skip(test: &str) -> bool {
    let uid = rustix::process::geteuid();
    if !uid.is_root() {
        eprintln!(
            "skipped {test}: quota tests mount loop devices and need root (uid {})",
            uid.as_raw()
        );
    }
    uid.is_root()
}

/// Unmounts and removes the image whatever the test did, so a failure leaves no mount behind.
struct Guard(QuotaFs);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.clone().destroy();
    }
}

fn setup(size: u64) -> (tempfile::TempDir, PathBuf, PathBuf, Guard) {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("ws.img");
    let ws = tmp.path().join("ws");
    fs::create_dir(&ws).unwrap();
    let quota = QuotaFs::create(&image, &ws, size).unwrap();
    (tmp, image, ws, Guard(quota))
}

/// Mount entries on `point` in this process's mount table.
fn mounts_on(point: &Path) -> usize {
    let point = fs::canonicalize(point).unwrap();
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(point.to_str().unwrap()))
        .count()
}

/// Bytes the image really occupies on the host.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// Writes 1 MiB chunks to `path` until a write fails; returns the bytes written and the error.
fn fill(path: &Path) -> (u64, std::io::Error) {
    let mut file = File::create(path).unwrap();
    let chunk: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => return (written, e),
        }
        // Delayed allocation may accept a write and fail at flush: make each one count.
        if let Err(e) = file.sync_data() {
            return (written, e);
        }
        assert!(
            written <= 64 * MIB,
            "wrote {written} bytes into a 32 MiB quota"
        );
    }
}

#[test]
fn writing_past_the_quota_fails_with_enospc_and_the_image_never_grows() {
    if !root_or_skip("quota ENOSPC") {
        return;
    }
    let (_tmp, image, ws, guard) = setup(32 * MIB);
    let quota = &guard.0;
    // Empty workspace (no lost+found), mounted, sparse.
    assert_eq!(fs::read_dir(&ws).unwrap().count(), 0);
    assert_eq!(quota.state().unwrap(), MountState::Mounted);
    assert_eq!(fs::metadata(&image).unwrap().len(), 32 * MIB);
    assert!(
        allocated(&image) < 8 * MIB,
        "fresh 32 MiB image occupies {} bytes",
        allocated(&image)
    );
    let fresh = quota.usage().unwrap();
    assert!(
        fresh.total <= 32 * MIB && fresh.total > 24 * MIB,
        "{fresh:?}"
    );
    assert!(fresh.used < 4 * MIB, "{fresh:?}");
    assert!(fresh.available > 20 * MIB, "{fresh:?}");
    assert!(!quota.is_full().unwrap());

    let (written, err) = fill(&ws.join("big"));
    assert_eq!(err.raw_os_error(), Some(28), "expected ENOSPC, got {err}");
    assert!(
        written > 20 * MIB && written <= 32 * MIB,
        "wrote {written} bytes"
    );
    let full = quota.usage().unwrap();
    assert!(full.used >= written, "{full:?} after writing {written}");
    assert!(full.used <= full.total, "{full:?}");
    assert!(quota.is_full().unwrap(), "{full:?}");
    // The host holds at most the image's size, however hard the task pushed.
    assert_eq!(fs::metadata(&image).unwrap().len(), 32 * MIB);
    assert!(allocated(&image) <= 32 * MIB, "{}", allocated(&image));
    assert!(allocated(&image) >= written, "{}", allocated(&image));

    // Freeing space inside makes room again.
    fs::remove_file(ws.join("big")).unwrap();
    rustix::fs::sync();
    assert!(!quota.is_full().unwrap(), "{:?}", quota.usage().unwrap());
    fs::write(ws.join("small"), b"fits").unwrap();
}

#[test]
fn mount_and_unmount_are_idempotent_and_survive_a_restart() {
    if !root_or_skip("quota mount/unmount") {
        return;
    }
    let (tmp, image, ws, guard) = setup(16 * MIB);
    fs::write(ws.join("keep"), b"kept").unwrap();
    assert!(!guard.0.mount().unwrap(), "second mount must be a no-op");
    assert_eq!(mounts_on(&ws), 1);

    // A new process finds the image mounted from the system's tables alone.
    let again = QuotaFs::open(&image, &ws).unwrap();
    assert_eq!(again.state().unwrap(), MountState::Mounted);
    assert!(!again.mount().unwrap());
    assert_eq!(mounts_on(&ws), 1);

    assert!(again.unmount().unwrap());
    assert!(!again.unmount().unwrap(), "second unmount must be a no-op");
    assert_eq!(mounts_on(&ws), 0);
    assert_eq!(again.state().unwrap(), MountState::NotMounted);
    assert_eq!(fs::read_dir(&ws).unwrap().count(), 0);
    assert!(matches!(again.usage(), Err(QuotaError::NotMounted(_))));
    // The loop device went with the mount.
    let bound = Command::new("losetup")
        .arg("-j")
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&bound.stdout), "");

    // Contents persist across unmount/mount.
    assert!(again.mount().unwrap());
    assert_eq!(fs::read(ws.join("keep")).unwrap(), b"kept");

    // An existing image is never overwritten.
    let other_dir = tmp.path().join("other");
    fs::create_dir(&other_dir).unwrap();
    assert!(matches!(
        QuotaFs::create(&image, &other_dir, 16 * MIB),
        Err(QuotaError::ImageExists(_))
    ));

    // A non-empty mountpoint is refused: the mount would hide files outside the quota.
    again.unmount().unwrap();
    fs::write(ws.join("hidden"), b"x").unwrap();
    assert!(matches!(
        again.mount(),
        Err(QuotaError::MountpointNotEmpty(_))
    ));
    fs::remove_file(ws.join("hidden")).unwrap();

    // Something else mounted there is neither taken for ours nor unmounted.
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "conductor-test"])
        .arg(&ws)
        .status()
        .unwrap();
    assert!(status.success());
    let state = again.state().unwrap();
    let refused_mount = again.mount();
    let refused_unmount = again.unmount();
    let _ = rustix::mount::unmount(&ws, rustix::mount::UnmountFlags::empty());
    assert_eq!(
        state,
        MountState::Other {
            source: "conductor-test".into(),
            fstype: "tmpfs".into()
        }
    );
    assert!(
        matches!(refused_mount, Err(QuotaError::MountedOther { .. })),
        "{refused_mount:?}"
    );
    assert!(
        matches!(refused_unmount, Err(QuotaError::MountedOther { .. })),
        "{refused_unmount:?}"
    );

    // Destroy: mounted again, then unmounted and gone.
    again.mount().unwrap();
    again.clone().destroy().unwrap();
    assert!(!image.exists());
    assert_eq!(mounts_on(&ws), 0);
    assert!(matches!(
        QuotaFs::open(&image, &ws),
        Err(QuotaError::ImageMissing(_))
    ));
}

/// Whether this process has `CAP_SYS_RESOURCE`, which ext4's online resize asks for.
fn has_cap_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(eff, 16).unwrap() & (1 << 24) != 0
}

/// Fills the quota, grows it (`unmounted`: offline, else online) and fills it again.
fn grow_a_full_filesystem(unmounted: bool) {
    let (_tmp, image, ws, guard) = setup(16 * MIB);
    let quota = &guard.0;
    let (written, err) = fill(&ws.join("a"));
    assert_eq!(err.raw_os_error(), Some(28), "{err}");
    assert!(quota.is_full().unwrap());
    let before = quota.usage().unwrap();

    assert!(matches!(
        quota.resize(8 * MIB),
        Err(QuotaError::Shrink { .. })
    ));
    if unmounted {
        quota.unmount().unwrap();
    }
    quota.resize(48 * MIB).unwrap();
    assert_eq!(fs::metadata(&image).unwrap().len(), 48 * MIB);
    if unmounted {
        assert!(quota.mount().unwrap());
    }
    let after = quota.usage().unwrap();
    assert!(
        after.total > before.total + 28 * MIB,
        "{before:?} → {after:?}"
    );
    assert!(after.used >= written);
    assert!(!quota.is_full().unwrap(), "{after:?}");
    let (more, err) = fill(&ws.join("b"));
    assert_eq!(err.raw_os_error(), Some(28), "{err}");
    assert!(
        more > 24 * MIB,
        "only {more} more bytes after growing by 32 MiB"
    );
    assert_eq!(fs::metadata(&image).unwrap().len(), 48 * MIB);
}

#[test]
fn a_full_filesystem_grows_offline() {
    if !root_or_skip("quota resize offline") {
        return;
    }
    grow_a_full_filesystem(true);
}

#[test]
fn a_full_filesystem_grows_online() {
    if !root_or_skip("quota resize online") {
        return;
    }
    if !has_cap_sys_resource() {
        // Still proves the failure is clean: the quota keeps its old size.
        let (_tmp, image, _ws, guard) = setup(16 * MIB);
        let err = guard.0.resize(48 * MIB).unwrap_err();
        assert!(
            matches!(
                err,
                QuotaError::Tool {
                    tool: "resize2fs",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::metadata(&image).unwrap().len(), 16 * MIB);
        assert!(guard.0.usage().unwrap().total <= 16 * MIB);
        eprintln!(
            "skipped online growth: ext4 online resize needs CAP_SYS_RESOURCE, which this \
             process lacks (checked that the failed resize left the quota at its old size)"
        );
        return;
    }
    grow_a_full_filesystem(false);
}

#[test]
fn tiny_quotas_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = QuotaFs::create(&tmp.path().join("i.img"), tmp.path(), 1024).unwrap_err();
    // Without root the root check comes first; with it, the size check.
    assert!(
        matches!(
            err,
            QuotaError::TooSmall { .. } | QuotaError::NotRoot { .. }
        ),
        "{err}"
    );
    if rustix::process::geteuid().is_root() {
        assert_eq!(
            err.to_string(),
            "disk quota of 1024 bytes is too small: the minimum is 8388608 bytes"
        );
    } else {
        assert!(err.to_string().starts_with("quota needs root: "), "{err}");
    }
    assert!(!tmp.path().join("i.img").exists());
}

/// What a server does between two tasks with a kept filesystem: the first task's workspace is
/// a bind of it, the task leaves files, odd modes, owners and attributes; after the bind is
/// removed and the filesystem reset, the next bind is empty, `root:root 0755`, without
/// attributes, with the whole quota free, mounted `nosuid,nodev`, and nothing outside was
/// touched.
#[test]
fn a_reset_filesystem_is_bound_again_as_if_new() {
    if !root_or_skip("a_reset_filesystem_is_bound_again_as_if_new") {
        return;
    }
    let (tmp, _image, kept, quota) = setup(16 * MIB);
    let before = quota.0.usage().unwrap();
    let device = quota.0.device().unwrap();
    let first = tmp.path().join("task-1");
    fs::create_dir(&first).unwrap();
    quota.0.bind_on(device, &first).unwrap();
    assert_eq!(mounts_on(&first), 1);
    // The first task.
    let outside = tmp.path().join("outside");
    fs::write(&outside, "host file").unwrap();
    fs::create_dir_all(first.join("a/b/c")).unwrap();
    fs::write(first.join("a/b/c/data"), vec![7u8; 4 * MIB as usize]).unwrap();
    std::os::unix::fs::symlink(&outside, first.join("link")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), first.join("a/dirlink")).unwrap();
    std::os::unix::fs::lchown(&first, Some(4242), Some(4242)).unwrap();
    fs::set_permissions(&first, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    rustix::fs::lsetxattr(&first, "user.secret", b"v", rustix::fs::XattrFlags::empty()).unwrap();
    // A directory without search permission, as a task may leave one.
    fs::set_permissions(
        first.join("a/b"),
        std::os::unix::fs::PermissionsExt::from_mode(0o0),
    )
    .unwrap();
    assert!(quota.0.usage().unwrap().used > before.used + 3 * MIB);

    conductor_workspace::unbind(&first).unwrap();
    assert_eq!(mounts_on(&first), 0);
    assert_eq!(fs::read_dir(&first).unwrap().count(), 0);
    quota.0.reset(device).unwrap();

    let second = tmp.path().join("task-2");
    fs::create_dir(&second).unwrap();
    quota.0.bind_on(device, &second).unwrap();
    assert_eq!(fs::read_dir(&second).unwrap().count(), 0);
    let meta = fs::metadata(&second).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o755)
    );
    let mut names = [0u8; 256];
    assert_eq!(rustix::fs::llistxattr(&second, &mut names[..]).unwrap(), 0);
    assert!(quota.0.usage().unwrap().used <= before.used + 64 * 1024);
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point = fs::canonicalize(&second).unwrap();
    let options: Vec<&str> = table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (Path::new(fields[4]) == point).then_some(fields[5])
        })
        .collect();
    assert_eq!(options.len(), 1, "{options:?}");
    assert!(
        options[0].contains("nosuid") && options[0].contains("nodev"),
        "{options:?}"
    );
    assert_eq!(fs::read_to_string(&outside).unwrap(), "host file");
    assert!(tmp.path().join("task-1").is_dir());
    conductor_workspace::unbind(&second).unwrap();
    // Not mounted: nothing is removed.
    fs::write(kept.join("stays"), "x").unwrap();
    quota.0.unmount().unwrap();
    fs::write(kept.join("host"), "x").unwrap();
    assert!(matches!(
        quota.0.reset(device),
        Err(QuotaError::NotMounted(_))
    ));
    assert!(kept.join("host").exists());
    fs::remove_file(kept.join("host")).unwrap();
}
