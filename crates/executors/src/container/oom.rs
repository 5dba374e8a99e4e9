//! Seeing an OOM kill inside a container from the execution cgroup that is its parent.
//!
//! The memory limit sits on the execution cgroup (see the module docs of `container`). On
//! cgroup v2 its `memory.events` counts OOM kills of the whole subtree, and the cgroup stats
//! report them. On v1 the `oom_kill` counter is kept only by the cgroup the victim is in (the
//! engine's container cgroup, gone once the container exits), so instead an eventfd is
//! registered on the execution cgroup's `memory.oom_control` (`cgroup.event_control`): the
//! kernel signals it whenever that cgroup's limit sends the subtree out of memory.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A registered v1 OOM notification.
#[derive(Debug)]
pub struct OomWatch {
    eventfd: OwnedFd,
    _control: File,
}

impl OomWatch {
    /// Registers on the v1 memory cgroup directory `dir`. `Ok(None)` when `dir` is not a v1
    /// memory cgroup (v2 counts OOM kills in its stats instead).
    pub fn register(dir: &Path) -> io::Result<Option<Self>> {
        let control_path = dir.join("memory.oom_control");
        if !control_path.is_file() {
            return Ok(None);
        }
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let control = File::open(&control_path)?;
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", eventfd.as_raw_fd(), control.as_raw_fd()),
        )?;
        Ok(Some(Self {
            eventfd,
            _control: control,
        }))
    }

    /// How many OOM notifications arrived since registration (or the last call). Call it
    /// before the cgroup is removed: removal signals the eventfd too.
    pub fn take_count(&self) -> u64 {
        let mut value = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer of 8 bytes from a descriptor we own.
        let n = unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n == 8 {
            u64::from_ne_bytes(value)
        } else {
            0
        }
    }
}
