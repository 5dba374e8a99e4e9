//! The conformance suite: one list of cases that every executor runs. Each case names the
//! capabilities it needs; a runner must report a case whose capability the executor does not
//! declare as skipped, with the reason ([`Case::skip_reason`]), and never count it as passed.
//!
//! The cases use only programs found in `/usr/bin` of a Debian-like host (`sh`, `bash`, `dd`,
//! `setsid`, `sleep`, `cat`, `head`, `ls`, `hostname`, `mount`, `unshare`, `python3`).
//! Runners: `crates/cli/tests/conformance.rs`.

mod agent;
mod basic;
mod isolation;
mod lifecycle;
mod limits;

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use conductor_core::Executor;
use conductor_types::{
    Capability, ExecEvent, ExecutionId, ExecutionRequest, ExecutionResult, ExecutorCapabilities,
    NetworkPolicy,
};

/// A boxed, sendable future: what a case returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A case body: `Err` carries what was expected and what came.
pub type CaseFn = fn(Arc<dyn Executor>, Fixture) -> BoxFuture<Result<(), String>>;

/// One conformance test.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Short snake_case name; runners show `<executor>::<name>`.
    pub name: &'static str,
    /// Capabilities the executor must declare for the case to run.
    pub requires: &'static [Capability],
    /// The test itself.
    pub run: CaseFn,
}

impl Case {
    /// Why `executor` (with `capabilities`) must skip this case, or `None` when it runs.
    pub fn skip_reason(
        &self,
        executor: &str,
        capabilities: &ExecutorCapabilities,
    ) -> Option<String> {
        let missing: Vec<String> = self
            .requires
            .iter()
            .filter(|c| !capabilities.supports(**c))
            .map(|c| capability_name(*c))
            .collect();
        (!missing.is_empty()).then(|| format!("{executor} does not declare {}", missing.join(", ")))
    }
}

/// What a case gets besides the executor: a fresh empty workspace and the network policy to use
/// for requests that do not test one.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// An existing, empty directory owned by the test; removed by the runner afterwards.
    pub workspace: PathBuf,
    /// `none` where the executor enforces it, `host` otherwise (the host executor).
    pub network: NetworkPolicy,
}

impl Fixture {
    /// A fixture for an executor with `capabilities`, working in `workspace`.
    pub fn new(workspace: PathBuf, capabilities: &ExecutorCapabilities) -> Self {
        let network = if capabilities.supports(Capability::NetworkNone) {
            NetworkPolicy::None
        } else {
            NetworkPolicy::Host
        };
        Self { workspace, network }
    }

    /// A request for `argv` in the workspace, with the fixture's network and a 60 s safety
    /// timeout so a broken executor cannot hang the suite.
    pub fn request(&self, argv: &[&str]) -> ExecutionRequest {
        let mut request = ExecutionRequest::new(
            argv.iter().map(|s| (*s).to_owned()).collect(),
            self.workspace.clone(),
        );
        request.network = self.network.clone();
        request.timeout = Some(Duration::from_secs(60));
        request
    }
}

/// Every case, in the order runners should list them.
pub fn cases() -> Vec<Case> {
    [
        basic::cases(),
        lifecycle::cases(),
        limits::cases(),
        isolation::cases(),
        agent::cases(),
    ]
    .concat()
}

/// Host variables the environment case reads; [`prepare_host_env`] sets them.
pub const PROBE_ALLOWED: &str = "CONDUCTOR_CONFORMANCE_ALLOWED";
/// A host variable that is set but never allow-listed.
pub const PROBE_HIDDEN: &str = "CONDUCTOR_CONFORMANCE_HIDDEN";
/// A host variable that is allow-listed and also set explicitly (the explicit value wins).
pub const PROBE_OVERRIDDEN: &str = "CONDUCTOR_CONFORMANCE_OVERRIDDEN";

/// Sets the host variables the environment case reads. Call it first thing in the runner's
/// `main`, before any thread exists (setting variables is not thread-safe).
pub fn prepare_host_env() {
    std::env::set_var(PROBE_ALLOWED, "allowed-from-host");
    std::env::set_var(PROBE_HIDDEN, "hidden-on-host");
    std::env::set_var(PROBE_OVERRIDDEN, "overridden-on-host");
}

/// The snake_case name of a capability, as it appears in JSON and skip reasons.
pub fn capability_name(capability: Capability) -> String {
    match serde_json::to_value(capability) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{capability:?}"),
    }
}

// ---- helpers shared by the cases ----

/// Runs `request`, collecting every event, and fails with the executor's error.
async fn run(
    executor: &Arc<dyn Executor>,
    request: ExecutionRequest,
) -> Result<(ExecutionResult, Vec<ExecEvent>), String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event);
        }
        events
    });
    let argv = request.argv.clone();
    let result = executor
        .execute(request, tx)
        .await
        .map_err(|e| format!("executing {argv:?}: expected a result, got error: {e}"))?;
    let events = collector
        .await
        .map_err(|e| format!("event collector failed: {e}"))?;
    Ok((result, events))
}

/// Runs `argv` with the fixture's defaults and returns the result.
async fn run_argv(
    executor: &Arc<dyn Executor>,
    fixture: &Fixture,
    argv: &[&str],
) -> Result<ExecutionResult, String> {
    Ok(run(executor, fixture.request(argv)).await?.0)
}

fn expect_eq<T: PartialEq + Debug>(what: &str, expected: T, actual: T) -> Result<(), String> {
    if expected == actual {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected:?}, got {actual:?}"))
    }
}

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(message())
    }
}

/// The interesting fields of a result, for failure messages.
fn describe(result: &ExecutionResult) -> String {
    format!(
        "exit_code={} signal={:?} timed_out={} cancelled={} oom_killed={} stats={:?} stdout={:?} stderr={:?}",
        result.exit_code,
        result.signal,
        result.timed_out,
        result.cancelled,
        result.oom_killed,
        result.stats,
        head(&result.stdout),
        head(&result.stderr),
    )
}

fn head(text: &str) -> &str {
    match text.char_indices().nth(300) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Fails unless the command exited non-zero (the probe it ran was refused).
fn expect_refused(what: &str, result: &ExecutionResult) -> Result<(), String> {
    ensure(result.exit_code != 0 && !result.timed_out, || {
        format!(
            "{what}: expected a non-zero exit (refused), got {}",
            describe(result)
        )
    })
}

/// A unique token for file names and process markers.
fn unique() -> String {
    ExecutionId::random().short()
}

/// Host processes (other than this one) whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline =
                std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pid != own && cmdline.contains(marker)).then_some((pid, cmdline))
        })
        .collect()
}

/// Waits up to `within` for every process carrying `marker` to be gone (killed processes take
/// a moment to be reaped); fails listing the survivors.
async fn expect_no_processes(marker: &str, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "expected no process with {marker:?} left {within:?} after the execution, got {} (pid, cmdline): {:?}",
                left.len(),
                left.iter().take(5).collect::<Vec<_>>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `true` through the executor and on the host, to show both still work after an abuse case.
async fn expect_host_unharmed(
    executor: &Arc<dyn Executor>,
    fixture: &Fixture,
) -> Result<(), String> {
    let result = run_argv(executor, fixture, &["true"]).await?;
    expect_eq("exit code of `true` run afterwards", 0, result.exit_code)?;
    let status = std::process::Command::new("true")
        .status()
        .map_err(|e| format!("the host could not start `true` afterwards: {e}"))?;
    ensure(status.success(), || {
        format!("`true` on the host afterwards: expected success, got {status}")
    })
}

/// A `kB` field of `/proc/self/status` in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use conductor_types::IsolationLevel;

    use super::*;

    #[test]
    fn every_case_has_a_unique_name() {
        let cases = cases();
        let names: BTreeSet<_> = cases.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), cases.len());
    }

    #[test]
    fn skip_reason_names_the_missing_capabilities() {
        let caps = ExecutorCapabilities {
            isolation_level: IsolationLevel::ProcessOnly,
            platform: "linux".into(),
            supported: BTreeSet::from([Capability::PidsLimit]),
        };
        let case = Case {
            name: "x",
            requires: &[
                Capability::PidsLimit,
                Capability::NetworkLocalhost,
                Capability::KillsProcessTree,
            ],
            run: |_, _| Box::pin(async { Ok(()) }),
        };
        assert_eq!(
            case.skip_reason("namespace", &caps),
            Some("namespace does not declare network_localhost, kills_process_tree".to_owned())
        );
        let free = Case {
            requires: &[Capability::PidsLimit],
            ..case
        };
        assert_eq!(free.skip_reason("namespace", &caps), None);
    }
}
