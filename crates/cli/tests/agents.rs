//! Agent tasks end to end (issue 12): `conductor serve` runs the real Claude Code CLI from the
//! `claude-code` environment (and Codex from `codex`) against a scripted fake upstream, through
//! the LLM gateway bridged into the sandbox (network `none`), on the namespace executor and —
//! the main scenario — on docker and podman. The fake sees the real key (swapped in by the
//! gateway); the sandbox never does.
//!
//! Needs root and the `claude-code` environment built in `~/.conductor/envs` (`.ci/run` builds
//! it: `conductor env build claude-code`); docker and podman cases need their engines running
//! (`scripts/services`). A missing piece skips the case with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use conductor_agents::fake::{AnthropicFake, FakeServer, OpenAiFake, Script, Turn};
use conductor_types::{
    AgentEvent, ChangedPath, FailureCode, PathChange, Task, TaskEvent, TaskEventKind, TaskStatus,
};
use serde_json::json;

mod support;
use support::{is_root, Client, Server};

/// The provider key the server holds; no byte of it may reach the sandbox.
const KEY: &str = "sk-ant-test-7f3a9c2e5b1d4f60a8e2c9b7d5f3a1e0";

fn skip(case: &str, reason: &str) {
    eprintln!("skipped {case}: {reason}");
}

/// This machine's environments, when `claude-code` is among them and we are root.
fn envs(case: &str) -> Option<PathBuf> {
    if !is_root() {
        skip(
            case,
            "needs root (the namespace executor maps the agent's own uid)",
        );
        return None;
    }
    let envs = conductor_envs::envs_dir(&support::conductor_home());
    let built = std::fs::read_dir(envs.join("claude-code"))
        .ok()
        .is_some_and(|mut dirs| {
            dirs.any(|e| e.is_ok_and(|e| e.path().join("manifest.json").is_file()))
        });
    if !built {
        skip(
            case,
            "environment claude-code is not built (conductor env build claude-code)",
        );
        return None;
    }
    Some(envs)
}

/// A server on the namespace executor whose gateway forwards to `fake`.
fn server(envs: &Path, fake: &FakeServer) -> (tempfile::TempDir, Server) {
    server_on(envs, fake, "namespace")
}

/// A server whose `claude-code` environment runs on `executor` and whose gateway forwards to
/// `fake`.
fn server_on(envs: &Path, fake: &FakeServer, executor: &str) -> (tempfile::TempDir, Server) {
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(envs, home.path().join("envs")).unwrap();
    let mut config = format!("[llm]\nupstream = \"{}\"\n", fake.url());
    if executor != "namespace" {
        config.push_str(&format!(
            "[environments.claude-code]\nexecutor = \"{executor}\"\n"
        ));
    }
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let server = start_in(home.path());
    (home, server)
}

/// The server of the home [`server_on`] made (again, after a restart).
fn start_in(home: &Path) -> Server {
    Server::start_env(
        home,
        1,
        &["--executor", "namespace"],
        &[("ANTHROPIC_API_KEY", KEY)],
    )
}

/// Why the container engine `executor` cannot run here, if it cannot.
fn engine_missing(executor: &str) -> Option<String> {
    let socket = match executor {
        "docker" => "/run/docker.sock",
        "podman" => "/run/podman/podman.sock",
        _ => return None,
    };
    (!Path::new(socket).exists())
        .then(|| format!("{executor} is not running ({socket}; start it: scripts/services)"))
}

fn agent_task(prompt: &str) -> serde_json::Value {
    json!({
        "task_type": "agent",
        "environment": "claude-code",
        "workspace": "proj",
        "timeout": "5m",
        "agent": {
            "kind": "claude-code",
            "prompt": prompt,
            "model": "claude-sonnet-4-5",
            "max_turns": 10,
            "allowed_tools": ["Read", "Write", "Edit", "Bash"],
            "permission_mode": "acceptEdits"
        }
    })
}

/// Task `task` once it finished.
async fn finished(client: &Client, task: &Task) -> Task {
    client
        .wait_until(task.id, |t| t.state.status.is_finished())
        .await
}

/// `POST /api/v1/tasks/{id}/messages` to `task`.
async fn message(client: &Client, task: &Task, content: &str) -> reqwest::Response {
    let url = format!("{}/api/v1/tasks/{}/messages", client.url, task.id);
    client
        .http
        .post(url)
        .bearer_auth(&client.token)
        .json(&json!({ "content": content }))
        .send()
        .await
        .unwrap()
}

async fn events(client: &Client, task: &Task) -> Vec<TaskEvent> {
    let url = format!("{}/api/v1/tasks/{}/events", client.url, task.id);
    let response = client
        .http
        .get(url)
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    serde_json::from_str::<Vec<TaskEvent>>(&text).unwrap_or_else(|_| {
        text.split("\n\n")
            .filter_map(|block| {
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                serde_json::from_str(&data).ok()
            })
            .collect()
    })
}

fn agent_steps(events: &[TaskEvent]) -> Vec<AgentEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            TaskEventKind::Agent(step) => Some(step.clone()),
            _ => None,
        })
        .collect()
}

/// The key's middle, built from two halves inside the sandbox: the scan's own command line (which
/// the agent's transcript keeps) never holds it whole.
const KEY_HALVES: (&str, &str) = ("7f3a9c2e", "5b1d4f60");
/// A marker the test puts in the workspace, found the same way: proof the scan reads files.
const CANARY: &str = "canary-4e1f0b";

/// A Bash script that looks for the key everywhere the agent can read: every process's
/// environment and command line, and every file of the sandbox but /proc, /sys and /dev
/// (`FOUND:` lines), then the canary the test planted (`CANARY:` lines).
fn key_scan() -> String {
    let (a, b) = KEY_HALVES;
    let (c, d) = CANARY.split_at(7);
    format!(
        "k={a}; k=\"${{k}}{b}\"; c={c}; c=\"${{c}}{d}\"; env | grep -F \"$k\" | sed 's/^/FOUND:env /'; \
         for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do \
           tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -qF \"$k\" && echo \"FOUND:$f\"; done; \
         grep -rlsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev \"$k\" / | sed 's/^/FOUND:/'; \
         grep -rlsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev \"$c\" / | sed 's/^/CANARY:/'; \
         echo scanned"
    )
}

/// The text of the tool results in the last message of an Anthropic request `body` (what the
/// agent's tool printed, without the tool call's own input).
fn last_tool_result(body: &serde_json::Value) -> String {
    fn texts(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::String(text) => out.push_str(text),
            serde_json::Value::Array(items) => items.iter().for_each(|item| texts(item, out)),
            serde_json::Value::Object(map) => map.values().for_each(|item| texts(item, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    let last = body["messages"].as_array().and_then(|m| m.last());
    for block in last
        .and_then(|m| m["content"].as_array())
        .into_iter()
        .flatten()
    {
        if block["type"] == "tool_result" {
            texts(&block["content"], &mut out);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_writes_a_file_resumes_and_never_sees_the_key() {
    let case = "claude_code_writes_a_file_resumes_and_never_sees_the_key";
    let Some(envs) = envs(case) else { return };
    write_resume_and_scan(&envs, "namespace").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_on_docker() {
    let case = "claude_code_runs_on_docker";
    let Some(envs) = envs(case) else { return };
    if let Some(reason) = engine_missing("docker") {
        return skip(case, &reason);
    }
    write_resume_and_scan(&envs, "docker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_on_podman() {
    let case = "claude_code_runs_on_podman";
    let Some(envs) = envs(case) else { return };
    if let Some(reason) = engine_missing("podman") {
        return skip(case, &reason);
    }
    write_resume_and_scan(&envs, "podman").await;
}

/// The main scenario on `executor`: the agent writes a file (events in order, usage as the
/// fake reported it, the real key only upstream), then, after a restart of the server, a
/// follow-up turn resumes the session and scans the sandbox for the key: nothing, though the
/// scan finds the planted canary.
async fn write_resume_and_scan(envs: &Path, executor: &str) {
    let scan = key_scan();
    let fake = AnthropicFake::start(Script::new([
        Turn::tool(
            "Write",
            json!({"file_path": "/workspace/hello.txt", "content": "hello\n"}),
        )
        .saying("I'll write the file.")
        .tokens(100, 20)
        .cache(0, 50),
        Turn::text("Done: hello.txt holds hello.").tokens(130, 10),
        // The second turn (a follow-up message).
        Turn::tool(
            "Bash",
            json!({"command": scan, "description": "Look around"}),
        )
        .tokens(200, 15),
        Turn::text("Nothing to report.").tokens(260, 8),
    ]))
    .await
    .unwrap();
    let (home, server) = server_on(envs, &fake, executor);
    let client = server.client();
    let task = client.submit(agent_task("write hello.txt")).await;
    let session = task
        .spec
        .session_id
        .clone()
        .expect("an agent task has a session");
    let done = finished(&client, &task).await;
    assert_eq!(done.state.status, TaskStatus::Succeeded, "{done:?}");
    assert_eq!(done.results[0].executor.as_deref(), Some(executor));
    let written = home.path().join("workspaces/named/proj/hello.txt");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "hello\n");
    std::fs::write(written.with_file_name("planted.txt"), CANARY).unwrap();
    // Steps in order: the tool call, its result, the final answer.
    let steps = agent_steps(&events(&client, &task).await);
    let names: Vec<&str> = steps.iter().map(AgentEvent::name).collect();
    let call = names.iter().position(|n| *n == "agent_tool_call").unwrap();
    let result = names
        .iter()
        .position(|n| *n == "agent_tool_result")
        .unwrap();
    // The agent's own steps end with its result; then what the turn changed in the workspace.
    assert!(
        call < result && names.ends_with(&["agent_result", "agent_files_changed"]),
        "{names:?}"
    );
    let Some(AgentEvent::AgentFilesChanged { files, more: 0 }) = steps.last() else {
        panic!("no complete list of changed files: {steps:?}");
    };
    assert_eq!(
        files.as_slice(),
        [ChangedPath {
            path: "hello.txt".into(),
            change: PathChange::Added
        }]
    );
    // Tokens as the fake reported them (input + cache writes + output, per request).
    let usage = done.usage.expect("an agent task reports usage");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens),
        (230, 30),
        "{usage:?}"
    );
    assert_eq!(usage.cache_creation_input_tokens, 50);
    assert!(usage.cost_usd > 0.0);
    // The upstream got the real key, never the task's token.
    for request in fake.conversation() {
        assert_eq!(request.header("x-api-key"), Some(KEY));
    }

    // After a restart of the server, a follow-up turn resumes the agent's session in the same
    // workspace.
    server.terminate();
    let server = start_in(home.path());
    let client = server.client();
    let next: Task = {
        let response = message(&client, &task, "now look around").await;
        assert_eq!(response.status().as_u16(), 201);
        response.json().await.unwrap()
    };
    assert_eq!(next.spec.parent_id, Some(task.id));
    assert_eq!(next.spec.session_id.as_ref(), Some(&session));
    let second = finished(&client, &next).await;
    assert_eq!(second.state.status, TaskStatus::Succeeded, "{second:?}");
    let conversation = fake.conversation();
    let resumed = &conversation[2].body.to_string();
    assert!(
        resumed.contains("write hello.txt"),
        "the resumed turn carries the first turn"
    );
    // What the Bash scan saw inside the sandbox came back to the fake: no key anywhere, though
    // it found the canary (so it did read the files).
    let scanned = last_tool_result(&conversation.last().unwrap().body);
    assert!(scanned.contains("scanned"), "the scan ran: {scanned}");
    assert!(
        scanned.contains("CANARY:/workspace/planted.txt"),
        "the scan did not find the planted canary: {scanned}"
    );
    assert!(
        !scanned.contains("FOUND:") && !scanned.contains(KEY),
        "the provider key was visible inside the sandbox: {scanned}"
    );
    // The old turn no longer takes messages.
    let again = message(&client, &task, "x").await;
    assert_eq!(again.status().as_u16(), 409);
    // The raw stream is kept, without the token or the key.
    let url = format!("{}/api/v1/tasks/{}/agent-stream", client.url, task.id);
    let raw = client
        .http
        .get(url)
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap();
    let raw = raw.text().await.unwrap();
    assert!(raw.lines().count() > 2 && !raw.contains(KEY));
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_smaller_than_the_work_stops_the_agent() {
    let case = "a_budget_smaller_than_the_work_stops_the_agent";
    let Some(envs) = envs(case) else { return };
    let bash = |n: u32| {
        Turn::tool(
            "Bash",
            json!({"command": format!("echo {n}"), "description": "Count"}),
        )
        .tokens(2000, 100)
    };
    let fake = AnthropicFake::start(Script::new([
        bash(1),
        bash(2),
        bash(3),
        bash(4),
        Turn::text("done"),
    ]))
    .await
    .unwrap();
    let (_home, server) = server(&envs, &fake);
    let client = server.client();
    let mut request = agent_task("count");
    request["budget"] = json!({"tokens": 5000});
    let task = client.submit(request).await;
    let done = finished(&client, &task).await;
    assert_eq!(done.state.status, TaskStatus::Failed, "{done:?}");
    assert_eq!(done.state.failure_code, Some(FailureCode::BudgetExceeded));
    // 2 100 tokens a request: after two, 800 are left, below what a thinking request needs
    // (its output above the API's smallest thinking budget), so the third is refused locally.
    assert_eq!(
        fake.turns_played(),
        2,
        "no request reached the upstream past the budget: {done:?}"
    );
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_upstream_is_retried_by_the_gateway_not_the_agent() {
    let case = "an_overloaded_upstream_is_retried_by_the_gateway_not_the_agent";
    let Some(envs) = envs(case) else { return };
    // A 429 asking for a second's pause, then a 529 without a wish, then the real answers.
    let fake = AnthropicFake::start(Script::new([
        Turn::failing(429, Some(1)),
        Turn::failing(529, None),
        Turn::tool(
            "Write",
            json!({"file_path": "/workspace/after.txt", "content": "after\n"}),
        )
        .tokens(10, 5),
        Turn::text("Done.").tokens(20, 5),
    ]))
    .await
    .unwrap();
    let (home, server) = server(&envs, &fake);
    let client = server.client();
    let started = std::time::Instant::now();
    let task = client.submit(agent_task("write after.txt")).await;
    let done = finished(&client, &task).await;
    assert_eq!(done.state.status, TaskStatus::Succeeded, "{done:?}");
    let written = home.path().join("workspaces/named/proj/after.txt");
    assert_eq!(std::fs::read_to_string(written).unwrap(), "after\n");
    assert_eq!(fake.turns_played(), 4);
    // The retry-after was honoured, and the two refusals never reached the agent: the gateway
    // retried them itself and answered nothing but 200.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    let url = format!("{}/metrics", client.url);
    let metrics = client
        .http
        .get(url)
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("conductor_llm_upstream_retries_total 2"),
        "{metrics}"
    );
    let statuses: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("conductor_llm_requests_total{"))
        .collect();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|l| l.contains("status=\"200\"")),
        "{statuses:?}"
    );
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_and_an_unreachable_upstream_have_their_failure_codes() {
    let case = "a_refused_key_and_an_unreachable_upstream_have_their_failure_codes";
    let Some(envs) = envs(case) else { return };
    // The provider refuses the key (401): upstream_rejected.
    let fake = AnthropicFake::start(Script::new([Turn::failing(401, None)]))
        .await
        .unwrap();
    let (_home, server) = server(&envs, &fake);
    let client = server.client();
    let task = client.submit(agent_task("anything")).await;
    let done = finished(&client, &task).await;
    assert_eq!(done.state.status, TaskStatus::Failed, "{done:?}");
    assert_eq!(
        done.state.failure_code,
        Some(FailureCode::UpstreamRejected),
        "{done:?}"
    );
    server.terminate();
    // Nothing listens where the upstream should be: upstream_unavailable.
    let gone = AnthropicFake::start(Script::new([Turn::text("never")]))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&envs, home.path().join("envs")).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = format!("[llm]\nupstream = \"http://127.0.0.1:{port}\"\n[llm.retry]\nmax_attempts = 2\nbase_delay_ms = 50\n");
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let server = Server::start_env(
        home.path(),
        1,
        &["--executor", "namespace"],
        &[("ANTHROPIC_API_KEY", KEY)],
    );
    let client = server.client();
    let task = client.submit(agent_task("anything")).await;
    let done = finished(&client, &task).await;
    assert_eq!(
        done.state.failure_code,
        Some(FailureCode::UpstreamUnavailable),
        "{done:?}"
    );
    assert_eq!(gone.turns_played(), 0);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_through_the_openai_side_of_the_gateway() {
    let case = "codex_runs_through_the_openai_side_of_the_gateway";
    let Some(envs) = envs(case) else { return };
    let built = std::fs::read_dir(envs.join("codex"))
        .ok()
        .is_some_and(|mut dirs| {
            dirs.any(|e| e.is_ok_and(|e| e.path().join("manifest.json").is_file()))
        });
    if !built {
        skip(
            case,
            "environment codex is not built (conductor env build codex)",
        );
        return;
    }
    let fake = OpenAiFake::start(Script::new([
        Turn::tool(
            "exec_command",
            json!({"cmd": "printf 'hello\\n' > hello.txt"}),
        )
        .saying("Writing the file.")
        .tokens(100, 20),
        Turn::text("Done.").tokens(150, 10),
        // The follow-up turn.
        Turn::text("It holds hello.").tokens(300, 5),
    ]))
    .await
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&envs, home.path().join("envs")).unwrap();
    let config = format!("[llm.openai]\nupstream = \"{}/v1\"\n", fake.url());
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let server = Server::start_env(
        home.path(),
        1,
        &["--executor", "namespace"],
        &[("ANTHROPIC_API_KEY", KEY), ("OPENAI_API_KEY", KEY)],
    );
    let client = server.client();
    let task = client
        .submit(json!({
            "task_type": "agent",
            "environment": "codex",
            "workspace": "proj",
            "timeout": "5m",
            "agent": {"kind": "codex", "prompt": "write hello.txt", "model": "gpt-5-codex"}
        }))
        .await;
    let done = finished(&client, &task).await;
    assert_eq!(done.state.status, TaskStatus::Succeeded, "{done:?}");
    let written = home.path().join("workspaces/named/proj/hello.txt");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "hello\n");
    let usage = done.usage.expect("an agent task reports usage");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens),
        (250, 30),
        "{usage:?}"
    );
    for request in fake.conversation() {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
    // A follow-up turn resumes Codex's own session (`codex exec resume`): the upstream sees
    // the first turn's conversation again.
    let next: Task = {
        let response = message(&client, &task, "what does hello.txt hold?").await;
        assert_eq!(response.status().as_u16(), 201);
        response.json().await.unwrap()
    };
    let second = finished(&client, &next).await;
    assert_eq!(second.state.status, TaskStatus::Succeeded, "{second:?}");
    let conversation = fake.conversation();
    let resumed = conversation.last().unwrap().body.to_string();
    assert!(
        resumed.contains("write hello.txt") && resumed.contains("what does hello.txt hold?"),
        "the resumed turn carries the first turn: {resumed}"
    );
    assert_eq!(second.usage.map(|u| u.input_tokens), Some(300));
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_agent_in_the_middle_of_a_tool_call() {
    let case = "cancel_stops_the_agent_in_the_middle_of_a_tool_call";
    let Some(envs) = envs(case) else { return };
    let fake = AnthropicFake::start(Script::new([
        Turn::tool(
            "Write",
            json!({"file_path": "/workspace/kept.txt", "content": "kept\n"}),
        )
        .tokens(10, 5),
        Turn::tool(
            "Bash",
            json!({"command": "python3 -c \"import time; time.sleep(60)\"", "description": "Run the long job"}),
        )
        .tokens(10, 5),
        Turn::text("never").tokens(10, 5),
    ]))
    .await
    .unwrap();
    let (home, server) = server(&envs, &fake);
    let client = server.client();
    let task = client.submit(agent_task("wait a minute")).await;
    // Wait for the agent to be inside the second tool call (sleep 60).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while fake.turns_played() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never got to its Bash call"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let url = format!("{}/api/v1/tasks/{}/cancel", client.url, task.id);
    let cancelled_at = std::time::Instant::now();
    let response = client
        .http
        .post(url)
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let done = finished(&client, &task).await;
    assert_eq!(
        status,
        200,
        "{done:?} {:?}",
        agent_steps(&events(&client, &task).await)
    );
    assert_eq!(done.state.status, TaskStatus::Cancelled, "{done:?}");
    assert!(
        cancelled_at.elapsed() < std::time::Duration::from_secs(10),
        "cancel took {:?}",
        cancelled_at.elapsed()
    );
    // The workspace stays as the agent left it; the upstream saw nothing after the cancel.
    let kept = home.path().join("workspaces/named/proj/kept.txt");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "kept\n");
    assert_eq!(fake.turns_played(), 2);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_command_streams_the_steps_and_sums_up_each_turn() {
    let case = "the_agent_command_streams_the_steps_and_sums_up_each_turn";
    let Some(envs) = envs(case) else { return };
    let fake = AnthropicFake::start(Script::new([
        Turn::tool(
            "Write",
            json!({"file_path": "/workspace/hello.txt", "content": "hello\n"}),
        )
        .saying("Writing it now.")
        .tokens(100, 20),
        Turn::text("hello.txt is written.").tokens(120, 10),
        Turn::text("Nothing else to do.").tokens(200, 5),
    ]))
    .await
    .unwrap();
    let (home, server) = server(&envs, &fake);
    let conductor = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_conductor"));
        command
            .arg("agent")
            .args(args)
            .args(["--server", &server.url])
            .env("CONDUCTOR_HOME", home.path())
            .stdin(std::process::Stdio::null());
        command
    };
    let run = conductor(&[
        "run",
        "--workspace",
        "proj",
        "--allow-tool",
        "Write",
        "write hello.txt",
    ])
    .output()
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert_eq!(run.status.code(), Some(0), "{stdout}\n{stderr}");
    // The steps as they happened, then the summary with what the turn used and changed.
    assert!(
        stdout.contains("Writing it now.")
            && stdout.contains("→ Write")
            && stdout.contains("hello.txt is written."),
        "{stdout}"
    );
    for part in [
        "succeeded",
        "turns ",
        "tokens in 220 out 30",
        "files changed: 1",
        "A hello.txt",
        "conductor agent continue",
    ] {
        assert!(
            stderr.contains(part),
            "{part:?} missing from the summary: {stderr}"
        );
    }
    let task = stderr
        .split_whitespace()
        .skip_while(|word| *word != "task")
        .nth(1)
        .unwrap()
        .to_owned();
    // The next turn, in the same session and workspace.
    let next = conductor(&["continue", &task, "anything else?"])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&next.stdout),
        String::from_utf8_lossy(&next.stderr),
    );
    assert_eq!(next.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("Nothing else to do."), "{stdout}");
    assert!(stderr.contains("files changed: 0"), "{stderr}");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_cli_is_not_in_the_environment_is_refused_naming_what_to_build() {
    let case = "an_agent_whose_cli_is_not_in_the_environment_is_refused_naming_what_to_build";
    let Some(envs) = envs(case) else { return };
    let fake = AnthropicFake::start(Script::new([Turn::text("never")]))
        .await
        .unwrap();
    let (_home, server) = server(&envs, &fake);
    let client = server.client();
    // Codex in the Claude Code environment: no `codex` there.
    let response = client
        .http
        .post(format!("{}/api/v1/tasks", client.url))
        .bearer_auth(&client.token)
        .json(&json!({
            "task_type": "agent",
            "environment": "claude-code",
            "agent": {"kind": "codex", "prompt": "hi"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("codex --version")
            && message.contains("conductor env build codex")
            && message.contains("did not run there"),
        "{body}"
    );
    assert_eq!(fake.requests().len(), 0);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_task_type_becomes_an_agent_task_through_its_prompt_template() {
    let case = "a_seed_task_type_becomes_an_agent_task_through_its_prompt_template";
    let Some(envs) = envs(case) else { return };
    let fake = AnthropicFake::start(Script::new([
        Turn::text("The error handling looks fine.").tokens(50, 8)
    ]))
    .await
    .unwrap();
    let (_home, server) = server(&envs, &fake);
    let client = server.client();
    let task = client
        .submit(json!({
            "task_type": "code_review",
            "description": "check the error handling of the parser",
            "files": ["src/parse.py", "src/errors.py"],
            "timeout": "5m"
        }))
        .await;
    assert_eq!(task.spec.environment, "claude-code");
    assert!(task.spec.session_id.is_some());
    let done = finished(&client, &task).await;
    assert_eq!(done.state.status, TaskStatus::Succeeded, "{done:?}");
    // The template's prompt reached the model with the description and the files in it.
    let first = fake.conversation()[0].body.to_string();
    for part in [
        "check the error handling of the parser",
        "src/parse.py",
        "src/errors.py",
    ] {
        assert!(first.contains(part), "{part:?} not in the prompt: {first}");
    }
    server.terminate();
}
