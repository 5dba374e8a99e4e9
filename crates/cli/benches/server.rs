//! `conductor serve` end to end, for the host and the namespace executor: a real server process
//! on a fresh home, driven over HTTP.
//!
//! - idle RSS of the server, a second after start;
//! - submit → process started: a task `date +%s%N` prints the instant its process runs; the
//!   sample is that instant minus the one just before the client sent `POST /api/v1/tasks`
//!   (sequential tasks; each waits for the previous one with `logs?follow=true`). The baseline
//!   line is what spawning `sh -c 'date +%s%N'` directly costs on this machine, measured in the
//!   same run: the part of the figure that is the shell, not the server;
//! - throughput: trivial tasks (`true`) submitted by 20 concurrent clients, from the first submit
//!   until the last one has finished (the server's `/metrics` polled every 10 ms).
//!
//! A third row, `none`, runs the same server in this process over an executor that starts nothing
//! (it answers at once, "printing" the instant it was called): the server's own share of the
//! figures, without process creation.
//!
//! - a store at scale (host executor): the server's RSS and its restart time (process start to
//!   serving: recovery included) with 10 000 finished tasks and 1 000 queued in its store,
//!   against the same on an empty store measured in the same run. Sizes:
//!   CONDUCTOR_BENCH_STORE_FINISHED, CONDUCTOR_BENCH_STORE_QUEUED (0 leaves the part out).
//!
//! Run: `cargo bench -p conductor --bench server`. CONDUCTOR_BENCH_ITERATIONS (default 200
//! latency samples after 20 warm-up tasks), CONDUCTOR_BENCH_TASKS (default 1000 trivial tasks),
//! CONDUCTOR_BENCH_AGENTS (default 4 agents) change the sizes; CONDUCTOR_BENCH_EXECUTORS (default
//! `none,host,namespace`) picks the rows. CONDUCTOR_BENCH_BINARY runs another `conductor` binary
//! (server and helper) than the one built with the bench, to compare two builds in one session.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conductor_core::Executor;
use conductor_server::{SchedulerConfig, ServeConfig};
use conductor_testkit::FakeExecutor;
use conductor_types::{Capability, ExecEvent, ExecutionRequest};
use serde_json::json;

// Its own percentile over f64 samples; the shared server launcher is what it uses.
#[allow(dead_code)]
mod common;
use common::server::{conductor_binary, Endpoint, Server};

/// Targets of issue 3.
const TARGET_P50_MS: f64 = 5.0;
const TARGET_P99_MS: f64 = 25.0;
const TARGET_TASKS_PER_S: f64 = 300.0;
const TARGET_IDLE_RSS_MIB: f64 = 40.0;

const CLIENTS: usize = 20;

fn main() -> Result<(), String> {
    let setting = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let iterations = setting("CONDUCTOR_BENCH_ITERATIONS", 200).max(1);
    let tasks = setting("CONDUCTOR_BENCH_TASKS", 1000).max(CLIENTS);
    let agents = setting("CONDUCTOR_BENCH_AGENTS", 4).max(1);
    let rows = std::env::var("CONDUCTOR_BENCH_EXECUTORS")
        .unwrap_or_else(|_| "none,host,namespace".to_owned());
    let rows: Vec<&str> = rows.split(',').map(str::trim).collect();
    let warmup = 20;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    let baseline = shell_baseline(iterations)?;
    println!(
        "conductor serve, {} cores, {agents} agents: submit→process started over {iterations} \
         sequential tasks ({warmup} warm-up); {tasks} trivial tasks from {CLIENTS} clients",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "baseline: spawning `sh -c 'date +%s%N'` directly → its output instant: p50 {:.2} ms, \
         p99 {:.2} ms",
        percentile(&baseline, 50),
        percentile(&baseline, 99)
    );
    println!(
        "{:<10} {:>13} {:>16} {:>16} {:>14}  checks",
        "executor", "idle RSS MiB", "dispatch p50 ms", "dispatch p99 ms", "tasks/s"
    );
    if rows.contains(&"none") {
        let home = tempfile::tempdir().map_err(|e| e.to_string())?;
        let figures = runtime.block_on(async {
            let server = InProcess::start(home.path(), agents).await?;
            let figures = measure(&server.endpoint, warmup, iterations, tasks).await;
            server.server.stop().await;
            figures
        });
        let figures = figures.map_err(|e| format!("none: {e}"))?;
        println!(
            "{:<10} {:>13} {:>16.2} {:>16.2} {:>14.0}  (the server alone)",
            "none", "-", figures.p50, figures.p99, figures.tasks_per_s,
        );
    }
    for executor in ["host", "namespace"] {
        if !rows.contains(&executor) {
            continue;
        }
        let alone =
            match runtime.block_on(executor_alone(executor, warmup, iterations, tasks, agents)) {
                Ok(alone) => {
                    println!(
                    "{:<10} {:>13} {:>16.2} {:>16.2} {:>14.0}  (the {executor} executor alone, no \
                     server: same commands, {agents} at a time)",
                    "", "-", alone.p50, alone.p99, alone.tasks_per_s
                );
                    Some(alone)
                }
                Err(reason) => {
                    println!("{executor:<10} executor alone: skipped: {reason}");
                    None
                }
            };
        let home = tempfile::tempdir().map_err(|e| e.to_string())?;
        let flags = ["--executor", executor, "--slots", &agents.to_string()];
        // Tasks default to network none, which the host executor cannot give.
        let network = if executor == "host" { "host" } else { "none" };
        let vars = [("CONDUCTOR_DEFAULT_NETWORK", network)];
        let server = match Server::start(home.path(), &flags, &vars) {
            Ok(server) => server,
            Err(reason) => {
                println!("{executor:<10} skipped: {reason}");
                continue;
            }
        };
        let figures = runtime.block_on(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let idle_rss_mib = server.rss_mib();
            measure(&server.endpoint, warmup, iterations, tasks)
                .await
                .map(|figures| (idle_rss_mib, figures))
        });
        let rss_after = server.rss_mib();
        server.stop();
        let (idle_rss_mib, figures) = figures.map_err(|e| format!("{executor}: {e}"))?;
        let mut checks = vec![
            check("p50", figures.p50, TARGET_P50_MS, true),
            check("p99", figures.p99, TARGET_P99_MS, true),
            check("idle RSS", idle_rss_mib, TARGET_IDLE_RSS_MIB, true),
        ];
        if executor == "host" {
            checks.push(check(
                "tasks/s",
                figures.tasks_per_s,
                TARGET_TASKS_PER_S,
                false,
            ));
        }
        println!(
            "{executor:<10} {:>13.1} {:>16.2} {:>16.2} {:>14.0}  {}",
            idle_rss_mib,
            figures.p50,
            figures.p99,
            figures.tasks_per_s,
            checks.join(", ")
        );
        println!(
            "{:<10} (RSS after the run {rss_after:.1} MiB; {tasks} tasks took {:.2} s, their \
             submissions {:.2} s)",
            "", figures.throughput_secs, figures.submit_secs
        );
        if let Some(alone) = alone {
            println!("{}", server_share(executor, &figures, &alone));
        }
    }
    println!(
        "targets: dispatch p50 <= {TARGET_P50_MS} ms, p99 <= {TARGET_P99_MS} ms, >= \
         {TARGET_TASKS_PER_S} trivial tasks/s with the host executor, idle RSS <= \
         {TARGET_IDLE_RSS_MIB} MiB"
    );
    let finished = setting("CONDUCTOR_BENCH_STORE_FINISHED", 10_000);
    let queued = setting("CONDUCTOR_BENCH_STORE_QUEUED", 1_000);
    if finished + queued > 0 && rows.contains(&"host") {
        match runtime.block_on(store_at_scale(finished, queued, agents)) {
            Ok(lines) => lines.iter().for_each(|line| println!("{line}")),
            Err(reason) => println!("store at scale: skipped: {reason}"),
        }
    }
    Ok(())
}

/// The server's share against the executor alone, as ratios and differences (issue 15's
/// targets: throughput ≥ 0.75× alone for host, ≥ 0.9× for namespace; dispatch p50 ≤ alone + 1
/// ms, p99 ≤ alone + 5 ms).
fn server_share(executor: &str, server: &Figures, alone: &Figures) -> String {
    let target = if executor == "host" { 0.75 } else { 0.9 };
    let ratio = server.tasks_per_s / alone.tasks_per_s.max(f64::EPSILON);
    let (p50, p99) = (server.p50 - alone.p50, server.p99 - alone.p99);
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    format!(
        "{:<10} through the server / alone: {ratio:.2}× tasks/s (≥ {target}×: {}), dispatch p50 \
         {p50:+.2} ms (≤ +1: {}), p99 {p99:+.2} ms (≤ +5: {})",
        "",
        verdict(ratio >= target),
        verdict(p50 <= 1.0),
        verdict(p99 <= 5.0)
    )
}

/// A host-executor server's flags and variables (tasks default to network none, which the
/// host executor cannot give).
const HOST_VARS: [(&str, &str); 1] = [("CONDUCTOR_DEFAULT_NETWORK", "host")];

/// Fills a store with `finished` trivial tasks and `queued` waiting ones (behind `agents`
/// long ones), then times restarts and reads RSS against an empty store's.
async fn store_at_scale(
    finished: usize,
    queued: usize,
    agents: usize,
) -> Result<Vec<String>, String> {
    let slots = agents.to_string();
    let flags = ["--executor", "host", "--slots", &slots, "--grace", "1s"];
    let empty = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (empty_start, empty_rss) = restart(empty.path(), &flags)?;

    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = Server::start(home.path(), &flags, &HOST_VARS)?;
    let client = server.endpoint.client();
    let filled = Instant::now();
    submit_all(&client, finished, "true").await?;
    loop {
        let (succeeded, other) = client.finished().await?;
        if succeeded + other >= finished as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The slots busy, then the queue: what stays queued across the restart.
    submit_all(&client, queued + agents, "sleep 3600").await?;
    let fill_secs = filled.elapsed().as_secs_f64();
    server.stop();
    let (full_start, full_rss) = restart(home.path(), &flags)?;
    let restarted = Server::start(home.path(), &flags, &HOST_VARS)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queue_now = restarted.endpoint.client().count("queued").await?;
    restarted.stop();
    Ok(vec![
        format!(
            "store at scale (host, {agents} slots): {finished} finished + {queued} queued tasks \
             (filled in {fill_secs:.1} s; {queue_now} still queued after the restart)"
        ),
        format!(
            "  restart to serving: {:.0} ms, against {:.0} ms on an empty store ({:.2}×, {:+.0} ms)",
            ms(full_start),
            ms(empty_start),
            ms(full_start) / ms(empty_start).max(f64::EPSILON),
            ms(full_start) - ms(empty_start)
        ),
        format!(
            "  RSS 1 s after the restart: {full_rss:.1} MiB, against {empty_rss:.1} MiB on an \
             empty store ({:+.1} MiB)",
            full_rss - empty_rss
        ),
    ])
}

/// Starts a server on `home`: the time until it serves, and its RSS a second later (then stops
/// it).
fn restart(home: &Path, flags: &[&str]) -> Result<(Duration, f64), String> {
    let started = Instant::now();
    let server = Server::start(home, flags, &HOST_VARS)?;
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss = server.rss_mib();
    server.stop();
    Ok((took, rss))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Submits `count` tasks running `command` from [`CLIENTS`] clients at once.
async fn submit_all(client: &Client, count: usize, command: &str) -> Result<(), String> {
    let mut submitters = Vec::new();
    for n in 0..CLIENTS {
        let (client, command) = (client.clone(), command.to_owned());
        let share = count / CLIENTS + usize::from(n < count % CLIENTS);
        submitters.push(tokio::spawn(async move {
            for _ in 0..share {
                client.submit(&command).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for submitter in submitters {
        submitter.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

fn check(name: &str, value: f64, target: f64, at_most: bool) -> String {
    let met = if at_most {
        value <= target
    } else {
        value >= target
    };
    let sign = if at_most { "<=" } else { ">=" };
    let verdict = if met { "met" } else { "MISSED" };
    format!("{name} {sign} {target}: {verdict}")
}

struct Figures {
    p50: f64,
    p99: f64,
    tasks_per_s: f64,
    throughput_secs: f64,
    submit_secs: f64,
}

async fn measure(
    endpoint: &Endpoint,
    warmup: usize,
    iterations: usize,
    tasks: usize,
) -> Result<Figures, String> {
    let client = endpoint.client();
    let mut latencies = Vec::with_capacity(iterations);
    for round in 0..warmup + iterations {
        let submitted = now_ns();
        let id = client.submit("date +%s%N").await?;
        let output = client.follow(&id).await?;
        let started: u128 = output
            .trim()
            .parse()
            .map_err(|_| format!("task {id} printed {output:?}, not a time"))?;
        if round >= warmup {
            latencies.push(started.saturating_sub(submitted) as f64 / 1e6);
        }
    }

    let before = client.finished().await?;
    let started = Instant::now();
    let mut submitters = Vec::new();
    for n in 0..CLIENTS {
        let client = client.clone();
        let share = tasks / CLIENTS + usize::from(n < tasks % CLIENTS);
        submitters.push(tokio::spawn(async move {
            for _ in 0..share {
                client.submit("true").await?;
            }
            Ok::<_, String>(())
        }));
    }
    for submitter in submitters {
        submitter.await.map_err(|e| e.to_string())??;
    }
    let submit_secs = started.elapsed().as_secs_f64();
    loop {
        let (succeeded, other) = client.finished().await?;
        if other > before.1 {
            return Err(format!(
                "{} trivial tasks did not succeed",
                other - before.1
            ));
        }
        if succeeded - before.0 >= tasks as u64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("the trivial tasks did not finish within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let throughput_secs = started.elapsed().as_secs_f64();
    Ok(Figures {
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
        tasks_per_s: tasks as f64 / throughput_secs,
        throughput_secs,
        submit_secs,
    })
}

/// The executor without the server: `date +%s%N` sequentially (instant before `execute` → the
/// printed instant), then `true` `tasks` times, `agents` at a time.
async fn executor_alone(
    name: &str,
    warmup: usize,
    iterations: usize,
    tasks: usize,
    agents: usize,
) -> Result<Figures, String> {
    use conductor_executors::host::{HostConfig, HostExecutor};
    use conductor_executors::namespace::{NamespaceConfig, NamespaceExecutor};
    let spool = tempfile::tempdir().map_err(|e| e.to_string())?;
    let executor: Arc<dyn Executor> = if name == "host" {
        Arc::new(HostExecutor::new(HostConfig {
            helper_path: helper_binary(),
            spool_dir: spool.path().to_owned(),
            ..HostConfig::default()
        }))
    } else {
        Arc::new(
            NamespaceExecutor::new(NamespaceConfig {
                helper_path: helper_binary(),
                spool_dir: spool.path().to_owned(),
                ..NamespaceConfig::default()
            })
            .map_err(|e| e.to_string())?,
        )
    };
    executor.health_check().await.map_err(|e| e.to_string())?;
    let workspace = tempfile::tempdir().map_err(|e| e.to_string())?;
    let run = |command: &str| {
        let executor = Arc::clone(&executor);
        let mut request = ExecutionRequest::new(
            vec!["/bin/sh".into(), "-c".into(), command.into()],
            workspace.path().to_owned(),
        );
        // The host executor gives only the host's network; a sandbox gets none (as tasks do).
        request.network = if executor.name() == "host" {
            conductor_types::NetworkPolicy::Host
        } else {
            conductor_types::NetworkPolicy::None
        };
        async move {
            let (events, mut receiver) = tokio::sync::mpsc::channel(16);
            let collect = async {
                let mut out = Vec::new();
                while let Some(event) = receiver.recv().await {
                    if let ExecEvent::Output { data, .. } = event {
                        out.extend(data);
                    }
                }
                out
            };
            let (result, out) = tokio::join!(executor.execute(request, events), collect);
            match result {
                Ok(r) if r.exit_code == 0 => Ok(String::from_utf8_lossy(&out).into_owned()),
                Ok(r) => Err(format!("exited {}: {}", r.exit_code, r.stderr)),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let mut latencies = Vec::with_capacity(iterations);
    for round in 0..warmup + iterations {
        let called = now_ns();
        let out = run("date +%s%N").await?;
        let printed: u128 = out.trim().parse().map_err(|_| format!("printed {out:?}"))?;
        if round >= warmup {
            latencies.push(printed.saturating_sub(called) as f64 / 1e6);
        }
        // Paced like the server loop, which answers and is asked again between two tasks.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..agents {
        let next = Arc::clone(&next);
        let run = &run;
        workers.push(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < tasks {
                run("true").await?;
            }
            Ok::<_, String>(())
        });
    }
    for result in futures_util::future::join_all(workers).await {
        result?;
    }
    let throughput_secs = started.elapsed().as_secs_f64();
    Ok(Figures {
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
        tasks_per_s: tasks as f64 / throughput_secs,
        throughput_secs,
        submit_secs: 0.0,
    })
}

/// What `sh -c 'date +%s%N'` alone costs: spawn to the instant it prints, in ms.
fn shell_baseline(iterations: usize) -> Result<Vec<f64>, String> {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let before = now_ns();
        let out = Command::new("/bin/sh")
            .args(["-c", "date +%s%N"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let printed: u128 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "date +%s%N printed no number".to_owned())?;
        samples.push(printed.saturating_sub(before) as f64 / 1e6);
    }
    Ok(samples)
}

/// The helper binary beside that binary when there is one (`conductor serve` checks it is from
/// the same build, and this bench builds both), else the binary itself.
fn helper_binary() -> std::path::PathBuf {
    let conductor = conductor_binary();
    let helper = conductor.with_file_name(conductor_sandbox::HELPER_BINARY);
    if helper.exists() {
        helper
    } else {
        conductor
    }
}

/// Starts nothing: takes the tasks' default network.
fn instantly() -> Arc<dyn Executor> {
    Arc::new(FakeExecutor::new("none", [Capability::NetworkNone]))
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn percentile(samples: &[f64], pct: usize) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}

impl Endpoint {
    fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: self.url.clone(),
            token: self.token.clone(),
        }
    }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    async fn submit(&self, command: &str) -> Result<String, String> {
        let response = self
            .http
            .post(format!("{}/api/v1/tasks", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "commands": [command] }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 201 {
            return Err(format!("submit answered {}", response.status()));
        }
        let task: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        task["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "the created task has no id".to_owned())
    }

    /// The task's output, once it is over.
    async fn follow(&self, id: &str) -> Result<String, String> {
        self.http
            .get(format!("{}/api/v1/tasks/{id}/logs?follow=true", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    }

    /// Tasks in `state`, from `/metrics`.
    async fn count(&self, state: &str) -> Result<u64, String> {
        Ok(count_in(&self.metrics().await?, state))
    }

    async fn metrics(&self) -> Result<String, String> {
        self.http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    }

    /// (succeeded, finished otherwise) from `/metrics`.
    async fn finished(&self) -> Result<(u64, u64), String> {
        let text = self.metrics().await?;
        let count = |state: &str| count_in(&text, state);
        let other = ["failed", "timed_out", "cancelled", "interrupted"]
            .iter()
            .map(|s| count(s))
            .sum();
        Ok((count("succeeded"), other))
    }
}

/// `conductor_tasks{state="STATE"}` in a `/metrics` text (0 when absent).
fn count_in(metrics: &str, state: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("conductor_tasks{{state=\"{state}\"}} ")))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// The server in this process, over a [`FakeExecutor`] that starts nothing (`date +%s%N`
/// "prints" the instant `execute` was called; anything else just succeeds).
struct InProcess {
    server: conductor_server::Server,
    endpoint: Endpoint,
}

impl InProcess {
    async fn start(home: &Path, agents: usize) -> Result<Self, String> {
        let mut config = ServeConfig::new(home.to_owned());
        config.listen = ([127, 0, 0, 1], 0).into();
        config.scheduler = SchedulerConfig {
            slots: agents,
            concurrency: agents,
            ..SchedulerConfig::new(home.join("workspaces"))
        };
        let executors: BTreeMap<String, Arc<dyn Executor>> =
            BTreeMap::from([("host".to_owned(), instantly())]);
        let server = conductor_server::Server::start(config, executors)
            .await
            .map_err(|e| e.to_string())?;
        let token = std::fs::read_to_string(server.admin_token_path())
            .map_err(|e| e.to_string())?
            .trim()
            .to_owned();
        let url = format!("http://{}", server.local_addr());
        Ok(Self {
            server,
            endpoint: Endpoint { url, token },
        })
    }
}
