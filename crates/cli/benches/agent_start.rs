//! Agent task start (issue 12): how long from `POST /api/v1/tasks` until the agent's CLI is up
//! and calling its model, against what the same CLI needs alone and against a plain command task,
//! all measured in the same run on the namespace executor with the `claude-code` environment.
//!
//! - **command task**: a task `date +%s%N` in the `claude-code` environment; the sample is the
//!   instant its process runs minus the instant just before the submit (as the server bench);
//! - **agent task**: a Claude Code task (`-p`, one answer) against a fake upstream; the sample is
//!   the instant the fake got the task's first request minus the instant just before the submit:
//!   submission, session, the agent's home, the gateway's token, the sandbox with its bridge,
//!   the CLI's own start, and the gateway's forward;
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
    };
    let mut command = Vec::new();
    let mut agent = Vec::new();
    let mut alone = Vec::new();
    let host_cli = Path::new(HOST_CLI).exists();
    // Alternating, so a machine that gets busier part-way weighs on every row alike.
    for round in 0..iterations + WARMUP {
        let c = client.command_start().await?;
        let a = client.agent_start(&fake).await?;
        let h = match host_cli {
            true => Some(cli_alone(&fake).await?),
            false => None,
        };
        if round >= WARMUP {
            command.push(c);
            agent.push(a);
            alone.extend(h);
        }
    }
    server.stop();
    report(&mut command, &mut agent, &mut alone);
    Ok(())
}

fn report(command: &mut [Duration], agent: &mut [Duration], alone: &mut [Duration]) {
    let row = |name: &str, samples: &mut [Duration]| {
        let (p50, p90) = (percentile(samples, 50), percentile(samples, 90));
        println!(
            "  {name:<14} p50 {:>8.1} ms   p90 {:>8.1} ms   ({} runs)",
            ms(p50),
            ms(p90),
            samples.len()
        );
        p50
    };
    println!("agent_start: submit → started, namespace executor, environment claude-code");
    let command = row("command task", command);
    let agent = row("agent task", agent);
    if alone.is_empty() {
        println!("  CLI alone      skipped: {HOST_CLI} is missing (scripts/agent-clis)");
        println!(
            "  agent task / command task: {:.1}×",
            ms(agent) / ms(command)
        );
        return;
    }
    let alone = row("CLI alone", alone);
    let share = agent.saturating_sub(alone);
    println!(
        "  Conductor's share of an agent's start (agent task − CLI alone, p50): {:.1} ms; a plain command task: {:.1} ms ({:.2}×)",
        ms(share),
        ms(command),
        ms(share) / ms(command).max(f64::EPSILON)
    );
}

struct Client<'a> {
    http: reqwest::Client,
    endpoint: &'a Endpoint,
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
            let status = task["state"]["status"].as_str().unwrap_or_default();
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

    /// Submit → the fake's first request of a one-answer Claude Code task.
    async fn agent_start(&self, fake: &FakeServer) -> Result<Duration, String> {
        let seen = fake.requests().len();
        let before = Instant::now();
        let id = self
            .submit(json!({
                "task_type": "agent",
                "environment": "claude-code",
                "agent": {"kind": "claude-code", "prompt": "say ok", "max_turns": 1}
            }))
            .await?;
        self.finished(&id).await?;
        first_request_since(fake, seen, before)
    }
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
