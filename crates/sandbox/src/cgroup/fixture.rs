//! Fake cgroupfs trees for unit tests. A real kernel creates every control file on `mkdir`; a
//! tempdir does not, so these helpers pre-create the files the kernel would, with the kernel's
//! default contents, and the code under test (which never creates control files) runs unchanged.

use std::fs;
use std::path::{Path, PathBuf};

use super::CgroupManager;

/// A fake cgroup filesystem in a tempdir of its own (removed when dropped): the prologue of
/// most cgroup tests.
pub(crate) struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    /// A v1 root (see [`v1_root`]).
    pub(crate) fn v1(comounted: bool, without: &[&str]) -> Self {
        let fixture = Self::empty();
        v1_root(fixture.root(), comounted, without);
        fixture
    }

    /// A v2 root (see [`v2_root`]).
    pub(crate) fn v2(offered: &str, parent_offers: &str) -> Self {
        let fixture = Self::empty();
        v2_root(fixture.root(), offered, parent_offers);
        fixture
    }

    fn empty() -> Self {
        Self {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// The cgroup root.
    pub(crate) fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The manager detected on it, for parent `conductor`.
    pub(crate) fn detect(&self) -> CgroupManager {
        CgroupManager::detect(self.root(), "conductor").unwrap()
    }
}

/// Writes `content` to `path`, creating parent directories.
pub(crate) fn put(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// The whole content of `path`.
pub(crate) fn get(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

/// A v2 root whose `cgroup.controllers` offers `offered` and whose parent `conductor` offers
/// `parent_offers` (what the kernel shows once the root enabled them).
pub(crate) fn v2_root(root: &Path, offered: &str, parent_offers: &str) {
    put(&root.join("cgroup.controllers"), &format!("{offered}\n"));
    put(&root.join("cgroup.subtree_control"), "\n");
    put(&root.join("cgroup.procs"), "1\n");
    let parent = root.join("conductor");
    put(
        &parent.join("cgroup.controllers"),
        &format!("{parent_offers}\n"),
    );
    put(&parent.join("cgroup.subtree_control"), "\n");
    put(&parent.join("cgroup.procs"), "");
}

/// The files of a fresh v2 leaf cgroup `<root>/conductor/<name>`, kernel defaults. `kill`
/// says whether the kernel has `cgroup.kill` (5.14+).
pub(crate) fn v2_leaf(root: &Path, name: &str, kill: bool) -> PathBuf {
    let dir = root.join("conductor").join(name);
    for (file, content) in [
        ("cgroup.procs", ""),
        ("cgroup.freeze", "0\n"),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
        ("cpu.max", "max 100000\n"),
        ("memory.max", "max\n"),
        ("memory.swap.max", "max\n"),
        ("pids.max", "max\n"),
    ] {
        put(&dir.join(file), content);
    }
    if kill {
        put(&dir.join("cgroup.kill"), "");
    }
    dir
}

/// The v1 hierarchies this machine-like fixture mounts. With `comounted`, cpu and cpuacct share
/// `cpu,cpuacct` and `cpu` / `cpuacct` are symlinks to it, as systemd sets them up.
pub(crate) fn v1_root(root: &Path, comounted: bool, without: &[&str]) {
    let mut names = vec!["cpuset", "memory", "devices", "freezer", "blkio", "pids"];
    names.push("name=systemd");
    if comounted {
        names.push("cpu,cpuacct");
    } else {
        names.extend(["cpu", "cpuacct"]);
    }
    for name in names.into_iter().filter(|n| !without.contains(n)) {
        put(&root.join(name).join("cgroup.procs"), "1\n");
    }
    if comounted {
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).unwrap();
    }
    // The empty unified hierarchy of a hybrid layout.
    put(&root.join("unified").join("cgroup.procs"), "");
}

/// The control files of a fresh v1 cgroup `<hierarchy>/conductor/<name>` in each hierarchy
/// present under `root`, kernel defaults. `memsw` says whether swap accounting is on.
pub(crate) fn v1_leaf(root: &Path, name: &str, memsw: bool) {
    let unlimited = "9223372036854771712\n";
    let mut files = vec![
        ("cpu", "cpu.cfs_period_us", "100000\n"),
        ("cpu", "cpu.cfs_quota_us", "-1\n"),
        ("memory", "memory.limit_in_bytes", unlimited),
        ("memory", "memory.swappiness", "60\n"),
        ("pids", "pids.max", "max\n"),
        ("freezer", "freezer.state", "THAWED\n"),
    ];
    if memsw {
        files.push(("memory", "memory.memsw.limit_in_bytes", unlimited));
    }
    for hierarchy in ["cpu", "cpuacct", "memory", "pids", "blkio", "freezer"] {
        let base = root.join(hierarchy);
        if base.exists() {
            put(&base.join("conductor").join(name).join("cgroup.procs"), "");
        }
    }
    for (hierarchy, file, content) in files {
        let base = root.join(hierarchy);
        if base.exists() {
            put(&base.join("conductor").join(name).join(file), content);
        }
    }
}
