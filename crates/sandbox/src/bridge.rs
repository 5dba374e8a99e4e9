//! The sandbox's side of a port bridge: init listens on `127.0.0.1:PORT` in the sandbox's own
//! network namespace before the command starts, passes the listeners out over the channel
//! (`SCM_RIGHTS`, with a [`Report::Listening`] line) and closes its copies, so nothing inside the
//! sandbox holds them. The executor accepts on them on the host and forwards each connection to
//! a host Unix socket the sandbox cannot see; the listeners die with the executor's copies when
//! the execution ends. Binding from inside works for cold and warm sandboxes, as root and
//! rootless alike (no `setns` into a namespace the caller may not own).

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::report::Report;

/// Most listeners one execution may ask for (one `SCM_RIGHTS` message carries them all).
pub const MAX_BRIDGES: usize = 16;

/// Listens on `127.0.0.1:port` for each of `ports`, in the calling process's network namespace
/// (close-on-exec descriptors).
pub fn listen_loopback(ports: &[u16]) -> io::Result<Vec<OwnedFd>> {
    if ports.len() > MAX_BRIDGES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} bridges asked, at most {MAX_BRIDGES}", ports.len()),
        ));
    }
    ports
        .iter()
        .map(|port| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, *port))
                .map(OwnedFd::from)
                .map_err(|e| io::Error::new(e.kind(), format!("127.0.0.1:{port}: {e}")))
        })
        .collect()
}

/// Sends `listeners` (one per port, in order) over the channel with a [`Report::Listening`] line.
pub fn pass_listeners(channel: &File, ports: &[u16], listeners: &[OwnedFd]) -> io::Result<()> {
    let line = Report::Listening {
        ports: ports.to_vec(),
    }
    .to_line();
    let fds: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(&line)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    // A stream socket may take part of the line; the descriptors went with the first byte.
    if sent < line.len() {
        std::io::Write::write_all(&mut &*channel, &line[sent..])?;
    }
    Ok(())
}

/// One `recvmsg` on the non-blocking channel `socket`: the bytes read into `buf` and the
/// descriptors that came with them (close-on-exec). `WouldBlock` when nothing is there.
pub fn receive_with_fds(socket: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut data = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_BRIDGES]);
    let message = recvmsg::<()>(
        socket,
        &mut data,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for control in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = control {
            // SAFETY: the kernel just installed these descriptors for us; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if message.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the helper sent more descriptors than asked for",
        ));
    }
    Ok((message.bytes, fds))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn listeners_cross_the_channel_with_their_line_and_keep_accepting() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let listeners = listen_loopback(&[0]).unwrap();
        let port = TcpListener::from(listeners[0].try_clone().unwrap())
            .local_addr()
            .unwrap()
            .port();
        pass_listeners(&File::from(OwnedFd::from(theirs)), &[port], &listeners).unwrap();
        drop(listeners);
        let mut buf = [0u8; 256];
        let (n, fds) = receive_with_fds(ours.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("{{\"type\":\"listening\",\"ports\":[{port}]}}\n")
        );
        assert_eq!(fds.len(), 1);
        // The only copy left is the one received: it still accepts.
        let listener = TcpListener::from(fds.into_iter().next().unwrap());
        let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        drop((server, listener));
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    }

    #[test]
    fn too_many_ports_are_refused() {
        let ports = [0u16; MAX_BRIDGES + 1];
        assert_eq!(
            listen_loopback(&ports).unwrap_err().to_string(),
            "17 bridges asked, at most 16"
        );
    }
}
