//! Running the builder's external commands: output merged and handed over line by line (for
//! progress), the last lines kept for the error message; chroot commands run in a private mount
//! namespace so the `/proc` they mount disappears with them, however they end.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::EnvError;

/// Lines of output kept for a failure message.
const TAIL_LINES: usize = 30;

/// Host variables passed to build commands (proxies, for apt, pip and npm).
const PASSED_ENV: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Runs `command` (stdin from /dev/null, stdout and stderr merged), calling `line` for each
/// output line. Fails with the last lines when it does not exit 0.
pub fn run(step: &str, mut command: Command, line: &mut dyn FnMut(&str)) -> Result<(), EnvError> {
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EnvError::io("creating a pipe", e.into()))?;
    let reader = std::fs::File::from(reader);
    let writer2 = writer
        .try_clone()
        .map_err(|e| EnvError::io("creating a pipe", e))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2));
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EnvError::io(format!("{step}: {program} not found"), e)
        } else {
            EnvError::io(format!("{step}: starting {program}"), e)
        }
    })?;
    // The command holds the only write ends now (ours went into `command`, dropped below).
    drop(command);
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    for text in BufReader::new(reader).split(b'\n') {
        let Ok(text) = text else { break };
        let text = String::from_utf8_lossy(&text);
        let text = text.trim_end_matches('\r');
        line(text);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text.to_owned());
    }
    let status = child
        .wait()
        .map_err(|e| EnvError::io(format!("{step}: waiting for {program}"), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(EnvError::StepFailed {
            step: step.to_owned(),
            status: status.to_string(),
            tail: Vec::from(tail).join("\n"),
        })
    }
}

/// A command with an empty environment but for `PATH`, the locale, non-interactive apt and the
/// host's proxy variables.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("HOME", "/root");
    for name in PASSED_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
}

/// `argv` run inside a private mount namespace (`unshare --mount --propagation private`): the
/// mounts it makes (debootstrap's `/proc` and `/sys`, ours) vanish when it exits, even when it
/// is killed.
pub fn in_private_mounts(argv: &[&str]) -> Command {
    let mut command = clean_command("unshare");
    command.args(["--mount", "--propagation", "private", "--"]);
    command.args(argv);
    command
}

/// `argv` run chrooted in `root`, with a fresh `/proc` mounted there for its lifetime only.
pub fn in_chroot(root: &Path, argv: &[&str]) -> Command {
    const SCRIPT: &str =
        r#"root=$1; shift; mount -t proc proc "$root/proc" && exec chroot "$root" "$@""#;
    let root = root.to_string_lossy();
    let mut all = vec!["/bin/sh", "-c", SCRIPT, "conductor-chroot", root.as_ref()];
    all.extend_from_slice(argv);
    in_private_mounts(&all)
}

/// Mount points at or under `dir`, deepest first (from `/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Removes a build directory, first detaching anything still mounted under it (a build killed
/// outside its private mount namespace); refuses when a mount cannot be removed, so a host
/// directory bound inside is never deleted through it.
pub fn remove_build_dir(dir: &Path) -> Result<(), EnvError> {
    for point in mounts_under(dir) {
        nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
            EnvError::Busy(format!(
                "cannot unmount {} before removing {}: {e}",
                point.display(),
                dir.display()
            ))
        })?;
    }
    if !mounts_under(dir).is_empty() {
        return Err(EnvError::Busy(format!(
            "{} still has mounts under it; not removing it",
            dir.display()
        )));
    }
    // What a build's commands made, at any depth (std's remove_dir_all recurses, holding a
    // descriptor per level). Missing is fine.
    conductor_workspace::remove_tree(dir).map_err(|e| {
        let context = format!("removing {}", dir.display());
        match e {
            conductor_workspace::TreeError::Io { source, .. } => EnvError::io(context, source),
            other => EnvError::io(context, std::io::Error::other(other)),
        }
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = &field[i + 1..i + 4];
            if let Ok(value) = u8::from_str_radix(octal, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_streams_lines_and_reports_the_tail_on_failure() {
        let mut lines = Vec::new();
        let mut command = clean_command("sh");
        command.args(["-c", "echo one; echo two >&2; exit 3"]);
        let err = run("probing", command, &mut |l| lines.push(l.to_owned())).unwrap_err();
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(
            err.to_string(),
            "probing failed (exit status: 3); last output:\none\ntwo"
        );
        let mut command = clean_command("sh");
        command.args(["-c", "echo ok"]);
        run("probing", command, &mut |_| {}).unwrap();
    }

    #[test]
    fn a_build_dir_of_any_depth_is_removed_on_a_small_stack() {
        use std::os::fd::AsRawFd;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("build");
        std::fs::create_dir(&dir).unwrap();
        // 10 000 levels, each made relative to the one above (no long path).
        let mut current = std::fs::File::open(&dir).unwrap();
        for _ in 0..10_000 {
            let next = format!("/proc/self/fd/{}/d", current.as_raw_fd());
            std::fs::create_dir(&next).unwrap();
            current = std::fs::File::open(&next).unwrap();
        }
        drop(current);
        let removed = dir.clone();
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || remove_build_dir(&removed))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(!dir.exists());
        remove_build_dir(&dir).unwrap();
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert!(mounts_under(Path::new("/proc")).contains(&PathBuf::from("/proc")));
    }
}
