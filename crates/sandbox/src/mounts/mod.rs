//! Building the sandbox's root filesystem from a [`SandboxLayout`].
//!
//! [`build_root`] decides the steps ([`Op`]s) and runs them through the [`RootFs`] seam:
//! [`LinuxRootFs`] (`linux.rs`) performs them with real mounts inside the helper's mount
//! namespace, and tests record them instead. Every failure names the stage it belongs to
//! (`mounting /usr`, …).

use std::io;
use std::path::{Component, Path, PathBuf};

use conductor_types::{EtcFile, Mount, SandboxLayout};
use nix::mount::MsFlags;

mod linux;

pub use linux::{attach_tree, clone_tree, tree_cloning_supported, LinuxRootFs};

/// Size of the tmpfs that becomes the sandbox's `/` (mount points and `/etc` files only).
const ROOT_TMPFS_OPTIONS: &str = "size=16m,mode=755";
/// Host devices bound into the sandbox's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Symlinks in the sandbox's `/dev`: (name, link text).
const DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Files under the sandbox's `/proc` that describe the host rather than the sandbox (its memory
/// map, kernel command line and configuration, keys, timers, scheduler and interrupt state):
/// runc's and Docker's masked files, plus `cmdline`, `config.gz` and `iomem`. Each gets
/// `/dev/null` bound over it: it reads empty.
pub const PROC_MASKED_FILES: [&str; 10] = [
    "cmdline",
    "config.gz",
    "interrupts",
    "iomem",
    "kcore",
    "keys",
    "latency_stats",
    "sched_debug",
    "timer_list",
    "timer_stats",
];
/// Directories under `/proc` about the host's hardware (runc's and Docker's masked directories):
/// an empty read-only tmpfs goes over each.
pub const PROC_MASKED_DIRS: [&str; 3] = ["acpi", "asound", "scsi"];
/// Entries under `/proc` that configure the host kernel (runc's and Docker's read-only paths):
/// bound read-only.
pub const PROC_READ_ONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];
/// What masked files are bound to.
const NULL_DEVICE: &str = "/dev/null";
/// An empty, read-only directory.
const MASK_TMPFS_OPTIONS: &str = "size=4k,mode=555";

/// What a host path is (from `lstat`, without following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else: a file, a device node, a socket.
    File,
}

/// Mount attributes to add to an existing mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restrict {
    /// Read-only.
    pub readonly: bool,
    /// No set-uid.
    pub nosuid: bool,
    /// No devices.
    pub nodev: bool,
}

/// One step of building the root. Paths are host paths (under the root directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `mkdir -p` with mode 0755.
    MkdirAll(PathBuf),
    /// Create an empty file to bind a file over.
    Touch(PathBuf),
    /// Create a symlink at `link` whose text is `target`.
    Symlink {
        /// Link text.
        target: PathBuf,
        /// Where the link is created.
        link: PathBuf,
    },
    /// Write a file with exactly `mode`.
    WriteFile {
        /// Where.
        path: PathBuf,
        /// Contents.
        contents: String,
        /// Permission bits.
        mode: u32,
    },
    /// Bind `source` onto `target` (recursively for directories).
    Bind {
        /// Host source.
        source: PathBuf,
        /// Target.
        target: PathBuf,
        /// `MS_REC`.
        recursive: bool,
    },
    /// Add attributes to the mount at `target`, keeping the ones the kernel locked.
    Restrict {
        /// Target.
        target: PathBuf,
        /// What to add.
        attrs: Restrict,
        /// Also every mount below it.
        recursive: bool,
    },
    /// Mount a fresh filesystem.
    Mount {
        /// `tmpfs`, `proc`, `devpts`.
        fstype: &'static str,
        /// Target.
        target: PathBuf,
        /// `MS_*` flags.
        flags: MsFlags,
        /// Filesystem options.
        data: String,
    },
}

/// The seam between deciding and doing.
pub trait RootFs {
    /// `lstat`: `None` when the path does not exist.
    fn probe(&self, path: &Path) -> io::Result<Option<Kind>>;
    /// `readlink`.
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// Names in a directory, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Performs one step.
    fn apply(&mut self, op: &Op) -> io::Result<()>;
}

/// A stage that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage}: {error}")]
pub struct StageError {
    /// What was being done (`mounting /proc`).
    pub stage: String,
    /// The error.
    pub error: String,
}

impl StageError {
    /// A failure of `stage`.
    pub fn new(stage: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self {
            stage: stage.into(),
            error: error.to_string(),
        }
    }
}

/// Mounts a tmpfs on `root`, writes the layout's files and makes its mounts, in order.
pub fn build_root(
    layout: &SandboxLayout,
    root: &Path,
    fs: &mut impl RootFs,
) -> Result<(), StageError> {
    let stage = "mounting the root tmpfs";
    fs.apply(&Op::Mount {
        fstype: "tmpfs",
        target: root.to_owned(),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        data: ROOT_TMPFS_OPTIONS.to_owned(),
    })
    .map_err(|e| StageError::new(stage, e))?;
    write_files(&layout.files, root, fs)?;
    for mount in &layout.mounts {
        apply_mount(mount, root, fs)?;
    }
    Ok(())
}

/// Writes `files` (sandbox paths) under `root`, creating their parent directories.
pub fn write_files(files: &[EtcFile], root: &Path, fs: &mut impl RootFs) -> Result<(), StageError> {
    for file in files {
        let stage = format!("writing {}", file.path.display());
        let path = under(root, &file.path).map_err(|e| StageError::new(&stage, e))?;
        let write = |fs: &mut dyn RootFs| -> io::Result<()> {
            if let Some(parent) = path.parent() {
                fs.apply(&Op::MkdirAll(parent.to_owned()))?;
            }
            fs.apply(&Op::WriteFile {
                path: path.clone(),
                contents: file.contents.clone(),
                mode: file.mode,
            })
        };
        write(fs).map_err(|e| StageError::new(&stage, e))?;
    }
    Ok(())
}

/// Creates the empty directory at the sandbox path `target` under `root` that a mount goes on
/// later; its host path.
pub fn make_mount_point(
    root: &Path,
    target: &Path,
    fs: &mut impl RootFs,
) -> Result<PathBuf, StageError> {
    let stage = format!("creating the mount point {}", target.display());
    let path = under(root, target).map_err(|e| StageError::new(&stage, e))?;
    fs.apply(&Op::MkdirAll(path.clone()))
        .map_err(|e| StageError::new(&stage, e))?;
    Ok(path)
}

fn apply_mount(mount: &Mount, root: &Path, fs: &mut impl RootFs) -> Result<(), StageError> {
    match mount {
        Mount::ReadOnlyBind {
            source,
            target,
            optional,
        } => {
            let stage = format!("mounting {} read-only", target.display());
            let target = under(root, target).map_err(|e| StageError::new(&stage, e))?;
            bind_entry(source, &target, *optional, readonly(), fs)
                .map_err(|e| StageError::new(&stage, e))
        }
        Mount::ReadOnlyBindChildren { source, exclude } => {
            let stage = format!("mounting the rootfs {}", source.display());
            let names = fs
                .list_dir(source)
                .map_err(|e| StageError::new(&stage, e))?;
            for name in names.iter().filter(|n| !exclude.contains(n)) {
                let stage = format!("mounting /{name} from the rootfs {}", source.display());
                bind_entry(&source.join(name), &root.join(name), true, readonly(), fs)
                    .map_err(|e| StageError::new(&stage, e))?;
            }
            Ok(())
        }
        Mount::ReadWriteBind { source, target } => {
            let stage = format!("mounting {} at {}", source.display(), target.display());
            let target = under(root, target).map_err(|e| StageError::new(&stage, e))?;
            let attrs = Restrict {
                readonly: false,
                nosuid: true,
                nodev: true,
            };
            bind_entry(source, &target, false, attrs, fs).map_err(|e| StageError::new(&stage, e))
        }
        Mount::Tmpfs { target, size, mode } => {
            let stage = format!("mounting a tmpfs at {}", target.display());
            let target = under(root, target).map_err(|e| StageError::new(&stage, e))?;
            fresh(
                fs,
                "tmpfs",
                &target,
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                format!("size={},mode={:o}", size.get(), mode),
            )
            .map_err(|e| StageError::new(&stage, e))
        }
        Mount::Proc { target } => {
            let stage = format!("mounting proc at {}", target.display());
            let target = under(root, target).map_err(|e| StageError::new(&stage, e))?;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            fresh(fs, "proc", &target, flags, String::new())
                .map_err(|e| StageError::new(&stage, e))?;
            mask_proc(&target, fs).map_err(|e| StageError::new(format!("masking {stage}"), e))
        }
        Mount::Dev { target } => {
            let stage = format!("building {}", target.display());
            let target = under(root, target).map_err(|e| StageError::new(&stage, e))?;
            build_dev(&target, fs).map_err(|e| StageError::new(&stage, e))
        }
    }
}

/// Hides the host's entries of the proc filesystem mounted at `proc` ([`PROC_MASKED_FILES`],
/// [`PROC_MASKED_DIRS`]) and makes its kernel settings read-only ([`PROC_READ_ONLY`]). Entries
/// this kernel does not have are skipped. The sandbox cannot undo this: its seccomp filter
/// refuses `mount`, `umount2` and the new mount API.
fn mask_proc(proc: &Path, fs: &mut impl RootFs) -> io::Result<()> {
    for name in PROC_MASKED_FILES {
        let path = proc.join(name);
        if fs.probe(&path)?.is_some() {
            fs.apply(&Op::Bind {
                source: NULL_DEVICE.into(),
                target: path,
                recursive: false,
            })?;
        }
    }
    for name in PROC_MASKED_DIRS {
        let path = proc.join(name);
        if fs.probe(&path)? == Some(Kind::Dir) {
            fs.apply(&Op::Mount {
                fstype: "tmpfs",
                target: path,
                flags: MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                data: MASK_TMPFS_OPTIONS.to_owned(),
            })?;
        }
    }
    for name in PROC_READ_ONLY {
        let path = proc.join(name);
        let Some(kind) = fs.probe(&path)? else {
            continue;
        };
        let recursive = kind == Kind::Dir;
        fs.apply(&Op::Bind {
            source: path.clone(),
            target: path.clone(),
            recursive,
        })?;
        fs.apply(&Op::Restrict {
            target: path,
            attrs: readonly(),
            recursive,
        })?;
    }
    Ok(())
}

fn readonly() -> Restrict {
    Restrict {
        readonly: true,
        ..Restrict::default()
    }
}

/// Binds one host entry: symlinks are recreated, directories bound recursively, anything else
/// bound over an empty file; then `attrs` are added.
fn bind_entry(
    source: &Path,
    target: &Path,
    optional: bool,
    attrs: Restrict,
    fs: &mut impl RootFs,
) -> io::Result<()> {
    let kind = match fs.probe(source)? {
        Some(kind) => kind,
        None if optional => return Ok(()),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist on the host", source.display()),
            ))
        }
    };
    if let Some(parent) = target.parent() {
        fs.apply(&Op::MkdirAll(parent.to_owned()))?;
    }
    let recursive = kind == Kind::Dir;
    match kind {
        Kind::Symlink => {
            let link_text = fs.read_link(source)?;
            return fs.apply(&Op::Symlink {
                target: link_text,
                link: target.to_owned(),
            });
        }
        Kind::Dir => fs.apply(&Op::MkdirAll(target.to_owned()))?,
        Kind::File => fs.apply(&Op::Touch(target.to_owned()))?,
    }
    fs.apply(&Op::Bind {
        source: source.to_owned(),
        target: target.to_owned(),
        recursive,
    })?;
    fs.apply(&Op::Restrict {
        target: target.to_owned(),
        attrs,
        recursive,
    })
}

fn fresh(
    fs: &mut impl RootFs,
    fstype: &'static str,
    target: &Path,
    flags: MsFlags,
    data: String,
) -> io::Result<()> {
    fs.apply(&Op::MkdirAll(target.to_owned()))?;
    fs.apply(&Op::Mount {
        fstype,
        target: target.to_owned(),
        flags,
        data,
    })
}

fn build_dev(dev: &Path, fs: &mut impl RootFs) -> io::Result<()> {
    fresh(
        fs,
        "tmpfs",
        dev,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "size=64k,mode=755".to_owned(),
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if fs.probe(&host)?.is_none() {
            continue;
        }
        let target = dev.join(name);
        fs.apply(&Op::Touch(target.clone()))?;
        fs.apply(&Op::Bind {
            source: host,
            target,
            recursive: false,
        })?;
    }
    for (name, text) in DEV_LINKS {
        fs.apply(&Op::Symlink {
            target: text.into(),
            link: dev.join(name),
        })?;
    }
    fresh(
        fs,
        "tmpfs",
        &dev.join("shm"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        "size=64m,mode=1777".to_owned(),
    )?;
    // devpts is optional: without it the sandbox has no pseudo-terminals, nothing else breaks.
    let pts = fresh(
        fs,
        "devpts",
        &dev.join("pts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=620".to_owned(),
    );
    if pts.is_ok() {
        fs.apply(&Op::Symlink {
            target: "pts/ptmx".into(),
            link: dev.join("ptmx"),
        })?;
    }
    Ok(())
}

/// `root` joined with an absolute sandbox path that has no `..`.
fn under(root: &Path, target: &Path) -> io::Result<PathBuf> {
    let mut path = root.to_owned();
    for component in target.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => path.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("sandbox path {} must not contain ..", target.display()),
                ))
            }
        }
    }
    Ok(path)
}

/// Every host path [`build_root`] will look at for `layout`, so they can be resolved while the
/// helper still has the host identity that may search them (see [`LinuxRootFs::resolve`]).
pub fn host_paths(layout: &SandboxLayout) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for mount in &layout.mounts {
        match mount {
            Mount::ReadOnlyBind { source, .. } | Mount::ReadWriteBind { source, .. } => {
                paths.push(source.clone())
            }
            Mount::ReadOnlyBindChildren { source, .. } => paths.push(source.clone()),
            Mount::Dev { .. } => paths.extend(DEVICES.iter().map(|d| Path::new("/dev").join(d))),
            Mount::Proc { .. } => paths.push(NULL_DEVICE.into()),
            Mount::Tmpfs { .. } => {}
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use conductor_types::{Bytes, EtcFile};

    use super::*;

    /// Records every step; answers probes from a fixed map of host paths.
    #[derive(Default)]
    struct Recorder {
        host: BTreeMap<PathBuf, Kind>,
        links: BTreeMap<PathBuf, PathBuf>,
        fail_fstype: Option<&'static str>,
        ops: Vec<Op>,
    }

    impl RootFs for Recorder {
        fn probe(&self, path: &Path) -> io::Result<Option<Kind>> {
            Ok(self.host.get(path).copied())
        }
        fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
            self.links
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
            Ok(self
                .host
                .keys()
                .filter(|p| p.parent() == Some(path))
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect())
        }
        fn apply(&mut self, op: &Op) -> io::Result<()> {
            if matches!(op, Op::Mount { fstype, .. } if Some(*fstype) == self.fail_fstype) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.ops.push(op.clone());
            Ok(())
        }
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn layout(mounts: Vec<Mount>, files: Vec<EtcFile>) -> SandboxLayout {
        SandboxLayout {
            hostname: "h".into(),
            mounts,
            files,
        }
    }

    fn root_tmpfs() -> Op {
        Op::Mount {
            fstype: "tmpfs",
            target: p("/r"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: ROOT_TMPFS_OPTIONS.into(),
        }
    }

    #[test]
    fn read_only_binds_recreate_symlinks_and_skip_missing_optional_sources() {
        let mut fs = Recorder::default();
        fs.host.insert(p("/usr"), Kind::Dir);
        fs.host.insert(p("/bin"), Kind::Symlink);
        fs.links.insert(p("/bin"), p("usr/bin"));
        fs.host.insert(p("/etc/ld.so.cache"), Kind::File);
        let ro = |s: &str| Mount::ReadOnlyBind {
            source: p(s),
            target: p(s),
            optional: true,
        };
        let files = vec![EtcFile {
            path: p("/etc/hostname"),
            contents: "h\n".into(),
            mode: 0o644,
        }];
        build_root(
            &layout(
                vec![ro("/usr"), ro("/bin"), ro("/lib32"), ro("/etc/ld.so.cache")],
                files,
            ),
            &p("/r"),
            &mut fs,
        )
        .unwrap();
        let ro_attrs = readonly();
        assert_eq!(
            fs.ops,
            vec![
                root_tmpfs(),
                Op::MkdirAll(p("/r/etc")),
                Op::WriteFile {
                    path: p("/r/etc/hostname"),
                    contents: "h\n".into(),
                    mode: 0o644
                },
                Op::MkdirAll(p("/r")),
                Op::MkdirAll(p("/r/usr")),
                Op::Bind {
                    source: p("/usr"),
                    target: p("/r/usr"),
                    recursive: true
                },
                Op::Restrict {
                    target: p("/r/usr"),
                    attrs: ro_attrs,
                    recursive: true
                },
                Op::MkdirAll(p("/r")),
                Op::Symlink {
                    target: p("usr/bin"),
                    link: p("/r/bin")
                },
                Op::MkdirAll(p("/r/etc")),
                Op::Touch(p("/r/etc/ld.so.cache")),
                Op::Bind {
                    source: p("/etc/ld.so.cache"),
                    target: p("/r/etc/ld.so.cache"),
                    recursive: false
                },
                Op::Restrict {
                    target: p("/r/etc/ld.so.cache"),
                    attrs: ro_attrs,
                    recursive: false
                },
            ]
        );
    }

    #[test]
    fn fresh_filesystems_and_the_workspace() {
        let mut fs = Recorder::default();
        fs.host.insert(p("/ws"), Kind::Dir);
        build_root(
            &layout(
                vec![
                    Mount::Proc { target: p("/proc") },
                    Mount::Tmpfs {
                        target: p("/tmp"),
                        size: Bytes::mib(1),
                        mode: 0o1777,
                    },
                    Mount::ReadWriteBind {
                        source: p("/ws"),
                        target: p("/workspace"),
                    },
                ],
                vec![],
            ),
            &p("/r"),
            &mut fs,
        )
        .unwrap();
        assert_eq!(
            fs.ops[1..],
            [
                Op::MkdirAll(p("/r/proc")),
                Op::Mount {
                    fstype: "proc",
                    target: p("/r/proc"),
                    flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    data: String::new()
                },
                Op::MkdirAll(p("/r/tmp")),
                Op::Mount {
                    fstype: "tmpfs",
                    target: p("/r/tmp"),
                    flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    data: "size=1048576,mode=1777".into()
                },
                Op::MkdirAll(p("/r")),
                Op::MkdirAll(p("/r/workspace")),
                Op::Bind {
                    source: p("/ws"),
                    target: p("/r/workspace"),
                    recursive: true
                },
                Op::Restrict {
                    target: p("/r/workspace"),
                    attrs: Restrict {
                        readonly: false,
                        nosuid: true,
                        nodev: true
                    },
                    recursive: true
                },
            ]
        );
    }

    #[test]
    fn proc_hides_the_hosts_entries_and_its_settings_are_read_only() {
        let mut fs = Recorder::default();
        for file in ["cmdline", "iomem", "kcore", "sysrq-trigger"] {
            fs.host.insert(p("/r/proc").join(file), Kind::File);
        }
        for dir in ["acpi", "sys"] {
            fs.host.insert(p("/r/proc").join(dir), Kind::Dir);
        }
        build_root(
            &layout(vec![Mount::Proc { target: p("/proc") }], vec![]),
            &p("/r"),
            &mut fs,
        )
        .unwrap();
        let null = |name: &str| Op::Bind {
            source: p("/dev/null"),
            target: p("/r/proc").join(name),
            recursive: false,
        };
        let read_only = |name: &str, recursive: bool| {
            let path = p("/r/proc").join(name);
            [
                Op::Bind {
                    source: path.clone(),
                    target: path.clone(),
                    recursive,
                },
                Op::Restrict {
                    target: path,
                    attrs: readonly(),
                    recursive,
                },
            ]
        };
        let mut expected = vec![
            root_tmpfs(),
            Op::MkdirAll(p("/r/proc")),
            Op::Mount {
                fstype: "proc",
                target: p("/r/proc"),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                data: String::new(),
            },
            null("cmdline"),
            null("iomem"),
            null("kcore"),
            Op::Mount {
                fstype: "tmpfs",
                target: p("/r/proc/acpi"),
                flags: MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                data: MASK_TMPFS_OPTIONS.into(),
            },
        ];
        expected.extend(read_only("sys", true));
        expected.extend(read_only("sysrq-trigger", false));
        assert_eq!(fs.ops, expected);
        // The helper resolves /dev/null while it may still search the host.
        assert_eq!(
            host_paths(&layout(vec![Mount::Proc { target: p("/proc") }], vec![])),
            vec![p("/dev/null")]
        );
    }

    #[test]
    fn dev_binds_host_devices_and_skips_ptmx_without_devpts() {
        let mut fs = Recorder {
            fail_fstype: Some("devpts"),
            ..Recorder::default()
        };
        fs.host.insert(p("/dev/null"), Kind::File);
        build_root(
            &layout(vec![Mount::Dev { target: p("/dev") }], vec![]),
            &p("/r"),
            &mut fs,
        )
        .unwrap();
        let binds: Vec<_> = fs
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Bind { .. }))
            .cloned()
            .collect();
        assert_eq!(
            binds,
            vec![Op::Bind {
                source: p("/dev/null"),
                target: p("/r/dev/null"),
                recursive: false
            }]
        );
        let links: Vec<_> = fs
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Symlink { link, .. } => Some(link.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            links,
            ["fd", "stdin", "stdout", "stderr"].map(|n| p("/r/dev").join(n))
        );
    }

    #[test]
    fn rootfs_children_skip_excluded_names() {
        let mut fs = Recorder::default();
        fs.host.insert(p("/rootfs/usr"), Kind::Dir);
        fs.host.insert(p("/rootfs/proc"), Kind::Dir);
        build_root(
            &layout(
                vec![Mount::ReadOnlyBindChildren {
                    source: p("/rootfs"),
                    exclude: vec!["proc".into()],
                }],
                vec![],
            ),
            &p("/r"),
            &mut fs,
        )
        .unwrap();
        assert!(fs.ops.contains(&Op::Bind {
            source: p("/rootfs/usr"),
            target: p("/r/usr"),
            recursive: true
        }));
        assert!(!fs
            .ops
            .iter()
            .any(|op| matches!(op, Op::Bind { source, .. } if source == &p("/rootfs/proc"))));
    }

    #[test]
    fn failures_name_the_stage() {
        let mut fs = Recorder::default();
        let err = build_root(
            &layout(
                vec![Mount::ReadWriteBind {
                    source: p("/missing"),
                    target: p("/workspace"),
                }],
                vec![],
            ),
            &p("/r"),
            &mut fs,
        )
        .unwrap_err();
        assert_eq!(
            err,
            StageError::new(
                "mounting /missing at /workspace",
                "/missing does not exist on the host"
            )
        );
        let err = build_root(
            &layout(
                vec![Mount::Tmpfs {
                    target: p("/../etc"),
                    size: Bytes::mib(1),
                    mode: 0o755,
                }],
                vec![],
            ),
            &p("/r"),
            &mut fs,
        )
        .unwrap_err();
        assert_eq!(err.stage, "mounting a tmpfs at /../etc");
    }
}
