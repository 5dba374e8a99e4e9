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
//! **Seccomp.** Docker takes the profile's JSON in the `seccomp=` security option; Podman's
//! compatible API (4.3) opens the option's value as a path, so for Podman the executor writes the
//! profile to `seccomp_dir/profile-<hash>.json` (before each create, when missing) and passes that.
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

mod api;
mod engine;
mod guard;
pub mod network;
mod oom;
mod pool;
mod resident;
pub mod seccomp;
pub mod services;
pub mod spec;
mod warm;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
};
use conductor_core::{
    check_supported, EventSender, Executor, ExecutorError, PlanTarget, ServiceRunner,
};
use conductor_sandbox::cgroup::{Cgroup, CgroupLimits, CgroupManager, CgroupVersion};
use conductor_types::{
    Capability, ExecEvent, ExecPlan, ExecutionId, ExecutionRequest, ExecutionResult,
    ExecutorCapabilities, IsolationLevel, NetworkPolicy, Rlimit, RlimitResource,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

pub use api::ListedContainer;
pub use engine::{Engine, EngineError, EngineKind};
use guard::ContainerGuard;
use oom::OomWatch;
pub use services::{ContainerServices, ServicesConfig};
use spec::{create_body, ContainerSettings, LABEL_EXECUTION, LABEL_OWNER};

use crate::output::now_ms;
use crate::run::{supervise, Finished, OutputCapture, ProcessExit, Registry};

/// How long output may keep flowing after the container stopped before capture is cut off.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// The uid and gid commands run as by default: unprivileged and unused on the host (the same
/// range the namespace executor maps its sandbox root to).
pub const DEFAULT_USER: u32 = 2_000_000_000;

/// How a container executor is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Docker or Podman.
    pub engine: EngineKind,
    /// The engine's API socket.
    pub socket: PathBuf,
    /// The image every execution runs (an environment's `conductor-env/<name>:<hash>`).
    pub image: String,
    /// uid and gid the command runs as; the workspace is handed to them before each run.
    pub user: (u32, u32),
    /// The engine's user-namespace mode (`userns_mode`: Podman's `auto`, `keep-id`, …). With
    /// one, the in-container user maps to a host uid the executor does not know, so the
    /// workspace is not handed over: the mode must make it usable (a rootless engine's
    /// `keep-id` excepted: see `rootless`).
    pub userns: Option<String>,
    /// The uid and gid of a rootless engine (Podman run by an unprivileged user; the owner of
    /// its socket), `None` for a rootful one. See [`ContainerConfig::for_socket`].
    pub rootless: Option<(u32, u32)>,
    /// Where the cgroup filesystem is mounted.
    pub cgroup_root: PathBuf,
    /// The cgroup under which each execution's cgroup is made.
    pub cgroup_parent: String,
    /// Where output past the in-memory limit is spooled.
    pub spool_dir: PathBuf,
    /// Warm containers kept started and waiting (see `pool`); 0 starts every one cold.
    pub warm_pool: usize,
    /// How many executions a warm container serves, reset in between, before it is removed
    /// (see `resident`); 0 never reuses one.
    pub warm_reuse: u32,
    /// Where the warm containers' slot directories are made (see `pool`).
    pub pool_dir: PathBuf,
    /// The service sidecars' images and health timeout (see `services`).
    pub services: ServicesConfig,
    /// Where the seccomp profile is written for an engine that takes it as a path (Podman);
    /// the engine must be able to read it.
    pub seccomp_dir: PathBuf,
}

impl ContainerConfig {
    /// Defaults for `engine` running `image`: the engine's rootful socket, the unprivileged
    /// default user, no user namespace, no warm pool (one-shot use would start a warm container
    /// only to remove it).
    pub fn new(engine: EngineKind, image: impl Into<String>) -> Self {
        Self::for_socket(engine, image, engine.default_socket())
    }

    /// [`ContainerConfig::new`] on `socket`. A socket owned by another user than root is a
    /// rootless engine's: commands then run as that user (`userns` `keep-id`, so its uid is the
    /// same inside), and the executor makes no cgroups (an unprivileged engine cannot use
    /// them): the engine gets the limits, which it enforces on cgroup v2 only, and no stats
    /// are measured (see [`capabilities`]).
    pub fn for_socket(engine: EngineKind, image: impl Into<String>, socket: PathBuf) -> Self {
        let rootless = std::fs::metadata(&socket)
            .ok()
            .map(|meta| (meta.uid(), meta.gid()))
            .filter(|(uid, _)| *uid != 0);
        Self {
            engine,
            socket,
            image: image.into(),
            user: rootless.unwrap_or((DEFAULT_USER, DEFAULT_USER)),
            userns: rootless.map(|_| "keep-id".to_owned()),
            rootless,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "conductor".to_owned(),
            spool_dir: std::env::temp_dir().join("conductor-spool"),
            warm_pool: 0,
            warm_reuse: 0,
            pool_dir: PathBuf::from("/run/conductor/container-pool").join(engine.name()),
            services: ServicesConfig::default(),
            seccomp_dir: PathBuf::from("/run/conductor/container-seccomp"),
        }
    }
}

/// Runs each command in a fresh container of Docker or Podman (see the module docs).
#[derive(Debug)]
pub struct ContainerExecutor {
    inner: Arc<Inner>,
    registry: Registry,
    services: ContainerServices,
}

/// What the executor and its warm pool's background refill share.
#[derive(Debug)]
pub(crate) struct Inner {
    config: ContainerConfig,
    engine: Engine,
    /// The executor's cgroups (`None` for a rootless engine).
    cgroups: Option<Arc<CgroupManager>>,
    owner: String,
    engine_rlimits: Vec<Rlimit>,
    /// The plan warm containers are made for (see `warm::Inner::fits`).
    template: ExecPlan,
    pool: std::sync::Mutex<warm::PoolState>,
    /// Woken whenever a warm container has been made (or failed to be).
    pool_changed: tokio::sync::Notify,
    /// The `seccomp=` security option's value (see `seccomp`), shared with the services.
    seccomp: Arc<SeccompOption>,
    /// The `full` network, made (with the host's rules) before the first `full` container.
    full_network: tokio::sync::OnceCell<()>,
}

/// How the seccomp profile reaches the engine.
#[derive(Debug)]
pub(crate) struct SeccompOption {
    /// What follows `seccomp=`: the profile, or the path of the file holding it.
    pub(crate) value: String,
    /// The file to write (path and contents) when `value` is its path.
    file: Option<(PathBuf, String)>,
}

impl SeccompOption {
    /// Docker takes the profile itself, Podman a path (see the module docs).
    fn new(engine: EngineKind, dir: &Path) -> Result<Self, serde_json::Error> {
        let profile = seccomp::profile_json()?;
        Ok(match engine {
            EngineKind::Docker => Self {
                value: profile,
                file: None,
            },
            EngineKind::Podman => {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                profile.hash(&mut hasher);
                let path = dir.join(format!("profile-{:016x}.json", hasher.finish()));
                Self {
                    value: path.display().to_string(),
                    file: Some((path, profile)),
                }
            }
        })
    }

    /// Writes the file the option names, unless it is there (written whole: a temporary file of
    /// this call's own renamed into place, so a concurrent create never reads half of it).
    pub(crate) async fn write(&self) -> Result<(), ExecutorError> {
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let Some((path, contents)) = self.file.clone() else {
            return Ok(());
        };
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        let context = format!("writing the seccomp profile {}", path.display());
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let temporary = path.with_extension(format!("json.{}-{write}", std::process::id()));
            std::fs::write(&temporary, contents)?;
            std::fs::rename(&temporary, &path)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|written| written)
        .map_err(|e| ExecutorError::io(context, e))
    }
}

/// A container whose command has been started: what the rest of an execution needs.
pub(crate) struct Launched {
    guard: ContainerGuard,
    id: String,
    attached: bollard::container::AttachContainerResults,
    oom: Option<OomWatch>,
    warm: bool,
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
        if config.rootless.is_some() && config.engine == EngineKind::Docker {
            return Err(ExecutorError::Unsupported {
                executor: name,
                what: "rootless Docker (its socket is not root's; rootless Podman is supported)"
                    .to_owned(),
            });
        }
        if config.rootless.is_some() && config.warm_pool > 0 {
            return Err(ExecutorError::Unsupported {
                executor: name,
                what: "a warm pool with rootless Podman (set warm_pool = 0 for this environment)"
                    .to_owned(),
            });
        }
        if config.warm_reuse > 0 && config.userns.is_some() {
            return Err(ExecutorError::Unsupported {
                executor: name,
                what: "warm_reuse together with a user-namespace mode (the agent must be root in the container and the commands' user known)".to_owned(),
            });
        }
        let cgroups = match config.rootless {
            Some(_) => None,
            None => Some(Arc::new(
                CgroupManager::detect(&config.cgroup_root, &config.cgroup_parent)
                    .map_err(|e| unavailable(format!("cgroups: {e}")))?,
            )),
        };
        let engine_rlimits = match config.engine {
            EngineKind::Podman => engine_rlimits(&config.socket),
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
                pool: std::sync::Mutex::new(warm::PoolState::default()),
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
        let mut taken = inner.take_warm(request, plan);
        if inner.config.warm_pool > 0 {
            Inner::refill(inner);
        }
        if let Some(warm) = taken.take_if(|warm| matches!(warm.kind, warm::WarmKind::Resident(_))) {
            return Inner::run_resident(inner, warm, request, plan, events, registration.token())
                .await;
        }
        let warm = match taken {
            Some(warm) => match inner.launch_warm(warm, request, plan).await {
                Ok(launched) => Some(launched),
                Err(e) => {
                    tracing::warn!(error = %e, "a warm container failed; starting a cold one");
                    None
                }
            },
            None => None,
        };
        let launched = match warm {
            Some(launched) => launched,
            None => inner.launch_cold(request, plan).await?,
        };
        let Launched {
            guard,
            id,
            attached,
            oom,
            warm,
        } = launched;
        let started = Instant::now();
        let launch_time = started - begun;
        let docker = inner.engine.client();
        let (stdout, stderr, attach_ended) = demultiplex(attached.output);
        let output = inner.started(request, &events, stdout, stderr).await;
        let socket = inner.engine.socket();
        let exited = async {
            match inner.config.engine {
                EngineKind::Docker => {
                    let mut wait = docker.wait_container(&id, None);
                    match wait.next().await {
                        Some(Ok(_))
                        | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {
                            Ok(())
                        }
                        Some(Err(e)) => Err(e.to_string()),
                        None => Ok(()),
                    }
                }
                EngineKind::Podman => podman_exited(socket, &id, attach_ended)
                    .await
                    .map_err(|e| e.to_string()),
            }
        };
        let kill = || inner.kill(&id);
        let (ending, waited) = supervise(exited, plan.timeout, registration.token(), kill).await;
        let measured = started.elapsed();
        waited.map_err(|e| inner.setup("waiting for the container", e))?;
        let state = api::container_state(socket, &id)
            .await
            .map_err(|e| inner.setup("inspecting the finished container", e))?;
        let code = state.exit_code.unwrap_or(-1);
        // A cold container's run time is the engine's start and finish times: what we measured
        // also holds the API calls (and a slow kill) around the run. A warm container started
        // long before its command: what we measured from sending the command is its run time.
        let duration = match (
            warm,
            state.started_at.as_deref().and_then(rfc3339_nanos),
            state.finished_at.as_deref().and_then(rfc3339_nanos),
        ) {
            (false, Some(start), Some(end)) if end >= start => {
                Duration::from_nanos(u64::try_from(end - start).unwrap_or(u64::MAX))
            }
            _ => measured,
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

impl Inner {
    /// The executor's cgroups: there are none with a rootless engine (which takes no warm
    /// pool, the other user).
    fn cgroups(&self) -> Result<Arc<CgroupManager>, ExecutorError> {
        self.cgroups
            .clone()
            .ok_or_else(|| self.setup("making a cgroup", "a rootless engine uses none of ours"))
    }

    /// Reports the command started and captures its output.
    async fn started(
        &self,
        request: &ExecutionRequest,
        events: &EventSender,
        stdout: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        stderr: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> OutputCapture {
        let _ = events
            .send(ExecEvent::Started {
                execution_id: request.id.clone(),
                pid: None,
                at_ms: now_ms(),
            })
            .await;
        OutputCapture::start(stdout, stderr, &self.config.spool_dir, request, events)
    }

    /// SIGKILLs container `id` (a timeout or cancel): its init and everything in it end.
    async fn kill(&self, id: &str) {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        if let Err(e) = self.engine.client().kill_container(id, Some(options)).await {
            tracing::debug!(error = %e, "killing the container (it may have exited)");
        }
    }

    /// Binds the request's workspace on `slot` (and so into its warm container).
    async fn bind_workspace(
        &self,
        slot: &pool::Slot,
        request: &ExecutionRequest,
    ) -> Result<(), ExecutorError> {
        let stage = "binding the workspace into a warm container";
        let (slot, workspace) = (slot.clone(), request.workspace.clone());
        tokio::task::spawn_blocking(move || slot.bind_workspace(&workspace))
            .await
            .map_err(|e| self.setup(stage, e))?
            .map_err(|e| self.setup(stage, format!("{}: {e}", request.workspace.display())))
    }

    fn setup(&self, stage: &str, reason: impl std::fmt::Display) -> ExecutorError {
        ExecutorError::Setup {
            stage: stage.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// Hands the workspace to the container user (unless a user namespace maps it).
    async fn hand_over_workspace(&self, request: &ExecutionRequest) -> Result<(), ExecutorError> {
        // keep-id of a rootless engine keeps the user's uid: the workspace goes to it.
        if self.config.userns.is_some() && self.config.rootless.is_none() {
            return Ok(());
        }
        let (path, (uid, gid)) = (request.workspace.clone(), self.config.user);
        tokio::task::spawn_blocking(move || chown_tree(&path, uid, gid))
            .await
            .map_err(|e| self.setup("handing the workspace to the container user", e))?
            .map_err(|e| {
                ExecutorError::io(
                    format!(
                        "handing the workspace {} to uid {}",
                        request.workspace.display(),
                        self.config.user.0
                    ),
                    e,
                )
            })
    }

    /// The create settings for a container labelled with `execution`.
    fn settings<'a>(
        &'a self,
        execution: &str,
        user: &'a str,
        cgroup_parent: Option<&'a str>,
        workspace: &'a str,
    ) -> ContainerSettings<'a> {
        ContainerSettings {
            executor: self.config.engine.name(),
            engine: self.config.engine,
            image: &self.config.image,
            user,
            userns: self.config.userns.as_deref(),
            cgroup_parent,
            workspace,
            labels: HashMap::from([
                (LABEL_EXECUTION.to_owned(), execution.to_owned()),
                (LABEL_OWNER.to_owned(), self.owner.clone()),
            ]),
            default_rlimits: self.engine_rlimits.clone(),
            service_network: None,
            extra_hosts: Vec::new(),
            seccomp: &self.seccomp.value,
        }
    }

    fn user(&self) -> String {
        format!("{}:{}", self.config.user.0, self.config.user.1)
    }

    /// Creates, attaches to and starts a container for the request.
    async fn launch_cold(
        &self,
        request: &ExecutionRequest,
        plan: &ExecPlan,
    ) -> Result<Launched, ExecutorError> {
        let (mut guard, oom, cgroup_parent) = match self.config.rootless {
            Some(_) => (
                ContainerGuard::without_cgroup(self.engine.clone()),
                None,
                None,
            ),
            None => {
                let (cgroup, oom) = self.create_cgroup(&request.id.to_string(), plan).await?;
                let cgroup_parent = self.cgroup_parent(&cgroup)?;
                let engine_dirs = self.engine_cgroup_dirs(&cgroup, &cgroup_parent);
                let guard = ContainerGuard::new(self.engine.clone(), cgroup, engine_dirs);
                (guard, oom, Some(cgroup_parent))
            }
        };
        let user = self.user();
        let workspace = request.workspace.display().to_string();
        let mut settings = self.settings(
            &request.id.to_string(),
            &user,
            cgroup_parent.as_deref(),
            &workspace,
        );
        if let Some(network) = &request.service_network {
            settings.service_network = Some(network);
            settings.extra_hosts = services::hosts(&self.engine, network).await?;
        }
        let mut body = create_body(plan, &settings)?;
        if let (Some(_), Some(host_config)) = (self.config.rootless, body.host_config.as_mut()) {
            // No cgroup of ours holds the memory limit: the engine gets it (memory = + swap).
            let memory = plan
                .limits
                .memory
                .map(|m| i64::try_from(m.get()).unwrap_or(i64::MAX));
            host_config.memory = memory;
            host_config.memory_swap = memory;
        }
        self.seccomp.write().await?;
        let docker = self.engine.client();
        let options = CreateContainerOptionsBuilder::default()
            .name(&format!("conductor-{}", request.id))
            .build();
        let created = match docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(e) => return Err(self.create_error(e).await),
        };
        let id = created.id;
        guard.set_container(id.clone());
        let attached = self.attach(&id).await?;
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| self.setup("starting the container", e))?;
        Ok(Launched {
            guard,
            id,
            attached,
            oom,
            warm: false,
        })
    }

    /// Attaches to the container's stdout and stderr.
    async fn attach(
        &self,
        id: &str,
    ) -> Result<bollard::container::AttachContainerResults, ExecutorError> {
        let attach = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            // Attached before the command starts: nothing is missed, and replaying the log as
            // well would duplicate what a fast command wrote.
            .logs(false)
            .build();
        self.engine
            .client()
            .attach_container(id, Some(attach))
            .await
            .map_err(|e| self.setup("attaching to the container", e))
    }

    /// The execution's cgroup, holding the memory limit, and its OOM watch.
    async fn create_cgroup(
        &self,
        id: &str,
        plan: &ExecPlan,
    ) -> Result<(Cgroup, Option<OomWatch>), ExecutorError> {
        let manager = self.cgroups()?;
        let name = format!("{}-{id}", self.config.engine.name());
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
        .map_err(|e| self.setup("creating the execution's cgroup", e))?;
        made.map_err(|e| self.setup("creating the execution's cgroup", e))
    }

    /// The cgroup path the engine takes as `CgroupParent` (cgroupfs driver): the cgroup's
    /// directory relative to its hierarchy's root.
    fn cgroup_parent(&self, cgroup: &Cgroup) -> Result<String, ExecutorError> {
        let dir = cgroup
            .dirs()
            .first()
            .ok_or_else(|| self.setup("placing the container", "the cgroup has no directory"))?;
        let relative = dir.strip_prefix(&self.config.cgroup_root).map_err(|_| {
            self.setup(
                "placing the container",
                format!(
                    "{} is outside {}",
                    dir.display(),
                    self.config.cgroup_root.display()
                ),
            )
        })?;
        let mut parts = relative.components();
        if self.cgroups()?.version() == CgroupVersion::V1 {
            parts.next();
        }
        Ok(format!("/{}", parts.as_path().display()))
    }

    /// On v1, where the engine will make `cgroup_parent` in the hierarchies the executor's
    /// cgroup does not cover (cpuset, devices, name=systemd, …).
    fn engine_cgroup_dirs(&self, cgroup: &Cgroup, cgroup_parent: &str) -> Vec<PathBuf> {
        if self
            .cgroups
            .as_ref()
            .is_none_or(|cgroups| cgroups.version() != CgroupVersion::V1)
        {
            return Vec::new();
        }
        let relative = cgroup_parent.trim_start_matches('/');
        let Ok(entries) = std::fs::read_dir(&self.config.cgroup_root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path().join(relative))
            .filter(|dir| !cgroup.dirs().contains(dir))
            .collect()
    }

    /// What a failed create means. A 404 is a missing image; any other refusal may be the
    /// engine's `systemd` cgroup driver refusing a cgroupfs parent, asked of `/info` only then.
    async fn create_error(&self, error: bollard::errors::Error) -> ExecutorError {
        let name = self.config.engine.name();
        if let bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } = &error
        {
            return ExecutorError::Unavailable {
                executor: name,
                reason: format!(
                    "image {} is not in {name}: build and import it with `conductor env build NAME`",
                    self.config.image
                ),
            };
        }
        match self.engine.cgroup_driver().await {
            Ok(Some(driver)) if driver != "cgroupfs" => ExecutorError::Unsupported {
                executor: name,
                what: format!("an engine with the {driver} cgroup driver (use cgroupfs)"),
            },
            _ => self.setup("creating the container", error),
        }
    }

    /// Removes containers whose owning process is gone (a crash before its guard ran).
    async fn sweep_orphans(&self) -> Result<usize, ExecutorError> {
        let filters = HashMap::from([("label".to_owned(), vec![LABEL_OWNER.to_owned()])]);
        let listed = self
            .engine
            .list_containers(&filters)
            .await
            .map_err(|e| self.setup("listing containers", e))?;
        let mut removed = 0;
        for container in listed {
            let owner = container
                .labels
                .get(LABEL_OWNER)
                .cloned()
                .unwrap_or_default();
            if owner_alive(&owner) {
                continue;
            }
            let id = container.id;
            tracing::info!(container = %id, %owner, "removing a container left by a dead process");
            if guard::remove_container(&self.engine, &id).await {
                removed += 1;
            }
        }
        Ok(removed)
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
        let removed = self.inner.sweep_orphans().await?;
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

/// Splits the engine's multiplexed attach stream into a stdout and a stderr reader. The pipes
/// are bounded, so a slow reader slows the stream down. The receiver completes (with an error:
/// its sender is dropped) when the stream has ended, which the engine does when the container's
/// process has exited.
fn demultiplex(
    mut output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
) -> (
    tokio::io::DuplexStream,
    tokio::io::DuplexStream,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (mut out_writer, out_reader) = tokio::io::duplex(64 * 1024);
    let (mut err_writer, err_reader) = tokio::io::duplex(64 * 1024);
    let (ended, ended_receiver) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ended = ended;
        while let Some(item) = output.next().await {
            let written = match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    out_writer.write_all(&message).await
                }
                Ok(LogOutput::StdErr { message }) => err_writer.write_all(&message).await,
                Ok(LogOutput::StdIn { .. }) => Ok(()),
                Err(e) => {
                    tracing::debug!(error = %e, "the container's output stream ended");
                    break;
                }
            };
            if written.is_err() {
                break;
            }
        }
    });
    (out_reader, err_reader, ended_receiver)
}

/// Waits until Podman's container `id` has exited: once the attach stream has ended (the
/// container's output closed), its state is polled until the engine has seen the exit, quickly
/// at first. Podman's own `wait` also waits for its cleanup process, hundreds of milliseconds
/// later, polling every 250 ms. If the stream ended early (or attaching broke) the polling is
/// what finds the exit, at most 250 ms late.
async fn podman_exited(
    socket: &Path,
    id: &str,
    attach_ended: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), api::ApiError> {
    let _ = attach_ended.await;
    let mut delay = Duration::from_millis(2);
    loop {
        if api::container_state(socket, id).await?.has_exited() {
            return Ok(());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// The engine's exit code as a process exit: the init reports death by signal N as 128 + N.
fn exit_of(code: i64) -> ProcessExit {
    match i32::try_from(code) {
        Ok(code @ 129..=192) => ProcessExit::Signal(code - 128),
        Ok(code) => ProcessExit::Code(code),
        Err(_) => ProcessExit::Code(-1),
    }
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time as the engines write it
/// (`2024-05-01T12:00:00.123456789Z`, or with a `+HH:MM` offset).
fn rfc3339_nanos(text: &str) -> Option<i128> {
    let (date, rest) = text.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let zone_at = rest.find(['Z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (parts.next()??, parts.next()??, parts.next()??);
    let digits: String = fraction.chars().take(9).collect();
    let nanos: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse::<i64>().ok()? * 10_i64.pow(9 - digits.len() as u32)
    };
    let offset = match zone.as_bytes().first() {
        Some(b'Z') => 0,
        Some(sign) => {
            let (h, m) = zone[1..].split_once(':')?;
            let minutes = h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?;
            if *sign == b'-' {
                -minutes * 60
            } else {
                minutes * 60
            }
        }
        None => return None,
    };
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
}

/// `lchown -R uid:gid` through descriptors, iteratively, never following symlinks, refusing
/// files linked from elsewhere (`conductor_sandbox::handover`).
fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    conductor_sandbox::handover::hand_over(path, uid, gid)
        .map(|_| ())
        .map_err(io::Error::other)
}

/// The `nofile` and `nproc` limits of the engine serving `socket` (its pid from
/// `SO_PEERCRED`): Podman's own defaults for them fail where its limits are lower, so the
/// container gets the engine's limits instead. Empty when they cannot be read.
fn engine_rlimits(socket: &Path) -> Vec<Rlimit> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return Vec::new();
    };
    let Ok(credentials) = getsockopt(&stream, PeerCredentials) else {
        return Vec::new();
    };
    let pid = credentials.pid();
    [
        (RlimitResource::Nofile, libc::RLIMIT_NOFILE),
        (RlimitResource::Nproc, libc::RLIMIT_NPROC),
    ]
    .into_iter()
    .filter_map(|(resource, which)| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads pid's limit into a valid local; the new-limit pointer is null.
        let rc = unsafe { libc::prlimit(pid, which, std::ptr::null(), &mut limit) };
        (rc == 0).then_some(Rlimit {
            resource,
            soft: limit.rlim_cur,
            hard: limit.rlim_max,
        })
    })
    .collect()
}

/// `<pid>:<start time in clock ticks>` of this process: names the owner of its containers
/// across pid reuse.
fn own_owner_label() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or(0))
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may hold spaces, so count from its closing paren.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether the process named by an owner label still runs.
fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// What a container executor of `config` enforces and measures (known before it connects).
pub fn capabilities(config: &ContainerConfig) -> ExecutorCapabilities {
    let mut supported = BTreeSet::from([
        Capability::CpuLimit,
        Capability::MemoryLimit,
        Capability::PidsLimit,
        Capability::NetworkNone,
        Capability::ReadOnlyRoot,
        Capability::HostFilesHidden,
        Capability::PidIsolation,
        Capability::HostnameIsolation,
        Capability::KillsProcessTree,
        Capability::CpuTimeStats,
        Capability::PeakMemoryStats,
        Capability::DiskIoStats,
        Capability::Services,
        Capability::Seccomp,
    ]);
    if config.user.0 != 0 {
        supported.insert(Capability::UserMapping);
    }
    // `full`'s bridge is kept off the host by rules only root can install.
    if config.rootless.is_none() && nix::unistd::Uid::effective().is_root() {
        supported.insert(Capability::NetworkFull);
    }
    if config.rootless.is_some() {
        // No cgroup of ours: nothing measured, and the engine enforces limits on v2 only.
        for measured in [
            Capability::CpuTimeStats,
            Capability::PeakMemoryStats,
            Capability::DiskIoStats,
            Capability::Services,
        ] {
            supported.remove(&measured);
        }
        if !config.cgroup_root.join("cgroup.controllers").is_file() {
            for limit in [
                Capability::CpuLimit,
                Capability::MemoryLimit,
                Capability::PidsLimit,
            ] {
                supported.remove(&limit);
            }
        }
    }
    ExecutorCapabilities {
        isolation_level: IsolationLevel::Container,
        platform: std::env::consts::OS.to_owned(),
        supported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_not_owned_by_root_is_a_rootless_engines() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let rootful = ContainerConfig::for_socket(EngineKind::Podman, "i", socket.clone());
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: handing the socket to another user needs root");
            return;
        }
        assert_eq!(rootful.rootless, None);
        assert_eq!(rootful.user, (DEFAULT_USER, DEFAULT_USER));
        assert!(capabilities(&rootful).supports(Capability::PeakMemoryStats));
        std::os::unix::fs::chown(&socket, Some(1234), Some(2345)).unwrap();
        let rootless = ContainerConfig::for_socket(EngineKind::Podman, "i", socket);
        assert_eq!(rootless.rootless, Some((1234, 2345)));
        assert_eq!(rootless.user, (1234, 2345));
        assert_eq!(rootless.userns.as_deref(), Some("keep-id"));
        let declared = capabilities(&rootless);
        for missing in [
            Capability::PeakMemoryStats,
            Capability::CpuTimeStats,
            Capability::Services,
        ] {
            assert!(!declared.supports(missing), "{missing:?}");
        }
        // Limits only where the engine enforces them: cgroup v2.
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").is_file();
        assert_eq!(declared.supports(Capability::MemoryLimit), v2);
        assert!(declared.supports(Capability::Seccomp));
    }

    #[test]
    fn exit_codes_decode_by_the_init_convention() {
        assert_eq!(exit_of(0), ProcessExit::Code(0));
        assert_eq!(exit_of(3), ProcessExit::Code(3));
        assert_eq!(exit_of(127), ProcessExit::Code(127));
        assert_eq!(exit_of(137), ProcessExit::Signal(9));
        assert_eq!(exit_of(143), ProcessExit::Signal(15));
        assert_eq!(exit_of(255), ProcessExit::Code(255));
    }

    #[test]
    fn engine_times_parse() {
        assert_eq!(rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_nanos("2024-05-01T12:00:00.5Z"),
            Some(1_714_564_800_500_000_000)
        );
        assert_eq!(
            rfc3339_nanos("2024-05-01T14:00:00.000000001+02:00"),
            Some(1_714_564_800_000_000_001)
        );
        assert_eq!(
            rfc3339_nanos("0001-01-01T00:00:00Z").map(|n| n < 0),
            Some(true)
        );
        assert_eq!(rfc3339_nanos("garbage"), None);
    }

    #[test]
    fn owner_labels_name_live_processes_only() {
        let own = own_owner_label();
        assert!(owner_alive(&own), "{own}");
        let (pid, start) = own.split_once(':').unwrap();
        assert!(!owner_alive(&format!(
            "{pid}:{}",
            start.parse::<u64>().unwrap() + 1
        )));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn chown_tree_hands_over_everything_without_following_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: chown needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file"), "x").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        chown_tree(dir.path(), 4242, 4343).unwrap();
        for path in ["", "sub", "sub/file", "link"] {
            let meta = std::fs::symlink_metadata(dir.path().join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{path}");
        }
        assert_eq!(std::fs::metadata(outside.path()).unwrap().uid(), 0);
        // A hard link to a file outside: refused, the file left as it was.
        std::fs::hard_link(outside.path(), dir.path().join("sub/hard")).unwrap();
        let err = chown_tree(dir.path(), 4242, 4343).unwrap_err();
        assert!(err.to_string().contains("has 2 hard links"), "{err}");
        assert_eq!(std::fs::metadata(outside.path()).unwrap().uid(), 0);
    }
}
