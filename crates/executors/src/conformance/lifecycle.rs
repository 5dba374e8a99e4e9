//! Cases about ending executions: the timeout kills the whole tree, and `cancel` stops a
//! running execution promptly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_core::Executor;
use conductor_types::{Capability, ExecEvent};

use super::{describe, ensure, expect_eq, expect_no_processes, unique, Case, Fixture};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "timeout_kills_tree",
            requires: &[Capability::KillsProcessTree],
            run: |e, f| Box::pin(timeout_kills_tree(e, f)),
        },
        Case {
            name: "exit_kills_leftovers",
            requires: &[Capability::KillsProcessTree],
            run: |e, f| Box::pin(exit_kills_leftovers(e, f)),
        },
        Case {
            name: "cancel",
            requires: &[],
            run: |e, f| Box::pin(cancel(e, f)),
        },
    ]
}

async fn timeout_kills_tree(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    // A fractional sleep whose digits mark every process of this case in /proc/*/cmdline.
    let digits = u64::from_str_radix(&unique(), 16).unwrap_or(0) % 1_000_000_000;
    let marker = format!("300.{digits:09}");
    let script = format!("setsid sleep {marker} & sleep 300");
    let mut request = fixture.request(&["sh", "-c", &script]);
    request.timeout = Some(Duration::from_secs(1));
    let started = Instant::now();
    let (result, _) = super::run(&executor, request).await?;
    let elapsed = started.elapsed();
    expect_eq(
        "(exit_code, timed_out, cancelled)",
        (124, true, false),
        (result.exit_code, result.timed_out, result.cancelled),
    )
    .map_err(|e| format!("{e}; {}", describe(&result)))?;
    ensure(elapsed < Duration::from_secs(3), || {
        format!("execute with a 1 s timeout: expected to return within 3 s, took {elapsed:?}")
    })?;
    expect_no_processes(&marker, Duration::from_secs(2)).await?;
    eprintln!(
        "  {}::timeout_kills_tree: 1 s timeout returned after {elapsed:?}, no setsid child left",
        executor.name()
    );
    Ok(())
}

/// A command that exits leaving a daemon behind (holding its stdout open) ends the execution
/// at once, and the daemon goes with it.
async fn exit_kills_leftovers(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let digits = u64::from_str_radix(&unique(), 16).unwrap_or(0) % 1_000_000_000;
    let marker = format!("300.{digits:09}");
    let script = format!("setsid sleep {marker} & sleep 0.2; echo left");
    let started = Instant::now();
    let (result, _) = super::run(&executor, fixture.request(&["sh", "-c", &script])).await?;
    let elapsed = started.elapsed();
    expect_eq(
        "(exit_code, stdout, timed_out)",
        (0, "left\n", false),
        (result.exit_code, result.stdout.as_str(), result.timed_out),
    )
    .map_err(|e| format!("{e}; {}", describe(&result)))?;
    ensure(elapsed < Duration::from_secs(3), || {
        format!("execute of a command that exits after 0.2 s: expected to return within 3 s, took {elapsed:?}")
    })?;
    expect_no_processes(&marker, Duration::from_secs(2)).await
}

async fn cancel(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let request = fixture.request(&["sleep", "60"]);
    let id = request.id.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let running = {
        let executor = executor.clone();
        tokio::spawn(async move { executor.execute(request, tx).await })
    };
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .map_err(|_| "expected a Started event within 10 s, got none".to_owned())?;
    ensure(matches!(first, Some(ExecEvent::Started { .. })), || {
        format!("first event: expected Started, got {first:?}")
    })?;
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let cancelled_at = Instant::now();
    let canceller = {
        let executor = executor.clone();
        let id = id.clone();
        tokio::spawn(async move { executor.cancel(&id).await })
    };
    let was_running = canceller
        .await
        .map_err(|e| format!("cancel task failed: {e}"))?
        .map_err(|e| format!("cancel: expected Ok(true), got error {e}"))?;
    expect_eq("cancel() of a running execution", true, was_running)?;
    let result = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .map_err(|_| {
            "execute after cancel: expected to return within 5 s, still running".to_owned()
        })?
        .map_err(|e| format!("execute task failed: {e}"))?
        .map_err(|e| format!("execute after cancel: expected a result, got error {e}"))?;
    let took = cancelled_at.elapsed();
    expect_eq(
        "(cancelled, timed_out)",
        (true, false),
        (result.cancelled, result.timed_out),
    )
    .map_err(|e| format!("{e}; {}", describe(&result)))?;
    ensure(took < Duration::from_secs(2), || {
        format!("execute after cancel: expected to return within 2 s, took {took:?}")
    })?;
    let again = executor.cancel(&id).await.map_err(|e| {
        format!("cancel of a finished execution: expected Ok(false), got error {e}")
    })?;
    expect_eq("cancel() of a finished execution", false, again)?;
    eprintln!(
        "  {}::cancel: returned {took:?} after cancel()",
        executor.name()
    );
    Ok(())
}
