//! Cases every executor must pass: exit codes and signals, events, environment, workspace,
//! a missing program, and large output.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use conductor_core::Executor;
use conductor_types::{ExecEvent, OutputStream, StreamSummary};

use super::{
    describe, ensure, expect_eq, proc_status_bytes, run, run_argv, unique, Case, Fixture,
    PROBE_ALLOWED, PROBE_HIDDEN, PROBE_OVERRIDDEN,
};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "exit_codes",
            requires: &[],
            run: |e, f| Box::pin(exit_codes(e, f)),
        },
        Case {
            name: "signals",
            requires: &[],
            run: |e, f| Box::pin(signals(e, f)),
        },
        Case {
            name: "output_and_events",
            requires: &[],
            run: |e, f| Box::pin(output_and_events(e, f)),
        },
        Case {
            name: "env_allowlist",
            requires: &[],
            run: |e, f| Box::pin(env_allowlist(e, f)),
        },
        Case {
            name: "workspace",
            requires: &[],
            run: |e, f| Box::pin(workspace(e, f)),
        },
        Case {
            name: "command_not_found",
            requires: &[],
            run: |e, f| Box::pin(command_not_found(e, f)),
        },
        Case {
            name: "large_output_streams",
            requires: &[],
            run: |e, f| Box::pin(large_output_streams(e, f)),
        },
    ]
}

/// (exit_code, signal, timed_out, cancelled, oom_killed)
type Outcome = (i32, Option<i32>, bool, bool, bool);

fn outcome(result: &conductor_types::ExecutionResult) -> Outcome {
    (
        result.exit_code,
        result.signal,
        result.timed_out,
        result.cancelled,
        result.oom_killed,
    )
}

async fn exit_codes(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    for (argv, expected) in [
        (&["true"][..], (0, None, false, false, false)),
        (&["sh", "-c", "exit 3"][..], (3, None, false, false, false)),
    ] {
        let result = run_argv(&executor, &fixture, argv).await?;
        expect_eq(
            &format!("{argv:?} (exit_code, signal, timed_out, cancelled, oom_killed)"),
            expected,
            outcome(&result),
        )?;
    }
    Ok(())
}

async fn signals(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    for (script, expected) in [
        ("kill -9 $$", (137, Some(9), false, false, false)),
        ("kill -TERM $$", (143, Some(15), false, false, false)),
    ] {
        let result = run_argv(&executor, &fixture, &["sh", "-c", script]).await?;
        expect_eq(
            &format!("sh -c {script:?} (exit_code, signal, timed_out, cancelled, oom_killed)"),
            expected,
            outcome(&result),
        )?;
    }
    Ok(())
}

async fn output_and_events(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let request = fixture.request(&["sh", "-c", "echo out; echo err >&2; echo more"]);
    let id = request.id.clone();
    let (result, events) = run(&executor, request).await?;
    expect_eq("stdout", "out\nmore\n", result.stdout.as_str())?;
    expect_eq("stderr", "err\n", result.stderr.as_str())?;
    let summary = |total_bytes| StreamSummary {
        total_bytes,
        truncated: false,
        spool_path: None,
        spool_truncated: false,
    };
    expect_eq("stdout_info", summary(9), result.stdout_info.clone())?;
    expect_eq("stderr_info", summary(4), result.stderr_info.clone())?;
    expect_eq(
        "executor in the result",
        executor.name(),
        result.executor.as_str(),
    )?;
    expect_eq("execution_id in the result", &id, &result.execution_id)?;
    match events.first() {
        Some(ExecEvent::Started { execution_id, .. }) => {
            expect_eq("execution_id of the Started event", &id, execution_id)?
        }
        other => return Err(format!("first event: expected Started, got {other:?}")),
    }
    let streamed = |wanted: OutputStream| -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                ExecEvent::Output { stream, data, .. } if *stream == wanted => Some(data.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    expect_eq(
        "stdout streamed as events",
        "out\nmore\n",
        String::from_utf8_lossy(&streamed(OutputStream::Stdout)).as_ref(),
    )?;
    expect_eq(
        "stderr streamed as events",
        "err\n",
        String::from_utf8_lossy(&streamed(OutputStream::Stderr)).as_ref(),
    )
}

async fn env_allowlist(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    ensure(std::env::var_os(PROBE_HIDDEN).is_some(), || {
        format!("{PROBE_HIDDEN} is not set on the host: the runner must call conformance::prepare_host_env() first")
    })?;
    let mut request = fixture.request(&["env"]);
    request.env_allowlist = vec![PROBE_ALLOWED.to_owned(), PROBE_OVERRIDDEN.to_owned()];
    request
        .env
        .insert(PROBE_OVERRIDDEN.to_owned(), "explicit".to_owned());
    let (result, _) = run(&executor, request).await?;
    expect_eq("exit code of env", 0, result.exit_code)?;
    let mut names: Vec<&str> = result
        .stdout
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    names.sort_unstable();
    expect_eq(
        "variable names in the command's environment",
        vec![
            "CONDUCTOR_CONFORMANCE_ALLOWED",
            "CONDUCTOR_CONFORMANCE_OVERRIDDEN",
            "HOME",
            "PATH",
        ],
        names,
    )?;
    let value = |name: &str| {
        result
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")).map(str::to_owned))
    };
    expect_eq(
        "allow-listed host variable",
        Some("allowed-from-host".to_owned()),
        value(PROBE_ALLOWED),
    )?;
    expect_eq(
        "allow-listed variable also set explicitly",
        Some("explicit".to_owned()),
        value(PROBE_OVERRIDDEN),
    )
}

async fn workspace(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    std::fs::write(fixture.workspace.join("from-host.txt"), "host wrote this\n")
        .map_err(|e| format!("writing into the workspace: {e}"))?;
    let result = run_argv(
        &executor,
        &fixture,
        &[
            "sh",
            "-c",
            "cat from-host.txt && echo sandbox wrote this > made-here.txt",
        ],
    )
    .await?;
    expect_eq(
        "(exit code, stdout) reading a host file by relative path",
        (0, "host wrote this\n"),
        (result.exit_code, result.stdout.as_str()),
    )
    .map_err(|e| format!("{e}; {}", describe(&result)))?;
    let made = std::fs::read_to_string(fixture.workspace.join("made-here.txt")).map_err(|e| {
        format!("the file the command wrote by relative path is not in the host workspace: {e}")
    })?;
    expect_eq(
        "contents of made-here.txt on the host",
        "sandbox wrote this\n",
        made.as_str(),
    )?;
    let next = run_argv(&executor, &fixture, &["cat", "made-here.txt"]).await?;
    expect_eq(
        "(exit code, stdout) of the next execution reading it",
        (0, "sandbox wrote this\n"),
        (next.exit_code, next.stdout.as_str()),
    )
}

async fn command_not_found(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    let program = format!("conductor-no-such-program-{}", unique());
    let request = fixture.request(&[&program, "arg"]);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let outcome = executor.execute(request, tx).await;
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    match outcome {
        Ok(result) => {
            expect_eq("exit code of a missing program", 127, result.exit_code)?;
            ensure(result.stderr.contains(&program), || {
                format!(
                    "stderr: expected a message naming {program:?}, got {:?}",
                    result.stderr
                )
            })?;
            if events.iter().any(|e| matches!(e, ExecEvent::Output { .. })) {
                ensure(
                    matches!(events.first(), Some(ExecEvent::Started { .. })),
                    || {
                        format!(
                            "first event: expected Started before any Output, got {:?}",
                            events.first()
                        )
                    },
                )?;
            }
            Ok(())
        }
        Err(error) => ensure(error.to_string().contains(&program), || {
            format!("error for a missing program: expected it to name {program:?}, got {error}")
        }),
    }
}

async fn large_output_streams(executor: Arc<dyn Executor>, fixture: Fixture) -> Result<(), String> {
    const TOTAL: u64 = 100_000_000;
    const MAX_GROWTH: u64 = 64 * 1024 * 1024;
    // Reset the peak-RSS mark so VmHWM measures this case only.
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = proc_status_bytes("VmRSS").ok_or("cannot read VmRSS")?;
    let mut request = fixture.request(&["head", "-c", "100000000", "/dev/zero"]);
    // The whole stream fits the spool (its default cap, 64 MiB, is below it).
    request.spool_limit = conductor_types::Bytes(TOTAL);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move {
        let mut bytes = 0u64;
        while let Some(event) = rx.recv().await {
            if let ExecEvent::Output { data, .. } = event {
                bytes += data.len() as u64;
            }
        }
        bytes
    });
    let result = executor
        .execute(request, tx)
        .await
        .map_err(|e| format!("expected a result, got error: {e}"))?;
    let streamed = drain.await.map_err(|e| format!("drain failed: {e}"))?;
    let peak = if hwm_reset {
        proc_status_bytes("VmHWM")
    } else {
        proc_status_bytes("VmRSS")
    }
    .ok_or("cannot read VmHWM")?;
    let spool = result.stdout_info.spool_path.clone();
    let spooled = spool
        .as_ref()
        .map(|p| std::fs::metadata(p).map(|m| m.size()));
    if let Some(path) = &spool {
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    expect_eq("exit code", 0, result.exit_code)?;
    expect_eq("bytes received as events", TOTAL, streamed)?;
    expect_eq(
        "(total_bytes, truncated, has spool file)",
        (TOTAL, true, true),
        (
            result.stdout_info.total_bytes,
            result.stdout_info.truncated,
            spool.is_some(),
        ),
    )?;
    match spooled {
        Some(Ok(size)) => expect_eq("size of the spool file", TOTAL, size)?,
        Some(Err(e)) => return Err(format!("spool file {spool:?} unreadable: {e}")),
        None => {}
    }
    let growth = peak.saturating_sub(rss_before);
    ensure(growth < MAX_GROWTH, || {
        format!(
            "memory of the test process: expected to grow by less than 64 MiB, grew by {} MiB ({} -> {} bytes)",
            growth / (1024 * 1024),
            rss_before,
            peak
        )
    })?;
    eprintln!(
        "  {}::large_output_streams: 100 MB streamed, test process peak RSS grew by {:.1} MiB",
        executor.name(),
        growth as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
