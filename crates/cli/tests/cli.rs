//! `conductor exec` from the outside: the real binary, its streams and its exit codes.
#![allow(clippy::unwrap_used)] // a test binary: a failed unwrap is a failed test

use std::process::{Command, Output};

/// `conductor ARGS` with `conductor exec` going through the resident executor (started for
/// this test binary on first use, in a directory of its own, leaving 20 s after its last run).
fn conductor(args: &[&str]) -> Output {
    conductor_as(Mode::Resident, args)
}

/// How `conductor exec` runs: through the resident executor, or in its own process.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Resident,
    InProcess,
}

const MODES: [Mode; 2] = [Mode::Resident, Mode::InProcess];

fn command_as(mode: Mode) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conductor"));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("resident-cli-tests");
    command
        .env("CONDUCTOR_LOG", "off")
        .env("CONDUCTOR_RESIDENT_DIR", dir)
        .env("CONDUCTOR_RESIDENT_IDLE", "20")
        .env(
            "CONDUCTOR_RESIDENT",
            match mode {
                Mode::Resident => "wait",
                Mode::InProcess => "0",
            },
        );
    command
}

fn conductor_as(mode: Mode, args: &[&str]) -> Output {
    command_as(mode).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn host_exec_streams_output_and_exits_with_the_command_code() {
    for mode in MODES {
        let out = conductor_as(
            mode,
            &[
                "exec",
                "--executor",
                "host",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 7",
            ],
        );
        assert_eq!(
            (out.status.code(), text(&out.stdout), text(&out.stderr)),
            (
                Some(7),
                "out\n".to_owned(),
                "err\nconductor: note: ran without a limit on memory, cpus, pids, timeout (set --memory, --cpus, --pids, --timeout)\n".to_owned()
            ),
            "{mode:?}"
        );
    }
}

#[test]
fn json_prints_one_object_and_nothing_else() {
    for mode in MODES {
        json_prints_one_object_and_nothing_else_in(mode);
    }
}

fn json_prints_one_object_and_nothing_else_in(mode: Mode) {
    let out = conductor_as(
        mode,
        &[
            "exec",
            "--executor",
            "host",
            "--json",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "stdout: {stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            &json["exit_code"],
            &json["stdout"],
            &json["stderr"],
            &json["executor"],
            &json["timed_out"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!("out\n"),
            &serde_json::json!("err\n"),
            &serde_json::json!("host"),
            &serde_json::json!(false)
        )
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn bad_memory_is_one_line_naming_the_flag() {
    let out = conductor(&["exec", "--memory", "-5g", "--", "true"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "conductor: error: invalid value '-5g' for '--memory <SIZE>': size \"-5g\" is negative"
        ),
        "{stderr}"
    );
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn missing_workspace_is_a_usage_error() {
    let out = conductor(&[
        "exec",
        "--executor",
        "host",
        "--workspace",
        "/nonexistent/conductor-ws",
        "--",
        "true",
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(2),
            "conductor: error: --workspace /nonexistent/conductor-ws: no such directory (create it first, or leave --workspace out for a temporary one)\n".to_owned()
        )
    );
}

#[test]
fn missing_rootfs_is_a_usage_error() {
    let out = conductor(&["exec", "--rootfs", "/nonexistent/rootfs", "--", "true"]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(2),
            "conductor: error: --rootfs /nonexistent/rootfs: no such directory\n".to_owned()
        )
    );
}

#[test]
fn host_refuses_network_none_with_a_clear_error() {
    let out = conductor(&[
        "exec",
        "--executor",
        "host",
        "--network",
        "none",
        "--",
        "true",
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(2),
            "conductor: error: network policy none is not supported yet by the host executor\n"
                .to_owned()
        )
    );
}

#[test]
fn given_workspace_is_the_working_directory_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().to_str().unwrap();
    let out = conductor(&[
        "exec",
        "--executor",
        "host",
        "--workspace",
        ws,
        "--",
        "sh",
        "-c",
        "pwd; echo x > kept",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}\n", dir.path().canonicalize().unwrap().display())
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("kept")).unwrap(),
        "x\n"
    );
}

#[test]
fn missing_program_exits_127_with_a_message() {
    let out = conductor(&[
        "exec",
        "--executor",
        "host",
        "--",
        "conductor-no-such-program",
    ]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).starts_with("conductor: conductor-no-such-program: command not found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn timeout_exits_124() {
    let out = conductor(&[
        "exec",
        "--executor",
        "host",
        "--timeout",
        "1s",
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
}

#[test]
fn sigterm_cancels_and_exits_143() {
    for mode in MODES {
        sigterm_cancels_and_exits_143_in(mode);
    }
}

fn sigterm_cancels_and_exits_143_in(mode: Mode) {
    let child = command_as(mode)
        .args(["exec", "--executor", "host", "--json", "--", "sleep", "30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(143));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["cancelled"], serde_json::json!(true));
}

#[test]
fn namespace_exec_has_its_own_hostname() {
    for mode in MODES {
        namespace_exec_has_its_own_hostname_in(mode);
    }
}

fn namespace_exec_has_its_own_hostname_in(mode: Mode) {
    let out = conductor_as(mode, &["exec", "--executor", "namespace", "--", "hostname"]);
    let stderr = text(&out.stderr);
    if out.status.code() == Some(2) && stderr.contains("executor is unavailable") {
        eprintln!("skipping: this machine cannot run the namespace executor: {stderr}");
        return;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let inside = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !inside.trim().is_empty() && inside.trim() != host.trim(),
        "expected a hostname other than the host's {host:?}, got {inside:?}"
    );
}

#[test]
fn auto_runs_without_a_warning_where_namespaces_work() {
    let out = conductor(&["exec", "--", "sh", "-c", "echo ok"]);
    let stderr = text(&out.stderr);
    if stderr.starts_with("conductor: warning: ") {
        assert!(
            stderr.contains(
                "running on the host with process isolation only, and the network defaults to full"
            ),
            "{stderr}"
        );
    } else {
        assert_eq!(
            stderr,
            "conductor: note: ran without a limit on memory, cpus, pids, timeout (set --memory, --cpus, --pids, --timeout)\n"
        );
    }
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "ok\n".to_owned())
    );
}

/// A descriptor the caller left open without close-on-exec (here the shell's fd 7) does not
/// reach the command, with either executor.
#[test]
fn inherited_descriptors_stay_out_of_the_command() {
    for (executor, mode) in [
        ("host", Mode::Resident),
        ("namespace", Mode::Resident),
        ("host", Mode::InProcess),
        ("namespace", Mode::InProcess),
    ] {
        let script = format!(
            "exec 7</dev/null; exec {} exec --executor {executor} -- ls /proc/self/fd",
            env!("CARGO_BIN_EXE_conductor")
        );
        let command = command_as(mode);
        let out = Command::new("sh")
            .args(["-c", &script])
            .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .output()
            .unwrap();
        if executor == "namespace" && out.status.code() == Some(2) {
            eprintln!("skipped namespace: {}", text(&out.stderr));
            continue;
        }
        // 0-2, and 3: the directory ls is reading.
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), "0\n1\n2\n3\n".to_owned()),
            "{executor} {mode:?}: {}",
            text(&out.stderr)
        );
    }
}

/// `conductor exec --executor namespace --workspace WS -- sh -c SCRIPT`, or `None` (a skip)
/// where the namespace executor cannot hand a workspace over (not root, or no namespaces).
fn namespace_exec_in(ws: &std::path::Path, script: &str) -> Option<Output> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: only root hands a workspace to the sandbox's user");
        return None;
    }
    let out = conductor(&[
        "exec",
        "--executor",
        "namespace",
        "--workspace",
        ws.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ]);
    let stderr = text(&out.stderr);
    if out.status.code() == Some(2) && stderr.contains("executor is unavailable") {
        eprintln!("skipping: this machine cannot run the namespace executor: {stderr}");
        return None;
    }
    Some(out)
}

fn owner(path: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

#[test]
fn exec_workspace_refuses_a_hard_link_to_a_file_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "host file\n").unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::hard_link(&outside, ws.join("link")).unwrap();
    let Some(out) = namespace_exec_in(&ws, "echo pwned > link") else {
        return;
    };
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: has 2 hard links",
            ws.canonicalize().unwrap().join("link").display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host file\n");
    assert_eq!(owner(&outside), (0, 0));
    assert_eq!(owner(&ws), (0, 0));
}

#[test]
fn exec_workspace_gets_its_owners_back() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    std::fs::write(ws.join("sub/mine"), "m").unwrap();
    std::fs::write(ws.join("theirs"), "t").unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(ws.join("theirs"), Some(1001), Some(1002)).unwrap();
    }
    let Some(out) = namespace_exec_in(&ws, "echo x > sub/mine && echo n > new && mkdir d && id -u")
    else {
        return;
    };
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "0\n".to_owned()),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(ws.join("sub/mine")).unwrap(), "x\n");
    for path in ["", "sub", "sub/mine", "new", "d"] {
        assert_eq!(owner(&ws.join(path)), (0, 0), "{path}");
    }
    assert_eq!(owner(&ws.join("theirs")), (1001, 1002));
}

#[test]
fn exec_workspace_refuses_system_directories() {
    for dir in ["/", "/etc", "/usr/lib", "/proc", "/var"] {
        let out = conductor(&[
            "exec",
            "--executor",
            "host",
            "--workspace",
            dir,
            "--",
            "true",
        ]);
        assert_eq!(
            (out.status.code(), text(&out.stderr)),
            (
                Some(2),
                format!("conductor: error: --workspace: refused: {dir}: a system directory cannot be a workspace (its files would be handed to the sandbox): use a directory of your own\n")
            ),
            "{dir}"
        );
    }
}

#[test]
fn exec_workspace_ten_thousand_levels_deep_is_handed_over_and_back() {
    use std::os::fd::AsRawFd;

    use nix::dir::Dir;
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;

    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // Built through descriptors: the path is far past PATH_MAX.
    let mut fd = Dir::open(&ws, flags, Mode::empty()).unwrap();
    for _ in 0..10_000 {
        nix::sys::stat::mkdirat(Some(fd.as_raw_fd()), "d", Mode::from_bits_truncate(0o755))
            .unwrap();
        fd = Dir::openat(Some(fd.as_raw_fd()), "d", flags, Mode::empty()).unwrap();
    }
    let Some(out) = namespace_exec_in(&ws, "test -d d/d/d") else {
        return;
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let deepest = nix::sys::stat::fstat(fd.as_raw_fd()).unwrap();
    assert_eq!((deepest.st_uid, deepest.st_gid), (0, 0));
}
