//! Port bridges, the host side: `127.0.0.1:PORT` inside a sandbox's network namespace forwards
//! each TCP connection to a host Unix socket (`ExecutionRequest::bridges`): how a sandbox with
//! network `none` reaches the LLM gateway, and nothing else.
//!
//! The listening socket lives in the sandbox's network namespace but is held only by the
//! executor: the namespace executor's init binds it and passes it out over the helper channel
//! (see `conductor_sandbox::bridge`); the container executors bind it from a thread that joins
//! the container's namespace. The accept and forward loop ([`Bridges`]) runs on the host, so no
//! process of ours runs in the sandbox and nothing there can tamper with it. Dropping
//! [`Bridges`] (when the execution ends, however it ends) closes the listeners and every
//! forwarded connection: a later task in the same sandbox cannot reach the bridge.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use conductor_sandbox::bridge::receive_with_fds;
use conductor_types::PortBridge;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// Connections one bridge forwards at once; more wait in the listener's backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// The forwarding loops of one execution's bridges; dropping it stops them, closes the
/// listeners and cuts every forwarded connection.
#[derive(Debug)]
pub struct Bridges {
    task: JoinHandle<()>,
}

impl Bridges {
    /// Forwards connections accepted on each listener to its bridge's target, once the
    /// listeners (one per bridge, in order) arrive.
    pub fn start(bridges: Vec<PortBridge>, listeners: oneshot::Receiver<Vec<OwnedFd>>) -> Self {
        let task = tokio::spawn(async move {
            let Ok(listeners) = listeners.await else {
                // The sandbox was not built; its report says why.
                return;
            };
            if listeners.len() != bridges.len() {
                tracing::warn!(
                    expected = bridges.len(),
                    got = listeners.len(),
                    "the sandbox passed the wrong number of bridge listeners; none is served"
                );
                return;
            }
            let mut loops = JoinSet::new();
            for (bridge, listener) in bridges.into_iter().zip(listeners) {
                match listener_from(listener) {
                    Ok(listener) => {
                        loops.spawn(serve(listener, bridge.target));
                    }
                    Err(e) => tracing::warn!(port = bridge.port, error = %e, "a bridge listener"),
                }
            }
            while loops.join_next().await.is_some() {}
        });
        Self { task }
    }

    /// Forwards connections accepted on listeners the caller already holds (one per bridge).
    pub fn serve_now(bridges: Vec<PortBridge>, listeners: Vec<OwnedFd>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(listeners);
        Self::start(bridges, rx)
    }
}

impl Drop for Bridges {
    fn drop(&mut self) {
        // Aborting drops the JoinSets: every accept loop and connection with them.
        self.task.abort();
    }
}

fn listener_from(fd: OwnedFd) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Accepts on `listener` and forwards each connection to `target`, at most
/// [`MAX_CONNECTIONS`] at once.
async fn serve(listener: TcpListener, target: PathBuf) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let target = Arc::new(target);
    let mut connections = JoinSet::new();
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reap finished connections while waiting (their slots are already back).
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((tcp, _)) => {
                let target = Arc::clone(&target);
                connections.spawn(async move {
                    forward(tcp, &target).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting on a bridge");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn forward(mut tcp: tokio::net::TcpStream, target: &std::path::Path) {
    let mut unix = match UnixStream::connect(target).await {
        Ok(unix) => unix,
        Err(e) => {
            tracing::debug!(target = %target.display(), error = %e, "a bridge's target refused");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await {
        tracing::debug!(target = %target.display(), error = %e, "a bridged connection ended");
    }
}

/// Listens on `127.0.0.1:port` for each of `ports` in the network namespace of process `pid`
/// (a container's init), from a thread of its own that joins that namespace and ends there, so
/// no other thread ever leaves the host's. Needs `CAP_SYS_ADMIN` over the namespace: root, and
/// a rootful engine's container (a rootless engine's namespace belongs to its user's).
pub fn listen_in_namespace_of(pid: u32, ports: Vec<u16>) -> io::Result<Vec<OwnedFd>> {
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::Builder::new()
        .name("bridge-setns".to_owned())
        .spawn(move || {
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            conductor_sandbox::bridge::listen_loopback(&ports)
        })?
        .join()
        .map_err(|_| {
            io::Error::other("the thread joining the container's network namespace panicked")
        })?
}

/// What the helper sends back: its report lines (until every holder of its end has closed
/// it) and the bridge listeners its init passed out, when it does.
#[derive(Debug)]
pub(crate) struct HelperReports {
    /// Every report byte, when the channel closes.
    pub bytes: JoinHandle<Vec<u8>>,
    /// The listeners of a `listening` report.
    pub listeners: oneshot::Receiver<Vec<OwnedFd>>,
}

/// Reads the helper's reports from `channel` (non-blocking), picking up descriptors that come
/// with them.
pub(crate) fn read_reports(channel: StdUnixStream) -> io::Result<HelperReports> {
    channel.set_nonblocking(true)?;
    // SAFETY: the AsyncFd owns `channel`, which stays open and is not replaced while
    // registered.
    let channel = unsafe { AsyncFd::register_with_interest(channel, Interest::READABLE) }?;
    let (tx, listeners) = oneshot::channel();
    let bytes = tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut reports = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let Ok(mut ready) = channel.readable().await else {
                break;
            };
            match ready.try_io(|inner| receive_with_fds(inner.get_ref().as_raw_fd(), &mut buf)) {
                Ok(Ok((0, _))) => break,
                Ok(Ok((n, fds))) => {
                    reports.extend_from_slice(&buf[..n]);
                    if !fds.is_empty() {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(fds);
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading the sandbox helper's reports");
                    break;
                }
                Err(_would_block) => {}
            }
        }
        reports
    });
    Ok(HelperReports { bytes, listeners })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpStream, UnixListener};

    use super::*;

    /// A Unix server that answers each line with `answer: <line>`, counting connections.
    async fn echo_server(path: PathBuf) -> Arc<std::sync::atomic::AtomicUsize> {
        let server = UnixListener::bind(&path).unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = server.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let mut answer = b"answer: ".to_vec();
                    answer.extend_from_slice(&buf[..n]);
                    let _ = stream.write_all(&answer).await;
                });
            }
        });
        count
    }

    #[tokio::test]
    async fn connections_reach_the_target_until_the_bridges_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("gateway.sock");
        let count = echo_server(target.clone()).await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bridges = Bridges::serve_now(
            vec![PortBridge { port, target }],
            vec![OwnedFd::from(listener)],
        );
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        client.write_all(b"hello\n").await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&got), "answer: hello\n");
        drop(bridges);
        // The abort lands on the runtime's next turn.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionRefused)
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A process in a network namespace of its own (as root): the listener is there, not on the
    /// host's loopback.
    #[tokio::test]
    async fn listeners_are_made_in_the_namespace_of_the_process() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: joining another network namespace needs root");
            return;
        }
        let mut other = std::process::Command::new("unshare")
            .args(["--net", "sleep", "30"])
            .spawn()
            .unwrap();
        // unshare execs sleep in the new namespace: wait until its namespace differs from ours.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let path = format!("/proc/{}/ns/net", other.id());
        for _ in 0..100 {
            if std::fs::read_link(&path).is_ok_and(|ns| ns != own) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let listeners = listen_in_namespace_of(other.id(), vec![port]).unwrap();
        assert_eq!(listeners.len(), 1);
        // Not on the host's loopback, and this thread is still in the host's namespace.
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
        assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[tokio::test]
    async fn at_most_max_connections_are_forwarded_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("held.sock");
        // A target that accepts and never answers: every forwarded connection stays open.
        let server = UnixListener::bind(&target).unwrap();
        let (held_tx, mut held) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = server.accept().await {
                let _ = held_tx.send(stream);
            }
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _bridges = Bridges::serve_now(
            vec![PortBridge { port, target }],
            vec![OwnedFd::from(listener)],
        );
        let mut clients = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 1 {
            clients.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        let mut streams = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            streams.push(held.recv().await.unwrap());
        }
        // The one past the limit waits in the backlog...
        let extra = tokio::time::timeout(Duration::from_millis(200), held.recv()).await;
        assert!(extra.is_err(), "a connection past the limit was forwarded");
        // ...until one ends (both ways: the first client and the target's ends close).
        drop(clients.remove(0));
        streams.clear();
        let late = tokio::time::timeout(Duration::from_secs(5), held.recv()).await;
        assert!(matches!(late, Ok(Some(_))));
    }
}
