//! The Linux namespace executor: each command runs in fresh user, pid, mount, uts, ipc and
//! network namespaces, on a read-only root assembled from the plan's mounts, with a cgroup, no
//! capabilities, `no_new_privs` and a seccomp filter. Network `full` adds a veth out through the
//! host's NAT (as root only; see [`net`]).
//!
//! The sandbox is built by the helper (`conductor __sandbox-init`, see
//! [`conductor_sandbox::helper`]), a fresh single-threaded process, so nothing forks inside the
//! async runtime. This side:
//!
//! 1. plans the request and takes a helper that was started ahead of time in a cgroup of its own
//!    and has its namespaces (see [`crate::warm`]; the request's limits are written to its
//!    cgroup) and, as root, its root filesystem but the workspace (one pool per network mode and
//!    rootfs: the helpers of a pool all build the same root),
//!    or spawns one with a socket as its stdin and, while it starts, creates the execution's
//!    cgroup with the request's limits on the blocking pool;
//! 2. sends a cold helper its [`Prelude`] (naming the cgroup to join before it forks), then the
//!    [`SandboxSpec`] (as root, naming the workspace to hand to the sandbox's root uid) and
//!    collects the helper's [`Report`](conductor_sandbox::report::Report) lines;
//! 3. supervises: on timeout or cancel it kills the helper (the sandbox's init dies with it, and
//!    with init the whole pid namespace) and the cgroup;
//! 4. reads the cgroup's stats, and removes the cgroup and the root mount point.
//!
//! cgroup calls are blocking file operations. Creating, killing and removing run on the blocking
//! pool; [`Cgroup::procs_files`] only builds paths, and reading the stats (a handful of
//! pseudo-file reads) is done inline.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conductor_core::{check_supported, EventSender, Executor, ExecutorError, PlanTarget};
use conductor_sandbox::cgroup::{Cgroup, CgroupLimits, CgroupManager};
use conductor_sandbox::mounts::tree_cloning_supported;
use conductor_sandbox::report::{outcome, Outcome};
use conductor_sandbox::spec::{
    late_mounts_in, HelperMode, PrebuiltRoot, Prelude, SandboxSpec, WorkspaceOwner,
    DEFAULT_UID_BASE, MAPPED_IDS,
};
use conductor_types::{
    Capability, ExecEvent, ExecPlan, ExecutionId, ExecutionRequest, ExecutionResult,
    ExecutorCapabilities, IsolationLevel, NetworkPolicy,
};

use crate::bridge::Bridges;
use crate::output::now_ms;
use crate::run::{supervise, Ending, Finished, Measurements, OutputCapture, ProcessExit, Registry};
use crate::warm::{apply_limits, Launched, RootTemplate, WarmPool};

pub mod firewall;
pub mod net;

pub use net::{FullNetworkRange, HostNetwork, NetError};

const NAME: &str = "namespace";
/// How long output may keep flowing after the sandbox died before capture is cut off.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Where the namespace executor finds its helper and puts its cgroups, mount points and spools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// The `conductor` binary, run as `<helper_path> __sandbox-init`.
    pub helper_path: PathBuf,
    /// Where the cgroup filesystem is mounted.
    pub cgroup_root: PathBuf,
    /// The cgroup (in every hierarchy) under which each execution gets its own.
    pub cgroup_parent: String,
    /// Where each execution's root mount point (an empty directory) is created.
    pub run_dir: PathBuf,
    /// Where output past the in-memory limit is spooled (`<spool_dir>/<id>/stdout.log`).
    pub spool_dir: PathBuf,
    /// First host uid/gid of the 65536 ids sandbox root and its users map to (when root).
    pub uid_base: u32,
    /// Helpers kept started, each in its own cgroup and with its namespaces, per network mode
    /// (a network namespace of its own for every policy but `full`; the host's for `full`);
    /// 0 starts every helper on demand.
    pub warm_helpers: usize,
    /// Start the helper that replaces a taken one after the execution ends rather than while
    /// it runs: on a small machine, starting a helper (a process, a cgroup in every v1
    /// hierarchy, namespaces, a root) competes with the execution for the CPU and the cgroup
    /// lock. Best for one execution at a time (`conductor exec`'s resident); a server running
    /// many refills at once.
    pub refill_after: bool,
    /// The private range `full` sandboxes take their /30s from (as root).
    pub full_network: FullNetworkRange,
}

impl Default for NamespaceConfig {
    /// Paths under the temp dir; a user other than root gets their own (`conductor-run-<uid>`).
    fn default() -> Self {
        let suffix = match nix::unistd::Uid::effective().as_raw() {
            0 => String::new(),
            uid => format!("-{uid}"),
        };
        let temp = std::env::temp_dir();
        Self {
            helper_path: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "conductor".to_owned(),
            run_dir: temp.join(format!("conductor-run{suffix}")),
            spool_dir: temp.join(format!("conductor-spool{suffix}")),
            uid_base: DEFAULT_UID_BASE,
            warm_helpers: 1,
            refill_after: false,
            full_network: FullNetworkRange::default(),
        }
    }
}

/// Runs commands in Linux namespaces (see the module docs).
#[derive(Debug)]
pub struct NamespaceExecutor {
    config: NamespaceConfig,
    cgroups: Result<Arc<CgroupManager>, String>,
    is_root: bool,
    registry: Registry,
    /// Whether warm helpers build their root ahead of time (as root, on Linux 5.2 or later:
    /// the workspace is then attached as a mount the helper clones).
    prebuild: bool,
    /// Warm helpers, per network mode and rootfs (their layouts differ).
    pools: Mutex<HashMap<PoolKey, Arc<WarmPool>>>,
    /// `full`'s veths and rules, and the resolv.conf its sandboxes get; why not, when `full`
    /// cannot be given (not root, no iptables, a range in use).
    network: Result<FullNetwork, String>,
}

/// What `full` executions need. The host side (rules, sweep) is set up by `warmup()` or the
/// first `full` execution, not at creation: a `conductor exec` of another policy never touches
/// the firewall.
#[derive(Debug)]
struct FullNetwork {
    range: FullNetworkRange,
    host: tokio::sync::OnceCell<Result<HostNetwork, String>>,
    /// The host's resolv.conf, or the upstream servers' when that points at its loopback.
    resolv_conf: Result<PathBuf, String>,
}

/// A pool's executions: whether they are `full` (a veth and the host's resolv.conf), and their
/// rootfs (`None`: the host's system directories).
type PoolKey = (bool, Option<PathBuf>);

impl NamespaceExecutor {
    /// Checks the helper binary and user namespaces, and detects cgroups. Without usable cgroups
    /// (not root) it still runs, but declares no limits and no tree-wide stats.
    pub fn new(config: NamespaceConfig) -> Result<Self, ExecutorError> {
        check_helper(&config.helper_path)?;
        check_user_namespaces()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&config.run_dir)
            .map_err(|e| {
                ExecutorError::io(
                    format!("creating the run dir {}", config.run_dir.display()),
                    e,
                )
            })?;
        let is_root = nix::unistd::Uid::effective().is_root();
        let cgroups = CgroupManager::detect(&config.cgroup_root, &config.cgroup_parent)
            .and_then(|manager| {
                // Another user's (root's) parent cgroup may exist without being writable to us.
                if !is_root {
                    let probe = format!("ns-probe-{}", ExecutionId::random());
                    manager
                        .create(&probe, &CgroupLimits::default())?
                        .destroy()?;
                }
                Ok(manager)
            })
            .map(Arc::new)
            .map_err(|e| e.to_string());
        if let Err(reason) = &cgroups {
            tracing::info!(%reason, "namespace executor runs without cgroups: no limits");
        }
        let prebuild = is_root && tree_cloning_supported();
        let network = full_network(is_root, config.full_network);
        let executor = Self {
            config,
            cgroups,
            prebuild,
            pools: Mutex::new(HashMap::new()),
            is_root,
            registry: Registry::new(),
            network,
        };
        // Pools for the host's system directories, without a way out (every policy but `full`)
        // and with one (`full`, where it can be given); pools for a rootfs start with its first
        // execution.
        let mut networks = vec![NetworkPolicy::None];
        if executor.network.is_ok() {
            networks.push(NetworkPolicy::Full);
        }
        for network in networks {
            let mut request =
                ExecutionRequest::new(vec!["true".into()], executor.config.run_dir.clone());
            request.network = network;
            if let Ok(plan) = executor.plan(&request) {
                executor.pool(&plan, None);
            }
        }
        Ok(executor)
    }

    /// Why `full` cannot be given here, when it cannot.
    pub fn full_network_unavailable(&self) -> Option<&str> {
        match &self.network {
            Err(reason) => Some(reason),
            Ok(network) => match network.host.get() {
                Some(Err(reason)) => Some(reason),
                _ => None,
            },
        }
    }

    /// `full`'s host side, set up on first use (on the blocking pool).
    async fn host_network(&self) -> Result<&HostNetwork, String> {
        let network = self.network.as_ref().map_err(Clone::clone)?;
        let range = network.range;
        network
            .host
            .get_or_init(|| async move {
                let setup = tokio::task::spawn_blocking(move || HostNetwork::setup(range)).await;
                match setup {
                    Ok(Ok(host)) => Ok(host),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the namespace executor cannot give network full");
                        Err(e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The sandbox plan of `request`; a `full` one on the host's directories gets a resolver
    /// it can reach.
    fn plan(&self, request: &ExecutionRequest) -> Result<ExecPlan, ExecutorError> {
        let mut plan = crate::run::plan_request(request, PlanTarget::Sandbox)?;
        if plan.network != NetworkPolicy::Full {
            return Ok(plan);
        }
        let resolv_conf = match &self.network {
            Ok(network) => network.resolv_conf.clone(),
            Err(reason) => Err(reason.clone()),
        }
        .map_err(|reason| ExecutorError::Setup {
            stage: "giving the sandbox network full".to_owned(),
            reason,
        })?;
        for mount in plan
            .sandbox
            .iter_mut()
            .flat_map(|layout| &mut layout.mounts)
        {
            if let conductor_types::Mount::ReadOnlyBind { source, target, .. } = mount {
                if target.as_path() == Path::new("/etc/resolv.conf") {
                    source.clone_from(&resolv_conf);
                }
            }
        }
        Ok(plan)
    }

    /// The warm pool for executions like `plan` on `rootfs`, made on first use.
    fn pool(&self, plan: &ExecPlan, rootfs: Option<&Path>) -> Arc<WarmPool> {
        let full = plan.network == NetworkPolicy::Full;
        let key = (full, rootfs.map(Path::to_owned));
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = pools.entry(key).or_insert_with(|| {
            let template = self.template(plan);
            Arc::new(WarmPool::new(
                self.config.helper_path.clone(),
                self.cgroups.as_ref().ok().cloned(),
                HelperMode::Namespaces {
                    new_network: true,
                    uid_base: self.config.uid_base,
                },
                template,
                self.config.warm_helpers,
            ))
        });
        Arc::clone(pool)
    }

    /// The root a warm helper can build ahead of time for executions like `plan`.
    fn template(&self, plan: &ExecPlan) -> Option<RootTemplate> {
        if !self.prebuild {
            return None;
        }
        let (mounts, workspace) = PrebuiltRoot::template(plan.sandbox.as_ref()?)?;
        Some(RootTemplate {
            run_dir: self.config.run_dir.clone(),
            mounts,
            workspace,
            home: Some(ExecutionRequest::SANDBOX_HOME.into()),
        })
    }

    /// Why cgroups are not used, when they are not.
    pub fn cgroups_unavailable(&self) -> Option<&str> {
        self.cgroups.as_ref().err().map(String::as_str)
    }

    async fn run(
        &self,
        request: &ExecutionRequest,
        plan: &ExecPlan,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        let registration = self.registry.register(&request.id)?;
        let limits = CgroupLimits {
            cpus: plan.limits.cpus,
            memory: plan.limits.memory,
            pids: plan.limits.pids,
        };
        let manager = self.cgroups.as_ref().ok().cloned();
        let wanted = Prelude::for_plan(plan, Vec::new(), self.config.uid_base);
        let started = Instant::now();
        // A warm helper is already running in its cgroup, with its namespaces (and its root);
        // a cold one starts (exec, dynamic linking) while its cgroup is made, and joins it from
        // the prelude.
        let pool = self.pool(plan, request.rootfs.as_deref());
        let fits = match (pool.template(), &plan.sandbox) {
            (Some(template), Some(layout)) => late_mounts_in(
                &template.mounts,
                &template.workspace,
                template.home.as_deref(),
                layout,
            )
            .is_some(),
            (None, _) => true,
            (Some(_), None) => false,
        };
        let warm = fits
            .then(|| pool.take(&wanted.mode))
            .flatten()
            .and_then(|warm| apply_limits(warm, manager.as_deref(), &limits));
        let cold = warm.is_none();
        let Launched {
            mut child,
            channel,
            cgroup,
            root_dir,
            ..
        } = match warm {
            Some(launched) => launched,
            None => Launched::spawn(&self.config.helper_path)?,
        };
        if !self.config.refill_after {
            pool.refill();
        }
        // A prebuilt root's mount point came with the helper; any other execution gets one.
        let mut sandbox = Sandbox {
            root_dir: match root_dir {
                Some(dir) => dir,
                None => {
                    let dir = self.config.run_dir.join(request.id.to_string());
                    if let Err(e) = std::fs::DirBuilder::new().mode(0o755).create(&dir) {
                        child.kill();
                        let _ = child.wait().await;
                        return Err(ExecutorError::io(
                            format!("creating the mount point {}", dir.display()),
                            e,
                        ));
                    }
                    dir
                }
            },
            cgroup: cgroup.map(Arc::new),
        };
        let _ = events
            .send(ExecEvent::Started {
                execution_id: request.id.clone(),
                pid: Some(child.id()),
                at_ms: now_ms(),
            })
            .await;
        let (stdout, stderr) = child
            .take_output()
            .map_err(|e| ExecutorError::io("watching the sandbox helper's output", e))?;
        let output = OutputCapture::start(stdout, stderr, &self.config.spool_dir, request, &events);

        let prelude = if cold {
            let prepared = self.create_cgroup(request, manager, limits).await;
            let procs = match prepared {
                Ok(Some(cgroup)) => {
                    let procs = cgroup.procs_files();
                    sandbox.cgroup = Some(Arc::new(cgroup));
                    procs
                }
                Ok(None) => Vec::new(),
                Err(e) => {
                    // Closing the socket without a prelude makes the helper give up.
                    drop(channel);
                    child.kill();
                    let _ = child.wait().await;
                    let _ = output.finish(OUTPUT_GRACE).await;
                    return Err(e);
                }
            };
            Some(Prelude {
                cgroup_procs: procs,
                ..wanted
            })
        } else {
            None
        };
        let mut spec = SandboxSpec::from_plan(plan, sandbox.root_dir.clone()).map_err(|e| {
            ExecutorError::Setup {
                stage: "preparing the sandbox spec".to_owned(),
                reason: e.to_string(),
            }
        })?;
        // `full`: a veth whose other end the helper moves into the sandbox; removed when this
        // execution ends, however it ends.
        let veth = match &plan.network {
            NetworkPolicy::Full => match self.host_network().await {
                Ok(host) => host.create().await.map(Some).map_err(|e| e.to_string()),
                Err(reason) => Err(reason),
            },
            _ => Ok(None),
        };
        let veth = match veth {
            Ok(veth) => veth,
            Err(e) => {
                drop(channel);
                child.kill();
                let _ = child.wait().await;
                let _ = output.finish(OUTPUT_GRACE).await;
                return Err(ExecutorError::Setup {
                    stage: "giving the sandbox network full".to_owned(),
                    reason: e,
                });
            }
        };
        spec.interface = veth.as_ref().map(|veth| veth.interface.clone());
        self.set_identity(&mut spec, request);
        let spec = spec.to_bytes().map_err(|e| ExecutorError::Setup {
            stage: "encoding the sandbox spec".to_owned(),
            reason: e.to_string(),
        })?;
        let reports = Launched::send_spec(channel, prelude.as_ref(), &spec)?;
        // init listens on the bridged ports before the command starts and passes the listeners
        // out; they close when this execution ends.
        let bridges = (!request.bridges.is_empty())
            .then(|| Bridges::start(request.bridges.clone(), reports.listeners));
        let reports = reports.bytes;

        let helper_pid = child.id();
        let kill = || async {
            if let Ok(pid) = i32::try_from(helper_pid) {
                // The helper is our unreaped child, so the pid is still its own. init has
                // PDEATHSIG=SIGKILL, and the pid namespace dies with init.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            sandbox.kill_all().await;
        };
        let (ending, waited) =
            supervise(child.wait(), plan.timeout, registration.token(), kill).await;
        let duration = started.elapsed();
        let status = waited.map_err(|e| ExecutorError::io("waiting for the sandbox helper", e))?;
        let channel = reports.await.unwrap_or_default();
        let (stdout, stderr) = output.finish(OUTPUT_GRACE).await?;
        let measurements = sandbox.finish();
        drop((veth, bridges));

        let exit = match (ending, outcome(&channel)) {
            (Ending::TimedOut | Ending::Cancelled, _) => ProcessExit::Signal(libc::SIGKILL),
            (Ending::Exited, Outcome::Exited { code, exec_error }) => {
                if let Some(error) = exec_error {
                    tracing::debug!(%error, "the command could not be executed");
                }
                ProcessExit::Code(code)
            }
            (Ending::Exited, Outcome::Signaled { signal }) => ProcessExit::Signal(signal),
            (Ending::Exited, Outcome::SetupFailed { stage, error }) => {
                return Err(ExecutorError::Setup {
                    stage,
                    reason: error,
                })
            }
            (Ending::Exited, Outcome::Lost) => {
                return Err(ExecutorError::Setup {
                    stage: "running the sandbox helper".to_owned(),
                    reason: format!(
                        "the helper {} exited with {status} without reporting the command's \
                         status; its stderr: {:?}",
                        self.config.helper_path.display(),
                        stderr.text.trim()
                    ),
                })
            }
        };
        Ok(Finished {
            execution_id: request.id.clone(),
            executor: NAME,
            isolation_level: IsolationLevel::Container,
            ending,
            exit,
            stdout,
            stderr,
            duration,
            measurements,
        }
        .into_result())
    }

    /// Who the command runs as, which ports init listens on, and (as root) who the helper gives
    /// the workspace and the home to (while init builds the root): the command's user, or the
    /// sandbox's root uid, so it can write them.
    fn set_identity(&self, spec: &mut SandboxSpec, request: &ExecutionRequest) {
        spec.user = request.user;
        spec.bridges = request.bridges.iter().map(|bridge| bridge.port).collect();
        if !self.is_root {
            return;
        }
        let uid = self.config.uid_base + request.user.unwrap_or(0);
        spec.owners = std::iter::once(&request.workspace)
            .chain(&request.home)
            .map(|path| WorkspaceOwner {
                path: path.clone(),
                uid,
            })
            .collect();
    }

    /// Creates a cold execution's cgroup with its limits (nothing to do for a warm helper, or
    /// without cgroups).
    async fn create_cgroup(
        &self,
        request: &ExecutionRequest,
        manager: Option<Arc<CgroupManager>>,
        limits: CgroupLimits,
    ) -> Result<Option<Cgroup>, ExecutorError> {
        let Some(manager) = manager else {
            return Ok(None);
        };
        let name = format!("ns-{}", request.id);
        tokio::task::spawn_blocking(move || manager.create(&name, &limits))
            .await
            .map_err(|e| ExecutorError::io("creating the execution's cgroup", io::Error::other(e)))?
            .map(Some)
            .map_err(|e| ExecutorError::Setup {
                stage: "creating the execution's cgroup".to_owned(),
                reason: e.to_string(),
            })
    }
}

#[async_trait]
impl Executor for NamespaceExecutor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn isolation_level(&self) -> IsolationLevel {
        IsolationLevel::Container
    }

    fn capabilities(&self) -> ExecutorCapabilities {
        let mut supported = BTreeSet::from([
            Capability::NetworkNone,
            Capability::ReadOnlyRoot,
            Capability::HostFilesHidden,
            Capability::PidIsolation,
            Capability::UserMapping,
            Capability::HostnameIsolation,
            Capability::Seccomp,
            Capability::KillsProcessTree,
        ]);
        if self.network.is_ok() {
            supported.insert(Capability::NetworkFull);
        }
        supported.extend([Capability::PortBridge, Capability::HomeMount]);
        // Rootless, the sandbox maps one uid (the caller's, as its root): no other user.
        if self.is_root {
            supported.insert(Capability::RunAsUser);
        }
        if let Ok(manager) = &self.cgroups {
            let controllers = manager.controllers();
            let has = |name: &str| controllers.contains(&name);
            let pairs = [
                ("cpu", Capability::CpuLimit),
                ("memory", Capability::MemoryLimit),
                ("pids", Capability::PidsLimit),
                ("memory", Capability::PeakMemoryStats),
            ];
            supported.extend(pairs.iter().filter(|(c, _)| has(c)).map(|(_, cap)| *cap));
            if has("cpuacct") || has("cpu") {
                supported.insert(Capability::CpuTimeStats);
            }
            if has("blkio") || has("io") {
                supported.insert(Capability::DiskIoStats);
            }
        }
        ExecutorCapabilities {
            isolation_level: IsolationLevel::Container,
            platform: std::env::consts::OS.to_owned(),
            supported,
        }
    }

    async fn health_check(&self) -> Result<(), ExecutorError> {
        check_helper(&self.config.helper_path)?;
        check_user_namespaces()?;
        match &self.cgroups {
            Err(reason) if self.is_root => Err(ExecutorError::Unavailable {
                executor: NAME,
                reason: format!("cgroups are not usable: {reason}"),
            }),
            _ => Ok(()),
        }
    }

    /// Sets `full`'s host side up (where it can be given), and starts the warm helpers in the
    /// background.
    async fn warmup(&self) -> Result<(), ExecutorError> {
        if self.network.is_ok() {
            // A failure is logged, and a `full` execution says it.
            let _ = self.host_network().await;
        }
        let pools: Vec<Arc<WarmPool>> = self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for pool in pools {
            pool.refill();
        }
        Ok(())
    }

    async fn execute(
        &self,
        request: ExecutionRequest,
        events: EventSender,
    ) -> Result<ExecutionResult, ExecutorError> {
        let limits = &request.limits;
        let wants_cgroup =
            limits.cpus.is_some() || limits.memory.is_some() || limits.pids.is_some();
        if let (Err(reason), true) = (&self.cgroups, wants_cgroup) {
            return Err(ExecutorError::Unavailable {
                executor: NAME,
                reason: format!(
                    "cpu, memory and pids limits need cgroups, which this process cannot use \
                     ({reason}); run as root or under a delegated cgroup, or drop the limits"
                ),
            });
        }
        if let (NetworkPolicy::Full, Err(reason)) = (&request.network, &self.network) {
            return Err(ExecutorError::Unsupported {
                executor: NAME,
                what: format!("network policy full here ({reason})"),
            });
        }
        check_supported(&request, NAME, &self.capabilities())?;
        if let Some(user) = request.user.filter(|user| *user >= MAPPED_IDS) {
            return Err(ExecutorError::Unsupported {
                executor: NAME,
                what: format!(
                    "user {user} (the sandbox maps uids 0 to {})",
                    MAPPED_IDS - 1
                ),
            });
        }
        let plan = self.plan(&request)?;
        let result = self.run(&request, &plan, events).await;
        if self.config.refill_after {
            self.pool(&plan, request.rootfs.as_deref()).refill();
        }
        result
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<bool, ExecutorError> {
        Ok(self.registry.cancel(id))
    }
}

/// The execution's cgroup and root mount point. Dropping it (when `execute` is abandoned
/// half-way) kills what is left and removes both.
#[derive(Debug)]
struct Sandbox {
    root_dir: PathBuf,
    cgroup: Option<Arc<Cgroup>>,
}

impl Sandbox {
    async fn kill_all(&self) {
        let Some(cgroup) = self.cgroup.clone() else {
            return;
        };
        match tokio::task::spawn_blocking(move || cgroup.kill_all()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "killing the sandbox's processes"),
            Err(e) => tracing::warn!(error = %e, "killing the sandbox's processes"),
        }
    }

    /// Reads the cgroup's measurements, removes it and the mount point.
    ///
    /// The stats are a handful of reads of cgroupfs pseudo-files, done inline; the removal
    /// (`kill_all`'s emptiness check and one `rmdir` per hierarchy) runs on the blocking pool
    /// after the result is known. If the runtime shuts down first, the cgroup's `Drop` removes it.
    fn finish(mut self) -> Measurements {
        remove_mount_point(&self.root_dir);
        let Some(cgroup) = self.cgroup.take() else {
            return Measurements::default();
        };
        let stats = cgroup.stats();
        if let Some(cgroup) = Arc::into_inner(cgroup) {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = cgroup.destroy() {
                    tracing::warn!(error = %e, "removing the execution's cgroup");
                }
            });
        }
        match stats {
            Ok(stats) => Measurements {
                cpu_time_us: stats.cpu_time_us,
                peak_memory_bytes: stats.peak_memory_bytes,
                disk_read_bytes: stats.disk_read_bytes,
                disk_write_bytes: stats.disk_write_bytes,
                oom_kills: stats.oom_kills,
            },
            Err(e) => {
                tracing::warn!(error = %e, "reading the execution's cgroup stats");
                Measurements::default()
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        remove_mount_point(&self.root_dir);
        if let Some(cgroup) = self.cgroup.take().and_then(Arc::into_inner) {
            if let Err(e) = cgroup.destroy() {
                tracing::warn!(error = %e, "removing an abandoned execution's cgroup");
            }
        }
    }
}

/// The mount point is an empty directory on the host: the sandbox's tmpfs was mounted on it
/// only inside the sandbox's own mount namespace.
fn remove_mount_point(dir: &Path) {
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "removing the sandbox mount point");
        }
    }
}

fn check_helper(helper: &Path) -> Result<(), ExecutorError> {
    match std::fs::metadata(helper) {
        Ok(meta) if meta.is_file() && meta.mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(ExecutorError::Unavailable {
            executor: NAME,
            reason: format!(
                "the sandbox helper {} is not an executable file (set helper_path to the \
                 conductor binary)",
                helper.display()
            ),
        }),
        Err(e) => Err(ExecutorError::Unavailable {
            executor: NAME,
            reason: format!(
                "the sandbox helper {} cannot be used: {e} (set helper_path to the conductor \
                 binary)",
                helper.display()
            ),
        }),
    }
}

fn check_user_namespaces() -> Result<(), ExecutorError> {
    let path = "/proc/sys/user/max_user_namespaces";
    let max = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match max {
        Some(0) => Err(ExecutorError::Unavailable {
            executor: NAME,
            reason: format!("user namespaces are disabled ({path} is 0; raise it with sysctl)"),
        }),
        Some(_) => Ok(()),
        None => Err(ExecutorError::Unavailable {
            executor: NAME,
            reason: format!("user namespaces are not available ({path} is missing)"),
        }),
    }
}

/// What `full` needs, known without touching the host: as root only (a user's namespace cannot
/// route through the host, and a user-mode stack such as slirp4netns would still reach the
/// host's own addresses), with `ip` and `iptables`.
fn full_network(is_root: bool, range: FullNetworkRange) -> Result<FullNetwork, String> {
    if !is_root {
        return Err(
            "network full needs root (a veth and NAT on the host); rootless, a \
                    user-mode stack could not keep the host's own addresses out"
                .to_owned(),
        );
    }
    net::check_tools().map_err(|e| e.to_string())?;
    Ok(FullNetwork {
        range,
        host: tokio::sync::OnceCell::new(),
        resolv_conf: net::sandbox_resolv_conf().map_err(|e| e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rootless, a user-mode stack (slirp4netns, pasta) would still reach the host's own
    /// addresses: `full` is refused with the reason rather than given half-way.
    #[test]
    fn rootless_full_is_refused_with_the_reason() {
        let refused = full_network(false, FullNetworkRange::default()).unwrap_err();
        assert_eq!(
            refused,
            "network full needs root (a veth and NAT on the host); rootless, a user-mode stack \
             could not keep the host's own addresses out"
        );
    }
}
