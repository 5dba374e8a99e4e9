//! Handing a workspace to a sandbox's user, and back, without touching anything outside it.
//!
//! [`hand_over`] is `chown -R uid:gid` made safe for a tree someone else controls: it walks
//! from directory descriptor to directory descriptor (`O_NOFOLLOW`, `*at` calls, never a path,
//! so a directory swapped for a symlink is not followed), iteratively with a bounded number of
//! open directories (a 10 000-level tree neither overflows the stack nor runs out of
//! descriptors: upper levels are closed and reopened through `..`, checked to be the same
//! directory), skips what is already owned, and refuses — before changing it — any file with
//! more than one hard link: its other names may be outside the workspace (a host file the
//! sandbox could then write). Mount points inside the tree are left alone, with everything on
//! them (another filesystem is not the workspace's). [`Ownership`] records a tree's owners and puts them back after
//! the execution (`conductor exec --workspace`). [`check_workspace_root`] refuses directories
//! whose hand-over would re-own the system (`/`, `/etc`, `/usr`, a home, a mount point).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

/// Why a workspace could not be handed over or back.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// A file with other names, which may be outside the workspace.
    #[error("{path}: has {links} hard links, and a link may lead to a file outside the workspace that the sandbox could then write; copy the file instead of linking it")]
    HardLink {
        /// The file.
        path: PathBuf,
        /// Its link count.
        links: u64,
    },
    /// A directory of the walk was moved or replaced while it was walked.
    #[error("{0}: the directory changed while it was handed over; retry when nothing else writes the workspace")]
    Moved(PathBuf),
    /// A system call failed.
    #[error("{path}: {errno}")]
    Sys {
        /// Where.
        path: PathBuf,
        /// The error.
        errno: Errno,
    },
}

/// Why a directory may not be a workspace handed to a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    /// A system directory, one inside one, or an ancestor of a home.
    #[error("{0}: a system directory cannot be a workspace (its files would be handed to the sandbox): use a directory of your own")]
    System(PathBuf),
    /// The user's home directory.
    #[error("{0}: your home directory cannot be a workspace: use a directory inside it")]
    Home(PathBuf),
    /// A mount point.
    #[error("{0}: a mount point cannot be a workspace: use a directory on it")]
    MountPoint(PathBuf),
}

/// Directories that are never a workspace, with everything inside them.
const SYSTEM_TREES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib",
    "/var/log",
    "/var/cache",
    "/var/spool",
    "/var/mail",
    "/var/backups",
    "/var/run",
    "/run",
];
/// Directories that are never a workspace themselves (what they hold may be).
const SYSTEM_DIRS: &[&str] = &[
    "/", "/var", "/tmp", "/var/tmp", "/home", "/root", "/opt", "/srv", "/mnt", "/media",
];

/// Decides whether `path` (absolute, resolved) may be handed to a sandbox: not a system
/// directory or inside one, not `home` or an ancestor of it, not one of `mount_points`.
pub fn check_workspace_root(
    path: &Path,
    home: Option<&Path>,
    mount_points: &[PathBuf],
) -> Result<(), RootError> {
    let system = SYSTEM_TREES.iter().any(|tree| path.starts_with(tree))
        || SYSTEM_DIRS.iter().any(|dir| path == Path::new(dir))
        || !path.is_absolute()
        || path.components().any(|c| c == Component::ParentDir);
    if system {
        return Err(RootError::System(path.to_owned()));
    }
    if let Some(home) = home.filter(|home| home.is_absolute()) {
        if home == path {
            return Err(RootError::Home(path.to_owned()));
        }
        if home.starts_with(path) {
            return Err(RootError::System(path.to_owned()));
        }
    }
    if mount_points.iter().any(|point| point == path) {
        return Err(RootError::MountPoint(path.to_owned()));
    }
    Ok(())
}

/// The mount points listed in `/proc/self/mountinfo` text (field 5, octal escapes decoded).
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(field))))
        .collect()
}

fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Directories kept open at most during a walk; deeper ones close the upper levels.
const OPEN_DIRS: usize = 64;

/// What a visit wants done with an entry.
enum Refusal {
    HardLink(u64),
    Errno(Errno),
}

impl From<Errno> for Refusal {
    fn from(errno: Errno) -> Self {
        Self::Errno(errno)
    }
}

/// One directory of the walk.
struct Frame {
    dir: Option<Dir>,
    name: CString,
    dev: u64,
    ino: u64,
    mnt_id: u64,
    subdirs: Vec<CString>,
}

/// The walk's path to `frames`' last directory and `name` (for errors only).
fn path_of(root: &Path, frames: &[Frame], name: Option<&CStr>) -> PathBuf {
    let mut path = root.to_path_buf();
    for frame in frames.iter().skip(1) {
        path.push(std::ffi::OsStr::from_bytes(frame.name.as_bytes()));
    }
    if let Some(name) = name {
        path.push(std::ffi::OsStr::from_bytes(name.to_bytes()));
    }
    path
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// What the walk needs to know of an entry (`statx`, with the mount it is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    st_uid: u32,
    st_gid: u32,
    st_mode: u32,
    st_nlink: u64,
    st_dev: u64,
    st_ino: u64,
    /// The mount's id (0 where the kernel does not say).
    mnt_id: u64,
}

/// `statx` of `name` in `dir` (`""`: `dir` itself), never following a symlink.
fn stat_at(dir: i32, name: &CStr) -> Result<Stat, Errno> {
    let mut flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_SYNC_AS_STAT;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    let mask = libc::STATX_BASIC_STATS | libc::STATX_MNT_ID;
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `name` is a NUL-terminated string and `buf` a writable statx buffer, both alive
    // for the call.
    let rc = unsafe { libc::statx(dir, name.as_ptr(), flags, mask, buf.as_mut_ptr()) };
    Errno::result(rc)?;
    // SAFETY: statx succeeded, so it filled the buffer (which was zeroed before anyway).
    let buf = unsafe { buf.assume_init() };
    Ok(Stat {
        st_uid: buf.stx_uid,
        st_gid: buf.stx_gid,
        st_mode: u32::from(buf.stx_mode),
        st_nlink: u64::from(buf.stx_nlink),
        st_dev: (u64::from(buf.stx_dev_major) << 32) | u64::from(buf.stx_dev_minor),
        st_ino: buf.stx_ino,
        mnt_id: if buf.stx_mask & libc::STATX_MNT_ID != 0 {
            buf.stx_mnt_id
        } else {
            0
        },
    })
}

fn is_dir(stat: &Stat) -> bool {
    stat.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Walks `root` (not following symlinks, not leaving it): `visit(dir_fd, name, stat)` for the
/// root (`name` `.`) and every entry beneath it; each directory is visited before it is
/// entered.
fn walk(
    root: &Path,
    visit: &mut dyn FnMut(i32, &CStr, &Stat) -> Result<(), Refusal>,
) -> Result<(), HandoverError> {
    let sys = |path: PathBuf| move |errno: Errno| HandoverError::Sys { path, errno };
    let dir = Dir::open(root, DIR_FLAGS, Mode::empty()).map_err(sys(root.to_owned()))?;
    let stat = stat_at(dir.as_raw_fd(), c"").map_err(sys(root.to_owned()))?;
    let attach = |frames: &[Frame], name: Option<&CStr>, refusal: Refusal| match refusal {
        Refusal::HardLink(links) => HandoverError::HardLink {
            path: path_of(root, frames, name),
            links,
        },
        Refusal::Errno(errno) => HandoverError::Sys {
            path: path_of(root, frames, name),
            errno,
        },
    };
    visit(dir.as_raw_fd(), c".", &stat).map_err(|r| attach(&[], None, r))?;
    let mut frames = vec![Frame {
        dir: Some(dir),
        name: CString::default(),
        dev: stat.st_dev,
        ino: stat.st_ino,
        mnt_id: stat.mnt_id,
        subdirs: Vec::new(),
    }];
    list(&mut frames, &mut *visit).map_err(|(name, r)| attach(&frames, name.as_deref(), r))?;
    loop {
        let Some(top) = frames.last_mut() else {
            return Ok(());
        };
        let Some(name) = top.subdirs.pop() else {
            let done = frames.pop();
            reopen_parent(&mut frames, done.as_ref())
                .map_err(|()| HandoverError::Moved(path_of(root, &frames, None)))?;
            continue;
        };
        let Some(parent) = top.dir.as_ref() else {
            return Err(HandoverError::Moved(path_of(root, &frames, None)));
        };
        let child = match Dir::openat(
            Some(parent.as_raw_fd()),
            name.as_c_str(),
            DIR_FLAGS,
            Mode::empty(),
        ) {
            Ok(child) => child,
            // Removed or replaced meanwhile: not followed.
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
            Err(errno) => return Err(attach(&frames, Some(&name), errno.into())),
        };
        let stat =
            stat_at(child.as_raw_fd(), c"").map_err(|e| attach(&frames, Some(&name), e.into()))?;
        if stat.mnt_id != frames[0].mnt_id {
            // Became a mount point meanwhile: another filesystem's files are not ours.
            continue;
        }
        frames.push(Frame {
            dir: Some(child),
            name,
            dev: stat.st_dev,
            ino: stat.st_ino,
            mnt_id: stat.mnt_id,
            subdirs: Vec::new(),
        });
        if frames.len() > OPEN_DIRS {
            let index = frames.len() - OPEN_DIRS - 1;
            frames[index].dir = None;
        }
        list(&mut frames, &mut *visit).map_err(|(name, r)| attach(&frames, name.as_deref(), r))?;
    }
}

/// Visits every entry of the last frame's directory and notes its subdirectories.
fn list(
    frames: &mut [Frame],
    visit: &mut dyn FnMut(i32, &CStr, &Stat) -> Result<(), Refusal>,
) -> Result<(), (Option<CString>, Refusal)> {
    let root_mount = frames.first().map_or(0, |root| root.mnt_id);
    let Some(frame) = frames.last_mut() else {
        return Ok(());
    };
    let Some(dir) = frame.dir.as_mut() else {
        return Ok(());
    };
    let fd = dir.as_raw_fd();
    let names: Vec<CString> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_owned())
        .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
        .collect();
    for name in names {
        let stat = match stat_at(fd, name.as_c_str()) {
            Ok(stat) => stat,
            // Removed meanwhile.
            Err(Errno::ENOENT) => continue,
            Err(errno) => return Err((Some(name), errno.into())),
        };
        // A mount point inside the tree (a bind mount of a host directory, say): neither it
        // nor anything on it is handed over.
        if stat.mnt_id != root_mount {
            continue;
        }
        visit(fd, &name, &stat).map_err(|r| (Some(name.clone()), r))?;
        if is_dir(&stat) {
            frame.subdirs.push(name);
        }
    }
    Ok(())
}

/// After `done` is finished, makes sure its parent (the new last frame) is open: through
/// `done`'s `..`, which must be the directory walked down from.
fn reopen_parent(frames: &mut [Frame], done: Option<&Frame>) -> Result<(), ()> {
    let (Some(parent), Some(done)) = (frames.last_mut(), done) else {
        return Ok(());
    };
    if parent.dir.is_some() {
        return Ok(());
    }
    let child = done.dir.as_ref().ok_or(())?;
    let dir =
        Dir::openat(Some(child.as_raw_fd()), c"..", DIR_FLAGS, Mode::empty()).map_err(|_| ())?;
    let stat = stat_at(dir.as_raw_fd(), c"").map_err(|_| ())?;
    if (stat.st_dev, stat.st_ino) != (parent.dev, parent.ino) {
        return Err(());
    }
    parent.dir = Some(dir);
    Ok(())
}

/// `lchown` of `name` in `dir` (the root itself for `.`) when its owner is not `uid:gid`;
/// a file of several links is refused unless `links_ok`. The check and the change apply to
/// the same inode (an `O_PATH` descriptor), so a swap in between changes nothing else.
fn chown_entry(
    dir: i32,
    name: &CStr,
    stat: &Stat,
    (uid, gid): (u32, u32),
    links_ok: bool,
) -> Result<bool, Refusal> {
    if stat.st_uid == uid && stat.st_gid == gid {
        return Ok(false);
    }
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::openat(Some(dir), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(false),
        Err(errno) => return Err(errno.into()),
    };
    // SAFETY: `openat` just returned this descriptor, and nothing else owns it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let now = stat_at(fd.as_raw_fd(), c"")?;
    if !is_dir(&now) && now.st_nlink > 1 && !links_ok {
        return Err(Refusal::HardLink(now.st_nlink));
    }
    nix::unistd::fchownat(
        Some(fd.as_raw_fd()),
        "",
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_EMPTY_PATH,
    )?;
    Ok(true)
}

/// Gives `root` and everything beneath it to `uid:gid` (see the module documentation);
/// returns how many entries changed. A file of several hard links that is not owned yet is
/// refused, naming it.
pub fn hand_over(root: &Path, uid: u32, gid: u32) -> Result<u64, HandoverError> {
    let mut changed = 0u64;
    walk(root, &mut |dir, name, stat| {
        if chown_entry(dir, name, stat, (uid, gid), false)? {
            changed += 1;
        }
        Ok(())
    })?;
    Ok(changed)
}

/// The owners of a tree, recorded to be put back after an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The root's owner: also the owner of everything created meanwhile.
    root: (u32, u32),
    /// Entries owned otherwise, by `(st_dev, st_ino)`.
    others: HashMap<(u64, u64), (u32, u32)>,
}

impl Ownership {
    /// Records the owners under `root`.
    pub fn record(root: &Path) -> Result<Self, HandoverError> {
        let mut root_owner = None;
        let mut others = HashMap::new();
        walk(root, &mut |_, _, stat| {
            let owner = (stat.st_uid, stat.st_gid);
            match root_owner {
                None => root_owner = Some(owner),
                Some(root) if root == owner => {}
                Some(_) => {
                    others.insert((stat.st_dev, stat.st_ino), owner);
                }
            }
            Ok(())
        })?;
        Ok(Self {
            root: root_owner.unwrap_or((0, 0)),
            others,
        })
    }

    /// Puts the recorded owners back under `root`; entries made since get the root's owner.
    /// A file of several links is changed only when `sandbox` (the uid the tree was handed
    /// to) owns it: the sandbox cannot link to files outside its workspace, so those links
    /// are all inside. Returns how many entries changed.
    pub fn restore(&self, root: &Path, sandbox: u32) -> Result<u64, HandoverError> {
        let mut changed = 0u64;
        walk(root, &mut |dir, name, stat| {
            let owner = self
                .others
                .get(&(stat.st_dev, stat.st_ino))
                .copied()
                .unwrap_or(self.root);
            if chown_entry(dir, name, stat, owner, stat.st_uid == sandbox)? {
                changed += 1;
            }
            Ok(())
        })?;
        Ok(changed)
    }

    /// The root's recorded owner.
    pub fn root_owner(&self) -> (u32, u32) {
        self.root
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn p(path: &str) -> PathBuf {
        PathBuf::from(path)
    }

    #[test]
    fn system_directories_homes_and_mount_points_are_refused() {
        let mounts = [p("/"), p("/data")];
        let home = Some(Path::new("/home/ann"));
        for path in [
            "/",
            "/etc",
            "/etc/ssl",
            "/usr",
            "/usr/local/x",
            "/bin",
            "/lib64",
            "/boot",
            "/proc/1",
            "/sys",
            "/dev/shm",
            "/var",
            "/var/lib/docker",
            "/tmp",
            "/home",
            "/root",
        ] {
            assert_eq!(
                check_workspace_root(Path::new(path), home, &mounts),
                Err(RootError::System(p(path))),
                "{path}"
            );
        }
        assert_eq!(
            check_workspace_root(Path::new("/home/ann"), home, &mounts),
            Err(RootError::Home(p("/home/ann")))
        );
        assert_eq!(
            check_workspace_root(Path::new("/data"), home, &mounts),
            Err(RootError::MountPoint(p("/data")))
        );
        for path in [
            "/home/ann/project",
            "/tmp/ws",
            "/var/tmp/ws",
            "/data/ws",
            "/srv/x",
        ] {
            assert_eq!(
                check_workspace_root(Path::new(path), home, &mounts),
                Ok(()),
                "{path}"
            );
        }
    }

    #[test]
    fn mount_points_come_from_mountinfo_with_escapes_decoded() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    40 22 0:35 / /mnt/my\\040disk rw - tmpfs tmpfs rw\n";
        assert_eq!(mount_points(text), vec![p("/"), p("/mnt/my disk")]);
    }

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn a_hard_link_to_an_outside_file_is_refused_and_left_alone() {
        if !root() {
            eprintln!("skipping: chown needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "host file").unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::hard_link(&outside, ws.join("sub/link")).unwrap();
        let err = hand_over(&ws, 4242, 4343).unwrap_err();
        assert!(
            matches!(&err, HandoverError::HardLink { path, links: 2 } if *path == ws.join("sub/link")),
            "{err}"
        );
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
        // Already the sandbox's: nothing to change, nothing refused.
        std::os::unix::fs::lchown(&outside, Some(4242), Some(4343)).unwrap();
        hand_over(&ws, 4242, 4343).unwrap();
    }

    #[test]
    fn ownership_is_handed_over_and_restored_without_following_symlinks() {
        if !root() {
            eprintln!("skipping: chown needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("a/b")).unwrap();
        std::fs::write(ws.join("a/b/f"), "f").unwrap();
        std::fs::write(ws.join("theirs"), "t").unwrap();
        std::os::unix::fs::lchown(ws.join("theirs"), Some(1001), Some(1002)).unwrap();
        std::os::unix::fs::symlink(&target, ws.join("a/link")).unwrap();
        let recorded = Ownership::record(&ws).unwrap();
        assert_eq!(hand_over(&ws, 4242, 4343).unwrap(), 6);
        let owner = |path: &Path| {
            let meta = std::fs::symlink_metadata(path).unwrap();
            (meta.uid(), meta.gid())
        };
        for path in ["", "a", "a/b", "a/b/f", "a/link", "theirs"] {
            assert_eq!(owner(&ws.join(path)), (4242, 4343), "{path}");
        }
        assert_eq!(owner(&target), (0, 0), "the link was followed");
        // Made by the sandbox meanwhile.
        std::fs::write(ws.join("a/new"), "n").unwrap();
        std::os::unix::fs::lchown(ws.join("a/new"), Some(4242), Some(4343)).unwrap();
        std::fs::set_permissions(ws.join("a/new"), std::fs::Permissions::from_mode(0o6755))
            .unwrap();
        assert_eq!(recorded.restore(&ws, 4242).unwrap(), 7);
        // A set-id file the sandbox made is not set-id as the owner it is given back to.
        let mode = std::fs::metadata(ws.join("a/new")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        for path in ["", "a", "a/b", "a/b/f", "a/link", "a/new"] {
            assert_eq!(owner(&ws.join(path)), (0, 0), "{path}");
        }
        assert_eq!(owner(&ws.join("theirs")), (1001, 1002));
    }

    /// Unmounts (lazily) when dropped, so a failed test leaves no mount behind.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    #[test]
    fn mounts_inside_the_tree_are_left_alone() {
        if !root() {
            eprintln!("skipping: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("file"), "host").unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("mnt")).unwrap();
        std::fs::write(ws.join("own"), "own").unwrap();
        nix::mount::mount(
            Some(&host),
            &ws.join("mnt"),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let _mounted = Mounted(ws.join("mnt"));
        assert_eq!(hand_over(&ws, 4242, 4343).unwrap(), 2);
        let owner = |path: &Path| std::fs::symlink_metadata(path).unwrap().uid();
        assert_eq!(owner(&ws.join("own")), 4242);
        assert_eq!(owner(&host), 0);
        assert_eq!(owner(&host.join("file")), 0);
    }

    #[test]
    fn a_ten_thousand_level_tree_is_handed_over_and_back() {
        if !root() {
            eprintln!("skipping: chown needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        // Built through descriptors: the path is far past PATH_MAX.
        let mut fd = Dir::open(&ws, DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..10_000 {
            nix::sys::stat::mkdirat(Some(fd.as_raw_fd()), "d", Mode::from_bits_truncate(0o755))
                .unwrap();
            fd = Dir::openat(Some(fd.as_raw_fd()), "d", DIR_FLAGS, Mode::empty()).unwrap();
        }
        let file = nix::fcntl::openat(
            Some(fd.as_raw_fd()),
            "leaf",
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        nix::unistd::close(file).unwrap();
        let recorded = Ownership::record(&ws).unwrap();
        assert_eq!(hand_over(&ws, 4242, 4343).unwrap(), 10_002);
        let leaf = stat_at(fd.as_raw_fd(), c"leaf").unwrap();
        assert_eq!((leaf.st_uid, leaf.st_gid), (4242, 4343));
        assert_eq!(recorded.restore(&ws, 4242).unwrap(), 10_002);
        let leaf = stat_at(fd.as_raw_fd(), c"leaf").unwrap();
        assert_eq!((leaf.st_uid, leaf.st_gid), (0, 0));
    }
}
