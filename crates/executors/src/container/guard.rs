//! The guard that always removes an execution's container and then its cgroup: explicitly at
//! the end ([`ContainerGuard::finish`]), or from `Drop` when the execution failed half-way, was
//! abandoned (its future dropped on cancel) or panicked.

use std::path::PathBuf;
use std::sync::Arc;

use bollard::query_parameters::RemoveContainerOptionsBuilder;
use conductor_sandbox::cgroup::Cgroup;

use super::Engine;
use crate::run::Measurements;

/// Owns one execution's container (once created) and cgroup.
#[derive(Debug)]
pub struct ContainerGuard {
    engine: Engine,
    container: Option<String>,
    cgroup: Option<Arc<Cgroup>>,
    engine_dirs: Vec<PathBuf>,
}

impl ContainerGuard {
    /// Guards `cgroup`; the container is added once it exists. `engine_dirs` are the same
    /// cgroup's directories in the v1 hierarchies the executor does not use (cpuset, devices,
    /// …), which the engine creates and leaves behind.
    pub fn new(engine: Engine, cgroup: Cgroup, engine_dirs: Vec<PathBuf>) -> Self {
        Self {
            engine,
            container: None,
            cgroup: Some(Arc::new(cgroup)),
            engine_dirs,
        }
    }

    /// Records the created container.
    pub fn set_container(&mut self, id: String) {
        self.container = Some(id);
    }

    /// What the cgroup measured (the container's totals once it has exited).
    pub async fn measurements(&self) -> Measurements {
        let Some(cgroup) = self.cgroup.clone() else {
            return Measurements::default();
        };
        match tokio::task::spawn_blocking(move || cgroup.stats()).await {
            Ok(Ok(stats)) => Measurements::from(&stats),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the execution's cgroup stats");
                Measurements::default()
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the execution's cgroup stats");
                Measurements::default()
            }
        }
    }

    /// Removes the container (forced), then the cgroup.
    pub async fn finish(mut self) {
        let container = self.container.take();
        let cgroup = self.cgroup.take();
        let engine_dirs = std::mem::take(&mut self.engine_dirs);
        let t = std::time::Instant::now();
        if let Some(id) = container {
            remove_container(&self.engine, &id).await;
        }
        let r = t.elapsed();
        if let Some(cgroup) = cgroup {
            let _ = tokio::task::spawn_blocking(move || destroy(cgroup, &engine_dirs)).await;
        }
        tracing::info!(?r, d=?t.elapsed(), "REMOVE");
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let container = self.container.take();
        let cgroup = self.cgroup.take();
        let engine_dirs = std::mem::take(&mut self.engine_dirs);
        if container.is_none() && cgroup.is_none() {
            return;
        }
        let engine = self.engine.clone();
        // Drop may run inside the async runtime (an abandoned future) or during a panic: do the
        // removal on a thread of its own with its own small runtime.
        let spawned = std::thread::Builder::new()
            .name("conductor-container-guard".to_owned())
            .spawn(move || {
                if let Some(id) = container {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => {
                            runtime.block_on(remove_container(&engine, &id));
                        }
                        Err(e) => tracing::warn!(error = %e, container = %id, "cannot remove an abandoned container"),
                    }
                }
                if let Some(cgroup) = cgroup {
                    destroy(cgroup, &engine_dirs);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread removing an abandoned container");
        }
    }
}

/// Force-removes container `id` (killing it if it runs). Returns whether it was removed; a
/// container that is already gone counts as removed.
pub async fn remove_container(engine: &Engine, id: &str) -> bool {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match engine.client().remove_container(id, Some(options)).await {
        Ok(()) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => true,
        Err(e) => {
            tracing::warn!(error = %e, container = %id, "removing the container");
            false
        }
    }
}

/// Removes the cgroup, first the engine's cgroups left inside it (Podman leaves its `conmon`
/// and container cgroups behind for a moment after removal).
fn destroy(cgroup: Arc<Cgroup>, engine_dirs: &[PathBuf]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for dir in engine_dirs {
        remove_children(dir, deadline);
        if let Err(e) = std::fs::remove_dir(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, cgroup = %dir.display(), "removing an engine's cgroup");
            }
        }
    }
    if let Some(cgroup) = Arc::into_inner(cgroup) {
        for dir in cgroup.dirs() {
            remove_children(dir, deadline);
        }
        if let Err(e) = cgroup.destroy() {
            tracing::warn!(error = %e, "removing the execution's cgroup");
        }
    }
}

/// `rmdir`s every cgroup below `dir`, deepest first, retrying while they are busy (their last
/// processes exiting) until `deadline`.
fn remove_children(dir: &std::path::Path, deadline: std::time::Instant) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let child = entry.path();
        remove_children(&child, deadline);
        loop {
            match std::fs::remove_dir(&child) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if std::time::Instant::now() >= deadline => {
                    tracing::warn!(error = %e, cgroup = %child.display(), "removing an engine's cgroup");
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }
}
