//! The `conductor exec` side: hands one execution to this user's resident executor and waits,
//! with no async runtime and no thread (a process that lives for one command starts nothing it
//! does not need).
//!
//! The client does everything that depends on who is asking: it checks and hands over the
//! workspace (or makes the temporary one), resolves `--env-allow` from its own environment and
//! `--environment` to a root filesystem, forwards SIGINT and SIGTERM as cancel bytes, gives the
//! workspace its owners back and prints the note or the JSON result.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Context;
use conductor_sandbox::handover::Ownership;
use conductor_types::{ExecutionRequest, ExecutorKind, ResourceLimits};
use nix::libc;

use super::place::Place;
use super::wire::{self, Reply, Request};
use crate::exec::ExecArgs;

/// Runs `args` on the resident executor. `None`: this run is for the in-process path — the
/// resident is off (`CONDUCTOR_RESIDENT=0`), the executor is a container engine, or no resident
/// listens yet (one is started for the next run; `CONDUCTOR_RESIDENT=wait` waits for it
/// instead).
pub fn exec(args: &ExecArgs) -> Option<ExitCode> {
    let mode = Mode::from_env();
    if mode == Mode::Off || !hosted(args.executor) {
        return None;
    }
    let place = match Place::for_this_user() {
        Ok(place) => place,
        // `wait` was asked for a resident: say why there is none.
        Err(e) if mode == Mode::Wait => {
            let error = anyhow::Error::new(e).context("no place for the resident executor");
            return Some(crate::fail(&error));
        }
        Err(e) => {
            tracing::debug!("no resident executor: {e}");
            return None;
        }
    };
    let socket = match UnixStream::connect(place.socket()) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!("no resident executor listens ({e}); starting one");
            super::start(&place);
            if mode != Mode::Wait {
                return None;
            }
            match wait_for(&place) {
                Ok(socket) => socket,
                Err(error) => return Some(crate::fail(&error)),
            }
        }
    };
    Some(match run(args, &socket) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => crate::fail(&error),
    })
}

/// `CONDUCTOR_RESIDENT`: `0` (or off, false, no) runs in-process; `wait` starts the resident
/// and waits for it rather than running in-process; anything else uses it when it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Use,
    Wait,
}

impl Mode {
    fn from_env() -> Self {
        match std::env::var("CONDUCTOR_RESIDENT").as_deref() {
            Ok("0" | "off" | "false" | "no") => Self::Off,
            Ok("wait") => Self::Wait,
            _ => Self::Use,
        }
    }
}

/// The executors the resident hosts (container engines are daemons of their own).
fn hosted(kind: ExecutorKind) -> bool {
    matches!(
        kind,
        ExecutorKind::Auto | ExecutorKind::Host | ExecutorKind::Namespace
    )
}

/// Connects once the resident just started listens (10 s at most).
fn wait_for(place: &Place) -> anyhow::Result<UnixStream> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match UnixStream::connect(place.socket()) {
            Ok(socket) => return Ok(socket),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e).with_context(|| {
                    format!(
                        "the resident executor did not start (see {})",
                        place.log().display()
                    )
                })
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

fn run(args: &ExecArgs, socket: &UnixStream) -> anyhow::Result<i32> {
    let (workspace, _temporary) = crate::exec::workspace(args.workspace.as_deref())?;
    let owners = match &args.workspace {
        Some(_) => Some(
            Ownership::record(&workspace)
                .with_context(|| format!("--workspace {}", workspace.display()))?,
        ),
        None => None,
    };
    let request = request(args, workspace.clone())?;
    let reply = exchange(socket, &request);
    if let Some(recorded) = owners {
        crate::exec::give_back_now(&recorded, &workspace);
    }
    let (result, interrupted) = match reply? {
        Reply::Done {
            result,
            interrupted,
        } => (result, interrupted),
        Reply::Failed { message } => anyhow::bail!("{message}"),
    };
    if args.json {
        let json = serde_json::to_string(&result).context("encoding the result as JSON")?;
        println!("{json}");
    } else if let Some(note) = crate::exec::unlimited_note(&limits_of(&request)) {
        eprintln!("{note}");
    }
    Ok(interrupted.unwrap_or(result.exit_code))
}

/// The request, resolved here: `--env-allow` from this process's environment (explicit
/// `--env` wins, as in-process), `--environment` to its root filesystem.
fn request(args: &ExecArgs, workspace: PathBuf) -> anyhow::Result<Request> {
    let mut env: std::collections::BTreeMap<String, String> = args.env.iter().cloned().collect();
    let mut invalid = Vec::new();
    for name in &args.env_allow {
        if name.is_empty() || name.contains(['=', '\0']) {
            // The plan refuses it with the same message as in-process.
            invalid.push(name.clone());
        } else if let Some(value) = std::env::var_os(name) {
            let value = value.to_string_lossy().into_owned();
            env.entry(name.clone()).or_insert(value);
        }
    }
    let rootfs = match (&args.environment, &args.rootfs) {
        (Some(name), _) => {
            if args.executor == ExecutorKind::Host {
                anyhow::bail!("--environment needs a sandbox executor; the host executor runs on the host's filesystem");
            }
            Some(crate::env::store()?.find_built(name)?.rootfs())
        }
        (None, Some(path)) => Some(crate::exec::existing_rootfs(path)?),
        (None, None) => None,
    };
    Ok(Request {
        executor: args.executor,
        argv: args.command.clone(),
        env,
        env_allowlist: invalid,
        workspace,
        rootfs,
        cpus: args.cpus,
        memory: args.memory,
        pids: args.pids,
        timeout_ms: args
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        network: args.network.clone(),
        stream: !args.json,
    })
}

/// An execution request with `request`'s limits, for the note on limits left unset.
fn limits_of(request: &Request) -> ExecutionRequest {
    let mut limits = ExecutionRequest::new(Vec::new(), PathBuf::new());
    limits.limits = ResourceLimits {
        cpus: request.cpus,
        memory: request.memory,
        pids: request.pids,
        ..ResourceLimits::default()
    };
    limits.timeout = request.timeout_ms.map(std::time::Duration::from_millis);
    limits
}

/// The socket SIGINT and SIGTERM write their cancel byte to (-1: none).
static CANCEL_SOCKET: AtomicI32 = AtomicI32::new(-1);

extern "C" fn forward(signal: libc::c_int) {
    let byte = if signal == libc::SIGTERM {
        wire::CANCEL_TERMINATE
    } else {
        wire::CANCEL_INTERRUPT
    };
    let fd = CANCEL_SOCKET.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the byte lives on this handler's stack.
        unsafe { libc::send(fd, std::ptr::addr_of!(byte).cast(), 1, libc::MSG_NOSIGNAL) };
    }
}

/// Sends the request with this process's stdout and stderr, forwards SIGINT and SIGTERM while
/// it runs, and reads the reply.
fn exchange(socket: &UnixStream, request: &Request) -> anyhow::Result<Reply> {
    let fds = [libc::STDOUT_FILENO, libc::STDERR_FILENO];
    wire::send_request(socket.as_fd(), request, &fds)
        .context("handing the command to the resident executor")?;
    CANCEL_SOCKET.store(socket.as_raw_fd(), Ordering::Relaxed);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only makes an async-signal-safe system call.
        unsafe { libc::signal(signal, forward as *const () as libc::sighandler_t) };
    }
    let mut reply = Vec::new();
    let read = (&*socket).read_to_end(&mut reply);
    CANCEL_SOCKET.store(-1, Ordering::Relaxed);
    read.context("waiting for the resident executor")?;
    serde_json::from_slice(&reply).map_err(|_| {
        anyhow::anyhow!(
            "the resident executor ended before the command did (see its log, exec-<build>.log \
             beside its socket; CONDUCTOR_RESIDENT=0 runs in this process)"
        )
    })
}
