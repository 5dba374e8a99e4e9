//! Smoke tests of the namespace executor on the real kernel, with the real `conductor` binary as
//! the sandbox helper. They need root or unprivileged user namespaces; without user namespaces
//! they are skipped with the reason.

#![allow(clippy::unwrap_used)] // a test binary: a failed unwrap is a failed test

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use conductor_core::{Executor, ExecutorError};
use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
use conductor_sandbox::spec::DEFAULT_UID_BASE;
use conductor_types::{ExecutionRequest, ExecutionResult, NetworkPolicy};

fn executor() -> Option<NamespaceExecutor> {
    let config = NamespaceConfig {
        helper_path: env!("CARGO_BIN_EXE_conductor").into(),
        ..NamespaceConfig::default()
    };
    match NamespaceExecutor::new(config) {
        Ok(executor) => Some(executor),
        Err(ExecutorError::Unavailable { reason, .. }) => {
            eprintln!("skipped: the namespace executor is unavailable: {reason}");
            None
        }
        Err(e) => panic!("creating the namespace executor: {e}"),
    }
}

/// This process's effective uid (the owner of its /proc directory).
fn euid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

fn request(argv: &[&str], workspace: &std::path::Path) -> ExecutionRequest {
    ExecutionRequest::new(
        argv.iter().map(|s| (*s).to_owned()).collect(),
        workspace.into(),
    )
}

async fn run_request(executor: &NamespaceExecutor, request: ExecutionRequest) -> ExecutionResult {
    let (events, mut receiver) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    let result = executor.execute(request, events).await;
    drain.await.unwrap();
    result.unwrap()
}

async fn sh(script: &str) -> Option<ExecutionResult> {
    let executor = executor()?;
    let workspace = tempfile::tempdir().unwrap();
    Some(run_request(&executor, request(&["sh", "-c", script], workspace.path())).await)
}

#[tokio::test]
async fn echo_prints_and_exits_zero() {
    let Some(executor) = executor() else { return };
    let workspace = tempfile::tempdir().unwrap();
    let result = run_request(&executor, request(&["echo", "hello"], workspace.path())).await;
    assert_eq!(
        (
            result.exit_code,
            result.signal,
            result.stdout.as_str(),
            result.stderr.as_str()
        ),
        (0, None, "hello\n", "")
    );
    assert_eq!(result.executor, "namespace");
}

#[tokio::test]
async fn exit_codes_and_signals_follow_the_conventions() {
    let Some(result) = sh("exit 3").await else {
        return;
    };
    assert_eq!((result.exit_code, result.signal), (3, None));
    let Some(result) = sh("kill -9 $$").await else {
        return;
    };
    assert_eq!((result.exit_code, result.signal), (137, Some(9)));
}

#[tokio::test]
async fn a_missing_program_exits_127_with_a_message() {
    let Some(executor) = executor() else { return };
    let workspace = tempfile::tempdir().unwrap();
    let result = run_request(
        &executor,
        request(&["no-such-program-here"], workspace.path()),
    )
    .await;
    assert_eq!(
        (result.exit_code, result.stderr.as_str()),
        (
            127,
            "conductor: cannot execute no-such-program-here: No such file or directory\n"
        )
    );
}

#[tokio::test]
async fn hostname_is_the_sandbox_own() {
    let Some(executor) = executor() else { return };
    let workspace = tempfile::tempdir().unwrap();
    let req = request(&["uname", "-n"], workspace.path());
    let expected = format!("conductor-{}\n", req.id.short());
    let result = run_request(&executor, req).await;
    assert_eq!(result.stdout, expected);
    assert_ne!(
        result.stdout.trim(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
    );
}

#[tokio::test]
async fn system_directories_and_the_root_are_read_only() {
    let Some(result) =
        sh("touch /usr/conductor-test; echo $?; touch /x; echo $?; touch /tmp/x && echo tmp-ok")
            .await
    else {
        return;
    };
    assert_eq!(result.stdout, "1\n1\ntmp-ok\n");
    assert!(
        result.stderr.contains("Read-only file system"),
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn only_the_sandbox_processes_are_visible() {
    let Some(result) = sh("ls /proc | grep -c '^[0-9]'").await else {
        return;
    };
    // init, sh, ls, grep at most.
    let count: u32 = result.stdout.trim().parse().unwrap();
    assert!(count <= 4, "{count} pids visible: {}", result.stdout);
    let Some(result) = sh("echo $$").await else {
        return;
    };
    assert_eq!(result.stdout, "2\n");
}

#[tokio::test]
async fn host_files_are_hidden() {
    let Some(result) = sh("ls /root /home /etc/shadow 2>&1; wc -l < /etc/passwd").await else {
        return;
    };
    assert_eq!(
        result.stdout,
        "ls: cannot access '/root': No such file or directory\n\
         ls: cannot access '/home': No such file or directory\n\
         ls: cannot access '/etc/shadow': No such file or directory\n\
         2\n"
    );
}

#[tokio::test]
async fn workspace_files_belong_to_the_mapped_root() {
    let Some(executor) = executor() else { return };
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("input"), "from host\n").unwrap();
    let result = run_request(
        &executor,
        request(
            &[
                "sh",
                "-c",
                "cat input && echo out > /workspace/output && id -u",
            ],
            workspace.path(),
        ),
    )
    .await;
    assert_eq!(
        (result.exit_code, result.stdout.as_str()),
        (0, "from host\n0\n"),
        "{}",
        result.stderr
    );
    let owner = std::fs::metadata(workspace.path().join("output"))
        .unwrap()
        .uid();
    let expected = match euid() {
        0 => DEFAULT_UID_BASE,
        uid => uid,
    };
    assert_eq!(owner, expected);
}

/// As root, the whole workspace tree is handed to the sandbox's root uid, but a symlink in it
/// is changed itself, never what it points to.
#[tokio::test]
async fn the_workspace_handover_never_follows_symlinks() {
    let Some(executor) = executor() else { return };
    if euid() != 0 {
        eprintln!("skipped: the handover happens as root only");
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("host-file");
    std::fs::write(&target, "host\n").unwrap();
    let workspace = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(workspace.path().join("a/b")).unwrap();
    std::fs::write(workspace.path().join("a/b/deep"), "deep\n").unwrap();
    std::os::unix::fs::symlink(&target, workspace.path().join("a/link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), workspace.path().join("dirlink")).unwrap();
    let result = run_request(&executor, request(&["cat", "a/b/deep"], workspace.path())).await;
    assert_eq!(result.exit_code, 0, "{}", result.stderr);
    let owner = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().uid();
    assert_eq!(owner(&workspace.path().join("a/b/deep")), DEFAULT_UID_BASE);
    assert_eq!(owner(&workspace.path().join("a/link")), DEFAULT_UID_BASE);
    assert_eq!(owner(&target), 0, "the symlink's target changed hands");
    assert_eq!(
        owner(outside.path()),
        0,
        "the directory symlink was followed"
    );
}

#[tokio::test]
async fn namespace_and_mount_escapes_are_refused() {
    let Some(result) = sh(
        "unshare -U true; echo unshare=$?; mount -t tmpfs x /tmp; echo mount=$?; \
         grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
    )
    .await
    else {
        return;
    };
    assert_eq!(
        result.stdout,
        "unshare=1\nmount=32\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n\
         NoNewPrivs:\t1\nSeccomp:\t2\n",
        "{}",
        result.stderr
    );
}

/// The sandbox leads its own session (sid 1 in its pid namespace: before the fix it was 0, a
/// session outside the namespace, holding the caller's terminal), and pushing input into a
/// terminal is refused by seccomp (EPERM; without the filter /dev/null answers ENOTTY).
#[tokio::test]
async fn the_caller_terminal_is_out_of_reach() {
    let Some(result) = sh(
        "read -r _ _ _ _ _ sid tty _ < /proc/self/stat; echo session=$sid tty=$tty; \
         python3 -c 'import fcntl, termios\ntry:\n fcntl.ioctl(0, termios.TIOCSTI, b\"x\")\nexcept OSError as e:\n print(\"tiocsti errno\", e.errno)'",
    )
    .await
    else {
        return;
    };
    assert_eq!(
        result.stdout,
        "session=1 tty=0\ntiocsti errno 1\n", // 1 = EPERM
        "{}",
        result.stderr
    );
}

/// io_uring (which runs queued operations without passing through the filter) and reading
/// another process's memory are refused with EPERM.
#[tokio::test]
async fn io_uring_and_cross_process_memory_access_are_refused() {
    let Some(result) = sh(
        "python3 -c 'import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         for name, nr, args in [(\"io_uring_setup\", 425, (1, 0)), \
         (\"process_vm_readv\", 310, (os.getppid(), 0, 0, 0, 0, 0))]:\n \
         r = libc.syscall(nr, *args)\n print(name, r, ctypes.get_errno())'",
    )
    .await
    else {
        return;
    };
    if std::env::consts::ARCH != "x86_64" {
        return; // the syscall numbers above are x86_64's
    }
    assert_eq!(
        result.stdout,
        "io_uring_setup -1 1\nprocess_vm_readv -1 1\n", // 1 = EPERM
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn network_none_cannot_reach_the_host_loopback() {
    let Some(executor) = executor() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let workspace = tempfile::tempdir().unwrap();
    let script = format!("echo > /dev/tcp/127.0.0.1/{port} && echo connected");
    let result = run_request(
        &executor,
        request(&["bash", "-c", &script], workspace.path()),
    )
    .await;
    assert_ne!(result.exit_code, 0);
    assert_eq!(result.stdout, "");
    assert!(
        result.stderr.contains("Connection refused"),
        "{}",
        result.stderr
    );

    // The sandbox's own loopback is up.
    if std::path::Path::new("/usr/bin/python3").exists() {
        let loopback = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); \
                        s.listen(); socket.create_connection(s.getsockname()); print('ok')";
        let result = run_request(
            &executor,
            request(&["python3", "-c", loopback], workspace.path()),
        )
        .await;
        assert_eq!(result.stdout, "ok\n", "{}", result.stderr);
    }

    // `full` is a namespace of its own too: its 127.0.0.1 is its own (see tests/network.rs).
    if executor.full_network_unavailable().is_none() {
        let mut full = request(&["bash", "-c", &script], workspace.path());
        full.network = NetworkPolicy::Full;
        let result = run_request(&executor, full).await;
        assert_ne!(result.exit_code, 0);
        assert_eq!(result.stdout, "");
        assert!(
            result.stderr.contains("Connection refused"),
            "{}",
            result.stderr
        );
    }
    drop(listener);
}

#[tokio::test]
async fn timeout_kills_the_tree_and_exits_124() {
    let Some(executor) = executor() else { return };
    let workspace = tempfile::tempdir().unwrap();
    let mut req = request(&["sh", "-c", "sleep 60 & sleep 60"], workspace.path());
    req.timeout = Some(Duration::from_secs(1));
    let start = Instant::now();
    let result = run_request(&executor, req).await;
    let elapsed = start.elapsed();
    assert_eq!((result.exit_code, result.timed_out), (124, true));
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
}

#[tokio::test]
async fn cancel_kills_the_tree_and_exits_137() {
    let Some(executor) = executor() else { return };
    let executor = std::sync::Arc::new(executor);
    let workspace = tempfile::tempdir().unwrap();
    let req = request(&["sleep", "60"], workspace.path());
    let id = req.id.clone();
    let (events, mut receiver) = tokio::sync::mpsc::channel(64);
    let running = {
        let executor = executor.clone();
        tokio::spawn(async move { executor.execute(req, events).await })
    };
    // Wait for the Started event, then cancel.
    receiver.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(executor.cancel(&id).await.unwrap());
    let result = tokio::time::timeout(Duration::from_secs(3), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((result.exit_code, result.cancelled), (137, true));
    assert!(!executor.cancel(&id).await.unwrap());
}

#[tokio::test]
async fn setup_failures_name_the_stage() {
    let Some(executor) = executor() else { return };
    let workspace = tempfile::tempdir().unwrap();
    let mut req = request(&["true"], workspace.path());
    req.rootfs = Some("/nonexistent-rootfs".into());
    let (events, _receiver) = tokio::sync::mpsc::channel(64);
    let err = executor.execute(req, events).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "sandbox set-up failed while mounting the rootfs /nonexistent-rootfs: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn unsupported_policies_are_refused() {
    let Some(executor) = executor() else { return };
    let workspace = tempfile::tempdir().unwrap();
    let mut req = request(&["true"], workspace.path());
    req.network = NetworkPolicy::Localhost;
    let (events, _receiver) = tokio::sync::mpsc::channel(64);
    let err = executor.execute(req, events).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "network policy localhost is not supported yet by the namespace executor"
    );
}

#[tokio::test]
async fn cold_and_warm_helpers_run_in_their_cgroup_and_measure_it() {
    let Some(executor) = executor() else { return };
    if let Some(reason) = executor.cgroups_unavailable() {
        eprintln!("skipped: no cgroups: {reason}");
        return;
    }
    let workspace = tempfile::tempdir().unwrap();
    // The first execution starts its helper cold; the pool then has one ready for the second.
    for round in ["cold", "warm"] {
        let req = request(&["cat", "/proc/self/cgroup"], workspace.path());
        let cgroup = match round {
            "cold" => format!("/conductor/ns-{}", req.id),
            _ => "/conductor/ns-warm-".to_owned(),
        };
        let result = run_request(&executor, req).await;
        assert_eq!(result.exit_code, 0, "{round}: {}", result.stderr);
        assert!(
            result.stdout.contains(&cgroup),
            "{round}: {}",
            result.stdout
        );
        assert!(
            result.stats.cpu_time_us.is_some(),
            "{round}: {:?}",
            result.stats
        );
        assert!(
            result.stats.peak_memory_bytes.is_some(),
            "{round}: {:?}",
            result.stats
        );
        // Time for the pool to start the next helper.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn the_memory_limit_kills_and_is_reported() {
    let Some(executor) = executor() else { return };
    if executor.cgroups_unavailable().is_some()
        || !std::path::Path::new("/usr/bin/python3").exists()
    {
        eprintln!("skipped: needs cgroups and /usr/bin/python3");
        return;
    }
    let workspace = tempfile::tempdir().unwrap();
    let mut req = request(
        &[
            "python3",
            "-c",
            "b = bytearray(256 << 20); print('survived')",
        ],
        workspace.path(),
    );
    req.limits.memory = Some(conductor_types::Bytes::mib(64));
    let result = run_request(&executor, req).await;
    assert_eq!(
        (
            result.exit_code,
            result.signal,
            result.oom_killed,
            result.stdout.as_str()
        ),
        (137, Some(9), true, "")
    );
}

#[tokio::test]
async fn dev_has_the_usual_devices() {
    let Some(result) =
        sh("ls /dev | tr '\\n' ' '; echo x > /dev/null && head -c 4 /dev/zero | wc -c").await
    else {
        return;
    };
    assert_eq!(
        result.stdout, "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero 4\n",
        "{}",
        result.stderr
    );
}

/// A warm helper made its namespaces before the execution was known; the mount namespace must
/// still be copied when the execution comes, or a workspace on a filesystem mounted meanwhile
/// would be the (empty) directory under it.
#[tokio::test]
async fn a_warm_helper_sees_filesystems_mounted_after_it_started() {
    let Some(executor) = executor() else { return };
    if euid() != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    // The first execution leaves a warm helper behind (the pool refills in the background).
    let first = run_request(&executor, request(&["true"], scratch.path())).await;
    assert_eq!(first.exit_code, 0, "{}", first.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let workspace = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(workspace.path())
        .status()
        .unwrap();
    assert!(status.success(), "mount: {status}");
    std::fs::write(workspace.path().join("on-the-new-fs"), "fresh\n").unwrap();
    let result = run_request(
        &executor,
        request(&["cat", "/workspace/on-the-new-fs"], workspace.path()),
    )
    .await;
    let status = std::process::Command::new("umount")
        .arg("-l")
        .arg(workspace.path())
        .status()
        .unwrap();
    assert!(status.success(), "umount: {status}");
    assert_eq!(
        (result.exit_code, result.stdout.as_str()),
        (0, "fresh\n"),
        "{}",
        result.stderr
    );
}

/// A warm helper's cgroup gets the execution's limits before the command starts.
#[tokio::test]
async fn a_warm_helper_gets_the_requests_limits() {
    let Some(executor) = executor() else { return };
    if let Some(reason) = executor.cgroups_unavailable() {
        eprintln!("skipped: no cgroups: {reason}");
        return;
    }
    let workspace = tempfile::tempdir().unwrap();
    let first = run_request(&executor, request(&["true"], workspace.path())).await;
    assert_eq!(first.exit_code, 0, "{}", first.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // With pids = 8 (helper, init, sh and a few more), 20 background sleeps cannot all start.
    let mut req = request(
        &[
            "sh",
            "-c",
            "cat /proc/self/cgroup; n=0; for i in $(seq 20); do sleep 5 & n=$((n+1)); done; echo started",
        ],
        workspace.path(),
    );
    req.limits.pids = Some(8);
    req.timeout = Some(Duration::from_secs(3));
    let result = run_request(&executor, req).await;
    assert!(
        result.stdout.contains("/conductor/ns-warm-"),
        "not the warm helper's cgroup: {}",
        result.stdout
    );
    assert!(
        result.stderr.contains("fork")
            || result.stderr.contains("Resource temporarily unavailable"),
        "the pids limit did not stop the forks: stdout {} stderr {}",
        result.stdout,
        result.stderr
    );
}

/// `full` has warm helpers of its own: after the first execution, the next one runs in a warm
/// helper's cgroup, with its own loopback and the veth it was given (`eth0`), not the host's
/// interfaces.
#[tokio::test]
async fn full_network_executions_take_warm_helpers_too() {
    let Some(executor) = executor() else { return };
    if let Some(reason) = executor.cgroups_unavailable() {
        eprintln!("skipped: no cgroups: {reason}");
        return;
    }
    if let Some(reason) = executor.full_network_unavailable() {
        eprintln!("skipped: no network full: {reason}");
        return;
    }
    let workspace = tempfile::tempdir().unwrap();
    let full = |argv: &[&str]| {
        let mut req = request(argv, workspace.path());
        req.network = NetworkPolicy::Full;
        req
    };
    let first = run_request(&executor, full(&["true"])).await;
    assert_eq!(first.exit_code, 0, "{}", first.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = run_request(
        &executor,
        full(&["cat", "/proc/self/cgroup", "/proc/net/dev"]),
    )
    .await;
    assert_eq!(second.exit_code, 0, "{}", second.stderr);
    assert!(
        second.stdout.contains("/conductor/ns-warm-"),
        "not a warm helper: {}",
        second.stdout
    );
    let interfaces: Vec<&str> = second
        .stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim())
        .filter(|name| !name.contains('/') && !name.chars().all(|c| c.is_ascii_digit()))
        .filter(|name| !name.starts_with("Inter") && !name.starts_with("face"))
        .collect();
    assert_eq!(interfaces, vec!["lo", "eth0"], "{}", second.stdout);
}

/// As root, a warm helper builds the sandbox's root while it waits; the execution's workspace is
/// attached when it comes, as the host has it then (here a filesystem mounted on it after the
/// helper was started), with the execution's own hostname and `/etc`, on a read-only root.
#[tokio::test]
async fn a_warm_helper_prebuilds_the_root_and_attaches_the_live_workspace() {
    if euid() != 0 {
        eprintln!("skipped: prebuilt roots need root");
        return;
    }
    let run_dir = tempfile::tempdir().unwrap();
    let config = NamespaceConfig {
        helper_path: env!("CARGO_BIN_EXE_conductor").into(),
        run_dir: run_dir.path().to_owned(),
        ..NamespaceConfig::default()
    };
    let executor = NamespaceExecutor::new(config).unwrap();
    if let Some(reason) = executor.cgroups_unavailable() {
        eprintln!("skipped: no cgroups: {reason}");
        return;
    }
    let warm_dirs = || {
        std::fs::read_dir(run_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("warm-"))
            .collect::<Vec<_>>()
    };
    executor.warmup().await.unwrap();
    let ready = Instant::now();
    while warm_dirs().len() < 2 && ready.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One per network mode, before any execution.
    assert_eq!(warm_dirs().len(), 2, "{:?}", warm_dirs());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let first = tempfile::tempdir().unwrap();
    std::fs::write(first.path().join("first"), "1").unwrap();
    let second = tempfile::tempdir().unwrap();
    // Mounted after the helpers were started: a copy of the host's mounts made then would miss it.
    nix::mount::mount(
        Some("tmpfs"),
        second.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    std::fs::write(second.path().join("second"), "2").unwrap();
    let script = "cat /proc/self/cgroup; echo host=$(hostname) file=$(cat /etc/hostname); \
                  grep ' /workspace ' /proc/self/mountinfo; ls /workspace; touch /workspace/made; \
                  touch /made 2>/dev/null || echo root-read-only";
    for (workspace, expected) in [(&first, "first"), (&second, "second")] {
        let req = request(&["sh", "-c", script], workspace.path());
        let hostname = format!("conductor-{}", req.id.short());
        let result = run_request(&executor, req).await;
        assert_eq!(result.exit_code, 0, "{}", result.stderr);
        let out = &result.stdout;
        assert!(out.contains("/conductor/ns-warm-"), "not warm: {out}");
        assert!(
            out.contains(&format!("host={hostname} file={hostname}\n")),
            "{out}"
        );
        let mount = out.lines().find(|l| l.contains(" /workspace ")).unwrap();
        assert!(
            mount.contains("nosuid") && mount.contains("nodev"),
            "{mount}"
        );
        // Its own workspace only, writable, on a read-only root.
        let listed: Vec<&str> = out
            .lines()
            .filter(|l| ["first", "second"].contains(l))
            .collect();
        assert_eq!(listed, [expected], "{out}");
        assert!(workspace.path().join("made").exists(), "{out}");
        assert!(out.ends_with("root-read-only\n"), "{out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    nix::mount::umount2(second.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    // The used helpers' mount points are gone; the pools are full again.
    assert_eq!(warm_dirs().len(), 2, "{:?}", warm_dirs());
    drop(executor);
    assert_eq!(warm_dirs(), Vec::<String>::new());
}
