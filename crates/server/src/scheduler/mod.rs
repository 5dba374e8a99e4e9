//! The scheduler loop: the I/O half of scheduling. It asks core which queued tasks go to which
//! execution slots ([`conductor_core::dispatch`]), starts them through the store's state machine, runs each
//! task's commands on its environment's executor (deciding each next step with
//! [`conductor_core::next_step`]), stores output (redacted) and results as events, and handles
//! cancel, restart recovery and graceful shutdown. `run/` holds what happens to one task once a
//! slot has it, as named stages; `admission.rs` what a task must pass to be queued.

mod admission;
mod agent_admission;
mod builds;
mod quota_pool;
mod run;
mod services;

pub(crate) use admission::AdmissionError;
pub use run::DISK_QUOTA_EXCEEDED;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use conductor_core::{
    can_retry, dispatch, Assignment, Candidate, Capacity, Executor, Store, StoreError, Transition,
};
use conductor_types::{
    Bytes, ExecutionId, ExecutionRequest, NetworkPolicy, Slot, SlotState, Task, TaskId, TaskStatus,
    Timestamp,
};
use tokio::sync::{watch, Notify};

use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::workspaces::domain::Workspaces;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Execution slots (the API still calls them agents): `agent-1` … `agent-N`.
    pub slots: usize,
    /// Most tasks running at once (at most `agents` slots take effect).
    pub concurrency: usize,
    /// Where workspaces live: `agents/<slot>/<task id>` (fresh, removed after the task) and
    /// `named/<name>`.
    pub workspace_root: PathBuf,
    /// Root of the snapshot store (content-addressed blobs and manifests): `$CONDUCTOR_HOME/snapshots`.
    pub snapshot_root: PathBuf,
    /// Whether the scheduler enforces `resources.disk` itself: a task's fresh workspace is a
    /// loop-mounted ext4 image of that size (`quota/<slot>/<task>.img`), so the task gets
    /// `ENOSPC` and `disk_quota_exceeded`. Needs root; `Server::start` turns it on as root.
    pub disk_quotas: bool,
    /// Bytes of each stream an executor keeps in memory before spooling.
    pub output_limit: Bytes,
    /// Output of one task attempt stored (in events) at most; the rest is dropped with a marker.
    pub stored_output_limit: Bytes,
    /// How often the queue is read even when nothing woke the loop.
    pub poll_interval: Duration,
    /// CPU cores handed out to running tasks at most (`None`: not budgeted).
    pub cpus_budget: Option<f64>,
    /// Memory handed out to running tasks at most (`None`: not budgeted).
    pub memory_budget: Option<Bytes>,
    /// Each slot's own token id (see `auth::ensure_slot_tokens`), listed with the slot.
    pub slot_tokens: BTreeMap<String, String>,
    /// The named workspace of tasks that name none (`None`: a fresh one per task).
    pub default_workspace: Option<String>,
    /// `[limits.default]` and `[limits.max]`: what tasks that name no limit get, and the most
    /// they may ask for (applied at submission).
    pub limits: conductor_core::LimitPolicy,
    /// The network of tasks that name none (config `default_network`; `none` by default).
    pub default_network: DefaultNetwork,
    /// Environments beyond `executors`: defined in requests, or built after the start
    /// (`None`: only the server's own environments, and requests defining one are refused).
    pub environment_port: Option<Arc<dyn crate::environments::EnvironmentPort>>,
    /// The LLM gateway and the places agent tasks use (`None`: no provider key configured, and
    /// agent tasks are refused).
    pub agents: Option<Arc<crate::agents::AgentRuntime>>,
    /// The most bytes of files an imported snapshot may declare (`[workspaces] import_max`).
    pub import_max: Bytes,
    /// The most bytes of each stream an execution spools to disk (`[output] spool_limit`);
    /// spools are deleted once the command's output is stored.
    pub spool_limit: Bytes,
    /// Where the executors spool (`$CONDUCTOR_HOME/logs`, set by `Server::start`): each
    /// execution's `<spool_dir>/<execution id>` is removed after it, even when it failed.
    pub spool_dir: Option<PathBuf>,
    /// What tasks' `git` may clone, and the sandbox clones run in.
    pub git: crate::gitdiff::GitConfig,
}

impl SchedulerConfig {
    /// Defaults for workspaces under `workspace_root`: 2 slots, concurrency 2.
    pub fn new(workspace_root: PathBuf) -> Self {
        // Beside the workspace root (`$CONDUCTOR_HOME/snapshots` for the default layout).
        let snapshot_root = workspace_root.parent().map_or_else(
            || workspace_root.join(".snapshots"),
            |home| home.join("snapshots"),
        );
        Self {
            snapshot_root,
            disk_quotas: false,
            slots: 2,
            concurrency: 2,
            workspace_root,
            output_limit: ExecutionRequest::DEFAULT_OUTPUT_LIMIT,
            stored_output_limit: Bytes::mib(16),
            poll_interval: Duration::from_secs(1),
            cpus_budget: None,
            memory_budget: None,
            slot_tokens: BTreeMap::new(),
            default_workspace: None,
            limits: conductor_core::LimitPolicy::builtin(),
            default_network: DefaultNetwork::default(),
            environment_port: None,
            import_max: Bytes(conductor_workspace::DEFAULT_IMPORT_MAX),
            agents: None,
            spool_limit: ExecutionRequest::DEFAULT_SPOOL_LIMIT,
            spool_dir: None,
            git: crate::gitdiff::GitConfig::default(),
        }
    }
}

/// The network a task gets when it names none: its environment's, else the server's; `none`
/// unless configured (`full` is asked for explicitly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultNetwork {
    /// The server's (`default_network`).
    pub all: NetworkPolicy,
    /// Per environment (`[environments.NAME] default_network`).
    pub environments: BTreeMap<String, NetworkPolicy>,
}

impl DefaultNetwork {
    /// The default network of `environment`'s tasks.
    pub fn of(&self, environment: &str) -> NetworkPolicy {
        self.environments
            .get(environment)
            .unwrap_or(&self.all)
            .clone()
    }
}

/// `<workspace_root>/quota/<slot>/<task>.img`: the disk-quota image of a task's fresh
/// workspace `<workspace_root>/agents/<slot>/<task>`.
fn quota_image(workspace_root: &std::path::Path, slot: &str, task: TaskId) -> PathBuf {
    workspace_root
        .join("quota")
        .join(slot)
        .join(format!("{task}.img"))
}

/// Unmounts and removes every quota image under `<workspace_root>/quota` (left by a crash),
/// before the fresh workspaces they were mounted on are removed.
fn destroy_quota_images(workspace_root: &std::path::Path) {
    let root = workspace_root.join("quota");
    let Ok(slots) = std::fs::read_dir(&root) else {
        return;
    };
    // `quota/pool` is the kept filesystems' (`quota_pool.rs`).
    for slot in slots.flatten().filter(|slot| slot.file_name() != "pool") {
        let Ok(images) = std::fs::read_dir(slot.path()) else {
            continue;
        };
        for image in images.flatten() {
            let path = image.path();
            let Some(task) = path.file_stem() else {
                continue;
            };
            let mountpoint =
                slot_root(workspace_root, &slot.file_name().to_string_lossy()).join(task);
            let destroyed = conductor_workspace::QuotaFs::open(&path, &mountpoint)
                .and_then(conductor_workspace::QuotaFs::destroy);
            if let Err(error) = destroyed {
                tracing::warn!(image = %path.display(), %error, "could not remove a disk-quota image");
            }
        }
    }
}

/// `<workspace_root>/agents/<id>`: slot `id`'s own workspace root.
fn slot_root(workspace_root: &std::path::Path, id: &str) -> PathBuf {
    workspace_root.join("agents").join(id)
}

/// The execution a running task is in, and the step that can cancel it.
type CurrentExecution = Option<(ExecutionId, Arc<dyn run::RunStep>)>;

/// A task a slot is running.
#[derive(Debug)]
struct Running {
    slot: String,
    execution: CurrentExecution,
    cancelled: bool,
    interrupted: bool,
    cpus: Option<f64>,
    memory: Option<u64>,
    workspace: Option<String>,
}

#[derive(Debug, Default)]
struct Slots {
    idle: Vec<String>,
    running: HashMap<TaskId, Running>,
    /// Named workspaces held by the API (restore, delete): no task starts in them meanwhile.
    reserved: HashSet<String>,
    stopping: bool,
    /// Live slot states (the store gets them at start and stop only: they are this
    /// process's slots, and writing each change would cost two writes per task).
    states: BTreeMap<String, Slot>,
    /// The queue, when this process knows all of it.
    queue: QueueView,
}

/// What the dispatcher knows of the queue without reading the store. After a read that found
/// the whole queue, tasks submitted through the API are added here ([`Scheduler::submitted`]),
/// so a task submitted to a server with a free slot starts without a queue read. Anything else
/// that may queue a task (a retry, recovery, a freed slot or workspace, the poll) forgets it,
/// and the next dispatch reads the store. A task cancelled meanwhile may still be listed: its
/// `Start` transition is refused, as after a read.
#[derive(Debug, Default)]
struct QueueView {
    /// `candidates` is every queued task.
    complete: bool,
    /// Bumped by every reset (and so by a submission while incomplete), so a read that raced
    /// with one is not trusted.
    generation: u64,
    candidates: Vec<Candidate>,
    /// The tasks submitted since the view became complete, as the store returned them: they
    /// start without the store reading them back ([`Store::start_known`]).
    submitted: HashMap<TaskId, Task>,
}

impl QueueView {
    fn forget(&mut self) {
        self.complete = false;
        self.generation = self.generation.wrapping_add(1);
        self.candidates.clear();
        self.submitted.clear();
    }
}

/// Most queued tasks [`QueueView`] holds; past it, the queue is read from the store.
const MAX_KNOWN_QUEUE: usize = 256;

/// What dispatching needs to know about a task, as the store's queue read gives it.
fn candidate_of(task: &Task) -> Candidate {
    Candidate {
        id: task.id,
        priority: task.spec.priority,
        queued_at: task.state.queued_at,
        cpus: task.spec.resources.cpus.map(|cpus| cpus.get()),
        memory: task.spec.resources.memory.map(Bytes::get),
        workspace: task.spec.workspace.clone(),
    }
}

/// A named workspace held by the API ([`Scheduler::reserve_workspace`]); released on drop.
#[derive(Debug)]
pub struct WorkspaceReservation {
    scheduler: Arc<Scheduler>,
    name: String,
}

impl Drop for WorkspaceReservation {
    fn drop(&mut self) {
        self.scheduler.lock().reserved.remove(&self.name);
        self.scheduler.wake();
    }
}

/// Runs queued tasks on execution slots. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Scheduler {
    store: Arc<dyn Store>,
    executors: BTreeMap<String, Arc<dyn Executor>>,
    config: SchedulerConfig,
    events: EventBus,
    wake: Notify,
    slots: Mutex<Slots>,
    idle_changed: watch::Sender<usize>,
    metrics: Metrics,
    /// Builds of request-defined environments in progress.
    builds: Arc<builds::Builds>,
    /// Whether each environment has each agent CLI (probed once, at the first agent task).
    agent_clis: Mutex<BTreeMap<(String, conductor_types::AgentKind), bool>>,
    /// Disk-quota filesystems kept for fresh workspaces.
    quota_pool: Arc<quota_pool::QuotaPool>,
}

impl Scheduler {
    /// A scheduler for `executors` (by environment name).
    pub fn new(
        store: Arc<dyn Store>,
        executors: BTreeMap<String, Arc<dyn Executor>>,
        config: SchedulerConfig,
        events: EventBus,
    ) -> Arc<Self> {
        let idle = (1..=config.slots.max(1))
            .rev()
            .map(|n| format!("agent-{n}"))
            .collect();
        let now = Timestamp::now();
        let live = (1..=config.slots.max(1))
            .map(|n| {
                let id = format!("agent-{n}");
                let slot = Slot {
                    id: id.clone(),
                    state: SlotState::Idle,
                    task_id: None,
                    workspace_root: slot_root(&config.workspace_root, &id).display().to_string(),
                    token_id: config.slot_tokens.get(&id).cloned(),
                    updated_at: now,
                };
                (id, slot)
            })
            .collect();
        // One kept quota filesystem per slot, and one more being emptied.
        let quota_pool = Arc::new(quota_pool::QuotaPool::new(
            &config.workspace_root,
            config.slots.max(1) + 1,
        ));
        Arc::new(Self {
            store,
            executors,
            config,
            events,
            wake: Notify::new(),
            slots: Mutex::new(Slots {
                idle,
                running: HashMap::new(),
                reserved: HashSet::new(),
                stopping: false,
                states: live,
                queue: QueueView::default(),
            }),
            idle_changed: watch::channel(0).0,
            metrics: Metrics::default(),
            builds: Arc::default(),
            agent_clis: Mutex::default(),
            quota_pool,
        })
    }

    /// The environments tasks may name.
    pub fn environments(&self) -> Vec<&str> {
        self.executors.keys().map(String::as_str).collect()
    }

    /// The executor of an environment.
    pub fn executor(&self, environment: &str) -> Option<&Arc<dyn Executor>> {
        self.executors.get(environment)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Whether shutdown has begun (no more dispatching).
    pub fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Number of tasks running now.
    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the loop to read the queue now.
    pub fn wake(&self) {
        self.lock().queue.forget();
        self.wake.notify_one();
    }

    /// Tells the loop that `task` was just queued (committed) through the API.
    pub fn submitted(&self, task: &Task) {
        {
            let mut slots = self.lock();
            let queue = &mut slots.queue;
            if queue.complete && queue.candidates.len() < MAX_KNOWN_QUEUE {
                queue.candidates.push(candidate_of(task));
                queue.submitted.insert(task.id, task.clone());
            } else {
                // Not known, or long: the next dispatch reads the store, and a read in flight
                // is not trusted.
                queue.forget();
            }
        }
        self.wake.notify_one();
    }

    /// Records the slots as idle and ends tasks a previous run left `running`: they become
    /// `interrupted` with the reason, and go back to the queue when their retries allow.
    pub async fn recover(&self) -> Result<Vec<TaskId>, StoreError> {
        let now = Timestamp::now();
        let slots: Vec<String> = self.lock().idle.clone();
        for id in slots {
            self.put_slot(&id, SlotState::Idle, None).await?;
        }
        // No task runs yet: fresh workspaces still on disk were left by tasks the previous run
        // did not finish or had not removed yet. A retried task starts in a new, empty one.
        let slots_dir = self.config.workspace_root.join("agents");
        let workspace_root = self.config.workspace_root.clone();
        // Unmounted first, or removing the workspaces would fail on their mountpoints (or
        // reach into a kept quota filesystem through a workspace's bind).
        let pool = Arc::clone(&self.quota_pool);
        let slots = slots_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for point in conductor_workspace::mounts_under(&slots) {
                if let Err(error) = conductor_workspace::unbind(&point) {
                    tracing::warn!(path = %point.display(), %error, "could not unmount a workspace");
                }
            }
            pool.clear();
            destroy_quota_images(&workspace_root)
        })
        .await;
        let removed =
            tokio::task::spawn_blocking(move || conductor_workspace::remove_tree(&slots_dir)).await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not remove old workspaces"),
            Err(error) => tracing::warn!(%error, "could not remove old workspaces"),
        }
        let stale = self.store.task_ids_with_status(TaskStatus::Running).await?;
        for id in &stale {
            let reason =
                "the server stopped while the task was running (found at restart)".to_owned();
            self.interrupt_and_maybe_retry(*id, reason, now).await?;
        }
        Ok(stale)
    }

    async fn interrupt_and_maybe_retry(
        &self,
        id: TaskId,
        reason: String,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let task = match self
            .store
            .transition(id, Transition::Interrupt { reason, at })
            .await
        {
            Ok(task) => task,
            // Finished or cancelled meanwhile: nothing to interrupt.
            Err(StoreError::Transition(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.events.bump();
        if can_retry(&task.state, task.spec.retries) {
            self.store.transition(id, Transition::Retry { at }).await?;
            self.events.bump();
            self.wake();
        }
        Ok(())
    }

    /// Runs the loop until [`Scheduler::shutdown`].
    pub async fn run(self: Arc<Self>) {
        loop {
            if self.lock().stopping {
                return;
            }
            if let Err(error) = self.dispatch_once().await {
                tracing::error!(%error, "dispatch failed");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => self.lock().queue.forget(),
            }
        }
    }

    /// Starts the queued tasks `core::dispatch` assigns to free slots.
    async fn dispatch_once(self: &Arc<Self>) -> Result<(), StoreError> {
        let Some(capacity) = self.capacity() else {
            return Ok(());
        };
        let fetch = (capacity.free_slots.len() as u32).saturating_mul(4) + 16;
        let candidates = self.candidates(fetch).await?;
        for assignment in dispatch(&candidates, &capacity) {
            let Some(candidate) = candidates.iter().find(|c| c.id == assignment.task_id) else {
                continue;
            };
            let Some(submitted) = self.claim(&assignment, candidate) else {
                return Ok(());
            };
            self.start(&assignment, submitted).await?;
        }
        Ok(())
    }

    /// What the slots can take now; `None` when stopping or no slot is free.
    fn capacity(&self) -> Option<Capacity> {
        let slots = self.lock();
        if slots.stopping || slots.idle.is_empty() {
            return None;
        }
        let used_cpus: f64 = slots.running.values().filter_map(|r| r.cpus).sum();
        let used_memory: u64 = slots.running.values().filter_map(|r| r.memory).sum();
        Some(Capacity {
            free_slots: slots.idle.iter().rev().cloned().collect(),
            running: slots.running.len(),
            concurrency_limit: self.config.concurrency.max(1),
            cpus_free: self.config.cpus_budget.map(|b| (b - used_cpus).max(0.0)),
            memory_free: self
                .config
                .memory_budget
                .map(|b| b.get().saturating_sub(used_memory)),
            busy_workspaces: slots
                .running
                .values()
                .filter_map(|r| r.workspace.clone())
                .chain(slots.reserved.iter().cloned())
                .collect(),
        })
    }

    /// The queued tasks to dispatch from: the known queue, or up to `fetch` read from the store
    /// (which makes the view complete when the read found them all).
    async fn candidates(&self, fetch: u32) -> Result<Vec<Candidate>, StoreError> {
        let known = {
            let queue = &mut self.lock().queue;
            // No more than a read would return: a longer queue is read a page at a time (and
            // submissions during that read must make it untrusted, which needs an incomplete view).
            if queue.candidates.len() >= fetch as usize {
                queue.forget();
            }
            (
                queue.complete.then(|| queue.candidates.clone()),
                queue.generation,
            )
        };
        Ok(match known {
            (Some(candidates), _) => candidates,
            (None, generation) => {
                // Only what dispatch needs: a started task comes back whole from the Start
                // transition.
                let read = self.store.queued_candidates(fetch).await?;
                let mut slots = self.lock();
                let queue = &mut slots.queue;
                if queue.generation == generation && read.len() < fetch as usize {
                    queue.complete = true;
                    queue.candidates.clone_from(&read);
                }
                read
            }
        })
    }

    /// Takes the assigned slot for the task (no longer queued, whether its start succeeds or
    /// not); the task as submitted when the queue view held it. `None` when stopping.
    fn claim(&self, assignment: &Assignment, candidate: &Candidate) -> Option<Option<Task>> {
        let mut slots = self.lock();
        if slots.stopping {
            return None;
        }
        slots.idle.retain(|a| *a != assignment.slot_id);
        slots
            .queue
            .candidates
            .retain(|c| c.id != assignment.task_id);
        let submitted = slots.queue.submitted.remove(&assignment.task_id);
        slots.running.insert(
            assignment.task_id,
            Running {
                slot: assignment.slot_id.clone(),
                execution: None,
                cancelled: false,
                interrupted: false,
                cpus: candidate.cpus,
                memory: candidate.memory,
                workspace: candidate.workspace.clone(),
            },
        );
        Some(submitted)
    }

    /// Starts the claimed task through the store (without reading it back when `submitted`
    /// holds it) and runs it; frees the slot again when the start is refused.
    async fn start(
        self: &Arc<Self>,
        assignment: &Assignment,
        submitted: Option<Task>,
    ) -> Result<(), StoreError> {
        let at = Timestamp::now();
        let started = match &submitted {
            Some(task) => self
                .store
                .start_known(task, &assignment.slot_id, at)
                .await
                .transpose(),
            None => None,
        };
        let started = match started {
            Some(started) => started,
            // Not held, or no longer as held: the store reads it (and says what changed).
            None => {
                let start = Transition::Start {
                    slot_id: assignment.slot_id.clone(),
                    at,
                };
                self.store.transition(assignment.task_id, start).await
            }
        };
        match started {
            Ok(task) => {
                self.events.bump();
                if let Some(started) = task.state.started_at {
                    let waited = started.millis_since(task.state.queued_at);
                    self.metrics
                        .dispatch_latency
                        .observe(Duration::from_millis(waited));
                }
                let scheduler = Arc::clone(self);
                tokio::spawn(async move { scheduler.run_task(task).await });
                Ok(())
            }
            Err(error) => {
                self.release(assignment.task_id);
                match error {
                    // Cancelled between the queue read and the start.
                    StoreError::Transition(_) | StoreError::TaskNotFound(_) => Ok(()),
                    other => Err(other),
                }
            }
        }
    }

    /// Frees the task's slot; returns it.
    fn release(&self, id: TaskId) -> Option<String> {
        let mut slots = self.lock();
        let running = slots.running.remove(&id)?;
        slots.idle.push(running.slot.clone());
        let idle = slots.idle.len();
        drop(slots);
        self.idle_changed.send_replace(idle);
        self.wake();
        Some(running.slot)
    }

    /// Writes a slot's state to the store (at start and stop).
    async fn put_slot(
        &self,
        id: &str,
        state: SlotState,
        task_id: Option<TaskId>,
    ) -> Result<(), StoreError> {
        self.store
            .put_slot(&Slot {
                id: id.to_owned(),
                state,
                task_id,
                workspace_root: self.slot_root(id).display().to_string(),
                token_id: self.config.slot_tokens.get(id).cloned(),
                updated_at: Timestamp::now(),
            })
            .await
    }

    /// The directory of the named workspace `name`: `<workspace_root>/named/<name>`.
    pub fn named_workspace_dir(&self, name: &str) -> PathBuf {
        self.workspaces().dirs().dir(name)
    }

    /// The named workspaces (records, directories, quotas) of this server.
    pub(crate) fn workspaces(&self) -> Workspaces<'_> {
        Workspaces::new(
            self.store.as_ref(),
            &self.config.workspace_root,
            self.config.disk_quotas,
            &self.config.limits,
        )
    }

    /// Holds the named workspace `name` for the API until the reservation is dropped: no task
    /// starts in it meanwhile. `Err` with the running task's id when a task runs in it now (or
    /// `None` when another reservation holds it).
    pub fn reserve_workspace(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<WorkspaceReservation, Option<TaskId>> {
        let mut slots = self.lock();
        if let Some((id, _)) = slots
            .running
            .iter()
            .find(|(_, r)| r.workspace.as_deref() == Some(name))
        {
            return Err(Some(*id));
        }
        if !slots.reserved.insert(name.to_owned()) {
            return Err(None);
        }
        Ok(WorkspaceReservation {
            scheduler: Arc::clone(self),
            name: name.to_owned(),
        })
    }

    /// Removes the workspaces whose cleanup policy makes them due now (`delete` once a task has
    /// used it and none uses it any more, `ttl:…` once unused that long; never `keep`), with
    /// their directories; returns their names and when the next one falls due. A workspace
    /// that a queued or running task names, or that the API holds, is left for a later sweep.
    pub async fn sweep_workspaces(
        self: &Arc<Self>,
    ) -> Result<(Vec<String>, Option<std::time::SystemTime>), StoreError> {
        use conductor_workspace::{plan_sweep, CleanupPolicy, SweepCandidate};
        let workspaces = self.store.list_workspaces().await?;
        let busy: HashSet<String> = {
            let slots = self.lock();
            slots
                .running
                .values()
                .filter_map(|r| r.workspace.clone())
                .chain(slots.reserved.iter().cloned())
                .collect()
        };
        let at = |t: Timestamp| std::time::UNIX_EPOCH + Duration::from_millis(t.millis());
        let candidates: Vec<SweepCandidate<usize>> = workspaces
            .iter()
            .enumerate()
            .filter_map(|(n, ws)| {
                let policy = match ws.cleanup.parse::<CleanupPolicy>() {
                    Ok(policy) => policy,
                    Err(error) => {
                        tracing::warn!(workspace = %ws.name, %error, "skipping a workspace with a bad cleanup policy");
                        return None;
                    }
                };
                // `delete` means after the task that uses it: never before a first use.
                if policy == CleanupPolicy::Delete && ws.last_used_at.is_none() {
                    return None;
                }
                Some(SweepCandidate {
                    key: n,
                    policy,
                    last_used: at(ws.last_used_at.unwrap_or(ws.created_at)),
                    in_use: busy.contains(&ws.name),
                })
            })
            .collect();
        let plan = plan_sweep(&candidates, std::time::SystemTime::now());
        let mut removed = Vec::new();
        for n in plan.remove {
            let ws = &workspaces[n];
            let Ok(_held) = self.reserve_workspace(&ws.name) else {
                continue;
            };
            match self.store.delete_workspace(&ws.id).await {
                Ok(_) => {}
                // A task was queued for it meanwhile.
                Err(StoreError::WorkspaceInUse { .. } | StoreError::WorkspaceNotFound(_)) => {
                    continue
                }
                Err(other) => return Err(other),
            }
            // Its disk quota (if any) unmounted and destroyed, then its directory removed.
            if let Err(error) = self.workspaces().remove_dir(&ws.name).await {
                tracing::warn!(workspace = %ws.name, %error, "could not remove a swept workspace's directory");
            }
            tracing::info!(workspace = %ws.name, policy = %ws.cleanup, "removed a workspace by its cleanup policy");
            removed.push(ws.name.clone());
        }
        Ok((removed, plan.next))
    }

    /// Sweeps workspaces until shutdown: at least every `MAX_SWEEP_INTERVAL`, sooner when a
    /// TTL falls due.
    pub async fn sweep_loop(self: Arc<Self>) {
        const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
        loop {
            if self.stopping() {
                return;
            }
            let wait = match self.sweep_workspaces().await {
                Ok((_, Some(next))) => next
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .min(MAX_SWEEP_INTERVAL),
                Ok((_, None)) => MAX_SWEEP_INTERVAL,
                Err(error) => {
                    tracing::error!(%error, "sweeping workspaces failed");
                    MAX_SWEEP_INTERVAL
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }

    /// Where slot `id` keeps the fresh workspaces of its tasks.
    fn slot_root(&self, id: &str) -> PathBuf {
        slot_root(&self.config.workspace_root, id)
    }

    /// Records a slot's state change (in memory; see [`Slots::states`]).
    fn record_slot(&self, id: &str, state: SlotState, task_id: Option<TaskId>) {
        if let Some(slot) = self.lock().states.get_mut(id) {
            slot.state = state;
            slot.task_id = task_id;
            slot.updated_at = Timestamp::now();
        }
    }

    /// Every slot as it is now (`GET /api/v1/agents`).
    pub fn slots(&self) -> Vec<Slot> {
        self.lock().states.values().cloned().collect()
    }

    /// Cancels a queued or running task: recorded through the state machine, then its
    /// execution stopped when it runs here. Refused (`StoreError::Transition`) once finished.
    pub async fn cancel_task(&self, id: TaskId) -> Result<Task, StoreError> {
        let cancel = Transition::Cancel {
            at: Timestamp::now(),
        };
        let task = self.store.transition(id, cancel).await?;
        self.events.bump();
        self.cancel(id).await;
        Ok(task)
    }

    /// Deletes a finished task with its results, events and recorded diff. Refused while it
    /// is queued or running (`StoreError::NotFinished`).
    pub async fn delete_task(&self, id: TaskId) -> Result<(), StoreError> {
        self.store.delete_task(id).await?;
        let diff = crate::gitdiff::diff_path(&self.config.workspace_root, id);
        if let Err(error) = tokio::fs::remove_file(&diff).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(task = %id, %error, "could not remove the task's recorded diff");
            }
        }
        Ok(())
    }

    /// Stops a running task after its cancel was recorded. `false` when it is not running
    /// here.
    pub async fn cancel(&self, id: TaskId) -> bool {
        let execution = {
            let mut slots = self.lock();
            let Some(running) = slots.running.get_mut(&id) else {
                return false;
            };
            running.cancelled = true;
            running.execution.clone()
        };
        if let Some((execution_id, step)) = execution {
            if let Err(error) = step.cancel(&execution_id).await {
                tracing::warn!(task = %id, %error, "cancelling the execution failed");
            }
        }
        true
    }

    /// Blocking: removes the disk-quota filesystems kept for fresh workspaces, and the binds
    /// of any workspace still on one ([`Scheduler::shutdown`] does it last; for a scheduler
    /// dropped without it).
    pub fn release_disk_quotas(&self) {
        self.quota_pool
            .close(&self.config.workspace_root.join("agents"));
    }

    /// Stops dispatching, lets running tasks finish for up to `grace`, then kills the rest and
    /// records them as `interrupted` (retried at next start when their retries allow).
    pub async fn shutdown(&self, grace: Duration) {
        self.lock().stopping = true;
        self.wake();
        let total = self.config.slots.max(1);
        let mut idle = self.idle_changed.subscribe();
        let all_idle = async {
            loop {
                if self.lock().running.is_empty() {
                    return;
                }
                if idle.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(grace, all_idle).await.is_err() {
            let stuck: Vec<(TaskId, CurrentExecution)> = {
                let mut slots = self.lock();
                slots
                    .running
                    .iter_mut()
                    .map(|(id, running)| {
                        running.interrupted = true;
                        (*id, running.execution.clone())
                    })
                    .collect()
            };
            let now = Timestamp::now();
            for (id, execution) in stuck {
                let reason = format!(
                    "the server shut down and the task did not finish within the {}s grace period",
                    grace.as_secs()
                );
                if let Err(error) = self.interrupt_and_maybe_retry(id, reason, now).await {
                    tracing::error!(task = %id, %error, "could not record an interrupted task");
                }
                if let Some((execution_id, step)) = execution {
                    let _ = step.cancel(&execution_id).await;
                }
            }
            // Give the killed tasks a moment to record their last output.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while !self.lock().running.is_empty() {
                    if idle.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
        }
        let slots: Vec<String> = (1..=total).map(|n| format!("agent-{n}")).collect();
        for slot in slots {
            self.record_slot(&slot, SlotState::Offline, None);
            let _ = self.put_slot(&slot, SlotState::Offline, None).await;
        }
        let pool = Arc::clone(&self.quota_pool);
        let slots_dir = self.config.workspace_root.join("agents");
        let _ = tokio::task::spawn_blocking(move || pool.close(&slots_dir)).await;
    }
}
