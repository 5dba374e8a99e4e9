//! Disk quotas: a workspace with a disk limit lives on a filesystem of its own — a sparse image
//! file formatted ext4 and loop-mounted on the workspace directory — so a task that fills it
//! gets `ENOSPC` and the host disk never sees more than the image's size.
//!
//! The image is **sparse**: creating a 10 GiB quota allocates a few MiB of metadata on the
//! host (no journal or inode-table zeroing: `lazy_itable_init=1,lazy_journal_init=1`), and host
//! use grows only with what the task really writes, up to the image size. Files deleted
//! inside the workspace are not given back to the host until the image is destroyed.
//!
//! Layout and lifecycle, all needing root (without it every call fails with
//! [`QuotaError::NotRoot`]):
//!
//! - [`QuotaFs::create`] formats a temporary image, renames it to its final path (so an image at
//!   that path is always complete, even after a crash) and mounts it
//!   (`-o loop,nosuid,nodev,noatime`) on an **empty** directory; `lost+found` is removed so the
//!   workspace starts empty.
//! - [`QuotaFs::mount`] and [`QuotaFs::unmount`] are idempotent and safe after a crash or a
//!   restart: whether the image is mounted is read from `/proc/self/mountinfo` and the loop
//!   device's backing file in sysfs, never remembered in memory. Each takes an exclusive
//!   `flock` on the image, so two callers cannot mount it twice.
//! - [`QuotaFs::usage`] and [`QuotaFs::is_full`] read `statvfs` of the mounted filesystem;
//!   [`QuotaFs::resize`] grows it online; [`QuotaFs::destroy`] unmounts, detaches any loop
//!   device left bound to the image, and removes the image.
//!
//! The mount must exist before an execution's sandbox is set up (the namespace executor copies
//! the host's mounts when it builds the sandbox's mount namespace; a container bind is
//! recursive), and the workspace is handed to the sandbox's user as usual: the filesystem's
//! root starts owned by 0:0.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::FlockOperation;
use rustix::io::Errno;
use serde::Serialize;

use crate::command::{self, Finished};
use crate::fsutil;

/// The smallest quota: ext4 with a journal needs a few MiB of metadata.
pub const MIN_QUOTA_BYTES: u64 = 8 * 1024 * 1024;

/// How long a filesystem tool may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// Mount options of a quota filesystem.
pub const MOUNT_OPTIONS: &str = "loop,nosuid,nodev,noatime";

/// Why a quota operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// Not running as root.
    #[error("quota needs root: {op} mounts a loop device, and this process runs as uid {uid}")]
    NotRoot {
        /// What was attempted.
        op: &'static str,
        /// The effective uid.
        uid: u32,
    },
    /// A size below [`MIN_QUOTA_BYTES`].
    #[error("disk quota of {size} bytes is too small: the minimum is {min} bytes")]
    TooSmall {
        /// The requested size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// [`QuotaFs::create`] onto an existing image.
    #[error("quota image {0} already exists")]
    ImageExists(PathBuf),
    /// No image at the path.
    #[error("quota image {0} not found")]
    ImageMissing(PathBuf),
    /// The mountpoint has files that the mount would hide (and that would escape the quota).
    #[error("{0}: not empty; a quota filesystem mounted there would hide its files")]
    MountpointNotEmpty(PathBuf),
    /// Something other than this image is mounted on the mountpoint.
    #[error("{mountpoint}: {device} ({fstype}) is mounted there, not the quota image")]
    MountedOther {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// What is mounted (the mount's source).
        device: String,
        /// Its filesystem type.
        fstype: String,
    },
    /// An operation that needs the filesystem mounted.
    #[error("quota filesystem {0} is not mounted")]
    NotMounted(PathBuf),
    /// Unmount while files are still open in the workspace.
    #[error("{0}: busy, a process still uses the workspace")]
    Busy(PathBuf),
    /// [`QuotaFs::resize`] to less than the current size.
    #[error("cannot shrink a quota filesystem from {current} to {requested} bytes")]
    Shrink {
        /// The image's size.
        current: u64,
        /// The requested size.
        requested: u64,
    },
    /// A tool (`mkfs.ext4`, `mount`, `resize2fs`, `losetup`) failed or could not run.
    #[error("{tool}: {detail}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// Its error output, or why it did not run.
        detail: String,
    },
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> QuotaError {
    let path = path.to_path_buf();
    move |source| QuotaError::Io { op, path, source }
}

/// Space on a quota filesystem, in bytes, from `statvfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    /// The filesystem's size (a little below the image size: ext4 metadata).
    pub total: u64,
    /// Bytes in use (data and metadata).
    pub used: u64,
    /// Bytes an unprivileged writer can still use.
    pub available: u64,
    /// Inodes in all.
    pub inodes_total: u64,
    /// Inodes free.
    pub inodes_free: u64,
}

impl DiskUsage {
    /// Whether the filesystem counts as full: less than 1% of it (at least 1 MiB) available, or
    /// no inode left. ext4 refuses writes with `ENOSPC` a little before `available` reaches
    /// zero (it keeps room for the metadata of delayed allocations), so "exactly zero" would
    /// miss real quota hits.
    pub fn is_full(&self) -> bool {
        let margin = (self.total / 100).max(1024 * 1024);
        self.available < margin || self.inodes_free == 0
    }
}

/// Whether an image is mounted on its mountpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountState {
    /// This image is mounted there.
    Mounted,
    /// Nothing is mounted there.
    NotMounted,
    /// Something else is.
    Other {
        /// The mount's source.
        source: String,
        /// Its filesystem type.
        fstype: String,
    },
}

/// A workspace filesystem with a size limit: an ext4 image file loop-mounted on the workspace
/// directory. A handle holds only the two paths; all state is read from the system, so a
/// handle made after a restart ([`QuotaFs::open`]) sees what the previous process left.
#[derive(Debug, Clone)]
pub struct QuotaFs {
    image: PathBuf,
    mountpoint: PathBuf,
}

impl QuotaFs {
    /// Creates a sparse image of `size_bytes` (rounded up to 4 KiB) at `image`, formats it ext4
    /// (no reserved blocks, root owned by 0:0) and mounts it on `mountpoint`, which must be an
    /// existing, empty directory. If the mount fails after the image is in place, the error is
    /// returned and the image stays: [`QuotaFs::open`] it to mount again, or destroy it.
    pub fn create(image: &Path, mountpoint: &Path, size_bytes: u64) -> Result<Self, QuotaError> {
        require_root("create")?;
        if size_bytes < MIN_QUOTA_BYTES {
            return Err(QuotaError::TooSmall {
                size: size_bytes,
                min: MIN_QUOTA_BYTES,
            });
        }
        let size = size_bytes.div_ceil(4096) * 4096;
        let this = Self::handle(image, mountpoint)?;
        if fs::symlink_metadata(&this.image).is_ok() {
            return Err(QuotaError::ImageExists(this.image));
        }
        check_empty_dir(&this.mountpoint)?;

        let parent = this.image.parent().unwrap_or(Path::new("/"));
        let stem = this
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(fsutil::tmp_name(&format!(".{stem}.creating-")));
        let result = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            file.set_len(size).map_err(io_err("truncate", &tmp))?;
            drop(file);
            let mut mkfs = command::command("mkfs.ext4", &[]);
            mkfs.args(["-q", "-F", "-m", "0", "-E"])
                .arg("root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1")
                .arg(&tmp);
            run_tool("mkfs.ext4", mkfs)?;
            // No-replace rename: a concurrent create of the same image loses cleanly.
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &tmp,
                rustix::fs::CWD,
                &this.image,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| match e {
                Errno::EXIST => QuotaError::ImageExists(this.image.clone()),
                e => QuotaError::Io {
                    op: "rename",
                    path: this.image.clone(),
                    source: e.into(),
                },
            })?;
            sync_dir(parent);
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        this.mount()?;
        // A fresh workspace is empty; e2fsck recreates lost+found if it ever needs it.
        let lost = this.mountpoint.join("lost+found");
        match fs::remove_dir(&lost) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &lost)(e)),
        }
        Ok(this)
    }

    /// A handle on an existing image (after a restart, say). Nothing is mounted or checked
    /// beyond the image existing.
    pub fn open(image: &Path, mountpoint: &Path) -> Result<Self, QuotaError> {
        let this = Self::handle(image, mountpoint)?;
        if !this.image.is_file() {
            return Err(QuotaError::ImageMissing(this.image));
        }
        Ok(this)
    }

    fn handle(image: &Path, mountpoint: &Path) -> Result<Self, QuotaError> {
        // Absolute, symlink-free paths: mountinfo and sysfs report canonical ones.
        let canonical_parent = |p: &Path| -> Result<PathBuf, QuotaError> {
            let name = p.file_name().ok_or_else(|| QuotaError::Io {
                op: "resolve",
                path: p.to_path_buf(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            })?;
            let parent = p.parent().unwrap_or(Path::new("/"));
            let parent = fs::canonicalize(parent).map_err(io_err("resolve", parent))?;
            Ok(parent.join(name))
        };
        Ok(Self {
            image: canonical_parent(image)?,
            mountpoint: canonical_parent(mountpoint)?,
        })
    }

    /// The image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// Where it is mounted: the workspace directory.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the image is mounted on its mountpoint, from `/proc/self/mountinfo`.
    pub fn state(&self) -> Result<MountState, QuotaError> {
        let table = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
        // The last mount on a point is the one visible there.
        let Some(top) = parse_mountinfo(&table)
            .into_iter()
            .rev()
            .find(|m| m.mountpoint == self.mountpoint)
        else {
            return Ok(MountState::NotMounted);
        };
        if loop_backing_file(&top.source).as_deref() == Some(self.image.as_path()) {
            Ok(MountState::Mounted)
        } else {
            Ok(MountState::Other {
                source: top.source,
                fstype: top.fstype,
            })
        }
    }

    /// Mounts the image on the mountpoint. Already mounted: nothing to do (returns `false`);
    /// mounted now: `true`. Refuses a non-empty mountpoint and one where something else is
    /// mounted.
    pub fn mount(&self) -> Result<bool, QuotaError> {
        require_root("mount")?;
        let _lock = self.lock()?;
        match self.state()? {
            MountState::Mounted => return Ok(false),
            MountState::Other { source, fstype } => {
                return Err(QuotaError::MountedOther {
                    mountpoint: self.mountpoint.clone(),
                    device: source,
                    fstype,
                })
            }
            MountState::NotMounted => {}
        }
        check_empty_dir(&self.mountpoint)?;
        let mut mount = command::command("mount", &[]);
        mount
            .args(["-t", "ext4", "-o", MOUNT_OPTIONS, "--"])
            .arg(&self.image)
            .arg(&self.mountpoint);
        run_tool("mount", mount)?;
        match self.state()? {
            MountState::Mounted => Ok(true),
            other => Err(QuotaError::Tool {
                tool: "mount",
                detail: format!("succeeded but the mount table shows {other:?}"),
            }),
        }
    }

    /// Unmounts the image (every stacked mount of it, if it was mounted more than once).
    /// Not mounted: nothing to do (returns `false`). The loop device is released with the
    /// mount (`mount -o loop` sets autoclear). Files still open: [`QuotaError::Busy`].
    pub fn unmount(&self) -> Result<bool, QuotaError> {
        require_root("unmount")?;
        let _lock = self.lock()?;
        let mut unmounted = false;
        for _ in 0..16 {
            match self.state()? {
                MountState::NotMounted => return Ok(unmounted),
                MountState::Other { source, fstype } if !unmounted => {
                    return Err(QuotaError::MountedOther {
                        mountpoint: self.mountpoint.clone(),
                        device: source,
                        fstype,
                    })
                }
                // What was under our mount: not ours to remove.
                MountState::Other { .. } => return Ok(true),
                MountState::Mounted => {}
            }
            rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::empty())
                .map_err(|e| match e {
                    Errno::BUSY => QuotaError::Busy(self.mountpoint.clone()),
                    e => QuotaError::Io {
                        op: "unmount",
                        path: self.mountpoint.clone(),
                        source: e.into(),
                    },
                })?;
            unmounted = true;
        }
        Err(QuotaError::Tool {
            tool: "umount",
            detail: format!(
                "{} still mounted after 16 unmounts",
                self.mountpoint.display()
            ),
        })
    }

    /// The device number of the mounted filesystem (its root's `st_dev`), once the mount table
    /// shows this image mounted on the mountpoint: what [`QuotaFs::reset`] and
    /// [`QuotaFs::bind_on`] check with one `stat` instead of reading the mount table (which is
    /// long on a host with many mounts, and was a seventh of a trivial task's server time).
    pub fn device(&self) -> Result<u64, QuotaError> {
        if self.state()? != MountState::Mounted {
            return Err(QuotaError::NotMounted(self.image.clone()));
        }
        Ok(fs::metadata(&self.mountpoint)
            .map_err(io_err("stat", &self.mountpoint))?
            .dev())
    }

    /// Whether the filesystem of `device` (from [`QuotaFs::device`]) is still what the
    /// mountpoint shows.
    fn check_device(&self, device: u64) -> Result<(), QuotaError> {
        match fs::metadata(&self.mountpoint) {
            Ok(meta) if meta.dev() == device => Ok(()),
            Ok(_) => Err(QuotaError::NotMounted(self.image.clone())),
            Err(e) => Err(io_err("stat", &self.mountpoint)(e)),
        }
    }

    /// Empties the mounted filesystem so another task can have it as if new: everything under
    /// its root is removed (at any depth, symlinks never followed), and the root goes back to
    /// `root:root 0755` without extended attributes (ACLs included). Unlinked files free their
    /// blocks, and ext4 never shows a freed block's old content through a new file. Refuses
    /// (removing nothing) unless the mountpoint still shows the filesystem of `device` (from
    /// [`QuotaFs::device`]); the caller makes sure no process uses it any more.
    pub fn reset(&self, device: u64) -> Result<(), QuotaError> {
        require_root("reset")?;
        self.check_device(device)?;
        crate::walk::remove_contents(&self.mountpoint).map_err(|e| QuotaError::Io {
            op: "empty",
            path: self.mountpoint.clone(),
            source: io::Error::other(e),
        })?;
        let root = &self.mountpoint;
        // A list of names is at most 64 KiB (XATTR_LIST_MAX).
        let mut names = vec![0u8; 65536];
        let length = rustix::fs::llistxattr(root, &mut names[..])
            .map_err(|e| io_err("list attributes of", root)(e.into()))?;
        names.truncate(length);
        for name in names.split(|b| *b == 0).filter(|name| !name.is_empty()) {
            rustix::fs::lremovexattr(root, name)
                .map_err(|e| io_err("remove an attribute of", root)(e.into()))?;
        }
        std::os::unix::fs::lchown(root, Some(0), Some(0)).map_err(io_err("chown", root))?;
        rustix::fs::chmod(root, rustix::fs::Mode::from_raw_mode(0o755))
            .map_err(|e| io_err("chmod", root)(e.into()))?;
        let left = fs::read_dir(root).map_err(io_err("read", root))?.count();
        if left != 0 {
            return Err(QuotaError::MountpointNotEmpty(root.clone()));
        }
        Ok(())
    }

    /// Binds the mounted filesystem's root on `target` (an existing, empty directory) with the
    /// quota mount's options (`nosuid,nodev,noatime`): a workspace directory that is this
    /// filesystem, without a `mount` of its own. A system call, no tool. Refuses unless the
    /// mountpoint still shows the filesystem of `device` (from [`QuotaFs::device`]).
    pub fn bind_on(&self, device: u64, target: &Path) -> Result<(), QuotaError> {
        require_root("bind")?;
        self.check_device(device)?;
        check_empty_dir(target)?;
        use rustix::mount::{mount_bind, mount_remount, MountFlags};
        mount_bind(&self.mountpoint, target).map_err(|e| io_err("bind", target)(e.into()))?;
        let flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOATIME;
        if let Err(e) = mount_remount(target, flags, "") {
            let _ = unbind(target);
            return Err(io_err("remount", target)(e.into()));
        }
        Ok(())
    }

    /// Space used and left on the mounted filesystem.
    pub fn usage(&self) -> Result<DiskUsage, QuotaError> {
        if self.state()? != MountState::Mounted {
            return Err(QuotaError::NotMounted(self.image.clone()));
        }
        let st = rustix::fs::statvfs(&self.mountpoint)
            .map_err(|e| io_err("statvfs", &self.mountpoint)(e.into()))?;
        let frsize = st.f_frsize;
        Ok(DiskUsage {
            total: st.f_blocks * frsize,
            used: st.f_blocks.saturating_sub(st.f_bfree) * frsize,
            available: st.f_bavail * frsize,
            inodes_total: st.f_files,
            inodes_free: st.f_ffree,
        })
    }

    /// Whether the filesystem is full (see [`DiskUsage::is_full`]): after a task failed, this
    /// is what tells a `disk_quota_exceeded` from any other failure.
    pub fn is_full(&self) -> Result<bool, QuotaError> {
        Ok(self.usage()?.is_full())
    }

    /// The image's size: the quota.
    pub fn size(&self) -> Result<u64, QuotaError> {
        Ok(fs::metadata(&self.image)
            .map_err(io_err("stat", &self.image))?
            .len())
    }

    /// Grows the filesystem to `new_size_bytes` (rounded up to 4 KiB); the image is extended
    /// (still sparse). Mounted, ext4 grows online (`losetup --set-capacity`, `resize2fs` on the
    /// loop device; the kernel asks for `CAP_SYS_RESOURCE`); not mounted, offline (`e2fsck -f`,
    /// then `resize2fs` on the image). Shrinking is refused. On failure the image is cut back
    /// to its old size, so the quota stays what it was.
    pub fn resize(&self, new_size_bytes: u64) -> Result<(), QuotaError> {
        require_root("resize")?;
        let _lock = self.lock()?;
        let state = self.state()?;
        if let MountState::Other { source, fstype } = state {
            return Err(QuotaError::MountedOther {
                mountpoint: self.mountpoint.clone(),
                device: source,
                fstype,
            });
        }
        let current = self.size()?;
        let new_size = new_size_bytes.div_ceil(4096) * 4096;
        if new_size < current {
            return Err(QuotaError::Shrink {
                current,
                requested: new_size,
            });
        }
        if new_size == current {
            return Ok(());
        }
        let devices = loop_devices_of(&self.image);
        self.set_image_len(new_size)?;
        let grown = if state == MountState::Mounted {
            devices.iter().try_for_each(|device| {
                set_capacity(device)?;
                let mut resize = command::command("resize2fs", &[]);
                resize.arg(device);
                run_tool("resize2fs", resize).map(drop)
            })
        } else {
            self.check_offline().and_then(|()| {
                let mut resize = command::command("resize2fs", &[]);
                resize.arg(&self.image);
                run_tool("resize2fs", resize).map(drop)
            })
        };
        if grown.is_err() {
            // The filesystem still ends at the old size: cutting the image back loses nothing.
            if self.set_image_len(current).is_ok() {
                for device in &devices {
                    let _ = set_capacity(device);
                }
            }
        }
        grown
    }

    fn set_image_len(&self, len: u64) -> Result<(), QuotaError> {
        let file = OpenOptions::new()
            .write(true)
            .open(&self.image)
            .map_err(io_err("open", &self.image))?;
        file.set_len(len).map_err(io_err("truncate", &self.image))
    }

    /// `e2fsck -f -p`: `resize2fs` insists on a freshly checked filesystem. Exit 1 means errors
    /// were corrected, which is fine.
    fn check_offline(&self) -> Result<(), QuotaError> {
        let mut fsck = command::command("e2fsck", &[]);
        fsck.args(["-f", "-p"]).arg(&self.image);
        let done = command::run(fsck, TOOL_TIMEOUT, 64 * 1024).map_err(|e| QuotaError::Tool {
            tool: "e2fsck",
            detail: e.to_string(),
        })?;
        match done.status.code() {
            Some(0 | 1) => Ok(()),
            _ => Err(QuotaError::Tool {
                tool: "e2fsck",
                detail: format!("{} ({})", done.stderr_text(), done.status),
            }),
        }
    }

    /// Unmounts (if mounted), detaches any loop device still bound to the image (left by a
    /// crash between attach and mount), and removes the image. The mountpoint directory stays.
    pub fn destroy(self) -> Result<(), QuotaError> {
        self.unmount()?;
        for device in loop_devices_of(&self.image) {
            let mut losetup = command::command("losetup", &[]);
            losetup.arg("--detach").arg(&device);
            run_tool("losetup", losetup)?;
        }
        match fs::remove_file(&self.image) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &self.image)(e)),
        }
    }

    /// An exclusive `flock` on the image, released when dropped (or when the process dies).
    fn lock(&self) -> Result<File, QuotaError> {
        let file = match File::open(&self.image) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(QuotaError::ImageMissing(self.image.clone()))
            }
            Err(e) => return Err(io_err("open", &self.image)(e)),
        };
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| io_err("lock", &self.image)(e.into()))?;
        Ok(file)
    }
}

/// Removes the bind mount on `target` made by [`QuotaFs::bind_on`] (detached lazily when a
/// process still holds it). Nothing mounted there: nothing to do.
pub fn unbind(target: &Path) -> Result<(), QuotaError> {
    use rustix::mount::{unmount, UnmountFlags};
    match unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL) => Ok(()),
        Err(Errno::BUSY) => {
            unmount(target, UnmountFlags::DETACH).map_err(|e| io_err("unmount", target)(e.into()))
        }
        Err(e) => Err(io_err("unmount", target)(e.into())),
    }
}

/// Every mount point at or below `prefix`, deepest first (from `/proc/self/mountinfo`): what
/// must be unmounted before the tree under `prefix` can be removed.
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let Ok(table) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut points: Vec<PathBuf> = parse_mountinfo(&table)
        .into_iter()
        .map(|m| m.mountpoint)
        .filter(|point| point.starts_with(prefix))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    points.dedup();
    points
}

fn require_root(op: &'static str) -> Result<(), QuotaError> {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        Ok(())
    } else {
        Err(QuotaError::NotRoot {
            op,
            uid: uid.as_raw(),
        })
    }
}

fn check_empty_dir(dir: &Path) -> Result<(), QuotaError> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("stat", dir))?;
    if !meta.is_dir() {
        return Err(io_err("mount on", dir)(io::Error::from(
            io::ErrorKind::NotADirectory,
        )));
    }
    let mut entries = fs::read_dir(dir).map_err(io_err("read", dir))?;
    if entries.next().is_some() {
        return Err(QuotaError::MountpointNotEmpty(dir.to_path_buf()));
    }
    Ok(())
}

fn set_capacity(device: &Path) -> Result<(), QuotaError> {
    let mut losetup = command::command("losetup", &[]);
    losetup.arg("--set-capacity").arg(device);
    run_tool("losetup", losetup).map(drop)
}

fn sync_dir(dir: &Path) {
    if let Ok(file) = File::open(dir) {
        let _ = file.sync_all();
    }
}

fn run_tool(tool: &'static str, cmd: std::process::Command) -> Result<Finished, QuotaError> {
    let done = command::run(cmd, TOOL_TIMEOUT, 64 * 1024).map_err(|e| QuotaError::Tool {
        tool,
        detail: e.to_string(),
    })?;
    if done.status.success() {
        Ok(done)
    } else {
        Err(QuotaError::Tool {
            tool,
            detail: format!("{} ({})", done.stderr_text(), done.status),
        })
    }
}

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parses mountinfo (`proc(5)`): field 5 is the mountpoint; after the `-` separator come the
/// filesystem type and the source. Paths escape space, tab, newline and backslash as `\ooo`.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mountpoint = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            let source = fields.get(dash + 2)?;
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape(mountpoint)),
                fstype: unescape(fstype).to_string_lossy().into_owned(),
                source: unescape(source).to_string_lossy().into_owned(),
            })
        })
        .collect()
}

fn unescape(field: &str) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// The file behind `/dev/loopN`, from sysfs; `None` for anything that is not a bound loop
/// device (or whose file was deleted).
fn loop_backing_file(source: &str) -> Option<PathBuf> {
    let name = source.strip_prefix("/dev/")?;
    if !name.starts_with("loop") || name.contains('/') {
        return None;
    }
    let text = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    if text.ends_with(" (deleted)") {
        return None;
    }
    Some(PathBuf::from(text))
}

/// Every loop device bound to `image`.
fn loop_devices_of(image: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let image_id = fs::metadata(image).ok().map(|m| (m.dev(), m.ino()));
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let device = format!("/dev/{name}");
            let backing = loop_backing_file(&device)?;
            let same = backing == image
                || (image_id.is_some()
                    && fs::metadata(&backing).ok().map(|m| (m.dev(), m.ino())) == image_id);
            same.then(|| PathBuf::from(device))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mountinfo_is_parsed_with_escapes_and_optional_fields() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
49 22 7:0 / /var/tmp/a\\040b/ws rw,nosuid,nodev - ext4 /dev/loop0 rw
50 22 0:44 / /mnt/x\\134y rw master:3 shared:9 - tmpfs tmp\\040fs rw
";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                MountEntry {
                    mountpoint: "/".into(),
                    fstype: "ext4".into(),
                    source: "/dev/vda".into()
                },
                MountEntry {
                    mountpoint: "/var/tmp/a b/ws".into(),
                    fstype: "ext4".into(),
                    source: "/dev/loop0".into()
                },
                MountEntry {
                    mountpoint: "/mnt/x\\y".into(),
                    fstype: "tmpfs".into(),
                    source: "tmp fs".into()
                },
            ]
        );
    }

    #[test]
    fn full_means_under_one_percent_or_no_inodes() {
        let gib = 1024 * 1024 * 1024;
        let usage = |available, inodes_free| DiskUsage {
            total: gib,
            used: gib - available,
            available,
            inodes_total: 1000,
            inodes_free,
        };
        assert!(!usage(gib / 2, 10).is_full());
        assert!(!usage(gib / 100 + 1, 10).is_full());
        assert!(usage(gib / 100 - 1, 10).is_full());
        assert!(usage(0, 10).is_full());
        assert!(usage(gib / 2, 0).is_full());
        // Small filesystems: at least 1 MiB.
        let small = DiskUsage {
            total: 16 << 20,
            used: 15 << 20,
            available: (1 << 20) - 1,
            inodes_total: 10,
            inodes_free: 5,
        };
        assert!(small.is_full());
    }
}
