//! The host executor's warm helpers on the real kernel, with the real `conductor` binary as the
//! helper: each execution runs in a fresh cgroup of its own that has the request's limits, with
//! exactly the plan's environment and no inherited descriptors, and ends as a command spawned
//! directly does. They need usable cgroups (root); without them they are skipped with the reason.

#![allow(clippy::unwrap_used)] // a test binary: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::time::Duration;

use conductor_core::{plan, Executor, HostContext, PlanTarget};
use conductor_executors::host::{HostConfig, HostExecutor};
use conductor_types::{ExecEvent, ExecutionRequest, ExecutionResult, NetworkPolicy};

/// Long enough for the pool to start a helper (exec of the binary, cgroup creation and join).
const REFILL: Duration = Duration::from_millis(500);

/// A host executor with one warm helper, started and given time to be ready; `None` (skipped)
/// without usable cgroups.
async fn warm_executor(warm_helpers: usize) -> Option<HostExecutor> {
    let executor = HostExecutor::new(HostConfig {
        helper_path: env!("CARGO_BIN_EXE_conductor").into(),
        warm_helpers,
        ..HostConfig::default()
    });
    if let Some(reason) = executor.cgroups_unavailable() {
        eprintln!("skipped: no usable cgroups: {reason}");
        return None;
    }
    executor.warmup().await.unwrap();
    tokio::time::sleep(REFILL).await;
    Some(executor)
}

fn request(argv: &[&str], workspace: &std::path::Path) -> ExecutionRequest {
    let mut request = ExecutionRequest::new(
        argv.iter().map(|s| (*s).to_owned()).collect(),
        workspace.into(),
    );
    request.network = NetworkPolicy::Host;
    request
}

async fn run(
    executor: &HostExecutor,
    request: ExecutionRequest,
) -> (ExecutionResult, Vec<ExecEvent>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event);
        }
        events
    });
    let result = executor.execute(request, tx).await.unwrap();
    (result, collect.await.unwrap())
}

/// The cgroup path (the pids hierarchy's) the command ran in, from its /proc/self/cgroup.
fn pids_cgroup(cgroup_file: &str) -> &str {
    cgroup_file
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            (controllers == "pids" || controllers.is_empty()).then_some(path)
        })
        .unwrap()
}

#[tokio::test]
async fn each_execution_takes_a_fresh_warm_cgroup_and_the_pool_refills() {
    let Some(executor) = warm_executor(1).await else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (result, events) = run(
            &executor,
            request(&["cat", "/proc/self/cgroup"], workspace.path()),
        )
        .await;
        assert_eq!(result.exit_code, 0, "{}", result.stderr);
        let cgroup = pids_cgroup(&result.stdout).to_owned();
        assert!(cgroup.starts_with("/conductor/host-warm-"), "{cgroup}");
        // The helper became the command: the pid announced is cat's own (a warm start).
        assert!(
            matches!(
                events.first(),
                Some(ExecEvent::Started { pid: Some(_), .. })
            ),
            "{events:?}"
        );
        assert!(result.stats.cpu_time_us.is_some(), "{:?}", result.stats);
        assert!(
            result.stats.peak_memory_bytes.is_some(),
            "{:?}",
            result.stats
        );
        // Removed after the execution (off the result's path: soon after it).
        let dir = std::path::Path::new("/sys/fs/cgroup/pids").join(cgroup.trim_start_matches('/'));
        for _ in 0..200 {
            if !dir.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!dir.exists(), "{cgroup} left behind");
        seen.push(cgroup);
        tokio::time::sleep(REFILL).await;
    }
    seen.dedup();
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test]
async fn without_warm_helpers_the_command_joins_its_own_cgroup() {
    let Some(executor) = warm_executor(0).await else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let req = request(&["cat", "/proc/self/cgroup"], workspace.path());
    let expected = format!("/conductor/exec-{}", req.id);
    let (result, _) = run(&executor, req).await;
    assert_eq!(result.exit_code, 0, "{}", result.stderr);
    assert_eq!(pids_cgroup(&result.stdout), expected);
}

#[tokio::test]
async fn the_pids_limit_is_written_into_the_warm_cgroup() {
    let Some(executor) = warm_executor(1).await else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let mut req = request(
        &[
            "sh",
            "-c",
            "p=$(grep ':pids:' /proc/self/cgroup | cut -d: -f3); echo $p; cat /sys/fs/cgroup/pids$p/pids.max",
        ],
        workspace.path(),
    );
    req.limits.pids = Some(17);
    let (result, _) = run(&executor, req).await;
    assert_eq!(result.exit_code, 0, "{}", result.stderr);
    let lines: Vec<&str> = result.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", result.stdout);
    assert!(
        lines[0].starts_with("/conductor/host-warm-"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "17");
}

#[tokio::test]
async fn the_environment_is_exactly_the_plans_and_no_descriptor_is_inherited() {
    // A descriptor this process leaves open across exec: the helper must not pass it on.
    let leaked = std::fs::File::open("/dev/null").unwrap();
    nix::fcntl::fcntl(
        leaked.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let Some(executor) = warm_executor(1).await else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let mut req = request(&["env"], workspace.path());
    req.env = BTreeMap::from([("CONDUCTOR_TEST_VALUE".to_owned(), "a b=c".to_owned())]);
    let host = HostContext {
        env: std::env::vars().collect(),
    };
    let planned = plan(&req, PlanTarget::Host, &host).unwrap();
    let (result, _) = run(&executor, req).await;
    assert_eq!(result.exit_code, 0, "{}", result.stderr);
    let mut printed: Vec<&str> = result.stdout.lines().collect();
    printed.sort_unstable();
    let mut expected: Vec<String> = planned
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    expected.sort_unstable();
    assert_eq!(printed, expected);

    tokio::time::sleep(REFILL).await;
    // ls has 0, 1, 2 and the directory it reads; the helper's socket closed at exec.
    let (result, _) = run(
        &executor,
        request(&["ls", "-1", "/proc/self/fd"], workspace.path()),
    )
    .await;
    assert_eq!(result.exit_code, 0, "{}", result.stderr);
    assert_eq!(
        result.stdout,
        "0\n1\n2\n3\n",
        "leaked: {}",
        leaked.as_raw_fd()
    );
}

#[tokio::test]
async fn exit_codes_signals_timeouts_and_missing_programs_are_reported_as_before() {
    let Some(executor) = warm_executor(1).await else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    // Each script first proves it runs from a warm helper.
    let warm = "grep -q host-warm /proc/self/cgroup || exit 99";

    let (result, _) = run(
        &executor,
        request(
            &["sh", "-c", &format!("{warm}; echo out; exit 3")],
            workspace.path(),
        ),
    )
    .await;
    assert_eq!(
        (result.exit_code, result.signal, result.stdout.as_str()),
        (3, None, "out\n")
    );
    tokio::time::sleep(REFILL).await;

    let (result, _) = run(
        &executor,
        request(
            &["sh", "-c", &format!("{warm}; kill -TERM $$")],
            workspace.path(),
        ),
    )
    .await;
    assert_eq!((result.exit_code, result.signal), (143, Some(15)));
    tokio::time::sleep(REFILL).await;

    let mut req = request(
        &["sh", "-c", &format!("{warm}; sleep 30")],
        workspace.path(),
    );
    req.timeout = Some(Duration::from_millis(300));
    let (result, _) = run(&executor, req).await;
    assert_eq!(
        (result.exit_code, result.signal, result.timed_out),
        (124, Some(9), true)
    );
    tokio::time::sleep(REFILL).await;

    let req = request(&["conductor-no-such-program", "x"], workspace.path());
    let host = HostContext {
        env: std::env::vars().collect(),
    };
    let planned = plan(&req, PlanTarget::Host, &host).unwrap();
    let path = planned
        .env
        .iter()
        .find_map(|(k, v)| (k == "PATH").then_some(v.clone()))
        .unwrap();
    let (result, events) = run(&executor, req).await;
    // A warm start announces the helper's pid; a direct spawn that failed announces none.
    assert!(
        matches!(
            events.first(),
            Some(ExecEvent::Started { pid: Some(_), .. })
        ),
        "{events:?}"
    );
    assert_eq!(
        (
            result.exit_code,
            result.stdout.as_str(),
            result.stderr.as_str()
        ),
        (
            127,
            "",
            format!("conductor: conductor-no-such-program: command not found (PATH={path})\n")
                .as_str()
        )
    );
}
