//! The Docker and Podman executors: one implementation of `conductor_core::Executor` over the
//! Docker Engine API (bollard), pointed at Docker's socket or at Podman's.
//!
//! **Why Podman goes through its Docker-compatible API.** `podman system service` serves the
//! Docker Engine API next to its own libpod API. Using the compatible one means one client
//! (bollard, well kept and typed), one code path and one conformance run that proves both
//! engines behave the same; what Podman adds (`userns` modes) is a field of the same
//! create body. The libpod API would buy pods and native healthchecks, which nothing here needs
//! yet. Rootful Podman is the default (`/run/podman/podman.sock`), with `userns` configurable.
//!
//! **Rootless Podman.** A socket owned by another user than root (`CONDUCTOR_PODMAN_SOCKET`,
//! or [`ContainerConfig::for_socket`]) is a rootless engine's. An unprivileged engine cannot
//! place containers in cgroups the executor makes, so there it makes none: commands run as the
//! socket's owner (`keep-id` keeps that uid inside, and the workspace is handed to it), the
//! limits go in the create body for the engine to enforce — which Podman does on cgroup v2
//! only —, nothing is measured, and warm pools and services are refused. [`capabilities`] says
//! so, and the conformance suite runs against the rootless Podman `scripts/services` starts.
//!
//! Each execution is one container, hardened as seed 002 asks: read-only root, a tmpfs `/tmp`,
//! `no-new-privileges`, every capability dropped, the namespace executor's seccomp policy as a
//! profile ([`seccomp`]), a pids limit and nano-CPUs, no network unless `full` (the engine's
//! bridge), the workspace bound at `/workspace` (the working directory), a non-root user, and
//! the engine's init as pid 1 (see [`spec::create_body`] for why, and why the command runs
//! under `env -i`).
//!
//! **Cgroup and measurements.** The executor makes a cgroup of its own per execution (as the
//! host and namespace executors do) and gives it to the engine as the container's cgroup
//! parent. The memory limit (with no swap on top: memory = memory + swap) is set on that
//! cgroup rather than on the container: the kernel reports an OOM kill only to the cgroup whose
//! limit fired, and neither engine's `OOMKilled` can be relied on (Podman 4 with runc on cgroup
//! v1 reports `false` after an OOM kill); on the executor's own cgroup it is seen for both
//! ([`oom::OomWatch`] on v1, the stats on v2). CPU time, peak memory and disk I/O are read from
//! the same cgroup once the container has exited — exact totals, where the engine's stats
//! endpoint samples once a second and loses everything when the container goes. This needs the
//! engine on this host with the `cgroupfs` cgroup driver; `systemd` is refused as not supported
//! yet.
//!
//! **Removal.** The container is created without `AutoRemove` (which would delete it, and the
//! engine's record of its exit, the moment it exits); a [`guard::ContainerGuard`] removes it
//! (forced) when the execution ends, fails, panics or is abandoned, and `warmup()` removes
//! containers left by a process that died before its guard ran (label `io.conductor.owner`).
//!
//! **Exit status.** The engine reports only an exit code; the init turns a command killed by
//! signal N into 128 + N, so codes 129..=192 are reported as signal N (a command that itself
//! exits with such a code cannot be told apart).
//!
//! **Services.** [`services::ContainerServices`] is the executor's `ServiceRunner`: a task's
//! service sidecars (postgres, redis: images built by `conductor env build`) on an internal
//! network of their own, which a request's `service_network` makes its container join instead
//! of network `none` (never a warm container: those are made with network `none`).
//!
//! **Start cost.** Per process, one `/_ping` agrees on the API version ([`api`]); the cgroup
//! driver is asked of `/info` only when a create fails (Podman answers `/version` and `/info`
//! in hundreds of milliseconds each, which used to make `conductor exec --executor podman` take
//! over a second). Per execution on Podman, the exit is seen when the attach stream ends and the
//! state says so: Podman's `wait` also waits for its separate cleanup process, polling every
//! 250 ms. With `warm_pool` > 0 a matching request takes a started container instead of
//! creating one (see [`pool`]).
//!
//! **Files.** `mod.rs` wires the executor (connect, run, the `Executor` impl); `config` what it
//! is set up with and declares; `inner` what the executor and its pool share; `cold` a cold
//! start; `warm`, `idle`, `pool` the warm pool, what it holds and its slot directories;
//! `resident`, `reuse` the reset-and-reuse containers; `scripts` the shell run inside
//! containers; `spec` the create body (pure); `exit` seeing the end of an execution; `cgroup`
//! the execution's cgroup; `owner`, `guard` ownership labels, the orphan sweep and removal;
//! `engine`, `api` the engine's API (bollard, and raw calls bollard lacks); `seccomp`,
//! `seccomp_option` the profile and how it reaches the engine; `network`, `services` the
//! `full` network and service sidecars.

mod api;
mod bridged;
mod cgroup;
mod cold;
mod config;
mod engine;
mod exit;
mod guard;
mod idle;
mod inner;
pub mod network;
mod oom;
mod owner;
mod pool;
mod resident;
mod reuse;
mod scripts;
pub mod seccomp;
mod seccomp_option;
pub mod services;
pub mod spec;
mod warm;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use conductor_core::{
    check_supported, EventSender, Executor, ExecutorError, PlanTarget, ServiceRunner,
};
use conductor_types::{
    ExecPlan, ExecutionId, ExecutionRequest, ExecutionResult, ExecutorCapabilities, IsolationLevel,
    NetworkPolicy,
};

pub use api::ListedContainer;
pub use config::{capabilities, ContainerConfig, DEFAULT_USER};
pub use engine::{Engine, EngineError, EngineKind};
pub use services::{ContainerServices, ServicesConfig};

use cgroup::ExecutionCgroups;
use exit::{demultiplex, engine_run_time, exit_of, OUTPUT_GRACE};
use idle::{PoolState, Warm, WarmKind};
use inner::{Inner, Launched};
use owner::{own_owner_label, owner_alive};
use seccomp_option::SeccompOption;

use crate::run::{supervise, Finished, Registry};

/// Runs each command in a fresh container of Docker or Podman (see the module docs).
#[derive(Debug)]
pub struct ContainerExecutor {
    inner: Arc<Inner>,
    registry: Registry,
    services: ContainerServices,
}

impl ContainerExecutor {
    /// Connects to the engine and checks that cgroups can be made here (see
    /// [`ContainerExecutor::with_engine`]).
    pub async fn connect(config: ContainerConfig) -> Result<Self, ExecutorError> {
        let engine = Engine::connect(config.engine, &config.socket)
            .await
            .map_err(|e| ExecutorError::Unavailable {
                executor: config.engine.name(),
                reason: e.to_string(),
            })?;
        Self::with_engine(config, engine)
    }

    /// The executor over an engine already connected to `config.socket`. The engine's cgroup
    /// driver (which must be `cgroupfs`) is not asked here: `/info` costs Podman a few hundred
    /// milliseconds, and an engine with the `systemd` driver refuses the cgroup parent at the
    /// first create, which is then reported as not supported (see `create_error`).
    pub fn with_engine(config: ContainerConfig, engine: Engine) -> Result<Self, ExecutorError> {
        let name = config.engine.name();
        let unavailable = |reason: String| ExecutorError::Unavailable {
            executor: name,
            reason,
        };
        if let Some(what) = config.unsupported() {
            return Err(ExecutorError::Unsupported {
                executor: name,
                what,
            });
        }
        let cgroups = match config.rootless {
            Some(_) => None,
            None => Some(
                ExecutionCgroups::detect(&config)
                    .map_err(|e| unavailable(format!("cgroups: {e}")))?,
            ),
        };
        let engine_rlimits = match config.engine {
            EngineKind::Podman => engine::engine_rlimits(&config.socket),
            EngineKind::Docker => Vec::new(),
        };
        let template = warm::template_plan().map_err(|e| unavailable(e.to_string()))?;
        let seccomp = SeccompOption::new(config.engine, &config.seccomp_dir)
            .map_err(|e| unavailable(format!("seccomp profile: {e}")))?;
        let owner = own_owner_label();
        let seccomp = Arc::new(seccomp);
        let services = ContainerServices::new(
            engine.clone(),
            config.services.clone(),
            owner.clone(),
            Arc::clone(&seccomp),
        );
        Ok(Self {
            services,
            inner: Arc::new(Inner {
                config,
                engine,
                cgroups,
                owner,
                engine_rlimits,
                template,
                pool: std::sync::Mutex::new(PoolState::default()),
                pool_changed: tokio::sync::Notify::new(),
                seccomp,
                full_network: tokio::sync::OnceCell::new(),
            }),
            registry: Registry::new(),
        })
    }

    /// The engine connection.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// How it was configured.
    pub fn config(&self) -> &ContainerConfig {
        &self.inner.config
    }

    /// How many warm containers are idle in the pool now.
    pub fn idle_warm(&self) -> usize {
        self.inner.idle_count()
    }

    /// Removes the idle warm containers now (dropping the executor does it in the background).
    pub async fn drain_pool(&self) {
        self.inner.drain().await;
    }

    /// Starts the command in the warm container `taken` for it, else (or if that fails) cold.
    async fn launch(
        &self,
        taken: Option<Warm>,
        request: &ExecutionRequest,
        plan: &ExecPlan,
    ) -> Result<Launched, ExecutorError> {
        if let Some(warm) = taken {
            match self.inner.launch_warm(warm, request, plan).await {
                Ok(launched) => return Ok(launched),
                // A cold container would start the command before its bridges.
                Err(e) if !request.bridges.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "a warm container failed; starting a cold one")
                }
            }
        }
        self.inner.launch_cold(request, plan).await
    }

    async fn run(
        &self,
        request: &ExecutionRequest,
        plan: &ExecPlan,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        let inner = &self.inner;
        let name = inner.config.engine.name();
        let registration = self.registry.register(&request.id)?;
        let begun = Instant::now();
        inner.hand_over_workspace(request).await?;
        let taken = inner.take_warm(request, plan);
        if inner.config.warm_pool > 0 {
            Inner::refill(inner);
        }
        let mut taken = inner.waiting_for_bridges(taken, request, plan).await?;
        if let Some(warm) = taken.take_if(|warm| matches!(warm.kind, WarmKind::Resident(_))) {
            return Inner::run_resident(inner, warm, request, plan, events, registration.token())
                .await;
        }
        let launched = self.launch(taken, request, plan).await?;
        let Launched {
            guard,
            id,
            attached,
            oom,
            warm,
            bridges,
        } = launched;
        let started = Instant::now();
        let launch_time = started - begun;
        let (stdout, stderr, attach_ended) = demultiplex(attached.output);
        let output = inner.started(request, &events, stdout, stderr).await;
        let exited = exit::exited(&inner.engine, inner.config.engine, &id, attach_ended);
        let kill = || inner.kill(&id);
        let (ending, waited) = supervise(exited, plan.timeout, registration.token(), kill).await;
        let measured = started.elapsed();
        drop(bridges);
        waited.map_err(|e| inner.setup("waiting for the container", e))?;
        let state = api::container_state(inner.engine.socket(), &id)
            .await
            .map_err(|e| inner.setup("inspecting the finished container", e))?;
        let code = state.exit_code.unwrap_or(-1);
        // A cold container's run time is the engine's start and finish times: what we measured
        // also holds the API calls (and a slow kill) around the run. A warm container started
        // long before its command: what we measured from sending the command is its run time.
        let duration = match warm {
            false => engine_run_time(state.started_at.as_deref(), state.finished_at.as_deref())
                .unwrap_or(measured),
            true => measured,
        };
        let (stdout, stderr) = output.finish(OUTPUT_GRACE).await?;
        let mut measurements = guard.measurements().await;
        if let Some(watch) = &oom {
            measurements.oom_kills += watch.take_count();
        }
        if state.oom_killed == Some(true) {
            measurements.oom_kills = measurements.oom_kills.max(1);
        }
        let ended = Instant::now();
        guard.finish().await;
        tracing::debug!(
            container = %id,
            warm,
            launch_ms = launch_time.as_secs_f64() * 1e3,
            run_and_exit_ms = (ended - started).as_secs_f64() * 1e3,
            remove_ms = ended.elapsed().as_secs_f64() * 1e3,
            "container execution phases"
        );
        Ok(Finished {
            execution_id: request.id.clone(),
            executor: name,
            isolation_level: IsolationLevel::Container,
            ending,
            exit: exit_of(code),
            stdout,
            stderr,
            duration,
            measurements,
        }
        .into_result())
    }
}

#[async_trait]
impl Executor for ContainerExecutor {
    fn name(&self) -> &'static str {
        self.inner.config.engine.name()
    }

    fn isolation_level(&self) -> IsolationLevel {
        IsolationLevel::Container
    }

    fn capabilities(&self) -> ExecutorCapabilities {
        capabilities(&self.inner.config)
    }

    async fn health_check(&self) -> Result<(), ExecutorError> {
        let name = self.inner.config.engine.name();
        let unavailable = |reason: String| ExecutorError::Unavailable {
            executor: name,
            reason,
        };
        self.inner.engine.client().ping().await.map_err(|e| {
            unavailable(format!(
                "{} does not answer: {e}",
                self.inner.engine.socket().display()
            ))
        })?;
        match self.inner.engine.has_image(&self.inner.config.image).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(unavailable(format!(
                "image {} is not in {name}: build and import it with `conductor env build NAME`",
                self.inner.config.image
            ))),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    async fn warmup(&self) -> Result<(), ExecutorError> {
        self.health_check().await?;
        let removed = owner::sweep_orphans(&self.inner.engine).await?;
        if removed > 0 {
            tracing::info!(removed, "removed containers left by dead processes");
        }
        let networks = services::sweep_networks(&self.inner.engine, owner_alive).await;
        if networks > 0 {
            tracing::info!(networks, "removed service networks left by dead processes");
        }
        self.inner.sweep_slots().await;
        self.inner.fill().await
    }

    async fn execute(
        &self,
        request: ExecutionRequest,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        check_supported(&request, self.name(), &self.capabilities())?;
        if request.rootfs.is_some() {
            return Err(ExecutorError::Unsupported {
                executor: self.name(),
                what: "a rootfs directory (containers run an image: use --environment)".to_owned(),
            });
        }
        if !request.read_only_paths.is_empty() {
            return Err(ExecutorError::Unsupported {
                executor: self.name(),
                what: "read-only host paths".to_owned(),
            });
        }
        let plan = crate::run::plan_request(&request, PlanTarget::Sandbox)?;
        if plan.network == NetworkPolicy::Full {
            let engine = &self.inner.engine;
            self.inner
                .full_network
                .get_or_try_init(|| network::ensure_full_network(engine))
                .await?;
        }
        self.run(&request, &plan, events).await
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError> {
        Ok(self.registry.cancel(id))
    }

    fn services(&self) -> Option<&dyn ServiceRunner> {
        Some(&self.services)
    }
}
