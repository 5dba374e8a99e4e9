//! Picks the executor for `conductor exec`: the one asked for, or with `auto` the namespace
//! executor where this machine can run it and the host executor otherwise. Docker and Podman
//! run an environment's image, imported on first use.

use std::ffi::OsStr;
use std::sync::Arc;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use conductor_core::Executor;
use conductor_envs::BuiltEnv;
use conductor_executors::container::{ContainerConfig, ContainerExecutor, Engine, EngineKind};
use conductor_executors::host::{HostConfig, HostExecutor};
use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
use conductor_types::{ExecutorKind, NetworkPolicy};

/// The `--executor` flag's values, with a line of help each: parses into the one
/// [`ExecutorKind`] of `conductor-types` (which does not depend on clap).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutorKindParser;

impl ExecutorKindParser {
    fn help(kind: ExecutorKind) -> &'static str {
        match kind {
            ExecutorKind::Auto => {
                "The namespace executor where it works here, else the host executor (with a warning)"
            }
            ExecutorKind::Host => {
                "Directly on the host: own session and cgroup, host filesystem and network"
            }
            ExecutorKind::Namespace => {
                "Linux namespaces: own root filesystem, network, pids, hostname, user mapping, seccomp"
            }
            ExecutorKind::Docker => {
                "A Docker container of the environment's image (Docker Engine API on /run/docker.sock)"
            }
            ExecutorKind::Podman => {
                "A Podman container of the environment's image (Podman's API on /run/podman/podman.sock)"
            }
        }
    }

    fn values() -> impl Iterator<Item = PossibleValue> {
        ExecutorKind::ALL
            .into_iter()
            .map(|kind| PossibleValue::new(kind.as_str()).help(Self::help(kind)))
    }
}

impl TypedValueParser for ExecutorKindParser {
    type Value = ExecutorKind;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<ExecutorKind, clap::Error> {
        let name = PossibleValuesParser::new(Self::values()).parse_ref(cmd, arg, value)?;
        name.parse()
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, e))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(Self::values()))
    }
}

/// The container engine `kind` runs on, if any.
pub fn engine(kind: ExecutorKind) -> Option<EngineKind> {
    match kind {
        ExecutorKind::Docker => Some(EngineKind::Docker),
        ExecutorKind::Podman => Some(EngineKind::Podman),
        ExecutorKind::Auto | ExecutorKind::Host | ExecutorKind::Namespace => None,
    }
}

/// The executor to use and the network policy when `--network` is not given.
#[derive(Debug)]
pub struct Chosen {
    /// The executor.
    pub executor: Arc<dyn Executor>,
    /// `none` for sandboxes, `host` for the host executor (which cannot enforce anything else).
    pub default_network: NetworkPolicy,
}

/// Resolves `choice`. `network_given` says whether `--network` was passed (the fallback warning
/// then does not claim a default).
/// `environment` is the built environment a container executor runs (required for them).
pub async fn choose(
    choice: ExecutorKind,
    network_given: bool,
    environment: Option<&BuiltEnv>,
) -> anyhow::Result<Chosen> {
    match choice {
        ExecutorKind::Docker | ExecutorKind::Podman => {
            let kind = engine(choice).ok_or_else(|| anyhow::anyhow!("not a container engine"))?;
            let environment = environment.ok_or_else(|| {
                anyhow::anyhow!("the {} executor needs --environment", kind.name())
            })?;
            let engine = Engine::connect(kind, &kind.default_socket()).await?;
            let image = crate::env::ensure_image(&engine, environment).await?;
            let executor =
                ContainerExecutor::with_engine(ContainerConfig::new(kind, image), engine)?;
            executor.warmup().await?;
            Ok(Chosen {
                executor: Arc::new(executor),
                default_network: NetworkPolicy::None,
            })
        }
        ExecutorKind::Host => Ok(host(0)),
        ExecutorKind::Namespace => {
            let executor = namespace(0)?;
            executor.health_check().await?;
            Ok(Chosen {
                executor,
                default_network: NetworkPolicy::None,
            })
        }
        ExecutorKind::Auto => {
            let reason = match namespace(0) {
                Ok(executor) => match executor.health_check().await {
                    Ok(()) => {
                        return Ok(Chosen {
                            executor,
                            default_network: NetworkPolicy::None,
                        })
                    }
                    Err(e) => e.to_string(),
                },
                Err(e) => format!("{e:#}"),
            };
            eprintln!("{}", fallback_warning(&reason, network_given));
            Ok(host(0))
        }
    }
}

/// What `auto` says when it falls back to the host executor because of `reason`.
pub fn fallback_warning(reason: &str, network_given: bool) -> String {
    let network = if network_given {
        ""
    } else {
        ", and the network is the host's"
    };
    format!(
        "conductor: warning: {reason}; running on the host with process isolation only{network}"
    )
}

/// The host executor with `warm_helpers` kept ready (0 for one execution: a warm helper would
/// only be started to be killed).
pub fn host(warm_helpers: usize) -> Chosen {
    let config = HostConfig {
        warm_helpers,
        helper_path: crate::helper::helper_path(),
        ..HostConfig::default()
    };
    Chosen {
        executor: Arc::new(HostExecutor::new(config)),
        default_network: NetworkPolicy::Host,
    }
}

/// The namespace executor with `warm_helpers` kept ready per kind of execution (started after
/// an execution ends, not during it: the resident runs one at a time).
pub fn namespace(warm_helpers: usize) -> anyhow::Result<Arc<dyn Executor>> {
    let config = NamespaceConfig {
        warm_helpers,
        refill_after: true,
        helper_path: crate::helper::helper_path(),
        ..NamespaceConfig::default()
    };
    Ok(Arc::new(NamespaceExecutor::new(config)?))
}
