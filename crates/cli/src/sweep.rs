//! The cgroups of `conductor serve`, and the sweep that removes what a killed server left.
//!
//! Every execution of a server gets its cgroup under
//! `conductor/serve-<hash of the home directory>/run-<start time>-<pid>` (in every v1 hierarchy,
//! or once on v2): one parent per home directory, one child per run of the server. At start, with
//! the home directory locked (one server per home), the server kills the process trees of every
//! other run's execution cgroups and removes them: after a kill -9 those are the tasks that were
//! running, now orphans. Cgroups of other homes and of `conductor exec` are never touched.

use std::path::{Path, PathBuf};

use conductor_sandbox::cgroup::{CgroupLimits, CgroupManager};
use conductor_server::Sweep;

/// Where the cgroup filesystem is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroups of one server home, and the run this process owns.
#[derive(Debug, Clone)]
pub struct ServerCgroups {
    root: PathBuf,
    /// `conductor/serve-<hash>`.
    home_parent: String,
    /// `run-<millis>-<pid>`: this run's directory under `home_parent`.
    run: String,
}

impl ServerCgroups {
    /// The cgroups of the server using `home`, under the cgroup filesystem at `root`.
    pub fn new(root: &Path, home: &Path) -> Self {
        let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_owned());
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Self {
            root: root.to_owned(),
            home_parent: format!(
                "conductor/serve-{:016x}",
                fnv1a(home.as_os_str().as_encoded_bytes())
            ),
            run: format!("run-{millis}-{}", std::process::id()),
        }
    }

    /// The cgroup parent this run's executors create execution cgroups under.
    pub fn run_parent(&self) -> String {
        format!("{}/{}", self.home_parent, self.run)
    }

    /// Removes this run's (empty) cgroup directories, and the home's when no other run is left:
    /// at a graceful stop, once the executors are gone. Best effort: what is still busy stays,
    /// for the next start's sweep.
    pub fn remove_run(&self) {
        for home in self.home_dirs() {
            let _ = std::fs::remove_dir(home.join(&self.run));
            let _ = std::fs::remove_dir(&home);
        }
    }

    /// The directories that hold run cgroups: `<hierarchy>/<home_parent>` for each v1
    /// hierarchy (symlinked names once), or `<root>/<home_parent>` on v2.
    fn home_dirs(&self) -> Vec<PathBuf> {
        if self.root.join("cgroup.controllers").is_file() {
            return vec![self.root.join(&self.home_parent)];
        }
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut mounts: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.join("cgroup.procs").is_file())
            .filter_map(|path| std::fs::canonicalize(path).ok())
            .collect();
        mounts.sort();
        mounts.dedup();
        mounts
            .into_iter()
            .map(|mount| mount.join(&self.home_parent))
            .collect()
    }
}

/// Sorted names of the subdirectories of `dirs`, without duplicates.
fn subdirs(dirs: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = dirs
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names.dedup();
    names
}

impl Sweep for ServerCgroups {
    fn sweep(&self) -> Result<Vec<String>, String> {
        let homes = self.home_dirs();
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        for run in subdirs(&homes) {
            if run == self.run {
                continue;
            }
            let parent = format!("{}/{run}", self.home_parent);
            let manager = match CgroupManager::detect(&self.root, &parent) {
                Ok(manager) => manager,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            let run_dirs: Vec<PathBuf> = homes.iter().map(|home| home.join(&run)).collect();
            for name in subdirs(&run_dirs) {
                // Opening an existing cgroup by name reuses it; destroy kills its whole tree
                // (freezing it first on v1, so nothing forks away) and removes it.
                let outcome = manager
                    .create(&name, &CgroupLimits::default())
                    .and_then(|cgroup| {
                        let pids = cgroup.pids().unwrap_or_default();
                        cgroup.destroy().map(|()| pids)
                    });
                match outcome {
                    Ok(pids) => removed.push(format!(
                        "cgroup {parent}/{name}: killed {} process(es) {pids:?} and removed it",
                        pids.len()
                    )),
                    Err(e) => errors.push(format!("cgroup {parent}/{name}: {e}")),
                }
            }
            drop(manager);
            for dir in &run_dirs {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
                }
            }
        }
        if errors.is_empty() {
            Ok(removed)
        } else {
            Err(errors.join("; "))
        }
    }
}

/// FNV-1a, 64 bits: a stable name for a path (the same in every build, unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn runs_live_under_a_parent_named_after_the_home() {
        let a = ServerCgroups::new(Path::new("/sys/fs/cgroup"), Path::new("/no/such/home-a"));
        let b = ServerCgroups::new(Path::new("/sys/fs/cgroup"), Path::new("/no/such/home-b"));
        // FNV-1a of "/no/such/home-a" (a path that cannot be canonicalized stays as given).
        assert_eq!(a.home_parent, "conductor/serve-75571ee1367976f7");
        assert_ne!(a.home_parent, b.home_parent);
        assert!(a
            .run_parent()
            .starts_with("conductor/serve-75571ee1367976f7/run-"));
        assert!(a
            .run_parent()
            .ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn v1_hierarchies_are_found_once_each_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["cpu,cpuacct", "memory", "not-a-hierarchy"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        for dir in ["cpu,cpuacct", "memory"] {
            std::fs::write(root.path().join(dir).join("cgroup.procs"), "").unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpu")).unwrap();
        let cgroups = ServerCgroups::new(root.path(), Path::new("/no/such/home"));
        let mount = std::fs::canonicalize(root.path()).unwrap();
        assert_eq!(
            cgroups.home_dirs(),
            [
                mount.join("cpu,cpuacct").join(&cgroups.home_parent),
                mount.join("memory").join(&cgroups.home_parent)
            ]
        );
        // Nothing left by an earlier run: nothing to do, and nothing created.
        assert_eq!(cgroups.sweep(), Ok(Vec::new()));
        assert!(!mount.join("memory/conductor").exists());
    }
}
