//! cgroup v2: the unified hierarchy at the root.
//!
//! `detect` enables `cpu`, `memory`, `pids` and `io` (those the kernel offers in
//! `cgroup.controllers`) in the `cgroup.subtree_control` of the root and of every level down to
//! the parent, creating missing levels. Processes only ever go into the leaf execution cgroups:
//! v2's "no internal processes" rule forbids enabling controllers for children of a cgroup that
//! has members, so the parent stays empty.

use std::path::{Path, PathBuf};

use super::{
    fs, parse, pids_in, sigkill_each, wait_until, CgroupError, CgroupLimits, CgroupStats,
    CPU_PERIOD_US, FREEZE_TIMEOUT,
};

/// The controllers Conductor enables for execution cgroups, in the order written.
const WANTED: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// The cgroup v2 backend of [`super::CgroupManager`].
#[derive(Debug)]
pub struct V2Manager {
    parent_dir: PathBuf,
    /// Controllers enabled in the parent's `cgroup.subtree_control`, i.e. usable by children.
    enabled: Vec<&'static str>,
}

impl V2Manager {
    pub(super) fn detect(root: &Path, parent: &Path) -> Result<Self, CgroupError> {
        let mut dir = root.to_owned();
        let mut enabled = enable_controllers(&dir)?;
        for component in parent.components() {
            dir.push(component);
            fs::mkdir(&dir)?;
            enabled = enable_controllers(&dir)?;
        }
        Ok(Self {
            parent_dir: dir,
            enabled,
        })
    }

    pub(super) fn controllers(&self) -> Vec<&'static str> {
        self.enabled.clone()
    }

    /// Fails when a requested limit's controller is not enabled for the parent's children.
    pub(super) fn check(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let needs = [
            (limits.memory.is_some(), "memory", "the memory limit"),
            (limits.cpus.is_some(), "cpu", "the cpu limit"),
            (limits.pids.is_some(), "pids", "the pids limit"),
        ];
        for (wanted, controller, needed_for) in needs {
            if wanted && !self.enabled.contains(&controller) {
                return Err(CgroupError::ControllerMissing {
                    controller,
                    needed_for,
                    root: self.parent_dir.clone(),
                });
            }
        }
        Ok(())
    }

    pub(super) fn make(&self, name: &Path) -> Result<V2Cgroup, CgroupError> {
        let dir = self.parent_dir.join(name);
        fs::mkdir(&dir)?;
        Ok(V2Cgroup { dirs: vec![dir] })
    }
}

/// Enables the wanted controllers that `dir` offers (`cgroup.controllers`) and has not enabled
/// yet in its `cgroup.subtree_control`, in one write. Returns the wanted controllers offered.
fn enable_controllers(dir: &Path) -> Result<Vec<&'static str>, CgroupError> {
    let offered_text = fs::read(&dir.join("cgroup.controllers"))?;
    let offered = parse::controller_list(&offered_text);
    let wanted: Vec<&'static str> = WANTED.into_iter().filter(|c| offered.contains(c)).collect();
    let control = dir.join("cgroup.subtree_control");
    let current_text = fs::read(&control)?;
    let current = parse::controller_list(&current_text);
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !current.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(wanted);
    }
    let value = missing.join(" ");
    match fs::write_raw(&control, &value) {
        Ok(()) => Ok(wanted),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::SubtreeBusy {
            path: control,
            value,
        }),
        Err(source) => Err(CgroupError::Write {
            path: control,
            value,
            source,
        }),
    }
}

/// One execution's cgroup on v2: a single directory.
#[derive(Debug)]
pub struct V2Cgroup {
    /// Exactly one directory; a slice so [`super::Cgroup::dirs`] is uniform across versions.
    dirs: Vec<PathBuf>,
}

impl V2Cgroup {
    pub(super) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn dir(&self) -> &Path {
        self.dirs.first().map_or(Path::new(""), PathBuf::as_path)
    }

    /// Writes the limits. [`V2Manager::check`] has made sure the controllers are enabled.
    pub(super) fn apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let dir = self.dir();
        if let Some(memory) = limits.memory {
            fs::write(&dir.join("memory.max"), &memory.get().to_string())?;
            // Absent when the kernel has no swap accounting; then there is no swap to forbid.
            fs::write_if_present(&dir.join("memory.swap.max"), "0")?;
        }
        if let Some(cpus) = limits.cpus {
            let value = format!("{} {CPU_PERIOD_US}", cpus.quota_us(CPU_PERIOD_US));
            fs::write(&dir.join("cpu.max"), &value)?;
        }
        if let Some(pids) = limits.pids {
            fs::write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    /// Lifts the limits `limits` does not name (memory, CPU quota, pids), so a cgroup reused
    /// for another execution keeps none of the previous one's.
    pub(super) fn lift_unnamed(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let dir = self.dir();
        if limits.memory.is_none() {
            fs::write(&dir.join("memory.max"), "max")?;
        }
        if limits.cpus.is_none() {
            fs::write(&dir.join("cpu.max"), &format!("max {CPU_PERIOD_US}"))?;
        }
        if limits.pids.is_none() {
            fs::write(&dir.join("pids.max"), "max")?;
        }
        Ok(())
    }

    pub(super) fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let dir = self.dir();
        let read = |file: &str| fs::read_if_present(&dir.join(file));
        let io = read("io.stat")?.and_then(|text| parse::io_stat_read_write(&text));
        Ok(CgroupStats {
            cpu_time_us: read("cpu.stat")?.and_then(|t| parse::keyed_u64(&t, "usage_usec")),
            peak_memory_bytes: read("memory.peak")?.and_then(|t| parse::single_u64(&t)),
            disk_read_bytes: io.map(|(read, _)| read),
            disk_write_bytes: io.map(|(_, write)| write),
            oom_kills: read("memory.events")?
                .and_then(|t| parse::keyed_u64(&t, "oom_kill"))
                .unwrap_or(0),
        })
    }

    /// One round of killing: `cgroup.kill` (Linux 5.14+) when present, else freeze, SIGKILL
    /// every member, thaw.
    pub(super) fn kill_once(&self) -> Result<(), CgroupError> {
        let dir = self.dir();
        if fs::write_if_present(&dir.join("cgroup.kill"), "1")? {
            return Ok(());
        }
        let freeze = dir.join("cgroup.freeze");
        let freezable = fs::write_if_present(&freeze, "1")?;
        if freezable {
            let events = dir.join("cgroup.events");
            let frozen = wait_until(FREEZE_TIMEOUT, || {
                Ok(parse::keyed_u64(&fs::read(&events)?, "frozen") == Some(1))
            })?;
            if !frozen {
                tracing::debug!(path = %dir.display(), "freeze did not complete; killing anyway");
            }
        }
        let killed = pids_in(&self.dirs).and_then(|pids| sigkill_each(dir, &pids));
        if freezable {
            fs::write(&freeze, "0")?;
        }
        killed
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::thread;
    use std::time::Duration;

    use conductor_types::{Bytes, Cpus};

    use super::super::fixture::{get, put, v2_leaf, Fixture};
    use super::super::{CgroupError, CgroupLimits, CgroupManager, CgroupStats, CgroupVersion};

    const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc";

    fn limits() -> CgroupLimits {
        CgroupLimits {
            cpus: Some(Cpus::new(0.5).unwrap()),
            memory: Some(Bytes::mib(64)),
            pids: Some(16),
        }
    }

    #[test]
    fn detect_enables_controllers_at_every_level() {
        let fixture = Fixture::v2(ALL, "cpu io memory pids");
        let root = fixture.root();
        let manager = fixture.detect();
        assert_eq!(manager.version(), CgroupVersion::V2);
        assert_eq!(manager.controllers(), ["cpu", "memory", "pids", "io"]);
        assert_eq!(
            get(&root.join("cgroup.subtree_control")),
            "+cpu +memory +pids +io"
        );
        assert_eq!(
            get(&root.join("conductor/cgroup.subtree_control")),
            "+cpu +memory +pids +io"
        );
    }

    #[test]
    fn detect_enables_only_offered_controllers_not_yet_enabled() {
        let fixture = Fixture::v2("cpu memory pids", "cpu memory pids");
        let root = fixture.root();
        put(&root.join("cgroup.subtree_control"), "cpu\n");
        put(
            &root.join("conductor/cgroup.subtree_control"),
            "cpu memory pids\n",
        );
        let manager = CgroupManager::detect(root, "conductor").unwrap();
        assert_eq!(manager.controllers(), ["cpu", "memory", "pids"]);
        assert_eq!(get(&root.join("cgroup.subtree_control")), "+memory +pids");
        // Nothing to enable: the file is left as it was.
        assert_eq!(
            get(&root.join("conductor/cgroup.subtree_control")),
            "cpu memory pids\n"
        );
    }

    #[test]
    fn replaced_limits_lift_what_the_next_execution_does_not_name() {
        let fixture = Fixture::v2(ALL, "cpu io memory pids");
        let root = fixture.root();
        let leaf = v2_leaf(root, "warm-1", true);
        let manager = CgroupManager::detect(root, "conductor").unwrap();
        let cgroup = manager.create("warm-1", &limits()).unwrap();
        let only_memory = CgroupLimits {
            memory: Some(Bytes::mib(32)),
            ..CgroupLimits::default()
        };
        manager.replace_limits(&cgroup, &only_memory).unwrap();
        assert_eq!(get(&leaf.join("cpu.max")), "max 100000");
        assert_eq!(get(&leaf.join("pids.max")), "max");
        assert_eq!(get(&leaf.join("memory.max")), "33554432");
        // v2 cannot reset the peak for every reader.
        assert!(!cgroup.reset_peak_memory().unwrap());
    }

    #[test]
    fn create_writes_whole_limit_values() {
        let fixture = Fixture::v2(ALL, "cpu io memory pids");
        let root = fixture.root();
        let leaf = v2_leaf(root, "exec-1", true);
        let manager = CgroupManager::detect(root, "conductor").unwrap();
        let cgroup = manager.create("exec-1", &limits()).unwrap();
        assert_eq!(get(&leaf.join("cpu.max")), "50000 100000");
        assert_eq!(get(&leaf.join("memory.max")), "67108864");
        assert_eq!(get(&leaf.join("memory.swap.max")), "0");
        assert_eq!(get(&leaf.join("pids.max")), "16");
        assert_eq!(cgroup.dirs(), std::slice::from_ref(&leaf));
        assert_eq!(cgroup.procs_files(), [leaf.join("cgroup.procs")]);

        cgroup.add_pid(4242).unwrap();
        assert_eq!(get(&leaf.join("cgroup.procs")), "4242");
        put(&leaf.join("cgroup.procs"), "4242\n4243\n");
        assert_eq!(cgroup.pids().unwrap(), [4242, 4243]);
        put(&leaf.join("cgroup.procs"), "");
    }

    #[test]
    fn create_without_limits_leaves_defaults() {
        let fixture = Fixture::v2(ALL, "cpu io memory pids");
        let root = fixture.root();
        let leaf = v2_leaf(root, "exec-1", true);
        let manager = CgroupManager::detect(root, "conductor").unwrap();
        let _cgroup = manager.create("exec-1", &CgroupLimits::default()).unwrap();
        assert_eq!(get(&leaf.join("cpu.max")), "max 100000\n");
        assert_eq!(get(&leaf.join("memory.max")), "max\n");
        assert_eq!(get(&leaf.join("memory.swap.max")), "max\n");
        assert_eq!(get(&leaf.join("pids.max")), "max\n");
    }

    #[test]
    fn missing_controller_for_a_limit_is_named() {
        let fixture = Fixture::v2("cpu pids", "cpu pids");
        let root = fixture.root();
        let manager = fixture.detect();
        let err = manager.create("exec-1", &limits()).unwrap_err();
        assert!(matches!(
            err,
            CgroupError::ControllerMissing {
                controller: "memory",
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "the memory cgroup controller is needed for the memory limit but is not \
                 available under {}",
                root.join("conductor").display()
            )
        );
        assert!(!root.join("conductor/exec-1").exists());
    }

    #[test]
    fn stats_are_read_from_control_files() {
        let fixture = Fixture::v2(ALL, "cpu io memory pids");
        let root = fixture.root();
        let leaf = v2_leaf(root, "exec-1", true);
        let manager = CgroupManager::detect(root, "conductor").unwrap();
        let cgroup = manager.create("exec-1", &CgroupLimits::default()).unwrap();

        assert_eq!(cgroup.stats().unwrap(), CgroupStats::default());

        put(
            &leaf.join("cpu.stat"),
            "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n",
        );
        put(&leaf.join("memory.peak"), "209715200\n");
        put(
            &leaf.join("io.stat"),
            "8:0 rbytes=4096 wbytes=1048576 rios=1 wios=8 dbytes=0 dios=0\n\
             8:16 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
        );
        put(
            &leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 31\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        assert_eq!(
            cgroup.stats().unwrap(),
            CgroupStats {
                cpu_time_us: Some(123_456),
                peak_memory_bytes: Some(209_715_200),
                disk_read_bytes: Some(4196),
                disk_write_bytes: Some(1_048_576),
                oom_kills: 1,
            }
        );
    }

    #[test]
    fn kill_all_uses_cgroup_kill_and_waits_for_the_cgroup_to_empty() {
        let fixture = Fixture::v2(ALL, "cpu io memory pids");
        let root = fixture.root();
        let leaf = v2_leaf(root, "exec-1", true);
        let manager = CgroupManager::detect(root, "conductor").unwrap();
        let cgroup = manager.create("exec-1", &CgroupLimits::default()).unwrap();
        // A pid that cannot exist (above the kernel's PID_MAX_LIMIT): it must not be signalled.
        put(&leaf.join("cgroup.procs"), "4194305\n");
        // The "kernel": empties the cgroup once cgroup.kill is written.
        let kernel = {
            let leaf = leaf.clone();
            thread::spawn(move || {
                while get(&leaf.join("cgroup.kill")) != "1" {
                    thread::sleep(Duration::from_millis(1));
                }
                put(&leaf.join("cgroup.procs"), "");
            })
        };
        cgroup.kill_all().unwrap();
        kernel.join().unwrap();
        assert_eq!(get(&leaf.join("cgroup.kill")), "1");
        assert_eq!(get(&leaf.join("cgroup.freeze")), "0\n");
    }

    #[test]
    fn kill_all_without_cgroup_kill_freezes_kills_and_thaws() {
        let fixture = Fixture::v2(ALL, "cpu io memory pids");
        let root = fixture.root();
        let leaf = v2_leaf(root, "exec-1", false);
        let manager = CgroupManager::detect(root, "conductor").unwrap();
        let cgroup = manager.create("exec-1", &CgroupLimits::default()).unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        put(&leaf.join("cgroup.procs"), &format!("{}\n", child.id()));
        // The "kernel": reports the freeze, and drops the member once it has died.
        let kernel = {
            let leaf = leaf.clone();
            thread::spawn(move || loop {
                if get(&leaf.join("cgroup.freeze")) == "1" {
                    put(&leaf.join("cgroup.events"), "populated 1\nfrozen 1\n");
                }
                if let Some(status) = child.try_wait().unwrap() {
                    put(&leaf.join("cgroup.procs"), "");
                    put(&leaf.join("cgroup.events"), "populated 0\nfrozen 0\n");
                    return status;
                }
                thread::sleep(Duration::from_millis(1));
            })
        };
        cgroup.kill_all().unwrap();
        let status = kernel.join().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        assert_eq!(get(&leaf.join("cgroup.freeze")), "0");
    }

    #[test]
    fn destroy_removes_the_leaf_directory() {
        let fixture = Fixture::v2(ALL, "cpu io memory pids");
        let root = fixture.root();
        let leaf = v2_leaf(root, "exec-1", true);
        let manager = CgroupManager::detect(root, "conductor").unwrap();
        let cgroup = manager.create("exec-1", &CgroupLimits::default()).unwrap();
        // On cgroupfs rmdir succeeds with the control files in place; a tempdir refuses, which
        // shows which directory destroy tried to remove (after finding no member to kill).
        let err = cgroup.destroy().unwrap_err();
        assert!(
            matches!(&err, CgroupError::Remove { path, .. } if *path == leaf),
            "{err}"
        );
    }
}
