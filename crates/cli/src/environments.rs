//! The environments `conductor serve` offers, each with the executor that runs its tasks.
//!
//! `host` (the host's filesystem view) runs on the host or the namespace executor. Every built
//! environment under `$CONDUCTOR_HOME/envs` runs on its configured executor: the namespace
//! executor in its root filesystem (one executor shared by all, so they share warm helpers), or
//! Docker or Podman with its image (imported on first use). Container executors connect on first
//! use ([`Deferred`]), so a daemon that is down makes those tasks fail with a clear error and
//! `/health` degraded instead of keeping the server from starting; a configured fallback runs
//! them meanwhile ([`Fallback`]).
//!
//! [`EnvPort`] (`port.rs`) is the server's port to environments beyond these: defined in a
//! request, or built after the server started.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use conductor_core::{Executor, ExecutorError, DEFAULT_ENVIRONMENT};
use conductor_envs::{BuildConfig, Builder, BuiltEnv, EnvSpec, EnvStore, INLINE_PREFIX};
use conductor_executors::container::{
    self, ContainerConfig, ContainerExecutor, Engine, EngineKind,
};
use conductor_executors::environment::{Deferred, Fallback, InRootfs, Unavailable};
use conductor_executors::host::{HostConfig, HostExecutor};
use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
use conductor_server::config::{Config, EnvironmentConfig};
use conductor_types::ExecutorKind;

mod port;

pub use port::EnvPort;

/// Where executors put their cgroups, spooled output and warm containers.
#[derive(Debug, Clone)]
pub struct Placement {
    /// `$CONDUCTOR_HOME`.
    pub home: PathBuf,
    /// The cgroup every execution of this server run goes under.
    pub cgroup_parent: String,
    /// Warm helpers of the local executors.
    pub warm_helpers: usize,
    /// Where the namespace executor's network `full` sandboxes take their addresses.
    pub full_network_range: conductor_types::FullNetworkRange,
}

/// The service images of one engine, found (and imported) once for all its environments.
type ServiceImages = Arc<tokio::sync::OnceCell<BTreeMap<String, String>>>;

/// A container environment's warm pool: idle containers kept started, and executions each
/// serves, reset in between (0: one each).
#[derive(Debug, Clone, Copy, Default)]
struct Warm {
    pool: usize,
    reuse: u32,
}

/// Makes each executor once, whichever environments share it.
struct Factory {
    placement: Placement,
    /// `<home>/envs`: environments and service images.
    store: EnvStore,
    host: Option<Arc<dyn Executor>>,
    namespace: Option<Result<Arc<dyn Executor>, String>>,
    engines: BTreeMap<(&'static str, String), Arc<dyn Executor>>,
    service_images: BTreeMap<&'static str, ServiceImages>,
}

impl Factory {
    fn spool_dir(&self) -> PathBuf {
        self.placement
            .home
            .join(conductor_server::hostdirs::SPOOL_DIR)
    }

    fn host(&mut self) -> Arc<dyn Executor> {
        // A warm helper per agent, as the namespace executor gets: each running task takes one.
        let config = HostConfig {
            cgroup_parent: self.placement.cgroup_parent.clone(),
            spool_dir: self.spool_dir(),
            warm_helpers: self.placement.warm_helpers.max(1),
            helper_path: crate::helper::helper_path(),
            ..HostConfig::default()
        };
        Arc::clone(
            self.host
                .get_or_insert_with(|| Arc::new(HostExecutor::new(config))),
        )
    }

    /// The namespace executor, or why it cannot run here.
    async fn namespace(&mut self) -> Result<Arc<dyn Executor>, String> {
        if let Some(made) = &self.namespace {
            return made.clone();
        }
        let config = NamespaceConfig {
            cgroup_parent: self.placement.cgroup_parent.clone(),
            spool_dir: self.spool_dir(),
            warm_helpers: self.placement.warm_helpers.max(1),
            helper_path: crate::helper::helper_path(),
            full_network: self.placement.full_network_range,
            ..NamespaceConfig::default()
        };
        let made = async {
            let executor: Arc<dyn Executor> =
                Arc::new(NamespaceExecutor::new(config).map_err(|e| e.to_string())?);
            executor.health_check().await.map_err(|e| e.to_string())?;
            Ok(executor)
        }
        .await;
        self.namespace = Some(made.clone());
        made
    }

    /// A container executor of `spec`'s build on `kind`, connected (and the build imported)
    /// on first use: the build need not exist yet.
    fn container(&mut self, kind: EngineKind, spec: &EnvSpec, warm: Warm) -> Arc<dyn Executor> {
        let key = (
            kind.name(),
            format!("{}:{}", spec.name, spec.content_hash()),
        );
        if let Some(executor) = self.engines.get(&key) {
            return Arc::clone(executor);
        }
        let mut config = ContainerConfig::new(kind, spec.image_tag());
        config
            .cgroup_parent
            .clone_from(&self.placement.cgroup_parent);
        config.spool_dir = self.spool_dir();
        config.warm_pool = warm.pool;
        config.warm_reuse = warm.reuse;
        config.pool_dir = config.pool_dir.join(&spec.name);
        let capabilities = container::capabilities(&config);
        let spec = spec.clone();
        let store = self.store.clone();
        let services = Arc::clone(self.service_images.entry(kind.name()).or_default());
        let connect: conductor_executors::environment::Connect = Box::new(move || {
            let (config, spec) = (config.clone(), spec.clone());
            let (store, services) = (store.clone(), Arc::clone(&services));
            Box::pin(async move {
                let unavailable = |e: anyhow::Error| ExecutorError::Unavailable {
                    executor: kind.name(),
                    reason: format!("{e:#}"),
                };
                let built = store
                    .built(&spec)
                    .map_err(|e| unavailable(e.into()))?
                    .ok_or_else(|| {
                        unavailable(anyhow::anyhow!(
                            "environment {} ({}) is not built",
                            spec.name,
                            spec.content_hash()
                        ))
                    })?;
                let engine = Engine::connect(kind, &config.socket)
                    .await
                    .map_err(|e| unavailable(e.into()))?;
                crate::env::ensure_image(&engine, &built)
                    .await
                    .map_err(unavailable)?;
                let mut config = config;
                config.services.images = services
                    .get_or_try_init(|| crate::env::service_images(&engine, &store))
                    .await
                    .map_err(unavailable)?
                    .clone();
                let executor = ContainerExecutor::with_engine(config, engine)?;
                Ok(Arc::new(executor) as Arc<dyn Executor>)
            })
        });
        let executor: Arc<dyn Executor> =
            Arc::new(Deferred::new(kind.name(), capabilities, connect));
        self.engines.insert(key, Arc::clone(&executor));
        executor
    }

    /// The executor `kind` for the build of `spec` (which may not exist yet).
    async fn for_spec(
        &mut self,
        kind: ExecutorKind,
        spec: &EnvSpec,
        warm: Warm,
    ) -> Arc<dyn Executor> {
        let rootfs = self
            .store
            .env_dir(&spec.name)
            .join(spec.content_hash())
            .join("rootfs");
        let in_rootfs = |namespace: Arc<dyn Executor>| -> Arc<dyn Executor> {
            Arc::new(InRootfs::new(namespace, rootfs))
        };
        match kind {
            ExecutorKind::Docker => self.container(EngineKind::Docker, spec, warm),
            ExecutorKind::Podman => self.container(EngineKind::Podman, spec, warm),
            ExecutorKind::Namespace | ExecutorKind::Host | ExecutorKind::Auto => {
                match self.namespace().await {
                    Ok(namespace) => in_rootfs(namespace),
                    // Tasks are accepted as for a container executor and each gets the reason.
                    Err(reason) => Arc::new(Unavailable::new(
                        "namespace",
                        container::capabilities(&ContainerConfig::new(EngineKind::Docker, "")),
                        format!(
                            "{reason}; environment {:?} needs a sandbox executor: set [environments.{}] executor = \"docker\" or \"podman\"",
                            spec.name, spec.name
                        ),
                    )),
                }
            }
        }
    }

    /// The executor of `spec`'s build as `settings` say, with its fallback.
    async fn configured(
        &mut self,
        settings: &EnvironmentConfig,
        spec: &EnvSpec,
    ) -> Arc<dyn Executor> {
        let executor = self
            .for_spec(
                settings.executor,
                spec,
                Warm {
                    pool: settings.warm_pool,
                    reuse: settings.warm_reuse,
                },
            )
            .await;
        match settings.fallback {
            Some(fallback) => {
                let secondary = self.for_spec(fallback, spec, Warm::default()).await;
                Arc::new(Fallback::new(executor, secondary))
            }
            None => executor,
        }
    }

    /// The executor of the `host` environment.
    async fn for_host(&mut self, kind: ExecutorKind) -> anyhow::Result<Arc<dyn Executor>> {
        match kind {
            ExecutorKind::Host => Ok(self.host()),
            ExecutorKind::Namespace => self.namespace().await.map_err(|reason| {
                anyhow::anyhow!("the namespace executor (config key executor): {reason}")
            }),
            // The host environment has no image: containers run the other environments.
            ExecutorKind::Auto | ExecutorKind::Docker | ExecutorKind::Podman => {
                match self.namespace().await {
                    Ok(executor) => Ok(executor),
                    Err(reason) => {
                        eprintln!(
                            "conductor: warning: {reason}; tasks of the host environment run on the host with process isolation only (set executor = \"host\" to silence this)"
                        );
                        Ok(self.host())
                    }
                }
            }
        }
    }
}

/// The executor of every environment: `host` and each built one; and the port through which
/// the server finds and builds the others.
pub async fn executors(
    config: &Config,
    placement: Placement,
) -> anyhow::Result<(BTreeMap<String, Arc<dyn Executor>>, Arc<EnvPort>)> {
    let mut factory = Factory {
        store: EnvStore::new(conductor_envs::envs_dir(&placement.home)),
        placement,
        host: None,
        namespace: None,
        engines: BTreeMap::new(),
        service_images: BTreeMap::new(),
    };
    let mut executors = BTreeMap::new();
    let host = config.environment(DEFAULT_ENVIRONMENT);
    let mut executor = factory.for_host(host.executor).await?;
    if let Some(fallback) = host.fallback {
        let secondary = match fallback {
            ExecutorKind::Host => factory.host(),
            ExecutorKind::Namespace => factory
                .namespace()
                .await
                .map_err(|reason| anyhow::anyhow!("the fallback namespace executor: {reason}"))?,
            other => anyhow::bail!(
                "[environments.host] fallback = {:?}: the host environment has no image; its fallback is \"host\" or \"namespace\"",
                other.as_str()
            ),
        };
        executor = Arc::new(Fallback::new(executor, secondary));
    }
    executors.insert(DEFAULT_ENVIRONMENT.to_owned(), executor);

    // Builds of request-defined environments are found on demand (`EnvPort`), not listed.
    for built in built_envs(&factory.store)
        .into_iter()
        .filter(|built| !built.manifest.name.starts_with(INLINE_PREFIX))
    {
        let name = built.manifest.name.clone();
        let executor = factory
            .configured(&config.environment(&name), &built.manifest.spec)
            .await;
        executors.insert(name, executor);
    }
    let port = EnvPort {
        config: config.clone(),
        builder: Builder::new(factory.store.clone(), BuildConfig::default()),
        factory: tokio::sync::Mutex::new(factory),
    };
    Ok((executors, Arc::new(port)))
}

/// The latest build of every environment's current spec. One whose spec cannot be read is left
/// out with a warning (`EnvStore::list` would fail as a whole): it must not keep the server, and
/// the other environments, from starting.
fn built_envs(store: &EnvStore) -> Vec<BuiltEnv> {
    let mut built = Vec::new();
    for name in store.names() {
        if name == DEFAULT_ENVIRONMENT {
            continue;
        }
        match store.resolve(&name).and_then(|spec| store.built(&spec)) {
            Ok(Some(env)) => built.push(env),
            Ok(None) => {}
            Err(error) => {
                eprintln!("conductor: warning: environment {name} is left out: {error:#}")
            }
        }
    }
    built
}
