//! cgroup v1: one hierarchy per controller, or several co-mounted in one (`cpu,cpuacct`).
//!
//! Hierarchies are the directories under the root that hold a `cgroup.procs`; their controllers
//! come from the directory name (`cpu`, `cpu,cpuacct`, `memory`, …) and, for a hierarchy mounted
//! under another name, from the control files at its top (`cpu.shares`, `cpuacct.usage`, …).
//! Symlinked names (`cpu` → `cpu,cpuacct`) resolve to one hierarchy, whose cgroup directory is
//! created once. An execution cgroup gets a directory in each hierarchy of cpu, cpuacct, memory,
//! pids, blkio and freezer that is mounted; cpuset is not used (its cgroups need cpus/mems set
//! before anything may join).
//!
//! Left alone on purpose: `memory.use_hierarchy` (kernels since 5.11 are always hierarchical and
//! reject `0`) and `memory.oom_control` (the OOM killer stays on, so a hog dies instead of
//! hanging).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    fs, parse, pids_in, sigkill_each, wait_until, CgroupError, CgroupLimits, CgroupStats,
    CPU_PERIOD_US, FREEZE_TIMEOUT,
};

/// The v1 controllers Conductor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Controller {
    Cpu,
    Cpuacct,
    Memory,
    Pids,
    Blkio,
    Freezer,
}

impl Controller {
    const ALL: [Self; 6] = [
        Self::Cpu,
        Self::Cpuacct,
        Self::Memory,
        Self::Pids,
        Self::Blkio,
        Self::Freezer,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cpuacct => "cpuacct",
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Blkio => "blkio",
            Self::Freezer => "freezer",
        }
    }

    /// A control file the controller has at the top of its hierarchy, to recognise a hierarchy
    /// mounted under an unusual name. pids and freezer have none there.
    fn root_file(self) -> Option<&'static str> {
        match self {
            Self::Cpu => Some("cpu.shares"),
            Self::Cpuacct => Some("cpuacct.usage"),
            Self::Memory => Some("memory.limit_in_bytes"),
            Self::Blkio => Some("blkio.throttle.io_service_bytes_recursive"),
            Self::Pids | Self::Freezer => None,
        }
    }
}

/// One mounted hierarchy and the controllers it carries.
#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    controllers: Vec<Controller>,
}

/// The cgroup v1 backend of [`super::CgroupManager`].
#[derive(Debug)]
pub struct V1Manager {
    root: PathBuf,
    parent: PathBuf,
    hierarchies: Vec<Hierarchy>,
}

impl V1Manager {
    pub(super) fn detect(
        root: &Path,
        parent: &Path,
        sys_block: &Path,
    ) -> Result<Self, CgroupError> {
        let entries = std::fs::read_dir(root).map_err(|source| CgroupError::Read {
            path: root.to_owned(),
            source,
        })?;
        let mut by_mount: BTreeMap<PathBuf, Vec<Controller>> = BTreeMap::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = entry.path();
            if !path.join("cgroup.procs").is_file() {
                continue; // not a cgroup hierarchy
            }
            let controllers: Vec<Controller> = Controller::ALL
                .into_iter()
                .filter(|c| {
                    name.split(',').any(|n| n == c.name())
                        || c.root_file().is_some_and(|f| path.join(f).is_file())
                })
                .collect();
            if controllers.is_empty() {
                continue;
            }
            let mount = std::fs::canonicalize(&path).unwrap_or(path);
            let known = by_mount.entry(mount).or_default();
            known.extend(controllers);
            known.sort_unstable();
            known.dedup();
        }
        if by_mount.is_empty() {
            return Err(CgroupError::Unsupported {
                root: root.to_owned(),
                reason: "found neither cgroup v2 (cgroup.controllers) nor a cgroup v1 hierarchy \
                         for cpu, cpuacct, memory, pids, blkio or freezer"
                    .to_owned(),
            });
        }
        let hierarchies: Vec<Hierarchy> = by_mount
            .into_iter()
            .map(|(mount, controllers)| Hierarchy { mount, controllers })
            .collect();
        for hierarchy in &hierarchies {
            let dir = fs::mkdir_all(&hierarchy.mount, parent)?;
            if hierarchy.controllers.contains(&Controller::Blkio) {
                activate_disk_accounting(&dir, sys_block);
            }
        }
        Ok(Self {
            root: root.to_owned(),
            parent: parent.to_owned(),
            hierarchies,
        })
    }

    pub(super) fn controllers(&self) -> Vec<&'static str> {
        let mut all: Vec<Controller> = self
            .hierarchies
            .iter()
            .flat_map(|h| h.controllers.iter().copied())
            .collect();
        all.sort_unstable();
        all.into_iter().map(Controller::name).collect()
    }

    fn has(&self, controller: Controller) -> bool {
        self.hierarchies
            .iter()
            .any(|h| h.controllers.contains(&controller))
    }

    /// Fails when a requested limit's controller is not mounted.
    pub(super) fn check(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let needs = [
            (
                limits.memory.is_some(),
                Controller::Memory,
                "the memory limit",
            ),
            (limits.cpus.is_some(), Controller::Cpu, "the cpu limit"),
            (limits.pids.is_some(), Controller::Pids, "the pids limit"),
        ];
        for (wanted, controller, needed_for) in needs {
            if wanted && !self.has(controller) {
                return Err(CgroupError::ControllerMissing {
                    controller: controller.name(),
                    needed_for,
                    root: self.root.clone(),
                });
            }
        }
        Ok(())
    }

    /// Creates `<hierarchy>/<parent>/<name>` in every hierarchy; on failure removes the ones
    /// already made.
    pub(super) fn make(&self, name: &Path) -> Result<V1Cgroup, CgroupError> {
        let mut cgroup = V1Cgroup {
            dirs: Vec::with_capacity(self.hierarchies.len()),
            controllers: Vec::with_capacity(self.hierarchies.len()),
        };
        for hierarchy in &self.hierarchies {
            let dir = hierarchy.mount.join(&self.parent).join(name);
            if let Err(e) = fs::mkdir(&dir) {
                for made in &cgroup.dirs {
                    let _ = std::fs::remove_dir(made);
                }
                return Err(e);
            }
            cgroup.dirs.push(dir);
            cgroup.controllers.push(hierarchy.controllers.clone());
        }
        Ok(cgroup)
    }
}

/// One execution's cgroup on v1: a directory per hierarchy.
#[derive(Debug)]
pub struct V1Cgroup {
    dirs: Vec<PathBuf>,
    /// `controllers[i]` are the controllers of the hierarchy `dirs[i]` is in.
    controllers: Vec<Vec<Controller>>,
}

impl V1Cgroup {
    pub(super) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn dir(&self, controller: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .zip(&self.controllers)
            .find(|(_, cs)| cs.contains(&controller))
            .map(|(dir, _)| dir.as_path())
    }

    /// Writes the limits. [`V1Manager::check`] has made sure the controllers exist.
    pub(super) fn apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        if let (Some(memory), Some(dir)) = (limits.memory, self.dir(Controller::Memory)) {
            set_memory(dir, memory.get())?;
        }
        if let (Some(cpus), Some(dir)) = (limits.cpus, self.dir(Controller::Cpu)) {
            fs::write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            let quota = cpus.quota_us(CPU_PERIOD_US).to_string();
            fs::write(&dir.join("cpu.cfs_quota_us"), &quota)?;
        }
        if let (Some(pids), Some(dir)) = (limits.pids, self.dir(Controller::Pids)) {
            fs::write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    /// Lifts the limits `limits` does not name (memory, CPU quota, pids), so a cgroup reused
    /// for another execution keeps none of the previous one's.
    pub(super) fn lift_unnamed(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        if let (None, Some(dir)) = (limits.memory, self.dir(Controller::Memory)) {
            // memsw may never be below the memory limit: lift it first.
            fs::write_if_present(&dir.join("memory.memsw.limit_in_bytes"), "-1")?;
            fs::write(&dir.join("memory.limit_in_bytes"), "-1")?;
        }
        if let (None, Some(dir)) = (limits.cpus, self.dir(Controller::Cpu)) {
            fs::write(&dir.join("cpu.cfs_quota_us"), "-1")?;
        }
        if let (None, Some(dir)) = (limits.pids, self.dir(Controller::Pids)) {
            fs::write(&dir.join("pids.max"), "max")?;
        }
        Ok(())
    }

    /// Starts peak-memory accounting afresh.
    pub(super) fn reset_peak_memory(&self) -> Result<bool, CgroupError> {
        match self.dir(Controller::Memory) {
            Some(dir) => fs::write_if_present(&dir.join("memory.max_usage_in_bytes"), "0"),
            None => Ok(false),
        }
    }

    pub(super) fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let mut stats = CgroupStats::default();

        let usage_ns = read_in(self.dir(Controller::Cpuacct), "cpuacct.usage")?
            .and_then(|text| parse::single_u64(&text));
        stats.cpu_time_us = match usage_ns {
            Some(ns) => Some(ns / 1000),
            // Newer kernels may report usage in the v1 cpu.stat; older ones do not.
            None => read_in(self.dir(Controller::Cpu), "cpu.stat")?
                .and_then(|text| parse::keyed_u64(&text, "usage_usec")),
        };

        let memory = self.dir(Controller::Memory);
        stats.peak_memory_bytes =
            read_in(memory, "memory.max_usage_in_bytes")?.and_then(|text| parse::single_u64(&text));
        stats.oom_kills = read_in(memory, "memory.oom_control")?
            .and_then(|text| parse::keyed_u64(&text, "oom_kill"))
            .unwrap_or(0);

        let blkio = self.dir(Controller::Blkio);
        let mut io = read_in(blkio, "blkio.throttle.io_service_bytes_recursive")?;
        if io.is_none() {
            io = read_in(blkio, "blkio.io_service_bytes_recursive")?;
        }
        if let Some((read, write)) = io.and_then(|text| parse::blkio_read_write(&text)) {
            stats.disk_read_bytes = Some(read);
            stats.disk_write_bytes = Some(write);
        }
        Ok(stats)
    }

    /// One round of killing: freeze (when the freezer is mounted) so nothing forks, SIGKILL
    /// every member, thaw so the signals are delivered.
    pub(super) fn kill_once(&self) -> Result<(), CgroupError> {
        let freezer = self.dir(Controller::Freezer);
        if let Some(dir) = freezer {
            let state = dir.join("freezer.state");
            fs::write(&state, "FROZEN")?;
            let frozen = wait_until(FREEZE_TIMEOUT, || Ok(fs::read(&state)?.trim() == "FROZEN"))?;
            if !frozen {
                tracing::debug!(path = %dir.display(), "freeze did not complete; killing anyway");
            }
        }
        let killed = pids_in(&self.dirs).and_then(|pids| {
            let dir = self
                .dirs
                .first()
                .map(PathBuf::as_path)
                .unwrap_or(Path::new(""));
            sigkill_each(dir, &pids)
        });
        if let Some(dir) = freezer {
            fs::write(&dir.join("freezer.state"), "THAWED")?;
        }
        killed
    }
}

/// Makes the kernel count block I/O per cgroup. Since Linux 6.9 the v1 blkio statistics
/// (`blkio.throttle.io_service_bytes*`) only count on disks where throttling was configured at
/// least once; configuring "no limit" (`MAJ:MIN 0`) in the parent, for every disk listed in
/// `sys_block` (`/sys/block/<disk>/dev`), activates counting without limiting anything. Best
/// effort: a disk that refuses is only logged, and the statistics stay as the kernel has them.
fn activate_disk_accounting(blkio_parent: &Path, sys_block: &Path) {
    let Ok(disks) = std::fs::read_dir(sys_block) else {
        tracing::debug!(path = %sys_block.display(), "no block devices listed");
        return;
    };
    let rule = blkio_parent.join("blkio.throttle.read_bps_device");
    let mut devices: Vec<String> = disks
        .flatten()
        .filter_map(|disk| std::fs::read_to_string(disk.path().join("dev")).ok())
        .map(|dev| dev.trim().to_owned())
        .collect();
    devices.sort();
    for device in devices {
        match fs::write_if_present(&rule, &format!("{device} 0")) {
            Ok(true) => {}
            Ok(false) => return, // no blk-throttle in this kernel: nothing to activate
            Err(error) => tracing::debug!(%error, "cannot activate disk accounting"),
        }
    }
}

/// Memory limit with no swap on top: `memory.limit_in_bytes`, then
/// `memory.memsw.limit_in_bytes` (memory + swap) to the same value when swap accounting exists.
fn set_memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    let value = bytes.to_string();
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    match fs::write_raw(&limit, &value) {
        Ok(()) => {}
        // A reused cgroup whose memsw limit is below the new limit: raise memsw first.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            fs::write_if_present(&memsw, &value)?;
            fs::write(&limit, &value)?;
        }
        Err(source) => {
            return Err(CgroupError::Write {
                path: limit,
                value,
                source,
            })
        }
    }
    if !fs::write_if_present(&memsw, &value)? {
        // No swap accounting (swapaccount=0): the closest we can get is not preferring swap.
        let swappiness = dir.join("memory.swappiness");
        if let Err(error) = fs::write_if_present(&swappiness, "0") {
            tracing::debug!(%error, "cannot set memory.swappiness");
        }
    }
    Ok(())
}

/// Reads `file` in `dir` when both exist.
fn read_in(dir: Option<&Path>, file: &str) -> Result<Option<String>, CgroupError> {
    match dir {
        Some(dir) => fs::read_if_present(&dir.join(file)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;
    use std::thread;
    use std::time::Duration;

    use conductor_types::{Bytes, Cpus};

    use super::super::fixture::{get, put, v1_leaf, v1_root, Fixture};
    use super::super::{CgroupError, CgroupLimits, CgroupManager, CgroupStats, CgroupVersion};

    fn limits() -> CgroupLimits {
        CgroupLimits {
            cpus: Some(Cpus::new(0.5).unwrap()),
            memory: Some(Bytes::mib(64)),
            pids: Some(16),
        }
    }

    #[test]
    fn detect_prepares_the_parent_in_each_used_hierarchy() {
        let fixture = Fixture::v1(false, &[]);
        let root = fixture.root();
        let manager = fixture.detect();
        assert_eq!(manager.version(), CgroupVersion::V1);
        assert_eq!(
            manager.controllers(),
            ["cpu", "cpuacct", "memory", "pids", "blkio", "freezer"]
        );
        for used in ["cpu", "cpuacct", "memory", "pids", "blkio", "freezer"] {
            assert!(root.join(used).join("conductor").is_dir(), "{used}");
        }
        for unused in ["cpuset", "devices", "name=systemd", "unified"] {
            assert!(!root.join(unused).join("conductor").exists(), "{unused}");
        }
    }

    #[test]
    fn detect_activates_disk_accounting_without_limiting() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cgroup");
        let sys_block = tmp.path().join("block");
        v1_root(&root, false, &[]);
        put(&sys_block.join("vda/dev"), "254:0\n");
        put(&sys_block.join("vda/size"), "528424168\n");
        let rule = root.join("blkio/conductor/blkio.throttle.read_bps_device");
        put(&rule, "");
        CgroupManager::detect_with_block_dir(&root, "conductor", &sys_block).unwrap();
        assert_eq!(get(&rule), "254:0 0");
    }

    #[test]
    fn create_writes_whole_limit_values_in_each_hierarchy() {
        let fixture = Fixture::v1(false, &[]);
        let root = fixture.root();
        let manager = fixture.detect();
        v1_leaf(root, "exec-1", true);
        let cgroup = manager.create("exec-1", &limits()).unwrap();
        let leaf = |h: &str| root.join(h).join("conductor/exec-1");
        assert_eq!(get(&leaf("cpu").join("cpu.cfs_period_us")), "100000");
        assert_eq!(get(&leaf("cpu").join("cpu.cfs_quota_us")), "50000");
        assert_eq!(
            get(&leaf("memory").join("memory.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(
            get(&leaf("memory").join("memory.memsw.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(get(&leaf("memory").join("memory.swappiness")), "60\n");
        assert_eq!(get(&leaf("pids").join("pids.max")), "16");
        assert_eq!(get(&leaf("freezer").join("freezer.state")), "THAWED\n");

        let expected_dirs: Vec<_> = ["blkio", "cpu", "cpuacct", "freezer", "memory", "pids"]
            .map(leaf)
            .to_vec();
        assert_eq!(cgroup.dirs(), expected_dirs);
        cgroup.add_pid(77).unwrap();
        for dir in &expected_dirs {
            assert_eq!(get(&dir.join("cgroup.procs")), "77");
        }
        put(&leaf("memory").join("cgroup.procs"), "77\n78\n");
        assert_eq!(cgroup.pids().unwrap(), [77, 78]);
        for dir in &expected_dirs {
            put(&dir.join("cgroup.procs"), "");
        }
    }

    #[test]
    fn limits_set_later_land_where_create_puts_them() {
        let fixture = Fixture::v1(false, &[]);
        let root = fixture.root();
        let manager = fixture.detect();
        v1_leaf(root, "warm-1", true);
        let cgroup = manager.create("warm-1", &CgroupLimits::default()).unwrap();
        let leaf = |h: &str| root.join(h).join("conductor/warm-1");
        assert_eq!(get(&leaf("pids").join("pids.max")), "max\n");
        manager.set_limits(&cgroup, &limits()).unwrap();
        assert_eq!(get(&leaf("cpu").join("cpu.cfs_quota_us")), "50000");
        assert_eq!(
            get(&leaf("memory").join("memory.memsw.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(get(&leaf("pids").join("pids.max")), "16");
    }

    #[test]
    fn replaced_limits_lift_what_the_next_execution_does_not_name() {
        let fixture = Fixture::v1(false, &[]);
        let root = fixture.root();
        let manager = fixture.detect();
        v1_leaf(root, "warm-1", true);
        let cgroup = manager.create("warm-1", &limits()).unwrap();
        let leaf = |h: &str| root.join(h).join("conductor/warm-1");
        put(&leaf("memory").join("memory.max_usage_in_bytes"), "5000\n");
        let only_pids = CgroupLimits {
            pids: Some(8),
            ..CgroupLimits::default()
        };
        manager.replace_limits(&cgroup, &only_pids).unwrap();
        assert_eq!(get(&leaf("cpu").join("cpu.cfs_quota_us")), "-1");
        assert_eq!(get(&leaf("memory").join("memory.limit_in_bytes")), "-1");
        assert_eq!(
            get(&leaf("memory").join("memory.memsw.limit_in_bytes")),
            "-1"
        );
        assert_eq!(get(&leaf("pids").join("pids.max")), "8");
        manager.replace_limits(&cgroup, &limits()).unwrap();
        assert_eq!(get(&leaf("cpu").join("cpu.cfs_quota_us")), "50000");
        assert_eq!(get(&leaf("pids").join("pids.max")), "16");
        assert!(cgroup.reset_peak_memory().unwrap());
        assert_eq!(get(&leaf("memory").join("memory.max_usage_in_bytes")), "0");
    }

    #[test]
    fn without_swap_accounting_swappiness_is_zeroed() {
        let fixture = Fixture::v1(false, &[]);
        let root = fixture.root();
        let manager = fixture.detect();
        v1_leaf(root, "exec-1", false);
        let _cgroup = manager.create("exec-1", &limits()).unwrap();
        let memory = root.join("memory/conductor/exec-1");
        assert_eq!(get(&memory.join("memory.limit_in_bytes")), "67108864");
        assert_eq!(get(&memory.join("memory.swappiness")), "0");
        assert!(!memory.join("memory.memsw.limit_in_bytes").exists());
    }

    #[test]
    fn comounted_cpu_cpuacct_is_one_directory() {
        let fixture = Fixture::v1(true, &[]);
        let root = fixture.root();
        let manager = fixture.detect();
        v1_leaf(root, "exec-1", true);
        let cgroup = manager.create("exec-1", &limits()).unwrap();
        let comounted = root.join("cpu,cpuacct/conductor/exec-1");
        assert_eq!(
            cgroup.procs_files(),
            ["blkio", "cpu,cpuacct", "freezer", "memory", "pids"]
                .map(|h| root.join(h).join("conductor/exec-1/cgroup.procs"))
        );
        assert_eq!(get(&comounted.join("cpu.cfs_quota_us")), "50000");
        put(&comounted.join("cpuacct.usage"), "2500000\n");
        assert_eq!(cgroup.stats().unwrap().cpu_time_us, Some(2500));
    }

    #[test]
    fn hierarchy_under_an_unusual_name_is_recognised_by_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        put(&root.join("memory/cgroup.procs"), "1\n");
        let odd = root.join("cpu_and_acct");
        for file in ["cgroup.procs", "cpu.shares", "cpuacct.usage"] {
            put(&odd.join(file), "1\n");
        }
        let manager = CgroupManager::detect(root, "conductor").unwrap();
        assert_eq!(manager.controllers(), ["cpu", "cpuacct", "memory"]);
        let leaf = odd.join("conductor/exec-1");
        put(&leaf.join("cgroup.procs"), "");
        put(&leaf.join("cpu.cfs_period_us"), "100000\n");
        put(&leaf.join("cpu.cfs_quota_us"), "-1\n");
        put(&leaf.join("cpuacct.usage"), "5000\n");
        put(&root.join("memory/conductor/exec-1/cgroup.procs"), "");
        let cpus = CgroupLimits {
            cpus: Some(Cpus::new(1.5).unwrap()),
            ..CgroupLimits::default()
        };
        let cgroup = manager.create("exec-1", &cpus).unwrap();
        assert_eq!(get(&leaf.join("cpu.cfs_quota_us")), "150000");
        assert_eq!(cgroup.stats().unwrap().cpu_time_us, Some(5));
        assert_eq!(
            cgroup.dirs(),
            [leaf.clone(), root.join("memory/conductor/exec-1")]
        );
    }

    #[test]
    fn missing_hierarchy_for_a_limit_is_named() {
        let fixture = Fixture::v1(false, &["pids"]);
        let root = fixture.root();
        let manager = fixture.detect();
        let err = manager.create("exec-1", &limits()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the pids cgroup controller is needed for the pids limit but is not available \
                 under {}",
                root.display()
            )
        );
        assert!(!root.join("memory/conductor/exec-1").exists());
        // Without a pids limit the same manager works.
        v1_leaf(root, "exec-2", true);
        let no_pids = CgroupLimits {
            pids: None,
            ..limits()
        };
        manager.create("exec-2", &no_pids).unwrap();
    }

    #[test]
    fn stats_are_read_from_control_files() {
        let fixture = Fixture::v1(false, &[]);
        let root = fixture.root();
        let manager = fixture.detect();
        v1_leaf(root, "exec-1", true);
        let cgroup = manager.create("exec-1", &CgroupLimits::default()).unwrap();
        let leaf = |h: &str| root.join(h).join("conductor/exec-1");

        assert_eq!(cgroup.stats().unwrap(), CgroupStats::default());

        put(&leaf("cpuacct").join("cpuacct.usage"), "1234567890\n");
        put(
            &leaf("memory").join("memory.max_usage_in_bytes"),
            "210763776\n",
        );
        put(
            &leaf("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        // The legacy file is only a fallback: the throttle one wins when present.
        put(
            &leaf("blkio").join("blkio.io_service_bytes_recursive"),
            "8:0 Read 1\n8:0 Write 1\nTotal 2\n",
        );
        put(
            &leaf("blkio").join("blkio.throttle.io_service_bytes_recursive"),
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n\
             8:0 Total 12288\nTotal 12288\n",
        );
        assert_eq!(
            cgroup.stats().unwrap(),
            CgroupStats {
                cpu_time_us: Some(1_234_567),
                peak_memory_bytes: Some(210_763_776),
                disk_read_bytes: Some(4096),
                disk_write_bytes: Some(8192),
                oom_kills: 2,
            }
        );

        std::fs::remove_file(leaf("blkio").join("blkio.throttle.io_service_bytes_recursive"))
            .unwrap();
        let stats = cgroup.stats().unwrap();
        assert_eq!(
            (stats.disk_read_bytes, stats.disk_write_bytes),
            (Some(1), Some(1))
        );
    }

    #[test]
    fn cpu_time_falls_back_to_cpu_stat_only_when_it_has_usage() {
        let fixture = Fixture::v1(false, &["cpuacct"]);
        let root = fixture.root();
        let manager = fixture.detect();
        v1_leaf(root, "exec-1", true);
        let cgroup = manager.create("exec-1", &CgroupLimits::default()).unwrap();
        let cpu_stat = root.join("cpu/conductor/exec-1/cpu.stat");
        put(
            &cpu_stat,
            "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
        );
        assert_eq!(cgroup.stats().unwrap().cpu_time_us, None);
        put(&cpu_stat, "usage_usec 777\nnr_periods 0\n");
        assert_eq!(cgroup.stats().unwrap().cpu_time_us, Some(777));
    }

    #[test]
    fn kill_all_freezes_kills_each_member_and_thaws() {
        let fixture = Fixture::v1(false, &[]);
        let root = fixture.root();
        let manager = fixture.detect();
        v1_leaf(root, "exec-1", true);
        let cgroup = manager.create("exec-1", &CgroupLimits::default()).unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let procs = cgroup.procs_files();
        for file in &procs {
            put(file, &format!("{}\n", child.id()));
        }
        // The "kernel": drops the member from every hierarchy once it has died.
        let kernel = thread::spawn(move || loop {
            if let Some(status) = child.try_wait().unwrap() {
                for file in &procs {
                    put(file, "");
                }
                return status;
            }
            thread::sleep(Duration::from_millis(1));
        });
        cgroup.kill_all().unwrap();
        assert_eq!(kernel.join().unwrap().signal(), Some(9));
        assert_eq!(
            get(&root.join("freezer/conductor/exec-1/freezer.state")),
            "THAWED"
        );
    }

    #[test]
    fn kill_all_gives_up_after_the_timeout_naming_the_survivors() {
        let fixture = Fixture::v1(false, &["freezer"]);
        let root = fixture.root();
        let manager = fixture.detect();
        v1_leaf(root, "exec-1", true);
        let cgroup = manager.create("exec-1", &CgroupLimits::default()).unwrap();
        // Above PID_MAX_LIMIT: no such process, so it never leaves the (fake) cgroup.
        put(&cgroup.procs_files()[0], "4194305\n");
        let timeout = Duration::from_millis(50);
        let err = cgroup.kill_all_within(timeout).unwrap_err();
        match &err {
            CgroupError::KillTimeout { path, pids, waited } => {
                assert_eq!(*path, root.join("blkio/conductor/exec-1"));
                assert_eq!(*pids, [4194305]);
                assert!(*waited >= timeout);
            }
            other => panic!("unexpected {other}"),
        }
        put(&cgroup.procs_files()[0], "");
    }
}
