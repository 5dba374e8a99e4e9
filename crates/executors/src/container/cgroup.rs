//! The executor's own cgroup per execution (see the module docs of `container`): made under the
//! configured parent with the memory limit and an OOM watch, handed to the engine as the
//! container's cgroup parent (cgroupfs driver), and the directories the engine adds on v1.

use std::path::PathBuf;
use std::sync::Arc;

use conductor_core::ExecutorError;
use conductor_sandbox::cgroup::{Cgroup, CgroupError, CgroupLimits, CgroupManager, CgroupVersion};
use conductor_types::ExecPlan;

use super::config::ContainerConfig;
use super::oom::OomWatch;

/// The cgroups a rootful container executor makes (a rootless engine uses none).
#[derive(Debug)]
pub(crate) struct ExecutionCgroups {
    manager: Arc<CgroupManager>,
    /// Where the cgroup filesystem is mounted.
    root: PathBuf,
    /// The engine's name, which prefixes each cgroup's name.
    prefix: &'static str,
}

impl ExecutionCgroups {
    /// The cgroups of `config`'s executor: under `config.cgroup_parent`, detected at
    /// `config.cgroup_root`.
    pub(crate) fn detect(config: &ContainerConfig) -> Result<Self, CgroupError> {
        Ok(Self {
            manager: Arc::new(CgroupManager::detect(
                &config.cgroup_root,
                &config.cgroup_parent,
            )?),
            root: config.cgroup_root.clone(),
            prefix: config.engine.name(),
        })
    }

    /// The manager, for a blocking thread to set limits with.
    pub(crate) fn manager(&self) -> Arc<CgroupManager> {
        Arc::clone(&self.manager)
    }

    /// The execution's cgroup `<engine>-<id>`, holding the memory limit, and its OOM watch.
    pub(crate) async fn create(
        &self,
        id: &str,
        plan: &ExecPlan,
    ) -> Result<(Cgroup, Option<OomWatch>), ExecutorError> {
        let manager = self.manager();
        let name = format!("{}-{id}", self.prefix);
        let limits = CgroupLimits {
            memory: plan.limits.memory,
            ..CgroupLimits::default()
        };
        let made = tokio::task::spawn_blocking(move || {
            let cgroup = manager.create(&name, &limits).map_err(|e| e.to_string())?;
            let memory_dir = cgroup
                .dirs()
                .iter()
                .find(|d| d.join("memory.oom_control").is_file())
                .cloned();
            let watch = match memory_dir {
                Some(dir) => OomWatch::register(&dir)
                    .map_err(|e| format!("watching {} for OOM kills: {e}", dir.display()))?,
                None => None,
            };
            Ok::<_, String>((cgroup, watch))
        })
        .await
        .map_err(|e| setup("creating the execution's cgroup", e))?;
        made.map_err(|e| setup("creating the execution's cgroup", e))
    }

    /// The cgroup path the engine takes as `CgroupParent` (cgroupfs driver): the cgroup's
    /// directory relative to its hierarchy's root.
    pub(crate) fn parent(&self, cgroup: &Cgroup) -> Result<String, ExecutorError> {
        let dir = cgroup
            .dirs()
            .first()
            .ok_or_else(|| setup("placing the container", "the cgroup has no directory"))?;
        let relative = dir.strip_prefix(&self.root).map_err(|_| {
            setup(
                "placing the container",
                format!("{} is outside {}", dir.display(), self.root.display()),
            )
        })?;
        let mut parts = relative.components();
        if self.manager.version() == CgroupVersion::V1 {
            parts.next();
        }
        Ok(format!("/{}", parts.as_path().display()))
    }

    /// On v1, where the engine will make `cgroup_parent` in the hierarchies the executor's
    /// cgroup does not cover (cpuset, devices, name=systemd, …).
    pub(crate) fn engine_dirs(&self, cgroup: &Cgroup, cgroup_parent: &str) -> Vec<PathBuf> {
        if self.manager.version() != CgroupVersion::V1 {
            return Vec::new();
        }
        let relative = cgroup_parent.trim_start_matches('/');
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path().join(relative))
            .filter(|dir| !cgroup.dirs().contains(dir))
            .collect()
    }
}

fn setup(stage: &str, reason: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Setup {
        stage: stage.to_owned(),
        reason: reason.to_string(),
    }
}
