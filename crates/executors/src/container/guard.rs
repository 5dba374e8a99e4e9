//! The guard that always removes an execution's container, then its warm-pool slot (if any)
//! and its cgroup: explicitly at
//! the end ([`ContainerGuard::finish`]), or from `Drop` when the execution failed half-way, was
//! abandoned (its future dropped on cancel) or panicked.

use std::path::PathBuf;
use std::sync::Arc;

use bollard::query_parameters::RemoveContainerOptionsBuilder;
use conductor_sandbox::cgroup::Cgroup;

use super::pool::Slot;
use super::Engine;
use crate::run::Measurements;

/// Owns one execution's container (once created) and cgroup.
#[derive(Debug)]
pub struct ContainerGuard {
    engine: Engine,
    container: Option<String>,
    cgroup: Option<Arc<Cgroup>>,
    engine_dirs: Vec<PathBuf>,
    slot: Option<Slot>,
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
            slot: None,
        }
    }

    /// Guards a container that has no cgroup of the executor's (a rootless engine's).
    pub fn without_cgroup(engine: Engine) -> Self {
        Self {
            engine,
            container: None,
            cgroup: None,
            engine_dirs: Vec::new(),
            slot: None,
        }
    }

    /// Records the warm-pool slot of the container (removed after the container).
    pub fn set_slot(&mut self, slot: Slot) {
        self.slot = Some(slot);
    }

    /// The warm-pool slot, if any.
    pub fn slot(&self) -> Option<&Slot> {
        self.slot.as_ref()
    }

    /// The execution's cgroup (until the guard finishes).
    pub fn cgroup(&self) -> Option<Arc<Cgroup>> {
        self.cgroup.clone()
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
        // Forgotten only once removed: if this future is dropped half-way (its execution
        // abandoned), `Drop` still sees the container and removes it.
        if let Some(id) = self.container.as_deref() {
            remove_container(&self.engine, id).await;
        }
        self.container = None;
        // A blocking task runs to its end even if this future is dropped.
        let cgroup = self.cgroup.take();
        let engine_dirs = std::mem::take(&mut self.engine_dirs);
        let slot = self.slot.take();
        if cgroup.is_some() || slot.is_some() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(slot) = slot {
                    slot.remove();
                }
                if let Some(cgroup) = cgroup {
                    destroy(cgroup, &engine_dirs);
                }
            })
            .await;
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let container = self.container.take();
        let cgroup = self.cgroup.take();
        let engine_dirs = std::mem::take(&mut self.engine_dirs);
        let slot = self.slot.take();
        if container.is_none() && cgroup.is_none() && slot.is_none() {
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
                if let Some(slot) = slot {
                    slot.remove();
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
/// container that is already gone counts as removed. An engine busy with the container (Podman
/// refuses a removal while its own cleanup process runs) is asked again for up to ten seconds.
pub async fn remove_container(engine: &Engine, id: &str) -> bool {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut pause = std::time::Duration::from_millis(20);
    loop {
        match engine
            .client()
            .remove_container(id, Some(options.clone()))
            .await
        {
            Ok(()) => return true,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return true,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, container = %id, "removing the container");
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, container = %id, "removing the container; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
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
pub(crate) fn remove_children(dir: &std::path::Path, deadline: std::time::Instant) {
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
