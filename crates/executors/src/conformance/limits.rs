//! Cases about resource limits and measurements: memory (OOM), pids (fork bomb), CPU quota,
//! peak memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_core::Executor;
use conductor_types::{Bytes, Capability, Cpus};

use super::{
    describe, ensure, expect_eq, expect_host_unharmed, expect_no_processes, unique, Case, Fixture,
};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "memory_limit_oom",
            requires: &[Capability::MemoryLimit],
            run: |e, f| Box::pin(memory_limit_oom(e, f)),
        },
        Case {
            name: "fork_bomb_contained",
            requires: &[Capability::PidsLimit, Capability::KillsProcessTree],
            run: |e, f| Box::pin(fork_bomb_contained(e, f)),
        },
        Case {
            name: "cpu_quota",
            requires: &[Capability::CpuLimit, Capability::CpuTimeStats],
            run: |e, f| Box::pin(cpu_quota(e, f)),
        },
        Case {
            name: "peak_memory",
            requires: &[Capability::PeakMemoryStats],
            run: |e, f| Box::pin(peak_memory(e, f)),
        },
    ]
}

async fn memory_limit_oom(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let mut request =
        fixture.request(&["dd", "if=/dev/zero", "of=/dev/null", "bs=512M", "count=1"]);
    request.limits.memory = Some(Bytes::mib(64));
    request.timeout = Some(Duration::from_secs(30));
    let (result, _) = super::run(&executor, request).await?;
    expect_eq(
        "dd of 512M under a 64m limit (exit_code, signal, oom_killed, timed_out)",
        (137, Some(9), true, false),
        (
            result.exit_code,
            result.signal,
            result.oom_killed,
            result.timed_out,
        ),
    )
    .map_err(|e| format!("{e}; {}", describe(&result)))?;
    expect_host_unharmed(&executor, &fixture).await
}

async fn fork_bomb_contained(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    // `$0` carries the marker, and every fork of bash keeps it in its command line.
    let marker = format!("conductor-bomb-{}", unique());
    let mut request = fixture.request(&["bash", "-c", ":(){ :|:& };:; sleep 30", &marker]);
    request.limits.pids = Some(32);
    request.timeout = Some(Duration::from_secs(5));
    let started = Instant::now();
    let (result, _) = super::run(&executor, request).await?;
    let elapsed = started.elapsed();
    ensure(result.timed_out || result.exit_code != 0, || {
        format!(
            "fork bomb: expected a timeout or a failure, got {}",
            describe(&result)
        )
    })?;
    ensure(elapsed < Duration::from_secs(15), || {
        format!("fork bomb with a 5 s timeout: expected execute to return within 15 s, took {elapsed:?}")
    })?;
    expect_no_processes(&marker, Duration::from_secs(3)).await?;
    expect_host_unharmed(&executor, &fixture).await?;
    eprintln!(
        "  {}::fork_bomb_contained: exit_code={} timed_out={} after {elapsed:?}, nothing left",
        executor.name(),
        result.exit_code,
        result.timed_out
    );
    Ok(())
}

async fn cpu_quota(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let mut request = fixture.request(&["sh", "-c", "while :; do :; done"]);
    request.limits.cpus = Some(Cpus::new(0.5).map_err(|e| e.to_string())?);
    request.timeout = Some(Duration::from_secs(3));
    let (result, _) = super::run(&executor, request).await?;
    expect_eq("timed_out of an endless busy loop", true, result.timed_out)?;
    let cpu_us = result.stats.cpu_time_us.ok_or_else(|| {
        format!(
            "cpu_time_us: expected a measurement, got None; {}",
            describe(&result)
        )
    })?;
    let wall_us = result.stats.duration_ms.max(1) * 1000;
    let ratio = cpu_us as f64 / wall_us as f64;
    // The quota bounds the ratio from above. Below it, what the loop gets depends on what else
    // runs on the machine and on how much of the wall time is the executor's own start and stop
    // (0.43 seen for reused containers); the lower bound only catches a measurement that is
    // missing its unit or its processes.
    ensure((0.25..=0.6).contains(&ratio), || {
        format!("cpu time / wall time under a 0.5 cpu quota: expected 0.25..=0.6, got {ratio:.3} ({cpu_us} us over {wall_us} us)")
    })?;
    eprintln!(
        "  {}::cpu_quota: cpu/wall = {ratio:.3} ({cpu_us} us cpu over {wall_us} us)",
        executor.name()
    );
    Ok(())
}

async fn peak_memory(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    const TARGET: f64 = 200.0 * 1024.0 * 1024.0;
    let request = fixture.request(&["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]);
    let (result, _) = super::run(&executor, request).await?;
    expect_eq("exit code of dd", 0, result.exit_code)
        .map_err(|e| format!("{e}; {}", describe(&result)))?;
    let peak = result.stats.peak_memory_bytes.ok_or_else(|| {
        format!(
            "peak_memory_bytes: expected a measurement, got None; {}",
            describe(&result)
        )
    })?;
    let ratio = peak as f64 / TARGET;
    ensure((0.9..=1.1).contains(&ratio), || {
        format!("peak memory of dd bs=200M: expected 200 MiB ± 10 %, got {peak} bytes ({ratio:.3} of 200 MiB)")
    })?;
    eprintln!(
        "  {}::peak_memory: {:.1} MiB for dd bs=200M",
        executor.name(),
        peak as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
