//! Descriptors a sandboxed command must not inherit: whatever the process that started
//! Conductor left open without close-on-exec (a shell's, a service manager's) would otherwise
//! pass through the executor into the command. And the one descriptor the helper hands init on
//! purpose: the workspace's mount, over a socket ([`send_fd`], [`receive_fd`]).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Sends `fd` over the Unix socket `socket` (with one byte of data).
pub fn send_fd(socket: &OwnedFd, fd: &OwnedFd) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(b"f")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// Receives one descriptor sent with [`send_fd`] (close-on-exec).
pub fn receive_fd(socket: &OwnedFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let (_, fds) = receive_with_fds(socket.as_fd(), &mut byte)?;
    fds.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "no descriptor came (the helper gave up)",
        )
    })
}

/// One `recvmsg` into `buffer`: the bytes read and the descriptors that came with them (up
/// to four, close-on-exec, owned by the caller).
pub fn receive_with_fds(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut data = [IoSliceMut::new(buffer)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut data,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for control in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = control {
            // SAFETY: the kernel just installed these descriptors for us; nothing else owns
            // them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((message.bytes, fds))
}

/// Marks every descriptor from `first` up close-on-exec.
///
/// Async-signal-safe (raw system calls, no allocation), so it may run in `pre_exec`.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    let Ok(first) = u32::try_from(first) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: close_range takes two descriptor numbers and flags, and touches no memory.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if done == 0 {
        return Ok(());
    }
    // Before Linux 5.11 (no CLOSE_RANGE_CLOEXEC): one fcntl per possible descriptor.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = RawFd::try_from(limit.rlim_cur).unwrap_or(RawFd::MAX);
    for fd in RawFd::try_from(first).unwrap_or(RawFd::MAX)..end {
        // SAFETY: F_SETFD on a descriptor number; EBADF for closed ones is expected.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Closes every descriptor from 3 up but `keep`. For the single-threaded helper.
pub fn close_all_except(keep: RawFd) -> io::Result<()> {
    let ranges = [(3, keep - 1), (keep + 1, RawFd::MAX)];
    for (from, to) in ranges {
        let (Ok(from), Ok(to)) = (u32::try_from(from), u32::try_from(to)) else {
            continue;
        };
        if from > to {
            continue;
        }
        // SAFETY: close_range takes two descriptor numbers and flags, and touches no memory.
        if unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) } != 0 {
            return close_listed_except(keep);
        }
    }
    Ok(())
}

/// Before Linux 5.9 (no close_range): the descriptors listed in `/proc/self/fd`.
fn close_listed_except(keep: RawFd) -> io::Result<()> {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        // SAFETY: closing a descriptor number this single-threaded process does not use; the
        // one read_dir used is gone already (EBADF, ignored).
        unsafe { libc::close(fd) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, IntoRawFd};

    use super::*;

    fn flags(fd: RawFd) -> libc::c_int {
        // SAFETY: F_GETFD on a descriptor number touches no memory.
        unsafe { libc::fcntl(fd, libc::F_GETFD) }
    }

    fn is_cloexec(fd: RawFd) -> bool {
        let flags = flags(fd);
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn every_descriptor_from_first_becomes_close_on_exec() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: clearing the flags of a descriptor we own.
        let cleared = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) };
        assert_eq!(cleared, 0);
        assert!(!is_cloexec(file.as_raw_fd()));
        cloexec_from(file.as_raw_fd()).unwrap();
        assert!(is_cloexec(file.as_raw_fd()));
    }

    #[test]
    fn close_all_except_runs_in_a_child_and_keeps_one() {
        let kept = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        let other = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        // A child process, so the test harness's own descriptors survive.
        // SAFETY: the child only makes system calls and exits.
        match unsafe { libc::fork() } {
            0 => {
                let ok = close_all_except(kept).is_ok() && flags(kept) >= 0 && flags(other) < 0;
                // SAFETY: leaving the child without running the parent's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                assert!(pid > 0);
                let mut status = 0;
                // SAFETY: waiting for our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            }
        }
    }
}
