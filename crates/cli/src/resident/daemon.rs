//! The resident's side: one listener, the warm executors, one task per connection.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use conductor_core::Executor;
use conductor_types::{ExecutionRequest, ExecutorKind, NetworkPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::place::Place;
use super::wire::{self, Reply, Request};
use crate::executor;

/// How long the resident stays without a connection (`CONDUCTOR_RESIDENT_IDLE`, seconds).
const DEFAULT_IDLE: Duration = Duration::from_secs(300);

/// Runs the resident (`conductor __exec-resident`) until it has been idle long enough.
pub fn main() -> ! {
    crate::init_tracing();
    let code = match start() {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!("the resident executor stopped: {error:#}");
            1
        }
    };
    std::process::exit(code)
}

fn start() -> anyhow::Result<()> {
    let place = Place::for_this_user()?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(place.lock())
        .context("opening the resident's lock file")?;
    let _lock = match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        // Another resident of this build runs: it serves.
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(()),
        Err((_, e)) => return Err(e).context("locking the resident's lock file"),
    };
    let socket = place.socket();
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing a stale socket"),
    }
    let listener = StdListener::bind(&socket).context("listening")?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let idle = std::env::var("CONDUCTOR_RESIDENT_IDLE")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(DEFAULT_IDLE, Duration::from_secs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    tracing::info!(socket = %socket.display(), "the resident executor listens");
    runtime.block_on(serve(listener, &socket, idle))
}

/// Accepts until `idle` passes with no connection open, or SIGTERM or SIGINT comes; then
/// removes the socket (new clients run in-process or start another resident), serves what was
/// already queued, waits for every execution to end and returns.
async fn serve(listener: StdListener, socket: &Path, idle: Duration) -> anyhow::Result<()> {
    let listener = UnixListener::from_std(listener)?;
    let executors = Arc::new(Executors::start().await);
    let open = Arc::new(AtomicUsize::new(0));
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted_or_idle = tokio::time::timeout(idle, listener.accept()) => {
                match accepted_or_idle {
                    Ok(Ok((stream, _))) => accepted(stream, &executors, &open),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) if open.load(Ordering::Acquire) == 0 => break,
                    Err(_) => {}
                }
            }
            // Asked to stop: what runs finishes; the warm helpers are discarded on the way out.
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    let _ = std::fs::remove_file(socket);
    while let Ok(Ok((stream, _))) =
        tokio::time::timeout(Duration::from_millis(20), listener.accept()).await
    {
        accepted(stream, &executors, &open);
    }
    while open.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(listener);
    // Every connection's task has ended, so this is the last holder: the warm pools' helpers
    // are killed and their cgroups removed here.
    drop(executors);
    tracing::info!("the resident executor leaves");
    Ok(())
}

fn accepted(stream: UnixStream, executors: &Arc<Executors>, open: &Arc<AtomicUsize>) {
    let executors = Arc::clone(executors);
    let open = Arc::clone(open);
    open.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(async move {
        if let Err(e) = connection(stream, &executors).await {
            tracing::warn!(error = %format!("{e:#}"), "a connection");
        }
        open.fetch_sub(1, Ordering::AcqRel);
    });
}

/// The executors a resident keeps warm: the namespace executor where it works here, and the
/// host executor.
struct Executors {
    namespace: Result<Arc<dyn Executor>, String>,
    host: Arc<dyn Executor>,
}

impl Executors {
    async fn start() -> Self {
        let namespace = match executor::namespace(1) {
            Ok(namespace) => match namespace.health_check().await {
                Ok(()) => Ok(namespace),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("{e:#}")),
        };
        let host = executor::host(1).executor;
        for executor in namespace.iter().chain([&host]) {
            if let Err(e) = executor.warmup().await {
                tracing::warn!(error = %e, "warming an executor up");
            }
        }
        Self { namespace, host }
    }

    /// The executor for `kind`, the network a request without one gets, and the warning `auto`
    /// prints when it falls back to the host.
    fn choose(&self, kind: ExecutorKind, network_given: bool) -> Result<Chosen, String> {
        match (kind, &self.namespace) {
            (ExecutorKind::Host, _) => Ok((Arc::clone(&self.host), NetworkPolicy::Host, None)),
            (ExecutorKind::Namespace | ExecutorKind::Auto, Ok(namespace)) => {
                Ok((Arc::clone(namespace), NetworkPolicy::None, None))
            }
            (ExecutorKind::Namespace, Err(reason)) => Err(reason.clone()),
            (ExecutorKind::Auto, Err(reason)) => Ok((
                Arc::clone(&self.host),
                NetworkPolicy::Host,
                Some(executor::fallback_warning(reason, network_given)),
            )),
            (ExecutorKind::Docker | ExecutorKind::Podman, _) => Err(format!(
                "the {} executor runs in conductor exec's own process",
                kind.as_str()
            )),
        }
    }
}

/// An executor for one request: `(executor, default network, warning)`.
type Chosen = (Arc<dyn Executor>, NetworkPolicy, Option<String>);

/// Serves one client: its request, the execution, the reply.
async fn connection(stream: UnixStream, executors: &Executors) -> anyhow::Result<()> {
    let accepted = std::time::Instant::now();
    let peer = stream
        .peer_cred()
        .context("reading the peer's credentials")?;
    let ours = nix::unistd::Uid::effective().as_raw();
    if peer.uid() != ours {
        anyhow::bail!("refused a connection from uid {} (not {ours})", peer.uid());
    }
    // The client sends its request right after connecting: once the socket is readable it
    // is normally there whole, and is read on this thread (a request larger than the socket's
    // buffer is read to its end, 2 s at most).
    stream.readable().await?;
    let std_stream = stream.into_std()?;
    std_stream.set_nonblocking(false)?;
    std_stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let (request, fds) = wire::receive_request(&std_stream)?;
    std_stream.set_read_timeout(None)?;
    std_stream.set_nonblocking(true)?;
    let mut stream = UnixStream::from_std(std_stream)?;
    let received = accepted.elapsed();
    let reply = match output_files(fds) {
        Ok((stdout, stderr)) => execute(request, stdout, stderr, &mut stream, executors).await,
        Err(message) => Reply::Failed { message },
    };
    let executed = accepted.elapsed();
    let reply = serde_json::to_vec(&reply)?;
    // The client may be gone (killed): nothing more to do then.
    let _ = stream.write_all(&reply).await;
    tracing::debug!(?received, ?executed, replied = ?accepted.elapsed(), "served");
    Ok(())
}

fn output_files(fds: Vec<OwnedFd>) -> Result<(std::fs::File, std::fs::File), String> {
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(stdout), Some(stderr)) => Ok((stdout.into(), stderr.into())),
        _ => Err("the request came without its stdout and stderr".to_owned()),
    }
}

/// Runs the request, writing its output to the client's descriptors; a cancel byte or the
/// client's end closing cancels it.
async fn execute(
    request: Request,
    stdout: std::fs::File,
    stderr: std::fs::File,
    stream: &mut UnixStream,
    executors: &Executors,
) -> Reply {
    let (executor, default_network, warning) =
        match executors.choose(request.executor, request.network.is_some()) {
            Ok(chosen) => chosen,
            Err(message) => return Reply::Failed { message },
        };
    let mut stderr = tokio::fs::File::from_std(stderr);
    if let Some(warning) = warning {
        let _ = stderr.write_all(format!("{warning}\n").as_bytes()).await;
    }
    let execution = execution_request(request.clone(), default_network);
    let id = execution.id.clone();
    let (events, receiver) = mpsc::channel(64);
    let printer = tokio::spawn(crate::exec::print_events(
        receiver,
        tokio::fs::File::from_std(stdout),
        stderr,
        request.stream,
    ));
    let running = executor.execute(execution, events);
    tokio::pin!(running);
    let mut interrupted = None;
    let mut client_open = true;
    let mut byte = [0u8; 1];
    let result = loop {
        tokio::select! {
            result = &mut running => break result,
            read = stream.read(&mut byte), if client_open => {
                match (read, byte[0]) {
                    (Ok(1), wire::CANCEL_INTERRUPT) => interrupted = Some(130),
                    (Ok(1), wire::CANCEL_TERMINATE) => interrupted = Some(143),
                    (Ok(1), _) => continue,
                    // Gone: nobody waits for the result.
                    _ => client_open = false,
                }
                if let Err(e) = executor.cancel(&id).await {
                    tracing::warn!(error = %e, "cancelling an execution");
                }
            }
        }
    };
    let _ = printer.await;
    match result {
        Ok(result) => Reply::Done {
            result: Box::new(result),
            interrupted,
        },
        Err(e) => Reply::Failed {
            message: anyhow::Error::new(e).to_string(),
        },
    }
}

fn execution_request(request: Request, default_network: NetworkPolicy) -> ExecutionRequest {
    let mut execution = ExecutionRequest::new(request.argv, request.workspace);
    execution.env = request.env;
    execution.env_allowlist = request.env_allowlist;
    execution.rootfs = request.rootfs;
    execution.limits.cpus = request.cpus;
    execution.limits.memory = request.memory;
    execution.limits.pids = request.pids;
    execution.network = request.network.unwrap_or(default_network);
    execution.timeout = request.timeout_ms.map(Duration::from_millis);
    execution
}
