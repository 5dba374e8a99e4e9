//! Service sidecars for the container executors ([`ContainerServices`], the
//! `conductor_core::ServiceRunner` of docker and podman).
//!
//! A task's services run on a network of their own, `conductor-task-<owner>`, created
//! `internal` (no route out, no NAT), one container per service named
//! `conductor-task-<owner>-<service>` with the service's name as network alias. The task's
//! containers join that network (`ExecutionRequest::service_network`) instead of network `none`
//! and find the services through `/etc/hosts` lines (`extra_hosts`, read from the network when
//! the task container is created): Docker's embedded DNS would resolve the aliases, but Podman's
//! CNI networks here have no DNS plugin, and one mechanism for both is simpler to trust.
//!
//! Service containers are hardened like task containers where the service allows: read-only
//! root with tmpfs where it writes, `no-new-privileges`, the task containers' seccomp profile,
//! every capability dropped (each runs as its own unprivileged user, so it needs none), a pids
//! and a memory limit, the engine's init as pid 1. On Docker the network's bridge has no host
//! address (see [`network_body`]). [`ContainerServices::start`] returns once every service's health command
//! (run with the exec API, every [`HEALTH_POLL`]) succeeds, or fails with the service's last
//! log lines. Everything made is removed by a guard on every failure path (and by
//! [`ContainerServices::stop`]); containers of a dead process are swept with the task
//! containers (label `io.conductor.owner`), its networks by [`sweep_networks`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListNetworksOptions, LogsOptionsBuilder,
};
use conductor_core::{ExecutorError, PlanError, RunningService, ServiceRunner, ServiceSet};
use conductor_envs::{ResolvedService, ServiceSpec};
use futures_util::StreamExt;

use super::guard::remove_container;
use super::spec::LABEL_OWNER;
use super::{Engine, EngineKind, SeccompOption};

/// Label on a service container and its network: the owner (task id) they were started for.
pub const LABEL_SERVICE_OWNER: &str = "io.conductor.service-owner";
/// Label on a service container: the network it serves.
pub const LABEL_SERVICE_NETWORK: &str = "io.conductor.service-network";
/// Label on a service container: the service's name (its network alias).
pub const LABEL_SERVICE: &str = "io.conductor.service";
/// How often a starting service's health command runs.
pub const HEALTH_POLL: Duration = Duration::from_millis(150);
/// Processes a service container may run (PostgreSQL runs about ten).
const SERVICE_PIDS: i64 = 512;
/// Memory a service container may use.
const SERVICE_MEMORY: i64 = 1 << 30;

/// The services a container executor can start, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicesConfig {
    /// Service name → image (`conductor-service/<name>:<hash>`), as built and imported by
    /// `conductor env build <name>`.
    pub images: BTreeMap<String, String>,
    /// How long a service may take to become healthy.
    pub health_timeout: Duration,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            images: BTreeMap::new(),
            health_timeout: Duration::from_secs(30),
        }
    }
}

/// Starts and stops service sidecars on one engine (see the module docs).
#[derive(Debug)]
pub struct ContainerServices {
    engine: Engine,
    config: ServicesConfig,
    /// The `io.conductor.owner` label of this process (`<pid>:<start time>`).
    process_owner: String,
    /// The task containers' seccomp profile, which the services get too.
    seccomp: Arc<SeccompOption>,
}

impl ContainerServices {
    /// Services on `engine`; `process_owner` labels what they make for the orphan sweep.
    pub(crate) fn new(
        engine: Engine,
        config: ServicesConfig,
        process_owner: String,
        seccomp: Arc<SeccompOption>,
    ) -> Self {
        Self {
            engine,
            config,
            process_owner,
            seccomp,
        }
    }

    fn executor(&self) -> &'static str {
        self.engine.kind().name()
    }

    fn setup(&self, stage: impl Into<String>, reason: impl std::fmt::Display) -> ExecutorError {
        ExecutorError::Setup {
            stage: stage.into(),
            reason: reason.to_string(),
        }
    }

    /// The references resolved, each with its image.
    fn resolve(
        &self,
        services: &[String],
    ) -> Result<Vec<(ResolvedService, String)>, ExecutorError> {
        let resolved = conductor_envs::resolve_services(services)
            .map_err(|e| ExecutorError::InvalidRequest(PlanError::Services(e.to_string())))?;
        resolved
            .into_iter()
            .map(|service| {
                let name = &service.spec.name;
                match self.config.images.get(name) {
                    Some(image) => Ok((service.clone(), image.clone())),
                    None => Err(ExecutorError::Unavailable {
                        executor: self.executor(),
                        reason: format!(
                            "the {name} service image is not built: run `conductor env build {name}`"
                        ),
                    }),
                }
            })
            .collect()
    }

    async fn start_all(
        &self,
        owner: &str,
        resolved: &[(ResolvedService, String)],
        guard: &mut ServiceGuard,
    ) -> Result<ServiceSet, ExecutorError> {
        let network = network_name(owner);
        // Leftovers of an earlier start for the same owner (a crash before its stop).
        remove_set(&self.engine, &network).await;
        let labels = HashMap::from([
            (LABEL_OWNER.to_owned(), self.process_owner.clone()),
            (LABEL_SERVICE_OWNER.to_owned(), owner.to_owned()),
        ]);
        self.engine
            .client()
            .create_network(network_body(&network, labels.clone(), self.engine.kind()))
            .await
            .map_err(|e| self.setup(format!("creating the service network {network}"), e))?;
        guard.network = Some(network.clone());
        self.seccomp.write().await?;
        let mut started = Vec::new();
        for (service, image) in resolved {
            let spec = &service.spec;
            if let Some(tag) = &service.tag {
                tracing::info!(
                    reference = %service.reference,
                    runs = %spec.version,
                    "service tag {tag} is not honoured: no registry is reachable, the local build runs"
                );
            }
            let mut labels = labels.clone();
            labels.insert(LABEL_SERVICE_NETWORK.to_owned(), network.clone());
            labels.insert(LABEL_SERVICE.to_owned(), spec.name.clone());
            let name = container_name(owner, &spec.name);
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            let created = self
                .engine
                .client()
                .create_container(
                    Some(options),
                    service_body(
                        spec,
                        image,
                        &network,
                        labels,
                        (self.engine.kind(), &self.seccomp.value),
                    ),
                )
                .await
                .map_err(|e| {
                    self.setup(format!("creating the {} service container", spec.name), e)
                })?;
            guard.containers.push(created.id.clone());
            self.engine
                .client()
                .start_container(&created.id, None)
                .await
                .map_err(|e| self.setup(format!("starting the {} service", spec.name), e))?;
            started.push((spec, created.id, image));
        }
        let deadline = Instant::now() + self.config.health_timeout;
        let checks = started
            .iter()
            .map(|(spec, id, _)| self.wait_healthy(spec, id, deadline));
        for outcome in futures_util::future::join_all(checks).await {
            outcome?;
        }
        let mut env = BTreeMap::new();
        for (spec, _, _) in &started {
            env.extend(spec.task_env.clone());
        }
        Ok(ServiceSet {
            network,
            services: resolved
                .iter()
                .map(|(service, image)| RunningService {
                    reference: service.reference.clone(),
                    name: service.spec.name.clone(),
                    image: image.clone(),
                })
                .collect(),
            env,
        })
    }

    /// Runs the service's health command until it succeeds; fails at `deadline` or when the
    /// container has stopped, with its last log lines.
    async fn wait_healthy(
        &self,
        spec: &ServiceSpec,
        id: &str,
        deadline: Instant,
    ) -> Result<(), ExecutorError> {
        let began = Instant::now();
        loop {
            match self.exec_status(id, &spec.health, &spec.user).await {
                Ok(Some(0)) => {
                    tracing::info!(
                        service = %spec.name,
                        ms = began.elapsed().as_millis() as u64,
                        "service is healthy"
                    );
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(service = %spec.name, error = %e, "health check"),
            }
            let state = super::api::container_state(self.engine.socket(), id).await;
            let stopped = matches!(&state, Ok(state) if state.has_exited());
            if stopped || Instant::now() >= deadline {
                let why = if stopped {
                    "it exited".to_owned()
                } else {
                    format!(
                        "it is not healthy after {} s (`{}` fails)",
                        self.config.health_timeout.as_secs(),
                        spec.health.join(" ")
                    )
                };
                return Err(self.setup(
                    format!("starting the {} service", spec.name),
                    format!("{why}; its last output:\n{}", self.log_tail(id).await),
                ));
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    /// Runs `cmd` in container `id` as `user` and returns its exit code.
    async fn exec_status(
        &self,
        id: &str,
        cmd: &[String],
        user: &str,
    ) -> Result<Option<i64>, bollard::errors::Error> {
        let docker = self.engine.client();
        let exec = docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    user: Some(user.to_owned()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..CreateExecOptions::default()
                },
            )
            .await?;
        if let StartExecResults::Attached { mut output, .. } =
            docker.start_exec(&exec.id, None).await?
        {
            while output.next().await.is_some() {}
        }
        // The stream ends with the process; the engine may record the exit a moment later.
        for _ in 0..50 {
            let inspected = docker.inspect_exec(&exec.id).await?;
            if inspected.running != Some(true) {
                return Ok(inspected.exit_code);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(None)
    }

    /// The container's last 20 lines of output, for errors.
    async fn log_tail(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("20")
            .build();
        let mut logs = self.engine.client().logs(id, Some(options));
        let mut text = String::new();
        while let Some(Ok(line)) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&line.into_bytes()));
        }
        text.trim_end().to_owned()
    }
}

#[async_trait]
impl ServiceRunner for ContainerServices {
    fn check(&self, services: &[String]) -> Result<(), ExecutorError> {
        self.resolve(services).map(|_| ())
    }

    async fn start(&self, owner: &str, services: &[String]) -> Result<ServiceSet, ExecutorError> {
        let resolved = self.resolve(services)?;
        let mut guard = ServiceGuard {
            engine: self.engine.clone(),
            network: None,
            containers: Vec::new(),
        };
        let began = Instant::now();
        match self.start_all(owner, &resolved, &mut guard).await {
            Ok(set) => {
                guard.disarm();
                tracing::info!(
                    owner,
                    network = %set.network,
                    ms = began.elapsed().as_millis() as u64,
                    "services started and healthy"
                );
                Ok(set)
            }
            Err(e) => {
                guard.finish().await;
                Err(e)
            }
        }
    }

    async fn stop(&self, set: &ServiceSet) {
        remove_set(&self.engine, &set.network).await;
    }
}

/// `conductor-task-<owner>`, the owner reduced to what engines accept in names.
pub fn network_name(owner: &str) -> String {
    let owner: String = owner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("conductor-task-{owner}")
}

/// `conductor-task-<owner>-<service>`.
pub fn container_name(owner: &str, service: &str) -> String {
    format!("{}-{service}", network_name(owner))
}

/// The create body of the service network: internal (no way out), labelled. On Docker the
/// bridge also gets no IPv4 address on the host (`inhibit_ipv4`): `internal` only stops traffic
/// leaving the host, and the host's own services would be reachable at the bridge's address.
/// Podman's internal CNI networks give the host no address on their bridge already.
pub fn network_body(
    name: &str,
    labels: HashMap<String, String>,
    engine: EngineKind,
) -> NetworkCreateRequest {
    let options = match engine {
        EngineKind::Docker => Some(HashMap::from([(
            "com.docker.network.bridge.inhibit_ipv4".to_owned(),
            "true".to_owned(),
        )])),
        EngineKind::Podman => None,
    };
    NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        internal: Some(true),
        labels: Some(labels),
        options,
        ..NetworkCreateRequest::default()
    }
}

/// The create body of a service container (see the module docs for the hardening), with the
/// engine and `seccomp=` option's value in `security` (the task containers' profile).
pub fn service_body(
    spec: &ServiceSpec,
    image: &str,
    network: &str,
    labels: HashMap<String, String>,
    security: (EngineKind, &str),
) -> ContainerCreateBody {
    let tmpfs = spec
        .tmpfs
        .iter()
        .map(|(path, mib)| {
            (
                path.clone(),
                format!("rw,nosuid,nodev,size={}m,mode=1777", mib),
            )
        })
        .collect();
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(spec.command.clone()),
        entrypoint: Some(Vec::new()),
        user: Some(spec.user.clone()),
        hostname: Some(spec.name.clone()),
        env: Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            init: Some(true),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            security_opt: Some(super::spec::security_options(security.0, security.1)),
            cap_drop: Some(vec!["ALL".to_owned()]),
            masked_paths: Some(super::spec::masked_paths()),
            readonly_paths: Some(super::spec::readonly_paths()),
            pids_limit: Some(SERVICE_PIDS),
            memory: Some(SERVICE_MEMORY),
            network_mode: Some(network.to_owned()),
            ..HostConfig::default()
        }),
        networking_config: Some(bollard::models::NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_owned(),
                bollard::models::EndpointSettings {
                    aliases: Some(vec![spec.name.clone()]),
                    ..bollard::models::EndpointSettings::default()
                },
            )])),
        }),
        ..ContainerCreateBody::default()
    }
}

/// `name:ip` lines for the service containers on `network` (from its inspection: container
/// name → IPv4 address with prefix length).
pub fn hosts_of<'a>(
    network: &str,
    containers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let prefix = format!("{network}-");
    let mut hosts: Vec<String> = containers
        .into_iter()
        .filter_map(|(name, address)| {
            let service = name.trim_start_matches('/').strip_prefix(&prefix)?;
            let ip = address.split('/').next().filter(|ip| !ip.is_empty())?;
            Some(format!("{service}:{ip}"))
        })
        .collect();
    hosts.sort();
    hosts
}

/// The `/etc/hosts` lines a task container on `network` needs to find its services.
pub async fn hosts(engine: &Engine, network: &str) -> Result<Vec<String>, ExecutorError> {
    let inspected = engine
        .client()
        .inspect_network(network, None)
        .await
        .map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => ExecutorError::Setup {
                stage: "joining the service network".to_owned(),
                reason: format!(
                    "there is no network {network}: its services were not started or are gone"
                ),
            },
            e => ExecutorError::Setup {
                stage: format!("inspecting the service network {network}"),
                reason: e.to_string(),
            },
        })?;
    let containers = inspected.containers.unwrap_or_default();
    Ok(hosts_of(
        network,
        containers
            .values()
            .filter_map(|c| Some((c.name.as_deref()?, c.ipv4_address.as_deref()?))),
    ))
}

/// Removes the service containers on `network`, then the network; logs what fails.
async fn remove_set(engine: &Engine, network: &str) {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_SERVICE_NETWORK}={network}")],
    )]);
    match engine.list_containers(&filters).await {
        Ok(listed) => {
            let removals = listed.iter().map(|c| remove_container(engine, &c.id));
            futures_util::future::join_all(removals).await;
        }
        Err(e) => tracing::warn!(error = %e, network, "listing service containers"),
    }
    remove_network(engine, network).await;
}

/// Removes `network` (gone already counts), retrying while the engine still sees endpoints.
async fn remove_network(engine: &Engine, network: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(20);
    loop {
        match engine.client().remove_network(network).await {
            Ok(()) => return true,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return true,
            Err(e) if Instant::now() >= deadline => {
                tracing::warn!(error = %e, network, "removing the service network");
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, network, "removing the service network; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Removes service networks whose owning process is dead (`alive` decides from the
/// `io.conductor.owner` label); their containers are swept with the task containers first.
pub async fn sweep_networks(engine: &Engine, alive: impl Fn(&str) -> bool) -> usize {
    let filters = HashMap::from([("label".to_owned(), vec![LABEL_SERVICE_OWNER.to_owned()])]);
    let options = ListNetworksOptions {
        filters: Some(filters),
    };
    let networks = match engine.client().list_networks(Some(options)).await {
        Ok(networks) => networks,
        Err(e) => {
            tracing::warn!(error = %e, "listing service networks");
            return 0;
        }
    };
    let mut removed = 0;
    for network in networks {
        let labels = network.labels.unwrap_or_default();
        let (Some(name), Some(owner)) = (network.name, labels.get(LABEL_OWNER)) else {
            continue;
        };
        if !labels.contains_key(LABEL_SERVICE_OWNER) || alive(owner) {
            continue;
        }
        tracing::info!(network = %name, %owner, "removing a service network left by a dead process");
        remove_set(engine, &name).await;
        removed += 1;
    }
    removed
}

/// Removes what a failed start made: explicitly ([`ServiceGuard::finish`]) or from `Drop` when
/// the start was abandoned (its future dropped) or panicked.
#[derive(Debug)]
struct ServiceGuard {
    engine: Engine,
    network: Option<String>,
    containers: Vec<String>,
}

impl ServiceGuard {
    /// The set is handed over: `stop` removes it from now on.
    fn disarm(&mut self) {
        self.network = None;
        self.containers.clear();
    }

    async fn finish(mut self) {
        let containers = std::mem::take(&mut self.containers);
        let network = self.network.take();
        remove_all(&self.engine, containers, network).await;
    }
}

async fn remove_all(engine: &Engine, containers: Vec<String>, network: Option<String>) {
    futures_util::future::join_all(containers.iter().map(|id| remove_container(engine, id))).await;
    if let Some(network) = network {
        remove_set(engine, &network).await;
    }
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let containers = std::mem::take(&mut self.containers);
        let network = self.network.take();
        if containers.is_empty() && network.is_none() {
            return;
        }
        let engine = self.engine.clone();
        // As `ContainerGuard`: Drop may run inside the runtime or while panicking.
        let spawned = std::thread::Builder::new()
            .name("conductor-service-guard".to_owned())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(remove_all(&engine, containers, network)),
                    Err(e) => tracing::warn!(error = %e, "cannot remove abandoned services"),
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread removing abandoned services");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_the_owner() {
        assert_eq!(network_name("t_0123abcd"), "conductor-task-t_0123abcd");
        assert_eq!(network_name("a b/c:d"), "conductor-task-a-b-c-d");
        assert_eq!(
            container_name("t_1", "postgres"),
            "conductor-task-t_1-postgres"
        );
    }

    #[test]
    fn hosts_come_from_the_service_containers_on_the_network() {
        let hosts = hosts_of(
            "conductor-task-t1",
            [
                ("conductor-task-t1-redis", "10.89.0.3/24"),
                ("/conductor-task-t1-postgres", "172.18.0.2/16"),
                ("conductor-abc", "10.89.0.4/24"),
                ("conductor-task-t1-broken", ""),
            ],
        );
        assert_eq!(hosts, ["postgres:172.18.0.2", "redis:10.89.0.3"]);
    }

    #[test]
    fn service_containers_are_hardened_on_their_network() {
        let spec = conductor_envs::service("redis").unwrap();
        let labels = HashMap::from([(LABEL_SERVICE.to_owned(), "redis".to_owned())]);
        let body = service_body(
            &spec,
            "conductor-service/redis:abc",
            "conductor-task-t1",
            labels,
            (EngineKind::Docker, "/p.json"),
        );
        let host = body.host_config.clone().unwrap();
        assert_eq!(body.user.as_deref(), Some("redis"));
        assert_eq!(body.cmd.as_ref(), Some(&spec.command));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, None);
        assert_eq!(
            host.security_opt,
            Some(vec![
                "no-new-privileges".to_owned(),
                "seccomp=/p.json".to_owned()
            ])
        );
        assert_eq!(host.network_mode.as_deref(), Some("conductor-task-t1"));
        assert_eq!(host.pids_limit, Some(SERVICE_PIDS));
        assert_eq!(
            host.tmpfs,
            Some(HashMap::from([(
                "/tmp".to_owned(),
                "rw,nosuid,nodev,size=64m,mode=1777".to_owned()
            )]))
        );
        let aliases = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .and_then(|mut e| e.remove("conductor-task-t1"))
            .and_then(|e| e.aliases);
        assert_eq!(aliases, Some(vec!["redis".to_owned()]));
        let network = network_body("conductor-task-t1", HashMap::new(), EngineKind::Docker);
        assert_eq!(network.internal, Some(true));
        let options = network.options.unwrap_or_default();
        assert_eq!(
            options
                .get("com.docker.network.bridge.inhibit_ipv4")
                .map(String::as_str),
            Some("true")
        );
        let podman = network_body("conductor-task-t1", HashMap::new(), EngineKind::Podman);
        assert_eq!(podman.options, None);
    }
}
