//! Keeping the warm pool (see `pool` for what a warm container is): making warm containers,
//! taking one for a request that fits, refilling in the background, removing the idle ones,
//! and sweeping the slot directories of processes that died.

use std::sync::Arc;

use conductor_core::{plan, ExecutorError, HostContext, PlanError, PlanTarget};
use conductor_sandbox::cgroup::CgroupLimits;
use conductor_types::{ExecPlan, ExecutionId, ExecutionRequest, NetworkPolicy};
use tokio::net::unix::pipe;

use super::api;
use super::guard::{remove_children, ContainerGuard};
use super::idle::{PoolState, Warm, WarmKind};
use super::inner::{Inner, Launched};
use super::owner::dead_owners;
use super::pool::{remove_slot_dir, send, Slot};
use super::resident::Resident;
use super::scripts::once_script;
use super::spec::{command, resident_body, warm_body, SlotPaths};

/// The plan warm containers are made for: a default request (no network, default rlimits).
pub(crate) fn template_plan() -> Result<ExecPlan, PlanError> {
    let request = ExecutionRequest::new(vec!["/bin/sh".to_owned()], "/".into());
    plan(&request, PlanTarget::Sandbox, &HostContext::default())
}

impl Inner {
    /// Whether a warm container made for the template can run `plan`: what is fixed at create
    /// (network mode — none, and no service network —, rlimits, working directory) must be the
    /// same.
    pub(crate) fn fits(&self, request: &ExecutionRequest, plan: &ExecPlan) -> bool {
        plan.network == NetworkPolicy::None
            && request.service_network.is_none()
            && plan.network == self.template.network
            && plan.rlimits == self.template.rlimits
            && plan.cwd == self.template.cwd
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves nothing half-done in the state: keep going.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn idle_count(&self) -> usize {
        self.state().idle.len()
    }

    /// An idle warm container for `plan`, if one fits and is there.
    pub(crate) fn take_warm(&self, request: &ExecutionRequest, plan: &ExecPlan) -> Option<Warm> {
        if self.config.warm_pool == 0 || !self.fits(request, plan) {
            return None;
        }
        let mut state = self.state();
        let warm = state.idle.pop()?;
        if matches!(warm.kind, WarmKind::Resident(_)) {
            state.lent += 1;
        }
        Some(warm)
    }

    /// Takes back a resident container lent by [`Inner::take_warm`]: idle again, or (`None`:
    /// removed) no longer counted.
    pub(crate) fn give_back(&self, warm: Option<Warm>) {
        {
            let mut state = self.state();
            state.lent = state.lent.saturating_sub(1);
            if let Some(warm) = warm {
                state.idle.push(warm);
            }
        }
        self.pool_changed.notify_waiters();
    }

    /// Starts the request's command in `warm`: the limits go on its cgroup, the workspace is
    /// bound into its slot (and so into the container), and the script goes down the FIFO.
    pub(crate) async fn launch_warm(
        &self,
        warm: Warm,
        request: &conductor_types::ExecutionRequest,
        plan: &ExecPlan,
    ) -> Result<Launched, ExecutorError> {
        let Warm {
            guard,
            id,
            oom,
            kind,
        } = warm;
        let WarmKind::Once(fifo) = kind else {
            return Err(self.setup(
                "taking a warm container",
                "a resident container runs through run_resident",
            ));
        };
        let limits = CgroupLimits {
            cpus: plan.limits.cpus,
            memory: plan.limits.memory,
            pids: plan.limits.pids,
        };
        let cgroup = guard
            .cgroup()
            .ok_or_else(|| self.setup("taking a warm container", "it has no cgroup"))?;
        let manager = self.cgroups()?.manager();
        tokio::task::spawn_blocking(move || manager.set_limits(&cgroup, &limits))
            .await
            .map_err(|e| self.setup("limiting a warm container", e))?
            .map_err(|e| self.setup("limiting a warm container", e))?;
        let cmd = command(plan, self.config.engine.name())?;
        let script = once_script(&plan.cwd.display().to_string(), &cmd);
        let slot = guard
            .slot()
            .ok_or_else(|| self.setup("taking a warm container", "it has no slot"))?;
        self.bind_workspace(slot, request).await?;
        let attached = self.attach(&id).await?;
        let bridges = self.open_bridges(&id, request).await?;
        tokio::task::spawn_blocking(move || send(fifo, &script))
            .await
            .map_err(|e| self.setup("sending the command to a warm container", e))?
            .map_err(|e| self.setup("sending the command to a warm container", e))?;
        Ok(Launched {
            guard,
            id,
            attached,
            oom,
            warm: true,
            bridges,
        })
    }

    /// Makes a warm container for one execution now, counted as lent like one taken from the
    /// pool (a resident one comes back through [`Inner::give_back`]).
    pub(crate) async fn make_lent(&self) -> Result<Warm, ExecutorError> {
        let warm = self.make_warm().await?;
        if matches!(warm.kind, WarmKind::Resident(_)) {
            self.state().lent += 1;
        }
        Ok(warm)
    }

    /// Makes one warm container: its cgroup, its slot, created and started.
    async fn make_warm(&self) -> Result<Warm, ExecutorError> {
        let name = format!(
            "{}-{}",
            self.owner.replace(':', "-"),
            &ExecutionId::random().to_string()[..12]
        );
        let cgroups = self.cgroups()?;
        let (cgroup, oom) = cgroups
            .create(&format!("warm-{name}"), &self.template)
            .await?;
        let cgroup_parent = cgroups.parent(&cgroup)?;
        let engine_dirs = cgroups.engine_dirs(&cgroup, &cgroup_parent);
        let mut guard = ContainerGuard::new(self.engine.clone(), cgroup, engine_dirs);
        let root = self.config.pool_dir.clone();
        let slot_name = name.clone();
        let resident = self.config.warm_reuse > 0;
        let slot = tokio::task::spawn_blocking(move || Slot::create(&root, &slot_name, resident))
            .await
            .map_err(|e| self.setup("making a warm container's slot", e))?
            .map_err(|e| {
                ExecutorError::io(
                    format!(
                        "making a warm container's slot in {}",
                        self.config.pool_dir.display()
                    ),
                    e,
                )
            })?;
        let (slot_workspace, slot_home, slot_control) = (
            slot.workspace().display().to_string(),
            slot.home().display().to_string(),
            slot.control().display().to_string(),
        );
        let paths = SlotPaths {
            workspace: &slot_workspace,
            home: &slot_home,
            control: &slot_control,
        };
        guard.set_slot(slot.clone());
        let user = self.user();
        let settings = self.settings(
            &format!("warm-{name}"),
            &user,
            Some(&cgroup_parent),
            &slot_workspace,
        );
        let body = if resident {
            resident_body(&self.template, &settings, &paths)?
        } else {
            warm_body(&self.template, &settings, &paths)?
        };
        // Open before the start: the agent's open of the write end must not wait.
        let status = match resident {
            true => Some(
                Resident::open_status(&slot)
                    .map_err(|e| self.setup("opening a resident container's status FIFO", e))?,
            ),
            false => None,
        };
        self.seccomp.write().await?;
        let id = match self
            .engine
            .create(&format!("conductor-warm-{name}"), body)
            .await
        {
            Ok(id) => id,
            Err(e) => return Err(self.create_error(e).await),
        };
        guard.set_container(id.clone());
        self.engine
            .start(&id)
            .await
            .map_err(|e| self.setup("starting a warm container", e))?;
        let kind = self.wait_ready(&guard, &id, &slot, status).await?;
        Ok(Warm {
            guard,
            id,
            oom,
            kind,
        })
    }

    /// What waits in the warm container `id` just started: its resident agent once it said it
    /// is ready (`status` is its status FIFO), or the waiting shell's FIFO once it is open.
    async fn wait_ready(
        &self,
        guard: &ContainerGuard,
        id: &str,
        slot: &Slot,
        status: Option<pipe::Receiver>,
    ) -> Result<WarmKind, ExecutorError> {
        Ok(match status {
            Some(status) => {
                let tree = cgroup_tree(guard)
                    .ok_or_else(|| self.setup("arming a resident container", "no cgroup"))?;
                let socket = self.engine.socket();
                let init = async {
                    api::container_state(socket, id)
                        .await
                        .ok()
                        .and_then(|state| state.pid)
                };
                WarmKind::Resident(
                    Resident::arm(status, tree, init)
                        .await
                        .map_err(|e| self.setup("arming a resident container", e))?,
                )
            }
            None => WarmKind::Once(
                wait_for_reader(slot)
                    .await
                    .map_err(|e| self.setup("waiting for a warm container's shell", e))?,
            ),
        })
    }

    /// Makes warm containers until the pool is full, waiting for those being made elsewhere
    /// (a background refill) as well.
    pub(crate) async fn fill(&self) -> Result<(), ExecutorError> {
        loop {
            // Registered before looking, so a container finished in between still wakes us.
            let changed = self.pool_changed.notified();
            let filling = {
                let mut state = self.state();
                if state.idle.len() + state.lent >= self.config.warm_pool {
                    return Ok(());
                }
                if state.idle.len() + state.lent + state.filling >= self.config.warm_pool {
                    None
                } else {
                    state.filling += 1;
                    Some(Filling(self))
                }
            };
            let Some(filling) = filling else {
                changed.await;
                continue;
            };
            // Pushed while still counted as filling, so no waiter sees a gap and makes one more.
            let made = self
                .make_warm()
                .await
                .map(|warm| self.state().idle.push(warm));
            drop(filling);
            made?;
        }
    }

    /// Refills the pool in the background.
    pub(crate) fn refill(inner: &Arc<Self>) {
        let inner = Arc::clone(inner);
        tokio::spawn(async move {
            if let Err(e) = inner.fill().await {
                tracing::warn!(error = %e, "refilling the warm container pool");
            }
        });
    }

    /// Removes every idle warm container.
    pub(crate) async fn drain(&self) {
        let idle = std::mem::take(&mut self.state().idle);
        for warm in idle {
            warm.guard.finish().await;
        }
    }

    /// Unmounts and removes the slot directories of processes that are gone, and their warm
    /// containers' cgroups (`<engine>-warm-<pid>-<start>-…` under the cgroup parent).
    pub(crate) async fn sweep_slots(&self) {
        let root = self.config.pool_dir.clone();
        let cgroup_root = self.config.cgroup_root.clone();
        let parent = self.config.cgroup_parent.clone();
        let prefix = format!("{}-warm-", self.config.engine.name());
        let swept = tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for entry in dead_owners(&root, "") {
                remove_slot_dir(&entry);
                removed += 1;
            }
            // v2: the parent is directly under the root; v1: under each hierarchy.
            let mut parents = vec![cgroup_root.join(&parent)];
            if let Ok(hierarchies) = std::fs::read_dir(&cgroup_root) {
                parents.extend(hierarchies.flatten().map(|h| h.path().join(&parent)));
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            for dir in parents {
                for cgroup in dead_owners(&dir, &prefix) {
                    remove_children(&cgroup, deadline);
                    if std::fs::remove_dir(&cgroup).is_ok() {
                        removed += 1;
                    }
                }
            }
            removed
        })
        .await
        .unwrap_or(0);
        if swept > 0 {
            tracing::info!(
                swept,
                "removed warm-pool slots and cgroups left by dead processes"
            );
        }
    }
}

/// The cgroup directory holding a warm container's processes (the engine's cgroup is below
/// it): its first hierarchy's.
pub(crate) fn cgroup_tree(guard: &ContainerGuard) -> Option<std::path::PathBuf> {
    guard.cgroup()?.dirs().first().cloned()
}

/// The FIFO's write end once the container's shell is waiting on it (within 30 s).
async fn wait_for_reader(slot: &Slot) -> std::io::Result<std::fs::File> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut delay = std::time::Duration::from_millis(1);
    loop {
        match slot.open_writer() {
            Ok(fifo) => return Ok(fifo),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if std::time::Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the shell did not open the FIFO within 30 s",
                    ));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One container being made: counted in `filling` until dropped, also when the future making
/// it is abandoned (its runtime shut down).
struct Filling<'a>(&'a Inner);

impl Drop for Filling<'_> {
    fn drop(&mut self) {
        {
            let mut state = self.0.state();
            state.filling = state.filling.saturating_sub(1);
        }
        self.0.pool_changed.notify_waiters();
    }
}
