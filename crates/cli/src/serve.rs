//! `conductor serve`: the orchestrator on embedded defaults (SQLite and workspaces under
//! `$CONDUCTOR_HOME`; the namespace executor where it works, else the host executor), until
//! SIGINT or SIGTERM. Settings come from the config file, `CONDUCTOR_*` variables and these flags
//! (see `conductor config show`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use conductor_server::RawConfig;

use crate::config::ConfigSource;
use crate::environments::{self, Placement};
use crate::sweep::{ServerCgroups, CGROUP_ROOT};

/// Flags of `conductor serve`; each overrides the config file and environment.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// Address to listen on (default 127.0.0.1:8081; env CONDUCTOR_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Execution slots, each running one task at a time (default 2; env CONDUCTOR_SLOTS).
    /// `--agents`, the old name, still works for one release (hidden).
    #[arg(long, alias = "agents", value_name = "N")]
    slots: Option<u16>,
    /// Most tasks running at once (default: slots; env CONDUCTOR_CONCURRENCY).
    #[arg(long)]
    concurrency: Option<u16>,
    /// Time running tasks get to finish at shutdown (default 10s; env CONDUCTOR_GRACE).
    #[arg(long)]
    grace: Option<String>,
    /// What runs tasks: auto (the namespace executor where it works here, else the host
    /// executor), host, namespace, docker or podman (default auto; env CONDUCTOR_EXECUTOR).
    /// Built environments run on it (docker and podman with their image); the host
    /// environment runs on host or namespace. `[environments.NAME]` in the config file
    /// overrides it per environment.
    #[arg(long, value_parser = ["auto", "host", "namespace", "docker", "podman"])]
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
        slots: args.slots,
        concurrency: args.concurrency,
        grace: args.grace,
        executor: args.executor,
        ..RawConfig::default()
    };
    let mut config = args.source.load(flags)?;
    config.serve.workspace_users = rootless_engine_users();
    config.serve.llm = config.llm_config().unwrap_or_default();
    config.serve.prompts = config.prompt_templates();
    let cgroups = ServerCgroups::new(Path::new(CGROUP_ROOT), &config.home);
    let placement = Placement {
        home: config.home.clone(),
        cgroup_parent: cgroups.run_parent(),
        warm_helpers: config.serve.scheduler.slots,
        full_network_range: config.full_network_range,
    };
    // Clones run in a namespace sandbox of their own, or not at all.
    match crate::gitbox::NamespaceGit::new(cgroups.run_parent(), config.home.join("logs")).await {
        Ok(sandbox) => config.serve.scheduler.git.sandbox = Some(Arc::new(sandbox)),
        Err(reason) => tracing::warn!(
            %reason,
            "tasks naming a git repository will fail: their clones need the namespace sandbox"
        ),
    }
    let (executors, port) = environments::executors(&config, placement).await?;
    // Environments defined in requests, and built after this start, come through the port.
    config.serve.scheduler.environment_port = Some(port);
    for (environment, executor) in &executors {
        tracing::info!(environment, executor = executor.name(), "environment");
        // Pools fill and images are imported in the background: the server answers meanwhile.
        let executor = Arc::clone(executor);
        let environment = environment.clone();
        tokio::spawn(async move {
            if let Err(error) = executor.warmup().await {
                tracing::warn!(environment, %error, "warming up the executor failed");
            }
        });
    }
    let cgroups = Arc::new(cgroups);
    config.serve.sweep = Some(Arc::clone(&cgroups) as Arc<dyn conductor_server::Sweep>);
    let served = conductor_server::serve(config.serve, executors, shutdown_signal()).await;
    // The server and its executors are gone: nothing runs in this run's cgroups any more.
    cgroups.remove_run();
    served.context("conductor serve")
}

/// The user of a rootless Podman this server would use (its socket is not root's): that engine
/// mounts workspaces as its user, who needs search permission on the home's private directories
/// (given by ACL at start, unless it is the server's own user).
fn rootless_engine_users() -> Vec<u32> {
    use conductor_executors::container::{ContainerConfig, EngineKind};
    ContainerConfig::new(EngineKind::Podman, "")
        .rootless
        .map(|(uid, _)| uid)
        .into_iter()
        .collect()
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn slots_are_set_by_their_flag_or_its_old_name() {
        for flag in ["--slots", "--agents"] {
            let args = Wrapper::try_parse_from(["serve", flag, "3"]).unwrap().serve;
            assert_eq!(args.slots, Some(3), "{flag}");
        }
    }
}
