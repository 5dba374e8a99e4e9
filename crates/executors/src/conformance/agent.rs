//! Cases about what an agent run needs from a sandbox: a port bridge to a host Unix socket
//! that works with network `none` and nothing else, a home directory mounted outside the
//! workspace, and a non-root user.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use conductor_core::Executor;
use conductor_types::{Capability, ExecutionRequest, IsolationLevel, NetworkPolicy, PortBridge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::isolation::{no_connection, probe_listener};
use super::{describe, ensure, expect_eq, run, unique, Case, Fixture};

/// The port the bridge cases listen on inside the sandbox.
const BRIDGE_PORT: u16 = 4180;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "bridge_reaches_its_target_and_nothing_else",
            requires: &[Capability::PortBridge, Capability::NetworkNone],
            run: |e, f| Box::pin(bridge_reaches_its_target_and_nothing_else(e, f)),
        },
        Case {
            name: "bridge_is_gone_after_the_run",
            requires: &[Capability::PortBridge, Capability::NetworkNone],
            run: |e, f| Box::pin(bridge_is_gone_after_the_run(e, f)),
        },
        Case {
            name: "bridges_of_concurrent_runs_stay_apart",
            requires: &[Capability::PortBridge, Capability::NetworkNone],
            run: |e, f| Box::pin(bridges_of_concurrent_runs_stay_apart(e, f)),
        },
        Case {
            name: "home_persists_outside_the_workspace",
            requires: &[Capability::HomeMount],
            run: |e, f| Box::pin(home_persists_outside_the_workspace(e, f)),
        },
        Case {
            name: "user_runs_unprivileged",
            requires: &[Capability::RunAsUser, Capability::HomeMount],
            run: |e, f| Box::pin(user_runs_unprivileged(e, f)),
        },
    ]
}

/// A host path beside the fixture's workspace (not inside it), removed when dropped.
struct Beside(PathBuf);

impl Beside {
    fn new(fixture: &Fixture, suffix: &str) -> Self {
        let mut name = fixture.workspace.as_os_str().to_owned();
        name.push(format!("-{suffix}-{}", unique()));
        Self(PathBuf::from(name))
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A host Unix server at `path` answering the first line of each connection with
/// `<prefix>: <line>`; counts connections.
fn answering_server(path: &Path, prefix: &'static str) -> Result<Arc<AtomicUsize>, String> {
    let server =
        UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = server.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while stream.read(&mut byte).await.unwrap_or(0) == 1 && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                let answer = format!("{prefix}: {}\n", String::from_utf8_lossy(&line));
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok(count)
}

/// A bash script that sends `line` to the bridge and prints the answer's first line.
fn ask(line: &str) -> String {
    format!("exec 3<>/dev/tcp/127.0.0.1/{BRIDGE_PORT} && echo {line} >&3 && head -n1 <&3")
}

fn bridged(fixture: &Fixture, script: &str, target: &Path) -> ExecutionRequest {
    let mut request = fixture.request(&["bash", "-c", script]);
    request.network = NetworkPolicy::None;
    request.bridges = vec![PortBridge {
        port: BRIDGE_PORT,
        target: target.to_owned(),
    }];
    request
}

async fn bridge_reaches_its_target_and_nothing_else(
    executor: Arc<dyn Executor>,
    fixture: Fixture,
) -> Result<(), String> {
    let socket = Beside::new(&fixture, "gw.sock");
    let count = answering_server(&socket.0, "answer")?;
    let (other, other_port) = probe_listener("127.0.0.1:0")?;
    let script = format!(
        "{} && if (exec 4<>/dev/tcp/127.0.0.1/{other_port}) 2>/dev/null; then echo reached-other; fi; \
         if test -e {sock}; then echo sees-socket; fi",
        ask("hello"),
        sock = socket.0.display()
    );
    let (result, _) = run(&executor, bridged(&fixture, &script, &socket.0)).await?;
    expect_eq(
        &format!("stdout of the bridged command ({})", describe(&result)),
        "answer: hello\n",
        result.stdout.as_str(),
    )?;
    expect_eq("exit code", 0, result.exit_code)?;
    expect_eq(
        "connections the Unix server saw",
        1,
        count.load(Ordering::SeqCst),
    )?;
    no_connection(&other)?;
    report_setup_cost(&executor, &fixture, &socket.0).await
}

/// Prints the median wall time of `bash -c true` with and without a bridge (what a bridge adds to a
/// run's set-up), measured in the same run.
async fn report_setup_cost(
    executor: &Arc<dyn Executor>,
    fixture: &Fixture,
    target: &Path,
) -> Result<(), String> {
    const RUNS: usize = 7;
    let mut plain = Vec::new();
    let mut with_bridge = Vec::new();
    for _ in 0..RUNS {
        let mut request = fixture.request(&["bash", "-c", "true"]);
        request.network = NetworkPolicy::None;
        let started = std::time::Instant::now();
        run(executor, request).await?;
        plain.push(started.elapsed());
        let started = std::time::Instant::now();
        run(executor, bridged(fixture, "true", target)).await?;
        with_bridge.push(started.elapsed());
    }
    plain.sort();
    with_bridge.sort();
    eprintln!(
        "  {}::bridge set-up: median of {RUNS} runs of `bash -c true`: {:?} plain, {:?} with a bridge",
        executor.name(),
        plain[RUNS / 2],
        with_bridge[RUNS / 2],
    );
    Ok(())
}

async fn bridge_is_gone_after_the_run(
    executor: Arc<dyn Executor>,
    fixture: Fixture,
) -> Result<(), String> {
    let socket = Beside::new(&fixture, "gw.sock");
    let count = answering_server(&socket.0, "answer")?;
    let (first, _) = run(&executor, bridged(&fixture, &ask("first"), &socket.0)).await?;
    expect_eq(
        &format!("stdout of the bridged run ({})", describe(&first)),
        "answer: first\n",
        first.stdout.as_str(),
    )?;
    // The next run on the same executor (a reused container, a warm helper) has no bridge.
    let script = format!(
        "if (exec 3<>/dev/tcp/127.0.0.1/{BRIDGE_PORT}) 2>/dev/null; then echo reached; else echo refused; fi"
    );
    let mut request = fixture.request(&["bash", "-c", &script]);
    request.network = NetworkPolicy::None;
    let (second, _) = run(&executor, request).await?;
    expect_eq(
        &format!("stdout of the run without a bridge ({})", describe(&second)),
        "refused\n",
        second.stdout.as_str(),
    )?;
    // Give a late forward the time to arrive, then count.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    expect_eq(
        "connections the Unix server saw",
        1,
        count.load(Ordering::SeqCst),
    )
}

async fn bridges_of_concurrent_runs_stay_apart(
    executor: Arc<dyn Executor>,
    fixture: Fixture,
) -> Result<(), String> {
    let (a, b) = (
        Beside::new(&fixture, "a.sock"),
        Beside::new(&fixture, "b.sock"),
    );
    answering_server(&a.0, "a")?;
    answering_server(&b.0, "b")?;
    // Both sandboxes are up at once: each waits a moment before asking.
    let script = |line: &str| format!("sleep 0.3; {}", ask(line));
    let (first, second) = tokio::join!(
        run(&executor, bridged(&fixture, &script("one"), &a.0)),
        run(&executor, bridged(&fixture, &script("two"), &b.0)),
    );
    let (first, second) = (first?.0, second?.0);
    expect_eq(
        &format!("stdout of the run bridged to a ({})", describe(&first)),
        "a: one\n",
        first.stdout.as_str(),
    )?;
    expect_eq(
        &format!("stdout of the run bridged to b ({})", describe(&second)),
        "b: two\n",
        second.stdout.as_str(),
    )
}

async fn home_persists_outside_the_workspace(
    executor: Arc<dyn Executor>,
    fixture: Fixture,
) -> Result<(), String> {
    let home = Beside::new(&fixture, "home");
    std::fs::create_dir(&home.0).map_err(|e| format!("creating {}: {e}", home.0.display()))?;
    let with_home = |script: &str| {
        let mut request = fixture.request(&["sh", "-c", script]);
        request.home = Some(home.0.clone());
        request
    };
    let (first, _) = run(
        &executor,
        with_home("echo \"$HOME $(pwd)\"; echo kept > \"$HOME/state\""),
    )
    .await?;
    expect_eq(
        &format!("HOME and cwd of the first run ({})", describe(&first)),
        "/home/conductor /workspace\n",
        first.stdout.as_str(),
    )?;
    let (second, _) = run(
        &executor,
        with_home("cat \"$HOME/state\"; ls -A /workspace"),
    )
    .await?;
    expect_eq(
        &format!("the home's file in the second run ({})", describe(&second)),
        "kept\n",
        second.stdout.as_str(),
    )?;
    let on_host = std::fs::read_to_string(home.0.join("state")).unwrap_or_default();
    expect_eq("the home's file on the host", "kept\n", on_host.as_str())?;
    ensure(!fixture.workspace.join("state").exists(), || {
        "expected the home's file outside the workspace, found it in it".to_owned()
    })
}

async fn user_runs_unprivileged(
    executor: Arc<dyn Executor>,
    fixture: Fixture,
) -> Result<(), String> {
    let home = Beside::new(&fixture, "home");
    std::fs::create_dir(&home.0).map_err(|e| format!("creating {}: {e}", home.0.display()))?;
    let script = "id -u; id -g; echo w > /workspace/w && echo h > \"$HOME/h\" && echo written; \
                  if (echo x > /etc/x) 2>/dev/null; then echo etc-writable; fi";
    let mut request = fixture.request(&["sh", "-c", script]);
    request.home = Some(home.0.clone());
    request.user = Some(1000);
    let (result, _) = run(&executor, request).await?;
    let mut lines = result.stdout.as_str().lines();
    let (uid, gid, rest) = (lines.next(), lines.next(), lines.collect::<Vec<_>>());
    // Docker and podman keep their own non-root user, which no host account shares (see
    // `ExecutionRequest::user`); an executor that maps uids of its own gives the one asked.
    let expected = match executor.isolation_level() {
        IsolationLevel::Container => None,
        _ => Some("1000"),
    };
    ensure(
        uid.is_some_and(|uid| uid != "0" && expected.is_none_or(|want| uid == want))
            && gid == uid
            && rest == ["written"],
        || {
            format!(
                "expected uid and gid {} then `written`, got {}",
                expected.unwrap_or("(non-root, equal)"),
                describe(&result)
            )
        },
    )?;
    let workspace_file = std::fs::read_to_string(fixture.workspace.join("w")).unwrap_or_default();
    let home_file = std::fs::read_to_string(home.0.join("h")).unwrap_or_default();
    expect_eq(
        "files the user wrote, on the host",
        ("w\n", "h\n"),
        (workspace_file.as_str(), home_file.as_str()),
    )
}
