//! [`LinuxRootFs`]: the [`RootFs`] that really mounts, in the calling process's mount namespace.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use conductor_types::{Mount, SandboxLayout};
use nix::mount::MsFlags;

use super::{host_paths, Kind, Op, Restrict, RootFs};

/// A host path looked up ahead of time: what it is, its link text, its entries, and an
/// `O_PATH` descriptor that later binds go through (`/proc/self/fd/N`), so no path search is
/// needed after the helper switched to the sandbox's unprivileged host uid.
#[derive(Debug)]
struct Resolved {
    kind: Kind,
    link: Option<PathBuf>,
    children: Option<Vec<String>>,
    fd: Option<OwnedFd>,
}

/// The real thing: mounts in the calling process's mount namespace.
#[derive(Debug, Default)]
pub struct LinuxRootFs {
    resolved: HashMap<PathBuf, Resolved>,
}

impl LinuxRootFs {
    /// Looks up `paths` (and, for directories among them that a rootfs lists, their entries)
    /// now. Missing paths are simply absent; other errors surface when the path is used.
    pub fn resolve(layout: &SandboxLayout) -> Self {
        let mut fs = Self::default();
        let children_of: Vec<&PathBuf> = layout
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::ReadOnlyBindChildren { source, .. } => Some(source),
                _ => None,
            })
            .collect();
        for path in host_paths(layout) {
            let Ok(Some(kind)) = live_probe(&path) else {
                continue;
            };
            let list = children_of.contains(&&path) && kind == Kind::Dir;
            let children = if list { live_list(&path).ok() } else { None };
            if let Some(names) = &children {
                for name in names {
                    let child = path.join(name);
                    if let Ok(Some(kind)) = live_probe(&child) {
                        let entry = resolve_one(&child, kind);
                        fs.resolved.insert(child, entry);
                    }
                }
            }
            let mut entry = resolve_one(&path, kind);
            entry.children = children;
            fs.resolved.insert(path, entry);
        }
        fs
    }
}

fn resolve_one(path: &Path, kind: Kind) -> Resolved {
    let link = match kind {
        Kind::Symlink => std::fs::read_link(path).ok(),
        _ => None,
    };
    let fd = match kind {
        Kind::Symlink => None,
        _ => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(path)
            .ok()
            .map(OwnedFd::from),
    };
    Resolved {
        kind,
        link,
        children: None,
        fd,
    }
}

fn live_probe(path: &Path) -> io::Result<Option<Kind>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Ok(Some(Kind::Symlink)),
        Ok(meta) if meta.is_dir() => Ok(Some(Kind::Dir)),
        Ok(_) => Ok(Some(Kind::File)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn live_list(path: &Path) -> io::Result<Vec<String>> {
    let mut names = std::fs::read_dir(path)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

impl RootFs for LinuxRootFs {
    fn probe(&self, path: &Path) -> io::Result<Option<Kind>> {
        match self.resolved.get(path) {
            Some(entry) => Ok(Some(entry.kind)),
            None => live_probe(path),
        }
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        match self.resolved.get(path).and_then(|e| e.link.clone()) {
            Some(link) => Ok(link),
            None => std::fs::read_link(path),
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        match self.resolved.get(path).and_then(|e| e.children.clone()) {
            Some(names) => Ok(names),
            None => live_list(path),
        }
    }

    fn apply(&mut self, op: &Op) -> io::Result<()> {
        match op {
            Op::MkdirAll(path) => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path),
            Op::Touch(path) => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map(drop),
            Op::Symlink { target, link } => std::os::unix::fs::symlink(target, link),
            Op::WriteFile {
                path,
                contents,
                mode,
            } => {
                std::fs::write(path, contents)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
            }
            Op::Bind {
                source,
                target,
                recursive,
            } => {
                let mut flags = MsFlags::MS_BIND;
                if *recursive {
                    flags |= MsFlags::MS_REC;
                }
                let via_fd = self
                    .resolved
                    .get(source)
                    .and_then(|e| e.fd.as_ref())
                    .map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())));
                let source = via_fd.as_deref().unwrap_or(source);
                nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>)
                    .map_err(io::Error::from)
            }
            Op::Restrict {
                target,
                attrs,
                recursive,
            } => restrict(target, *attrs, *recursive),
            Op::Mount {
                fstype,
                target,
                flags,
                data,
            } => nix::mount::mount(
                Some(*fstype),
                target,
                Some(*fstype),
                *flags,
                Some(data.as_str()),
            )
            .map_err(io::Error::from),
        }
    }
}

/// `struct mount_attr` from `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Adds attributes with `mount_setattr(2)` (one call, recursive, and it leaves the flags the
/// kernel locked alone); before Linux 5.12, a bind remount that repeats the locked flags read
/// with `statvfs` (otherwise `EPERM` in a user namespace), top mount only.
fn restrict(target: &Path, attrs: Restrict, recursive: bool) -> io::Result<()> {
    let mut set = 0;
    if attrs.readonly {
        set |= MOUNT_ATTR_RDONLY;
    }
    if attrs.nosuid {
        set |= MOUNT_ATTR_NOSUID;
    }
    if attrs.nodev {
        set |= MOUNT_ATTR_NODEV;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let path = CString::new(target.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `path` is a valid NUL-terminated string and `attr` a properly sized and aligned
    // `struct mount_attr` that outlives the call; the kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    remount_keeping_locked_flags(target, attrs)
}

fn remount_keeping_locked_flags(target: &Path, attrs: Restrict) -> io::Result<()> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let current = statvfs(target).map_err(io::Error::from)?.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    let locked = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ];
    for (st, ms) in locked {
        if current.contains(st) {
            flags |= ms;
        }
    }
    if attrs.readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    if attrs.nosuid {
        flags |= MsFlags::MS_NOSUID;
    }
    if attrs.nodev {
        flags |= MsFlags::MS_NODEV;
    }
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(io::Error::from)
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Whether this kernel has `open_tree(2)` and `move_mount(2)` (Linux 5.2).
pub fn tree_cloning_supported() -> bool {
    // Without OPEN_TREE_CLONE it only opens a path, like O_PATH: no privilege needed.
    // SAFETY: a valid NUL-terminated path; the descriptor returned is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: open_tree returned a new descriptor nothing else owns.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    true
}

/// A detached copy of the mount tree at the host directory `path` (`open_tree(2)`, recursive),
/// made `nosuid` and `nodev`, to attach inside a sandbox with [`attach_tree`]. `path` itself
/// must be a directory, not a symlink. Needs `CAP_SYS_ADMIN` over the caller's mount namespace.
pub fn clone_tree(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_RECURSIVE as libc::c_uint
        | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    // SAFETY: a valid NUL-terminated path; the descriptor returned is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c_path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new descriptor nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let stat = nix::sys::stat::fstat(tree.as_raw_fd()).map_err(io::Error::from)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", path.display()),
        ));
    }
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: an empty NUL-terminated path relative to our descriptor, and a properly sized
    // `struct mount_attr` that outlives the call; the kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// Attaches a tree from [`clone_tree`] at `target` in the caller's mount namespace
/// (`move_mount(2)`).
pub fn attach_tree(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let c_target = CString::new(target.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: valid NUL-terminated paths and a descriptor we own, all outliving the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
