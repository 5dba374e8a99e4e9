//! Agent task start (issue 12): how long from `POST /api/v1/tasks` until the agent's CLI is up
//! and calling its model, against what the same CLI needs alone and against a plain command task,
//! all measured in the same run on the namespace executor with the `claude-code` environment.
//!
//! - **command task**: a task `date +%s%N` in the `claude-code` environment; the sample is the
//!   instant its process runs minus the instant just before the submit (as the server bench);
//! - **agent task, CLI started**: a Claude Code task (`-p`, one answer) against a fake upstream;
//!   the sample is the instant the CLI's process appeared (a thread polls `/proc` every 0.5 ms
//!   for a new process whose command line holds the task's unique prompt: it is seen right after
//!   its `exec`) minus the instant just before the submit: admission, session, the agent's
//!   home, the gateway's token, the sandbox with its bridge — Conductor's whole share;
//! - **agent task, first request**: the same task, submit → the fake got its first request
//!   (the CLI's own start and the gateway's forward on top);
//! - **CLI alone**: the same pinned CLI (`scripts/agent-clis`) started directly on the host
//!   against the same fake: spawn → first request. It is the part of the agent figure that is
//!   the CLI itself; the difference is Conductor's share of an agent's start.
//!
//! Needs root and `conductor env build claude-code`; the CLI-alone row needs the host CLI
//! (`scripts/agent-clis`). What is missing is said and skipped. Run:
//! `cargo bench -p conductor --bench agent_start` (CONDUCTOR_BENCH_ITERATIONS, default 15).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conductor_agents::fake::{AnthropicFake, FakeServer, Script, Turn};
use serde_json::json;

mod common;
use common::server::{Endpoint, Server};
use common::{ms, percentile};

/// The key the server holds (the fake accepts any).
const KEY: &str = "sk-ant-bench-0000000000000000";
/// Where `scripts/agent-clis` installs the pinned CLIs.
const HOST_CLI: &str = "/var/tmp/conductor-agent-clis/node_modules/.bin/claude";
const WARMUP: usize = 2;

fn main() -> Result<(), String> {
    let iterations = std::env::var("CONDUCTOR_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15usize)
        .max(1);
    if !nix::unistd::geteuid().is_root() {
        println!("agent_start: skipped: needs root (the namespace executor maps the agent's uid)");
        return Ok(());
    }
    let envs = conductor_envs::envs_dir(&conductor_home());
    if !envs.join("claude-code").is_dir() {
        println!("agent_start: skipped: environment claude-code is not built (conductor env build claude-code)");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(bench(&envs, iterations))
}

async fn bench(envs: &Path, iterations: usize) -> Result<(), String> {
    let turns = (0..4 * (iterations + WARMUP)).map(|_| Turn::text("ok").tokens(10, 1));
    let fake = AnthropicFake::start(Script::new(turns))
        .await
        .map_err(|e| e.to_string())?;
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(envs, home.path().join("envs")).map_err(|e| e.to_string())?;
    let config = format!("[llm]\nupstream = \"{}\"\n", fake.url());
    std::fs::write(home.path().join("config.toml"), config).map_err(|e| e.to_string())?;
    let server = Server::start(
        home.path(),
        &["--executor", "namespace", "--slots", "1"],
        &[("ANTHROPIC_API_KEY", KEY)],
    )?;
    let client = Client {
        http: reqwest::Client::new(),
        endpoint: &server.endpoint,
        server_pid: server.pid(),
    };
    let mut samples = Samples::default();
    let host_cli = Path::new(HOST_CLI).exists();
    // Alternating, so a machine that gets busier part-way weighs on every row alike.
    for round in 0..iterations + WARMUP {
        let command = client.command_start().await?;
        let (started, first) = client.agent_start(&fake, round).await?;
        let alone = match host_cli {
            true => Some(cli_alone(&fake).await?),
            false => None,
        };
        if round >= WARMUP {
            samples.command.push(command);
            samples.cli_started.push(started);
            samples.first_request.push(first);
            samples.alone.extend(alone);
        }
    }
    server.stop();
    report(&mut samples);
    Ok(())
}

/// The samples of one bench run.
#[derive(Default)]
struct Samples {
    command: Vec<Duration>,
    cli_started: Vec<Duration>,
    first_request: Vec<Duration>,
    alone: Vec<Duration>,
}

fn report(samples: &mut Samples) {
    let row = |name: &str, samples: &mut [Duration]| {
        let (p50, p90) = (percentile(samples, 50), percentile(samples, 90));
        println!(
            "  {name:<28} p50 {:>8.1} ms   p90 {:>8.1} ms   ({} runs)",
            ms(p50),
            ms(p90),
            samples.len()
        );
        p50
    };
    println!("agent_start: submit → started, namespace executor, environment claude-code");
    let command = row("command task: process runs", &mut samples.command);
    let started = row("agent task: CLI started", &mut samples.cli_started);
    let first = row("agent task: first request", &mut samples.first_request);
    println!(
        "  agent task start / command task start (p50): {:.2}× ({:+.1} ms)",
        ms(started) / ms(command).max(f64::EPSILON),
        ms(started) - ms(command)
    );
    if samples.alone.is_empty() {
        println!("  CLI alone: skipped: {HOST_CLI} is missing (scripts/agent-clis)");
        return;
    }
    let alone = row("CLI alone: first request", &mut samples.alone);
    println!(
        "  the CLI's own start (CLI alone, p50) is {:.0}% of the agent task's first request",
        100.0 * ms(alone) / ms(first).max(f64::EPSILON)
    );
}

struct Client<'a> {
    http: reqwest::Client,
    endpoint: &'a Endpoint,
    server_pid: u32,
}

impl Client<'_> {
    async fn submit(&self, body: serde_json::Value) -> Result<String, String> {
        let response = self
            .http
            .post(format!("{}/api/v1/tasks", self.endpoint.url))
            .bearer_auth(&self.endpoint.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("submit answered {status}: {body}"));
        }
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no id in {body}"))
    }

    /// The task once finished.
    async fn finished(&self, id: &str) -> Result<serde_json::Value, String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let task: serde_json::Value = self
                .http
                .get(format!("{}/api/v1/tasks/{id}", self.endpoint.url))
                .bearer_auth(&self.endpoint.token)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let status = task["status"].as_str().unwrap_or_default();
            if matches!(
                status,
                "succeeded" | "failed" | "cancelled" | "timed_out" | "interrupted"
            ) {
                if status != "succeeded" {
                    return Err(format!("task {id} ended {status}: {task}"));
                }
                return Ok(task);
            }
            if Instant::now() > deadline {
                return Err(format!("task {id} did not finish in 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Submit → the instant a `date +%s%N` task's process ran.
    async fn command_start(&self) -> Result<Duration, String> {
        let before = now_ns();
        let id = self
            .submit(json!({"environment": "claude-code", "commands": ["date +%s%N"]}))
            .await?;
        self.finished(&id).await?;
        let logs = self
            .http
            .get(format!("{}/api/v1/tasks/{id}/logs", self.endpoint.url))
            .bearer_auth(&self.endpoint.token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let printed: u128 = logs
            .split(|c: char| !c.is_ascii_digit())
            .filter(|word| word.len() >= 18)
            .find_map(|word| word.parse().ok())
            .ok_or_else(|| format!("no instant in the logs: {logs}"))?;
        Ok(Duration::from_nanos(
            u64::try_from(printed.saturating_sub(before)).unwrap_or(u64::MAX),
        ))
    }

    /// Submit → the CLI's process seen, and submit → the fake's first request, of a one-answer
    /// Claude Code task.
    async fn agent_start(
        &self,
        fake: &FakeServer,
        round: usize,
    ) -> Result<(Duration, Duration), String> {
        let prompt = format!("say ok {round}-{}", std::process::id());
        let seen = fake.requests().len();
        let watch = ExecWatch::start(self.server_pid, prompt.clone());
        let before = Instant::now();
        let id = self
            .submit(json!({
                "task_type": "agent",
                "environment": "claude-code",
                "agent": {"kind": "claude-code", "prompt": prompt, "max_turns": 1}
            }))
            .await?;
        self.finished(&id).await?;
        let started = watch
            .finish()
            .ok_or("the CLI's process was never seen in /proc")?
            .saturating_duration_since(before);
        Ok((started, first_request_since(fake, seen, before)?))
    }
}

/// A thread that polls `/proc` for the first process below `root` (the server) whose command
/// line holds `marker`. Below the server, not new since: a warm helper forks the command's
/// process ahead of time, and that process then `exec`s the CLI.
struct ExecWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<Instant>>,
}

impl ExecWatch {
    fn start(root: u32, marker: String) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                for pid in descendants(root) {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if String::from_utf8_lossy(&cmdline).contains(&marker) {
                        return Some(Instant::now());
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            None
        });
        Self { stop, thread }
    }

    fn finish(self) -> Option<Instant> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// Every process below `root`, from each thread's `children` file.
fn descendants(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// The same CLI on the host, straight at the fake: spawn → first request.
async fn cli_alone(fake: &FakeServer) -> Result<Duration, String> {
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let seen = fake.requests().len();
    let before = Instant::now();
    let status = tokio::process::Command::new(HOST_CLI)
        .args([
            "-p",
            "say ok",
            "--output-format",
            "stream-json",
            "--verbose",
        ])
        .args(["--max-turns", "1", "--model", "claude-sonnet-4-5"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home.path())
        .env("ANTHROPIC_BASE_URL", fake.url())
        .env("ANTHROPIC_API_KEY", KEY)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(|e| format!("running {HOST_CLI}: {e}"))?;
    if !status.success() {
        return Err(format!("{HOST_CLI} alone exited {status}"));
    }
    first_request_since(fake, seen, before)
}

fn first_request_since(
    fake: &FakeServer,
    seen: usize,
    before: Instant,
) -> Result<Duration, String> {
    fake.requests()
        .get(seen)
        .map(|request| request.received.saturating_duration_since(before))
        .ok_or_else(|| "the fake saw no request".to_owned())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn conductor_home() -> PathBuf {
    std::env::var_os("CONDUCTOR_HOME").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".conductor")
        },
        PathBuf::from,
    )
}
