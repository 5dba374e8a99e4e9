//! The resident executor from the outside: it starts on first use, serves, refuses a place that
//! is not private, replaces a dead one's socket, cancels when its client dies, and leaves when
//! idle. (What a command sees through it is `cli.rs`, which runs its cases both ways.)
#![allow(clippy::unwrap_used)] // a test binary: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `conductor exec --executor host ARGS…` with the resident in `dir`.
fn exec(dir: &Path, mode: &str, args: &[&str]) -> Output {
    command(dir, mode)
        .args(["exec", "--executor", "host", "--"])
        .args(args)
        .output()
        .unwrap()
}

fn command(dir: &Path, mode: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conductor"));
    command
        .env("CONDUCTOR_LOG", "off")
        .env("CONDUCTOR_RESIDENT_DIR", dir)
        .env("CONDUCTOR_RESIDENT_IDLE", "2")
        .env("CONDUCTOR_RESIDENT", mode);
    command
}

fn file_ending(dir: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .find(|path| path.to_string_lossy().ends_with(suffix))
}

/// Waits (10 s at most) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a resident holds the lock in `dir`.
fn resident_runs(dir: &Path) -> bool {
    let Some(lock) = file_ending(dir, ".lock") else {
        return false;
    };
    let file = std::fs::File::open(lock).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock).is_err()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_first_run_starts_a_resident_that_serves_then_leaves_when_idle() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("resident");
    // No resident yet: this run is in-process, and starts one.
    let out = exec(&dir, "1", &["sh", "-c", "echo first"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "first\n".to_owned()),
        "{}",
        text(&out.stderr)
    );
    eventually("the resident listens", || {
        file_ending(&dir, ".sock").is_some()
    });
    assert!(resident_runs(&dir));
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let socket = file_ending(&dir, ".sock").unwrap();
    let socket_mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(socket_mode & 0o777, 0o600);

    let out = exec(&dir, "1", &["sh", "-c", "echo second; exit 4"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(4), "second\n".to_owned())
    );
    // Idle for 2 s: it removes its socket and leaves.
    eventually("the resident leaves", || {
        file_ending(&dir, ".sock").is_none() && !resident_runs(&dir)
    });
    // The next run starts another.
    let out = exec(&dir, "wait", &["true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(resident_runs(&dir));
}

#[test]
fn a_place_open_to_other_users_is_not_used() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("open");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = exec(&dir, "1", &["sh", "-c", "echo ran"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "ran\n".to_owned())
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn a_dead_residents_socket_is_replaced() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("stale");
    let out = exec(&dir, "wait", &["true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let socket = file_ending(&dir, ".sock").unwrap();
    // kill -9 the resident: its socket stays behind, nobody listens on it.
    let pid = resident_pid(&dir);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    eventually("the resident is gone", || !resident_runs(&dir));
    assert!(socket.exists());
    let out = exec(&dir, "wait", &["sh", "-c", "echo again"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "again\n".to_owned()),
        "{}",
        text(&out.stderr)
    );
    assert_ne!(resident_pid(&dir), pid);
}

/// The pid of the resident whose socket is in `dir` (the process listening on it).
fn resident_pid(dir: &Path) -> nix::unistd::Pid {
    let wanted = dir.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc").unwrap() {
        let path = entry.unwrap().path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        if !cmdline.windows(15).any(|w| w == b"__exec-resident") {
            continue;
        }
        let Ok(environ) = std::fs::read(path.join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|var| var.ends_with(wanted)) {
            let pid: i32 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            return nix::unistd::Pid::from_raw(pid);
        }
    }
    panic!("no resident for {}", dir.display());
}

#[test]
fn killing_the_client_cancels_its_command() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("cancel");
    let out = exec(&dir, "wait", &["true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pid_file = temp.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let mut client = command(&dir, "wait")
        .args(["exec", "--executor", "host", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the command runs", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    client.kill().unwrap();
    client.wait().unwrap();
    eventually("the command is killed", || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.contains(") Z "))
    });
}

/// Without `CONDUCTOR_RESIDENT_DIR` or `XDG_RUNTIME_DIR` the resident finds its default place,
/// also where `/run/conductor` exists already, open for reading (the container executors make
/// it so): a run that waits for the resident succeeds through it.
#[test]
fn the_default_place_is_usable_beside_the_container_executors_directory() {
    if nix::unistd::geteuid().is_root() {
        std::fs::create_dir_all("/run/conductor").unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .args([
            "exec",
            "--executor",
            "host",
            "--",
            "sh",
            "-c",
            "echo default",
        ])
        .env("CONDUCTOR_LOG", "off")
        .env("CONDUCTOR_RESIDENT", "wait")
        .env("CONDUCTOR_RESIDENT_IDLE", "2")
        .env_remove("CONDUCTOR_RESIDENT_DIR")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "default\n".to_owned()),
        "{}",
        text(&out.stderr)
    );
    if nix::unistd::geteuid().is_root() {
        let dir = Path::new("/run/conductor/resident");
        assert!(
            file_ending(dir, ".sock").is_some(),
            "no socket in {}",
            dir.display()
        );
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
