//! `conductor serve`: the orchestrator on embedded defaults (SQLite and workspaces under
//! `$CONDUCTOR_HOME`, the host executor), until SIGINT or SIGTERM. Settings come from the config
//! file, `CONDUCTOR_*` variables and these flags (see `conductor config show`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use conductor_core::Executor;
use conductor_executors::host::{HostConfig, HostExecutor};
use conductor_server::RawConfig;

use crate::config::ConfigSource;

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
        ..RawConfig::default()
    };
    let config = args.source.load(flags)?;
    let host = HostExecutor::new(HostConfig {
        spool_dir: config.home.join("logs"),
        ..HostConfig::default()
    });
    let executors: BTreeMap<String, Arc<dyn Executor>> =
        BTreeMap::from([("host".to_owned(), Arc::new(host) as Arc<dyn Executor>)]);
    conductor_server::serve(config.serve, executors, shutdown_signal())
        .await
        .context("conductor serve")
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
