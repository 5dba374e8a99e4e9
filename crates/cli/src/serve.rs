//! `conductor serve`: the orchestrator on embedded defaults (SQLite and workspaces under
//! `$CONDUCTOR_HOME`; the namespace executor where it works, else the host executor), until
//! SIGINT or SIGTERM. Settings come from the config file, `CONDUCTOR_*` variables and these flags
//! (see `conductor config show`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use conductor_core::{Executor, DEFAULT_ENVIRONMENT};
use conductor_executors::host::{HostConfig, HostExecutor};
use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
use conductor_server::config::ExecutorKind;
use conductor_server::RawConfig;

use crate::config::ConfigSource;
use crate::sweep::{ServerCgroups, CGROUP_ROOT};

/// Flags of `conductor serve`; each overrides the config file and environment.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// Address to listen on (default 127.0.0.1:8081; env CONDUCTOR_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Execution slots (default 2; env CONDUCTOR_AGENTS).
    #[arg(long)]
    agents: Option<u16>,
    /// Most tasks running at once (default: agents; env CONDUCTOR_CONCURRENCY).
    #[arg(long)]
    concurrency: Option<u16>,
    /// Time running tasks get to finish at shutdown (default 10s; env CONDUCTOR_GRACE).
    #[arg(long)]
    grace: Option<String>,
    /// What runs tasks: auto (the namespace executor where it works here, else the host
    /// executor), host or namespace (default auto; env CONDUCTOR_EXECUTOR).
    #[arg(long, value_parser = ["auto", "host", "namespace"])]
    executor: Option<String>,
}

/// Runs the server until a signal; returns the exit code.
pub fn main(args: ServeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return crate::fail(&anyhow::Error::new(e).context("starting the runtime")),
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => crate::fail(&error),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let flags = RawConfig {
        listen: args.listen,
        agents: args.agents,
        concurrency: args.concurrency,
        grace: args.grace,
        executor: args.executor,
        ..RawConfig::default()
    };
    let mut config = args.source.load(flags)?;
    let cgroups = ServerCgroups::new(Path::new(CGROUP_ROOT), &config.home);
    let executor = executor(
        config.executor,
        &config.home,
        &cgroups.run_parent(),
        config.serve.scheduler.agents,
    )
    .await?;
    tracing::info!(executor = executor.name(), "tasks run on this executor");
    let executors: BTreeMap<String, Arc<dyn Executor>> =
        BTreeMap::from([(DEFAULT_ENVIRONMENT.to_owned(), executor)]);
    let cgroups = Arc::new(cgroups);
    config.serve.sweep = Some(Arc::clone(&cgroups) as Arc<dyn conductor_server::Sweep>);
    let served = conductor_server::serve(config.serve, executors, shutdown_signal()).await;
    // The server and its executors are gone: nothing runs in this run's cgroups any more.
    cgroups.remove_run();
    served.context("conductor serve")
}

/// The executor of the `host` environment (the host's filesystem view): `kind`, with `auto`
/// falling back to the host executor with a warning where namespaces do not work. Execution
/// cgroups go under `cgroup_parent`, spooled output under `<home>/logs`. The namespace executor
/// keeps one started helper per agent, so back-to-back tasks do not wait for a cold start.
async fn executor(
    kind: ExecutorKind,
    home: &Path,
    cgroup_parent: &str,
    agents: usize,
) -> anyhow::Result<Arc<dyn Executor>> {
    let spool_dir = home.join("logs");
    let host = || -> Arc<dyn Executor> {
        Arc::new(HostExecutor::new(HostConfig {
            cgroup_parent: cgroup_parent.to_owned(),
            spool_dir: spool_dir.clone(),
            ..HostConfig::default()
        }))
    };
    let namespace = || async {
        let executor: Arc<dyn Executor> = Arc::new(NamespaceExecutor::new(NamespaceConfig {
            cgroup_parent: cgroup_parent.to_owned(),
            spool_dir: spool_dir.clone(),
            warm_helpers: agents.max(1),
            ..NamespaceConfig::default()
        })?);
        executor.health_check().await?;
        anyhow::Ok(executor)
    };
    match kind {
        ExecutorKind::Host => Ok(host()),
        ExecutorKind::Namespace => namespace()
            .await
            .context("the namespace executor (config key executor)"),
        ExecutorKind::Auto => match namespace().await {
            Ok(executor) => Ok(executor),
            Err(error) => {
                eprintln!(
                    "conductor: warning: {error:#}; tasks run on the host with process isolation only (set executor = \"host\" to silence this)"
                );
                Ok(host())
            }
        },
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
