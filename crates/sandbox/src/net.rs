//! A fresh network namespace's interfaces: its loopback, and for `full` the veth the executor
//! made on the host (see [`SandboxInterface`]).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::spec::SandboxInterface;

/// Sets `IFF_UP` on `lo` in the calling process's network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the returned descriptor is checked and then owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface named in `request` and writes its flags into the
    // union inside `request`, which lives across the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just filled `ifru_flags`, the union member SIOCGIFFLAGS uses.
    unsafe {
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `request` (name and flags) and does not keep the pointer.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the host end `interface.peer` of a veth pair into the network namespace of `pid` (the
/// sandbox's init) and, in that namespace, names it `eth0`, gives it its address, brings it up
/// and routes everything through the host end: `full`'s namespace of its own. Runs `ip` twice
/// (the second time entered into the namespace), before the command starts.
pub fn attach_interface(interface: &SandboxInterface, pid: i32) -> io::Result<()> {
    run_ip(
        &interface.ip_binary,
        &format!("link set dev {} netns {pid}\n", interface.peer),
        None,
    )?;
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let inside = format!(
        "link set dev {peer} name eth0\naddr add {address}/{prefix} dev eth0\n\
         link set dev eth0 up\nroute add default via {gateway} dev eth0\n",
        peer = interface.peer,
        address = interface.address,
        prefix = interface.prefix,
        gateway = interface.gateway,
    );
    run_ip(&interface.ip_binary, &inside, Some(namespace))
}

/// Runs `ip -batch -` with `commands` on its stdin, in the network namespace `namespace` (else
/// the caller's).
fn run_ip(ip: &Path, commands: &str, namespace: Option<std::fs::File>) -> io::Result<()> {
    let mut command = Command::new(ip);
    command
        .args(["-batch", "-"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(namespace) = namespace {
        // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
        // which is async-signal-safe; the helper is single-threaded anyway.
        unsafe {
            command.pre_exec(move || {
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)
            });
        }
    }
    let mut child = command.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(commands.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} -batch ({}) failed with {}: {}",
            ip.display(),
            commands.trim().replace('\n', "; "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
