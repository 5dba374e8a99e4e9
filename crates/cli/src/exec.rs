//! `conductor exec`: runs one command in a sandbox right here, streams its output live (or
//! prints the whole result as JSON), and exits with the command's exit code.
//!
//! A `--workspace` directory is handed to the sandbox's user for the run and given back its
//! owners afterwards (`conductor_sandbox::handover`); system directories, the home directory
//! and mount points are refused, and so is a file with several hard links (its other names
//! may be outside the workspace).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use conductor_core::{EventSender, Executor};
use conductor_sandbox::handover::{check_workspace_root, mount_points, Ownership};
use conductor_types::{
    parse_duration, Bytes, Cpus, ExecEvent, ExecutionRequest, ExecutionResult, ExecutorKind,
    NetworkPolicy, OutputStream, ResourceLimits,
};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::executor::{choose, engine, ExecutorKindParser};

/// Flags of `conductor exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Which executor runs the command.
    #[arg(long, value_parser = ExecutorKindParser, default_value = "auto")]
    pub(crate) executor: ExecutorKind,
    /// Memory limit, such as 256m or 2g.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub(crate) memory: Option<Bytes>,
    /// CPU limit in cores, such as 0.5 or 2.
    #[arg(long, value_name = "CORES", allow_hyphen_values = true)]
    pub(crate) cpus: Option<Cpus>,
    /// Most processes and threads alive at once.
    #[arg(long, value_name = "N")]
    pub(crate) pids: Option<u32>,
    /// Wall-clock limit, such as 30s or 5m; past it the tree is killed and the exit code is 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) timeout: Option<Duration>,
    /// Network access: none, localhost, full (outbound through a namespace of its own), host
    /// (the host executor's only one) or allowlist:HOST[,HOST…] (default: none in a sandbox,
    /// host on the host executor).
    #[arg(long, value_name = "POLICY")]
    pub(crate) network: Option<NetworkPolicy>,
    /// Existing directory to work in (default: a fresh temporary one, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub(crate) workspace: Option<PathBuf>,
    /// Root filesystem directory to use instead of the host's system directories.
    #[arg(long, value_name = "DIR", conflicts_with = "environment")]
    pub(crate) rootfs: Option<PathBuf>,
    /// Environment to run in (see `conductor env list`; build it first): its root filesystem
    /// for the namespace executor, its image for docker and podman (which default to minimal).
    #[arg(long, value_name = "NAME")]
    pub(crate) environment: Option<String>,
    /// Set a variable: K=V (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,
    /// Pass a host variable through when it is set (repeatable).
    #[arg(long = "env-allow", value_name = "NAME")]
    pub(crate) env_allow: Vec<String>,
    /// Stream nothing; print the result as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// Runs `conductor exec` and returns the process's exit code.
pub fn main(args: ExecArgs) -> ExitCode {
    if let Some(code) = crate::resident::client::exec(&args) {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return crate::fail(&anyhow::Error::new(e).context("starting the runtime")),
    };
    let outcome = runtime.block_on(exec(args));
    // Shut down before exiting so the temporary workspace is gone and no task is left writing.
    drop(runtime);
    match outcome {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => crate::fail(&error),
    }
}

async fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let (workspace, _temporary) = workspace(args.workspace.as_deref())?;
    // A given directory gets its owners back after the run; a temporary one is removed.
    let owners = match &args.workspace {
        Some(_) => {
            let path = workspace.clone();
            let recorded = tokio::task::spawn_blocking(move || Ownership::record(&path))
                .await
                .context("recording the workspace's owners")?
                .with_context(|| format!("--workspace {}", workspace.display()))?;
            Some(recorded)
        }
        None => None,
    };
    let outcome = run(args, workspace.clone()).await;
    if let Some(recorded) = owners {
        give_back(recorded, workspace).await;
    }
    outcome
}

/// Puts the workspace's recorded owners back (a warning when that fails: the command's own
/// outcome still counts).
async fn give_back(recorded: Ownership, workspace: PathBuf) {
    let restored = tokio::task::spawn_blocking(move || give_back_now(&recorded, &workspace)).await;
    if let Err(e) = restored {
        eprintln!("conductor: warning: could not give the workspace its owners back: {e}");
    }
}

/// [`give_back`] on this thread.
pub(crate) fn give_back_now(recorded: &Ownership, workspace: &Path) {
    // The root was handed to the sandbox's user, if to anyone.
    let restored = std::fs::symlink_metadata(workspace)
        .map(|m| m.uid())
        .and_then(|sandbox| {
            recorded
                .restore(workspace, sandbox)
                .map_err(std::io::Error::other)
        });
    if let Err(error) = restored {
        eprintln!(
            "conductor: warning: could not give {} its owners back: {error}",
            workspace.display()
        );
    }
}

async fn run(args: ExecArgs, workspace: PathBuf) -> anyhow::Result<i32> {
    let mut rootfs = args.rootfs.as_deref().map(existing_rootfs).transpose()?;
    let environment = match (&args.environment, engine(args.executor)) {
        (Some(name), _) => Some(crate::env::store()?.find_built(name)?),
        (None, Some(_)) => Some(crate::env::store()?.find_built("minimal")?),
        (None, None) => None,
    };
    if let Some(built) = &environment {
        if args.executor == ExecutorKind::Host {
            bail!("--environment needs a sandbox executor; the host executor runs on the host's filesystem");
        }
        if engine(args.executor).is_none() {
            rootfs = Some(built.rootfs());
        }
    }
    let chosen = choose(args.executor, args.network.is_some(), environment.as_ref()).await?;
    let executor = chosen.executor;
    let mut request = ExecutionRequest::new(args.command, workspace);
    request.env = args.env.into_iter().collect();
    request.env_allowlist = args.env_allow;
    request.rootfs = rootfs;
    request.limits = ResourceLimits {
        cpus: args.cpus,
        memory: args.memory,
        pids: args.pids,
        ..ResourceLimits::default()
    };
    request.network = args.network.unwrap_or(chosen.default_network);
    request.timeout = args.timeout;
    let unlimited = unlimited_note(&request);

    let (events, receiver) = mpsc::channel(64);
    let printer = tokio::spawn(print_events(
        receiver,
        tokio::io::stdout(),
        tokio::io::stderr(),
        !args.json,
    ));
    let (result, interrupted) = run_until_signal(executor, request, events).await?;
    // The executor dropped its sender: the printer ends once it has written everything.
    let _ = printer.await;
    if args.json {
        let json = serde_json::to_string(&result).context("encoding the result as JSON")?;
        println!("{json}");
    } else if let Some(note) = unlimited {
        // After the command's own output, so its stderr reads as it wrote it.
        eprintln!("{note}");
    }
    Ok(interrupted.unwrap_or(result.exit_code))
}

/// `conductor exec` applies no server defaults: it says which limits the command ran without
/// (`--json` leaves it out: the caller passed the flags and reads one JSON object).
pub(crate) fn unlimited_note(request: &ExecutionRequest) -> Option<String> {
    let set = conductor_core::LimitSet {
        memory: request.limits.memory,
        cpus: request.limits.cpus,
        pids: request.limits.pids,
        // `exec` has no disk flag: the workspace is a host directory.
        disk: Some(Bytes(0)),
        timeout: request.timeout,
    };
    let unlimited = conductor_core::unlimited(&set);
    if unlimited.is_empty() {
        return None;
    }
    let names: Vec<&str> = unlimited.iter().map(|limit| limit.as_str()).collect();
    let flags: Vec<String> = names.iter().map(|name| format!("--{name}")).collect();
    Some(format!(
        "conductor: note: ran without a limit on {} (set {})",
        names.join(", "),
        flags.join(", ")
    ))
}

/// Runs the request; SIGINT or SIGTERM cancels it. Returns the result and, when a signal
/// arrived, the exit code for it (130 or 143).
async fn run_until_signal(
    executor: Arc<dyn Executor>,
    request: ExecutionRequest,
    events: EventSender,
) -> anyhow::Result<(ExecutionResult, Option<i32>)> {
    let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let id = request.id.clone();
    let execution = executor.execute(request, events);
    tokio::pin!(execution);
    let mut interrupted = None;
    loop {
        tokio::select! {
            result = &mut execution => return Ok((result?, interrupted)),
            Some(()) = interrupt.recv() => interrupted = Some(130),
            Some(()) = terminate.recv() => interrupted = Some(143),
        }
        executor
            .cancel(&id)
            .await
            .context("cancelling the execution")?;
    }
}

/// Writes output events to this process's stdout and stderr as they come (when `stream`), and
/// otherwise just drains them. A closed stdout (`| head`) does not stop the draining.
pub(crate) async fn print_events<O, E>(
    mut receiver: mpsc::Receiver<ExecEvent>,
    mut stdout: O,
    mut stderr: E,
    stream: bool,
) where
    O: AsyncWriteExt + Unpin,
    E: AsyncWriteExt + Unpin,
{
    while let Some(event) = receiver.recv().await {
        let ExecEvent::Output {
            stream: which,
            data,
            ..
        } = event
        else {
            continue;
        };
        if !stream {
            continue;
        }
        let _ = match which {
            OutputStream::Stdout => write_flush(&mut stdout, &data).await,
            OutputStream::Stderr => write_flush(&mut stderr, &data).await,
        };
    }
}

async fn write_flush<W: AsyncWriteExt + Unpin>(writer: &mut W, data: &[u8]) -> std::io::Result<()> {
    writer.write_all(data).await?;
    writer.flush().await
}

/// The given workspace (which must be an existing directory), or a fresh temporary one that is
/// removed when the returned guard drops.
pub(crate) fn workspace(
    given: Option<&Path>,
) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match given {
        Some(path) => {
            if !path.is_dir() {
                bail!(
                    "--workspace {}: no such directory (create it first, or leave --workspace out for a temporary one)",
                    path.display()
                );
            }
            let path = path
                .canonicalize()
                .with_context(|| format!("--workspace {}", path.display()))?;
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let home = home
                .as_deref()
                .map(|h| h.canonicalize().unwrap_or(h.to_owned()));
            let mounts = std::fs::read_to_string("/proc/self/mountinfo")
                .map(|text| mount_points(&text))
                .unwrap_or_default();
            check_workspace_root(&path, home.as_deref(), &mounts)
                .context("--workspace: refused")?;
            Ok((path, None))
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("conductor-exec-")
                .tempdir()
                .context("creating a temporary workspace")?;
            Ok((dir.path().to_owned(), Some(dir)))
        }
    }
}

pub(crate) fn existing_rootfs(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_dir() {
        bail!("--rootfs {}: no such directory", path.display());
    }
    path.canonicalize()
        .with_context(|| format!("--rootfs {}", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        exec: ExecArgs,
    }

    #[test]
    fn flags_parse_into_typed_values() {
        let args = Wrapper::try_parse_from([
            "exec",
            "--memory",
            "256m",
            "--cpus",
            "0.5",
            "--pids",
            "64",
            "--timeout",
            "30s",
            "--network",
            "localhost",
            "--env",
            "A=b=c",
            "--env-allow",
            "LANG",
            "--",
            "sh",
            "-c",
            "echo hi",
        ])
        .unwrap()
        .exec;
        assert_eq!(args.memory, Some(Bytes::mib(256)));
        assert_eq!(args.cpus, Some(Cpus::new(0.5).unwrap()));
        assert_eq!(args.pids, Some(64));
        assert_eq!(args.timeout, Some(Duration::from_secs(30)));
        assert_eq!(args.network, Some(NetworkPolicy::Localhost));
        assert_eq!(args.env, vec![("A".to_owned(), "b=c".to_owned())]);
        assert_eq!(args.env_allow, vec!["LANG".to_owned()]);
        assert_eq!(args.command, vec!["sh", "-c", "echo hi"]);
        assert_eq!(args.executor, ExecutorKind::Auto);
    }

    #[test]
    fn bad_values_name_the_flag_and_the_reason() {
        let error = Wrapper::try_parse_from(["exec", "--memory", "-5g", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "error: invalid value '-5g' for '--memory <SIZE>': size \"-5g\" is negative"
            ),
            "{error}"
        );
        assert!(Wrapper::try_parse_from(["exec", "--env", "novalue", "--", "true"]).is_err());
        assert!(Wrapper::try_parse_from(["exec", "--timeout", "0s", "--", "true"]).is_err());
    }

    #[test]
    fn the_note_names_the_limits_left_unset() {
        let mut request = ExecutionRequest::new(vec!["true".into()], "/".into());
        request.limits.memory = Some(Bytes::mib(64));
        assert_eq!(
            unlimited_note(&request).as_deref(),
            Some("conductor: note: ran without a limit on cpus, pids, timeout (set --cpus, --pids, --timeout)")
        );
        request.limits.cpus = Cpus::new(1.0).ok();
        request.limits.pids = Some(10);
        request.timeout = Some(Duration::from_secs(5));
        assert_eq!(unlimited_note(&request), None);
    }
}
