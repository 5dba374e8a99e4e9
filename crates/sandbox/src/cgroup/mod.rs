//! The cgroup manager: one cgroup per execution, on cgroup v1 or v2.
//!
//! It owns everything Conductor does with cgroupfs: finding the layout under a root path
//! (normally `/sys/fs/cgroup`), preparing Conductor's parent cgroup (`<root>/conductor` on v2,
//! `<hierarchy>/conductor` in every v1 hierarchy it uses), creating `<parent>/<name>` with the
//! CPU / memory / pids limits applied, letting a process join ([`Cgroup::procs_files`],
//! [`Cgroup::add_pid`]), reading [`CgroupStats`], killing the whole process tree
//! ([`Cgroup::kill_all`]) and removing the cgroup ([`Cgroup::destroy`]).
//!
//! Every read and write goes through the root path given to [`CgroupManager::detect`] (plus, on
//! v1, the block-device list of [`CgroupManager::detect_with_block_dir`]), so unit tests run
//! against tempdir fixtures (with the control files a kernel would create pre-populated) and the
//! integration tests run the same code on the real kernel. Signals go to the pids the cgroup
//! lists.
//!
//! ```no_run
//! use std::path::Path;
//! use conductor_sandbox::cgroup::{CgroupLimits, CgroupManager};
//!
//! # fn main() -> Result<(), conductor_sandbox::cgroup::CgroupError> {
//! let manager = CgroupManager::detect(Path::new("/sys/fs/cgroup"), "conductor")?; // once
//! let cgroup = manager.create("exec-0123456789ab", &CgroupLimits::default())?;
//! // The sandbox helper writes "0" to each of `cgroup.procs_files()` before it execs; a process
//! // spawned otherwise is moved in by pid, before it does its work.
//! cgroup.add_pid(1234)?;
//! let stats = cgroup.stats()?; // after the process exited: what it used
//! cgroup.destroy()?; // kills what is left and removes the directories
//! # let _ = stats;
//! # Ok(())
//! # }
//! ```
//!
//! Lifecycle: the executor must call [`Cgroup::destroy`] when the execution ends. A [`Cgroup`]
//! dropped without it is destroyed best-effort in `Drop` (processes killed, directories removed)
//! and a warning is logged through `tracing`, so a forgotten call never leaks silently.
//!
//! The backends are an enum ([`CgroupManager::V1`] / [`CgroupManager::V2`]), as in youki's
//! libcgroups: `v1.rs` and `v2.rs` hold the layout-specific code, `parse.rs` the pure parsers of
//! control files, `fs.rs` the filesystem calls.

mod fs;
mod parse;
pub mod v1;
pub mod v2;

#[cfg(test)]
mod fixture;

use std::io;
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use conductor_types::{Bytes, Cpus, ResourceLimits};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The CFS period every CPU quota is expressed against, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// How long [`Cgroup::kill_all`] keeps killing before giving up with
/// [`CgroupError::KillTimeout`].
pub const KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`Cgroup::destroy`] retries `rmdir` on `EBUSY`.
const RMDIR_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a freeze may take before the kill proceeds on a partly frozen cgroup.
const FREEZE_TIMEOUT: Duration = Duration::from_millis(500);

/// The limits a cgroup is created with. `None` leaves the kernel default (no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupLimits {
    /// CPU bandwidth in cores, enforced as a CFS quota over [`CPU_PERIOD_US`].
    pub cpus: Option<Cpus>,
    /// Memory ceiling, with no swap allowed on top.
    pub memory: Option<Bytes>,
    /// Maximum number of processes and threads.
    pub pids: Option<u32>,
}

impl From<&ResourceLimits> for CgroupLimits {
    fn from(limits: &ResourceLimits) -> Self {
        Self {
            cpus: limits.cpus,
            memory: limits.memory,
            pids: limits.pids,
        }
    }
}

/// What a cgroup used. `None` means the kernel does not provide the number on this host
/// (controller or file missing); it is never estimated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time (user + system) of all processes, in microseconds.
    pub cpu_time_us: Option<u64>,
    /// Highest memory usage seen, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Bytes read from block devices.
    pub disk_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub disk_write_bytes: Option<u64>,
    /// Processes killed by the OOM killer inside this cgroup.
    pub oom_kills: u64,
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller (or group of co-mounted controllers).
    V1,
    /// The unified hierarchy.
    V2,
}

/// Why a cgroup operation failed. Every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The root holds neither a cgroup v2 nor any usable v1 hierarchy.
    #[error("no usable cgroups under {root}: {reason}")]
    Unsupported {
        /// The root that was searched.
        root: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// Creating a cgroup directory was refused.
    #[error(
        "cannot create cgroup {path}: {source} (creating cgroups needs root, or a writable \
         delegated cgroup subtree)"
    )]
    NotWritable {
        /// The directory that could not be created.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A limit was requested whose controller is not available.
    #[error("the {controller} cgroup controller is needed for {needed_for} but is not available under {root}")]
    ControllerMissing {
        /// The controller (`memory`, `cpu`, `pids`).
        controller: &'static str,
        /// The limit that needs it.
        needed_for: &'static str,
        /// Where it was looked for.
        root: PathBuf,
    },
    /// cgroup v2 refused to enable controllers because the cgroup has processes of its own.
    #[error(
        "cannot write {value:?} to {path}: the cgroup has member processes, and cgroup v2 only \
         enables controllers for children of cgroups without processes (move them to a leaf \
         cgroup first)"
    )]
    SubtreeBusy {
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
        /// What was written.
        value: String,
    },
    /// A cgroup directory could not be created for a reason other than permissions.
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A control file write failed.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        source: io::Error,
    },
    /// A control file read failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The control file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A control file held something unexpected.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// The control file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// A cgroup or parent name that would escape its directory.
    #[error("invalid cgroup name {name:?}: expected a relative name without '.' or '..' components{detail}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Extra constraint that was violated.
        detail: &'static str,
    },
    /// Sending SIGKILL to a member process failed.
    #[error("cannot send SIGKILL to pid {pid} of cgroup {path}: {source}")]
    Signal {
        /// The cgroup directory.
        path: PathBuf,
        /// The process.
        pid: u32,
        /// The errno.
        source: Errno,
    },
    /// Processes were still in the cgroup when the kill loop's time was up.
    #[error("processes {pids:?} are still in cgroup {path} after killing for {waited:?}")]
    KillTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// The pids left.
        pids: Vec<u32>,
        /// How long the kill loop ran.
        waited: Duration,
    },
    /// A cgroup directory could not be removed.
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Creates per-execution cgroups under a parent cgroup, on whichever layout the host has.
#[derive(Debug)]
pub enum CgroupManager {
    /// cgroup v1 (or hybrid: v1 controllers with an empty unified hierarchy beside them).
    V1(v1::V1Manager),
    /// cgroup v2 (unified hierarchy at the root).
    V2(v2::V2Manager),
}

impl CgroupManager {
    /// Detects the layout under `root` (normally `/sys/fs/cgroup`) and prepares `parent` (e.g.
    /// `"conductor"`) under each needed hierarchy. `root/cgroup.controllers` means cgroup v2;
    /// otherwise the v1 hierarchies are found by their directory names (`cpu`, `memory`,
    /// `cpu,cpuacct`, …). Errors name what is missing or not writable.
    pub fn detect(root: &Path, parent: &str) -> Result<Self, CgroupError> {
        Self::detect_with_block_dir(root, parent, Path::new("/sys/block"))
    }

    /// [`CgroupManager::detect`], with the directory that lists block devices (normally
    /// `/sys/block`) as a parameter. On v1, disk I/O counting is activated for those devices (see
    /// `v1.rs`); v2 counts I/O without help.
    pub fn detect_with_block_dir(
        root: &Path,
        parent: &str,
        sys_block: &Path,
    ) -> Result<Self, CgroupError> {
        let parent_path = relative_name(parent, true)?;
        if root.join("cgroup.controllers").is_file() {
            v2::V2Manager::detect(root, parent_path).map(Self::V2)
        } else {
            v1::V1Manager::detect(root, parent_path, sys_block).map(Self::V1)
        }
    }

    /// The layout found.
    pub fn version(&self) -> CgroupVersion {
        match self {
            Self::V1(_) => CgroupVersion::V1,
            Self::V2(_) => CgroupVersion::V2,
        }
    }

    /// The controllers available to execution cgroups, among those Conductor uses
    /// (v1: cpu, cpuacct, memory, pids, blkio, freezer; v2: cpu, memory, pids, io).
    pub fn controllers(&self) -> Vec<&'static str> {
        match self {
            Self::V1(m) => m.controllers(),
            Self::V2(m) => m.controllers(),
        }
    }

    /// Creates the cgroup `name` (e.g. `exec-<12 hex>`, one path component) under the parent,
    /// with `limits` applied: memory with no swap on top, CPU as a CFS quota over
    /// [`CPU_PERIOD_US`], pids as `pids.max`. An existing cgroup of that name is reused and its
    /// limits overwritten. On failure nothing is left behind (best effort).
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<Cgroup, CgroupError> {
        let name = relative_name(name, false)?;
        let backend = match self {
            Self::V1(m) => {
                m.check(limits)?;
                Backend::V1(m.make(name)?)
            }
            Self::V2(m) => {
                m.check(limits)?;
                Backend::V2(m.make(name)?)
            }
        };
        let cgroup = Cgroup {
            backend,
            released: false,
        };
        let applied = match &cgroup.backend {
            Backend::V1(c) => c.apply(limits),
            Backend::V2(c) => c.apply(limits),
        };
        match applied {
            Ok(()) => Ok(cgroup),
            Err(e) => {
                if let Err(cleanup) = cgroup.destroy() {
                    tracing::warn!(error = %cleanup, "cleaning up a half-created cgroup failed");
                }
                Err(e)
            }
        }
    }
}

impl CgroupManager {
    /// Applies `limits` to a cgroup made earlier without them (a warm helper's), as
    /// [`CgroupManager::create`] would have. Limits it does not name are left as they are.
    pub fn set_limits(&self, cgroup: &Cgroup, limits: &CgroupLimits) -> Result<(), CgroupError> {
        match (self, &cgroup.backend) {
            (Self::V1(m), Backend::V1(c)) => {
                m.check(limits)?;
                c.apply(limits)
            }
            (Self::V2(m), Backend::V2(c)) => {
                m.check(limits)?;
                c.apply(limits)
            }
            _ => Err(CgroupError::Unsupported {
                root: cgroup.dirs().first().cloned().unwrap_or_default(),
                reason: "the cgroup belongs to another cgroup version than this manager".into(),
            }),
        }
    }

    /// Makes `limits` the cgroup's only limits: applies them and lifts the ones it does not
    /// name, for a cgroup reused by another execution (a reused warm container's).
    pub fn replace_limits(
        &self,
        cgroup: &Cgroup,
        limits: &CgroupLimits,
    ) -> Result<(), CgroupError> {
        match &cgroup.backend {
            Backend::V1(c) => c.lift_unnamed(limits)?,
            Backend::V2(c) => c.lift_unnamed(limits)?,
        }
        self.set_limits(cgroup, limits)
    }
}

/// One execution's cgroup (one directory per v1 hierarchy, or one v2 directory).
///
/// Call [`Cgroup::destroy`] when the execution ends; dropping it instead destroys it
/// best-effort and logs a warning.
#[derive(Debug)]
pub struct Cgroup {
    backend: Backend,
    released: bool,
}

#[derive(Debug)]
enum Backend {
    V1(v1::V1Cgroup),
    V2(v2::V2Cgroup),
}

impl Cgroup {
    /// The `cgroup.procs` files a process must write its pid (or `"0"` for itself) to in order
    /// to join: one per v1 hierarchy used, or one for v2.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The cgroup's directories (one per v1 hierarchy, or one for v2).
    pub fn dirs(&self) -> &[PathBuf] {
        match &self.backend {
            Backend::V1(c) => c.dirs(),
            Backend::V2(c) => c.dirs(),
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup, in every hierarchy.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        let value = pid.to_string();
        for file in self.procs_files() {
            fs::write(&file, &value)?;
        }
        Ok(())
    }

    /// The processes in the cgroup (across all v1 hierarchies), sorted, without duplicates.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        pids_in(self.dirs())
    }

    /// Starts the peak-memory figure afresh, for a cgroup reused by another execution. Returns
    /// whether it could: v2's `memory.peak` cannot be reset for every reader (writing resets it
    /// only for the writer's open file), so there it is `false`.
    pub fn reset_peak_memory(&self) -> Result<bool, CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.reset_peak_memory(),
            Backend::V2(_) => Ok(false),
        }
    }

    /// What the cgroup used so far. Numbers the host does not provide are `None`.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.stats(),
            Backend::V2(c) => c.stats(),
        }
    }

    /// Kills every process in the cgroup, including ones that forked or called `setsid`
    /// meanwhile: v2 `cgroup.kill` when present, otherwise freeze, SIGKILL each member, thaw,
    /// until the cgroup is empty or [`KILL_TIMEOUT`] has passed. Returns at once when the cgroup
    /// is already empty. The calling process must not be a member. Blocks (it sleeps between
    /// rounds): from async code, call it (and [`Cgroup::destroy`]) on a blocking thread.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        self.kill_all_within(KILL_TIMEOUT)
    }

    /// [`Cgroup::kill_all`] with another bound than [`KILL_TIMEOUT`].
    pub fn kill_all_within(&self, timeout: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(CgroupError::KillTimeout {
                    path: self.dirs().first().cloned().unwrap_or_default(),
                    pids,
                    waited,
                });
            }
            match &self.backend {
                Backend::V1(c) => c.kill_once()?,
                Backend::V2(c) => c.kill_once()?,
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Kills every process ([`Cgroup::kill_all`]), then removes every directory of the cgroup,
    /// retrying briefly while the kernel still reports it busy.
    pub fn destroy(mut self) -> Result<(), CgroupError> {
        self.released = true;
        self.teardown()
    }

    fn teardown(&self) -> Result<(), CgroupError> {
        self.kill_all()?;
        let deadline = Instant::now() + RMDIR_TIMEOUT;
        let mut first_error = None;
        for dir in self.dirs() {
            if let Err(e) = fs::rmdir(dir, deadline) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        tracing::warn!(dirs = ?self.dirs(), "cgroup dropped without destroy(); destroying it now");
        if let Err(error) = self.teardown() {
            tracing::warn!(%error, "best-effort destroy of a dropped cgroup failed");
        }
    }
}

/// The members of the cgroup directories `dirs`, sorted, without duplicates.
fn pids_in(dirs: &[PathBuf]) -> Result<Vec<u32>, CgroupError> {
    let mut all = Vec::new();
    for dir in dirs {
        let path = dir.join("cgroup.procs");
        let text = fs::read(&path)?;
        match parse::pids(&text) {
            Some(pids) => all.extend(pids),
            None => {
                return Err(CgroupError::Parse {
                    path,
                    content: text,
                })
            }
        }
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

/// Sends SIGKILL to each pid. Pid 0 (a member in a pid namespace we cannot see into) and our
/// own pid are skipped: `kill(0)` would signal our own process group. A pid already gone is fine.
fn sigkill_each(dir: &Path, pids: &[u32]) -> Result<(), CgroupError> {
    let own = std::process::id();
    for &pid in pids {
        if pid == 0 || pid == own {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        match kill(Pid::from_raw(raw), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Signal {
                    path: dir.to_owned(),
                    pid,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Polls `is_done` with a growing pause until it returns true or `timeout` passes.
fn wait_until(
    timeout: Duration,
    mut is_done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    loop {
        if is_done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Checks a cgroup name: relative, no `.`/`..`, and (unless `nested`) a single component.
fn relative_name(name: &str, nested: bool) -> Result<&Path, CgroupError> {
    let invalid = |detail| CgroupError::InvalidName {
        name: name.to_owned(),
        detail,
    };
    let path = Path::new(name);
    if name.is_empty() {
        return Err(invalid(", and not empty"));
    }
    let mut count = 0;
    for component in path.components() {
        match component {
            Component::Normal(_) => count += 1,
            _ => return Err(invalid("")),
        }
    }
    if !nested && count != 1 {
        return Err(invalid(", and a single path component"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_stay_inside_the_parent() {
        assert_eq!(relative_name("exec-1", false).unwrap(), Path::new("exec-1"));
        assert_eq!(
            relative_name("system.slice/conductor", true).unwrap(),
            Path::new("system.slice/conductor")
        );
        for bad in ["", "..", "a/../b", "/abs", "./x"] {
            let err = relative_name(bad, true).unwrap_err();
            assert!(matches!(err, CgroupError::InvalidName { .. }), "{bad}");
        }
        assert_eq!(
            relative_name("a/b", false).unwrap_err().to_string(),
            "invalid cgroup name \"a/b\": expected a relative name without '.' or '..' \
             components, and a single path component"
        );
    }

    #[test]
    fn limits_come_from_resource_limits() {
        let limits = ResourceLimits {
            cpus: Some(Cpus::new(0.5).unwrap()),
            memory: Some(Bytes::mib(64)),
            pids: Some(16),
            ..ResourceLimits::default()
        };
        assert_eq!(
            CgroupLimits::from(&limits),
            CgroupLimits {
                cpus: Some(Cpus::new(0.5).unwrap()),
                memory: Some(Bytes::mib(64)),
                pids: Some(16),
            }
        );
    }

    #[test]
    fn empty_root_is_unsupported_with_a_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let err = CgroupManager::detect(tmp.path(), "conductor").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no usable cgroups under {}: found neither cgroup v2 (cgroup.controllers) nor \
                 a cgroup v1 hierarchy for cpu, cpuacct, memory, pids, blkio or freezer",
                tmp.path().display()
            )
        );
    }
}
