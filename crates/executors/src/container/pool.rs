//! The warm pool: containers created and started ahead of time, each waiting for one command,
//! so that an execution starts without the engine's create and start (the bulk of a cold start:
//! runc, conmon or containerd-shim, the init).
//!
//! **Why started and waiting, not created.** A created container still costs the engine's
//! start when taken (most of the cold time: about 250 ms of Docker's 300 ms here), and what is
//! fixed at create (the command, the workspace bind) is exactly what differs per execution. A
//! warm container instead runs `/bin/sh` under the engine's init, blocked opening a FIFO; taking
//! it means binding the execution's workspace into it, writing the limits into its cgroup and
//! writing the command into the FIFO: a few milliseconds.
//!
//! **How the workspace gets in.** Each warm container has a slot directory on the host
//! (`<pool dir>/<owner>-<slot>/`): `workspace/` is a bind mount of itself made a shared mount of
//! its own peer group and bound into the container at the working directory with `rslave`
//! propagation; `control/command` is the FIFO, bound read-only at `/.conductor`. Taking the
//! container bind-mounts the execution's workspace on `workspace/`: the mount propagates into
//! the container, where the command's `cd` sees it. Only the engine's own mount namespace
//! (rootful engines here) needs to receive that propagation.
//!
//! **What can be pre-decided.** Limits live on the execution's cgroup (the container's cgroup
//! parent; memory, CPU quota and pids are hierarchical), the environment and argv go through
//! the FIFO. The network mode and rlimits are fixed at create: a request gets a warm container
//! only when they are the pool's (no network, default rlimits); any other runs cold.
//!
//! **Never reused** (unless the environment opts in: `warm_reuse`, see `resident`). The command
//! `exec`s over the waiting shell, so the container ends with the command and is removed like a
//! cold one; the pool refills in the background. Every warm
//! container carries the owner label, so one left by a crashed process is removed by the next
//! `warmup()`, which also unmounts and removes that process's slot directories.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

/// A warm container's directory on the host.
#[derive(Debug, Clone)]
pub struct Slot {
    dir: PathBuf,
}

impl Slot {
    /// Makes `<root>/<name>/`: `workspace/` and `home/` as shared mounts of their own, and the
    /// FIFO; for a
    /// resident container (see `resident`) also the status and output FIFOs, and all of them
    /// root's alone (its agent runs as root, its commands do not).
    pub fn create(root: &Path, name: &str, resident: bool) -> io::Result<Self> {
        let slot = Self {
            dir: root.join(name),
        };
        std::fs::create_dir_all(slot.workspace())?;
        std::fs::create_dir_all(slot.home())?;
        std::fs::create_dir_all(slot.control())?;
        let made = (|| {
            share_in_place(&slot.workspace())?;
            share_in_place(&slot.home())?;
            if resident {
                for fifo in [slot.fifo(), slot.status(), slot.stdout(), slot.stderr()] {
                    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))?;
                }
            } else {
                // Root's, readable by the container's user (it only ever holds the command,
                // which that container runs anyway).
                nix::unistd::mkfifo(&slot.fifo(), Mode::from_bits_truncate(0o644))?;
            }
            Ok::<_, nix::Error>(())
        })();
        if let Err(e) = made {
            slot.remove();
            return Err(io::Error::from(e));
        }
        Ok(slot)
    }

    /// The shared mount point bound into the container.
    pub fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    /// The shared mount point bound into the container at the sandbox's home.
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The directory bound read-only at [`CONTROL_TARGET`](super::scripts::CONTROL_TARGET).
    pub fn control(&self) -> PathBuf {
        self.dir.join("control")
    }

    fn fifo(&self) -> PathBuf {
        self.control().join("command")
    }

    /// A resident container's FIFO its agent writes each command's exit status to.
    pub fn status(&self) -> PathBuf {
        self.control().join("status")
    }

    /// A resident container's FIFO each command's stdout goes to.
    pub fn stdout(&self) -> PathBuf {
        self.control().join("stdout")
    }

    /// A resident container's FIFO each command's stderr goes to.
    pub fn stderr(&self) -> PathBuf {
        self.control().join("stderr")
    }

    /// Binds `workspace` (with what is mounted below it) on the slot, and `home` when given:
    /// they appear in the container.
    pub fn bind(&self, workspace: &Path, home: Option<&Path>) -> io::Result<()> {
        bind_on(workspace, &self.workspace())?;
        if let Some(home) = home {
            if let Err(e) = bind_on(home, &self.home()) {
                let _ = self.unbind(false);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Unbinds what [`Slot::bind`] bound (lazily: a process of the container may still be
    /// leaving it), leaving the slot's own mounts: the workspace, and the home when `home`.
    pub fn unbind(&self, home: bool) -> io::Result<()> {
        let workspace = umount2(&self.workspace(), MntFlags::MNT_DETACH);
        if home {
            umount2(&self.home(), MntFlags::MNT_DETACH)?;
        }
        workspace.map_err(io::Error::from)
    }

    /// The FIFO's write end, once the container's shell has opened it for reading: fails with
    /// `ENXIO` while no shell is waiting. Keep it open until the script is sent: closing it
    /// ends the (then empty) script.
    pub fn open_writer(&self) -> io::Result<File> {
        let fifo = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(self.fifo())?;
        // Blocking from here on: a script longer than the pipe waits for the reader.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&fifo);
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(fifo)
    }

    /// Unmounts everything on the slot (lazily: the engine may still hold it) and removes it.
    pub fn remove(&self) {
        remove_slot_dir(&self.dir);
    }
}

/// `path` bound on itself and made a shared mount of its own peer group.
fn share_in_place(path: &Path) -> nix::Result<()> {
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    // Its own peer group: private first, then shared.
    for propagation in [MsFlags::MS_PRIVATE, MsFlags::MS_SHARED] {
        mount(None::<&str>, path, None::<&str>, propagation, None::<&str>)?;
    }
    Ok(())
}

/// Binds `source` (with what is mounted below it) on `target`.
fn bind_on(source: &Path, target: &Path) -> io::Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Unmounts the workspace and home mounts of slot directory `dir` and removes it.
pub fn remove_slot_dir(dir: &Path) {
    let workspace = dir.join("workspace");
    let home = dir.join("home");
    // The execution's binds on top, then the slot's own: unmount until nothing is left.
    for mounted in [&workspace, &home] {
        for _ in 0..4 {
            if umount2(mounted, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
    // Never recursive: if a mount were still there, removing would reach into the workspace.
    let fifos = ["command", "status", "stdout", "stderr"];
    for path in fifos
        .iter()
        .map(|fifo| dir.join("control").join(fifo))
        .chain([dir.join("control"), workspace, home, dir.to_owned()])
    {
        let is_fifo = path
            .file_name()
            .is_some_and(|name| fifos.iter().any(|fifo| name == *fifo));
        let removed = if is_fifo {
            std::fs::remove_file(&path)
        } else {
            std::fs::remove_dir(&path)
        };
        if let Err(e) = removed {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(error = %e, path = %path.display(), "removing a warm container's slot");
            }
        }
    }
}

/// Writes `script` down the FIFO and closes it: the shell reads it whole, then runs it.
pub fn send(mut fifo: File, script: &str) -> io::Result<()> {
    fifo.write_all(script.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_mount_share_and_clean_up() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: mounting needs root");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let workspace = tempfile::tempdir().unwrap();
        std::fs::write(workspace.path().join("file"), "x").unwrap();
        let slot = Slot::create(root.path(), "s1", false).unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(&*slot.workspace().display().to_string()))
            .unwrap()
            .to_owned();
        assert!(line.contains(" shared:"), "{line}");
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".rc"), "h").unwrap();
        slot.bind(workspace.path(), Some(home.path())).unwrap();
        assert_eq!(
            std::fs::read_to_string(slot.workspace().join("file")).unwrap(),
            "x"
        );
        assert_eq!(
            std::fs::read_to_string(slot.home().join(".rc")).unwrap(),
            "h"
        );
        // Unbound, the slot's own (empty) mounts are left for the next execution.
        slot.unbind(true).unwrap();
        assert!(!slot.workspace().join("file").exists());
        assert!(!slot.home().join(".rc").exists());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let home_point = slot.home().display().to_string();
        assert!(mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&*home_point)));
        slot.bind(workspace.path(), None).unwrap();
        // No reader: the container is not waiting.
        assert_eq!(
            slot.open_writer().unwrap_err().raw_os_error(),
            Some(libc::ENXIO)
        );
        // A reader like the container's shell: the writer opens and what is sent arrives.
        let reader = std::thread::spawn({
            let fifo = slot.control().join("command");
            move || std::fs::read_to_string(fifo).unwrap()
        });
        let writer = loop {
            match slot.open_writer() {
                Ok(writer) => break writer,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        };
        send(writer, "exit 0\n").unwrap();
        assert_eq!(reader.join().unwrap(), "exit 0\n");
        slot.remove();
        assert!(!root.path().join("s1").exists());
        assert_eq!(
            std::fs::read_to_string(workspace.path().join("file")).unwrap(),
            "x"
        );
    }
}
