//! What a `conductor exec` client and the resident executor say over their socket: one
//! execution per connection.
//!
//! 1. The client sends one message whose ancillary data carries its stdout and stderr
//!    (`SCM_RIGHTS`) and whose bytes are the [`Request`]'s length (4 bytes, little-endian) and
//!    the request as JSON. While it waits it may send a cancel byte ([`CANCEL_INTERRUPT`],
//!    [`CANCEL_TERMINATE`]); closing its end cancels too.
//! 2. The resident writes the command's output straight to those descriptors, then the
//!    [`Reply`] as JSON, and closes the connection.
//!
//! Both sides come from the same build (the socket's name carries the build id), so the format
//! needs no version of its own.

use std::collections::BTreeMap;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use conductor_sandbox::fds::receive_with_fds;
use conductor_types::{Bytes, Cpus, ExecutionResult, ExecutorKind, NetworkPolicy};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::{Deserialize, Serialize};

/// Largest request accepted (argv and environment included).
pub const MAX_REQUEST: usize = 4 << 20;

/// The byte a client sends when it got SIGINT or SIGTERM: cancel the execution.
pub const CANCEL_INTERRUPT: u8 = b'I';
/// As [`CANCEL_INTERRUPT`], for SIGTERM.
pub const CANCEL_TERMINATE: u8 = b'T';

/// One execution, resolved by the client: host variables the command may see are already in
/// `env` (the resident's own environment is never read for a request), paths are absolute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// `host`, `namespace` or `auto` (container executors run in-process).
    pub executor: ExecutorKind,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Explicit variables and the allow-listed host variables the client had.
    pub env: BTreeMap<String, String>,
    /// Names that failed validation, passed on so the plan refuses them as in-process.
    pub env_allowlist: Vec<String>,
    /// The workspace directory (checked and handed over by the client).
    pub workspace: PathBuf,
    /// Root filesystem instead of the host's system directories.
    pub rootfs: Option<PathBuf>,
    /// `--cpus`.
    pub cpus: Option<Cpus>,
    /// `--memory`.
    pub memory: Option<Bytes>,
    /// `--pids`.
    pub pids: Option<u32>,
    /// `--timeout`, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// `--network` when given; the executor's default otherwise.
    pub network: Option<NetworkPolicy>,
    /// Write output to the client's descriptors as it comes (false with `--json`).
    pub stream: bool,
}

/// How the execution ended, or why it did not run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// It ran. `interrupted` is 130 or 143 when the client asked to cancel.
    Done {
        /// The execution's result.
        result: Box<ExecutionResult>,
        /// The exit code for the signal the client forwarded, if any.
        interrupted: Option<i32>,
    },
    /// It could not run: conductor's own error (exit code 2, as in-process).
    Failed {
        /// The message, as `conductor: error: <message>` prints it.
        message: String,
    },
}

/// Sends `request` with `fds` attached.
pub fn send_request(socket: BorrowedFd<'_>, request: &Request, fds: &[RawFd]) -> io::Result<()> {
    let body = serde_json::to_vec(request).map_err(io::Error::other)?;
    let length = u32::try_from(body.len()).map_err(io::Error::other)?;
    let header = length.to_le_bytes();
    let mut parts = [IoSlice::new(&header), IoSlice::new(&body)];
    let mut sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &parts,
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)?;
    // A large request may go out in several writes; the descriptors went with the first.
    let total = header.len() + body.len();
    while sent < total {
        let rest = if sent < header.len() {
            parts = [IoSlice::new(&header[sent..]), IoSlice::new(&body)];
            &parts[..]
        } else {
            parts[0] = IoSlice::new(&body[sent - header.len()..]);
            &parts[..1]
        };
        sent += nix::sys::socket::sendmsg::<()>(
            socket.as_raw_fd(),
            rest,
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io::Error::from)?;
    }
    Ok(())
}

/// Receives a request sent with [`send_request`] and the descriptors that came with it.
pub fn receive_request(socket: &UnixStream) -> io::Result<(Request, Vec<OwnedFd>)> {
    let mut header = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < header.len() {
        let (read, received) = receive_with_fds(socket.as_fd(), &mut header[got..])?;
        fds.extend(received);
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += read;
    }
    let length = u32::from_le_bytes(header) as usize;
    if length > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a request of {length} bytes (at most {MAX_REQUEST})"),
        ));
    }
    let mut body = vec![0u8; length];
    (&*socket).read_exact(&mut body)?;
    let request = serde_json::from_slice(&body).map_err(io::Error::other)?;
    Ok((request, fds))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::io::{Read, Seek, Write};

    use super::*;

    fn request(argv: Vec<String>) -> Request {
        Request {
            executor: ExecutorKind::Namespace,
            argv,
            env: BTreeMap::from([("A".to_owned(), "b".to_owned())]),
            env_allowlist: vec!["BAD=".to_owned()],
            workspace: "/tmp/w".into(),
            rootfs: None,
            cpus: Cpus::new(0.5).ok(),
            memory: Some(Bytes::mib(64)),
            pids: Some(10),
            timeout_ms: Some(1500),
            network: Some(NetworkPolicy::Localhost),
            stream: true,
        }
    }

    #[test]
    fn a_request_and_its_descriptors_arrive_whole() {
        let (client, server) = UnixStream::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        // Larger than a socket buffer: the body goes out in several writes.
        let big = vec!["x".repeat(1 << 20); 2];
        let sent = request(big);
        let sender = std::thread::spawn({
            let sent = sent.clone();
            let fd = file.as_raw_fd();
            move || send_request(client.as_fd(), &sent, &[fd, fd]).unwrap()
        });
        let (received, fds) = receive_request(&server).unwrap();
        sender.join().unwrap();
        assert_eq!(received, sent);
        assert_eq!(fds.len(), 2);
        let mut passed = std::fs::File::from(fds.into_iter().next().unwrap());
        passed.write_all(b"through").unwrap();
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through");
    }

    #[test]
    fn an_oversized_or_cut_request_is_refused() {
        let (mut client, server) = UnixStream::pair().unwrap();
        client
            .write_all(&u32::try_from(MAX_REQUEST + 1).unwrap().to_le_bytes())
            .unwrap();
        let error = receive_request(&server).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");

        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(&10u32.to_le_bytes()).unwrap();
        client.write_all(b"{\"ex").unwrap();
        drop(client);
        let error = receive_request(&server).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    }
}
