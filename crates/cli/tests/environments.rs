//! `conductor serve` with built environments: seed 001's Python example through the API on the
//! namespace, Docker and Podman executors, and what happens when an executor's daemon is down
//! (a clear error per task, `/health` degraded, or the configured fallback).
//!
//! Needs root, the `python-dev` and `minimal` environments built in `~/.conductor/envs`
//! (`.ci/run` builds them) and, for the container cases, the engines (`scripts/services`).
//! A missing piece skips the case with the reason on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use conductor_types::{Task, TaskStatus};
use serde_json::json;

mod support;
use support::{is_root, Client, Server};

/// The environments built on this machine, if `name` is one of them.
fn built_envs(name: &str) -> Option<PathBuf> {
    let envs = conductor_envs::envs_dir(&support::conductor_home());
    let built = std::fs::read_dir(envs.join(name))
        .ok()?
        .flatten()
        .any(|e| e.path().join("manifest.json").is_file());
    built.then_some(envs)
}

/// A home whose `envs` are this machine's, with `config` as its config file.
fn home_with_envs(envs: &Path, config: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(envs, home.path().join("envs")).unwrap();
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    home
}

fn skip(case: &str, reason: &str) {
    eprintln!("skipped {case}: {reason}");
}

/// Why `executor` cannot run here, if it cannot.
fn missing(executor: &str, env: &str) -> Option<String> {
    if !is_root() {
        return Some("needs root".into());
    }
    if built_envs(env).is_none() {
        return Some(format!("environment {env} is not built"));
    }
    let socket = match executor {
        "docker" => "/run/docker.sock",
        "podman" => "/run/podman/podman.sock",
        _ => return None,
    };
    (!Path::new(socket).exists()).then(|| format!("{executor} is not running ({socket})"))
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, String) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn finished(&self, task: &Task) -> Task {
        self.wait_until(task.id, |t| t.state.status.is_finished())
            .await
    }
}

/// A small Python project with tests in the `project` workspace, as seed 001's example expects
/// under `/workspace/src`.
async fn put_python_project(client: &Client) {
    let (status, body) = client
        .send(
            reqwest::Method::POST,
            "/api/v1/workspaces",
            Some(
                json!({ "name": "project", "cleanup": "keep" })
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let files = [
        ("src/calc.py", "def add(a, b):\n    return a + b\n"),
        (
            "src/tests/test_calc.py",
            "import sys, os\nsys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))\n\
             from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\
             def test_sandboxed():\n    assert os.getcwd() == '/workspace/src'\n",
        ),
    ];
    let node = [
        (
            "src/package.json",
            "{ \"name\": \"demo\", \"version\": \"1.0.0\", \"private\": true,\n  \
             \"scripts\": { \"build\": \"node build.js\", \"test\": \"jest\" } }\n",
        ),
        (
            "src/build.js",
            "const fs = require('fs');\nfs.mkdirSync('dist', { recursive: true });\n\
             fs.copyFileSync('sum.js', 'dist/sum.js');\nconsole.log('built dist/sum.js');\n",
        ),
        ("src/sum.js", "module.exports = (a, b) => a + b;\n"),
        (
            "src/sum.test.js",
            "const sum = require('./dist/sum');\n\
             test('adds', () => { expect(sum(1, 2)).toBe(3); });\n",
        ),
    ];
    for (path, text) in files.into_iter().chain(node) {
        let (status, body) = client
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/workspaces/project/files/{path}"),
                Some(text.as_bytes().to_vec()),
            )
            .await;
        assert!(status == 200 || status == 201, "{path}: {status} {body}");
    }
}

/// Seed 001's request, as written (the test adds only the token).
fn seed_python_request() -> serde_json::Value {
    json!({
        "task_type": "isolated_execution",
        "description": "Run Python tests",
        "environment": "python-dev",
        "commands": [
            "cd /workspace/src",
            "python -m pytest tests/"
        ]
    })
}

/// Seed 001's Node.js request, as written.
fn seed_node_request() -> serde_json::Value {
    json!({
        "task_type": "isolated_execution",
        "description": "Build Node.js project",
        "environment": "nodejs-dev",
        "commands": [
            "cd /workspace/src",
            "npm install",
            "npm run build",
            "npm test"
        ]
    })
}

/// Seed 001's integration-test request, as written.
fn seed_fullstack_request() -> serde_json::Value {
    json!({
        "task_type": "isolated_execution",
        "description": "Run integration tests",
        "environment": "fullstack",
        "services": ["postgres:14", "redis:7"],
        "commands": [
            "cd /workspace",
            "./scripts/setup-dev.sh",
            "./scripts/run-integration-tests.sh"
        ]
    })
}

/// The scripts seed 001's integration test runs: a schema in postgres and a key in redis, then
/// a check through both clients.
async fn put_integration_scripts(client: &Client) {
    let scripts = [
        (
            "scripts/setup-dev.sh",
            "#!/bin/sh\nset -e\n\
             psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE items (name text)'\n\
             psql -v ON_ERROR_STOP=1 -c \"INSERT INTO items VALUES ('from-setup')\"\n\
             redis-cli -u \"$REDIS_URL\" SET greeting hello\n",
        ),
        (
            "scripts/run-integration-tests.sh",
            "#!/bin/sh\nset -e\n\
             test \"$(psql -At -c 'SELECT name FROM items')\" = from-setup\n\
             test \"$(redis-cli -u \"$REDIS_URL\" GET greeting)\" = hello\n\
             echo integration-ok\n",
        ),
    ];
    for (path, text) in scripts {
        let (status, body) = client
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/workspaces/project/files/{path}?mode=755"),
                Some(text.as_bytes().to_vec()),
            )
            .await;
        assert!(status == 200 || status == 201, "{path}: {status} {body}");
    }
}

/// Submits `body` to `/api/v1/tasks`; returns the status and the answer.
async fn post_task(client: &Client, body: serde_json::Value) -> (u16, String) {
    client
        .send(
            reqwest::Method::POST,
            "/api/v1/tasks",
            Some(body.to_string().into_bytes()),
        )
        .await
}

/// Posts `body` to `/tasks` as curl does, waits for the task; returns it and its output.
async fn run_as_curl_does(client: &Client, body: &serde_json::Value) -> (Task, String) {
    let response = client
        .http
        .post(format!("{}/tasks", client.url))
        .bearer_auth(&client.token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let task: Task = response.json().await.unwrap();
    let task = client.finished(&task).await;
    let logs = client.logs(task.id).await;
    (task, logs)
}

async fn seed_examples_on(executor: &str) {
    let case = format!("seed examples on {executor}");
    if let Some(reason) = missing(executor, "python-dev") {
        return skip(&case, &reason);
    }
    let envs = built_envs("python-dev").unwrap();
    let home = home_with_envs(&envs, "default_workspace = \"project\"\n");
    let server = Server::start_with(home.path(), 1, &["--executor", executor]);
    let client = server.client();
    put_python_project(&client).await;
    let (task, logs) = run_as_curl_does(&client, &seed_python_request()).await;
    assert_eq!(task.state.status, TaskStatus::Succeeded, "{case}: {logs}");
    assert!(logs.contains("2 passed"), "{case}: {logs}");
    assert!(
        task.results
            .iter()
            .all(|r| r.executor.as_deref() == Some(executor)),
        "{case}: {:?}",
        task.results
    );
    if built_envs("nodejs-dev").is_some() {
        let (task, logs) = run_as_curl_does(&client, &seed_node_request()).await;
        assert_eq!(
            task.state.status,
            TaskStatus::Succeeded,
            "{case} (node): {logs}"
        );
        assert!(logs.contains("built dist/sum.js"), "{case} (node): {logs}");
        assert!(
            logs.contains("Tests:       1 passed, 1 total"),
            "{case} (node): {logs}"
        );
    } else {
        skip(
            &format!("{case} (node)"),
            "environment nodejs-dev is not built",
        );
    }
    match (executor, built_envs("fullstack")) {
        ("namespace", _) => {
            // Services need a container engine: refused at submission, naming the way out.
            let body = json!({ "environment": "python-dev", "services": ["redis:7"], "commands": ["true"] });
            let (status, body) = post_task(&client, body).await;
            assert_eq!(status, 422, "{body}");
            assert!(body.contains("run it on docker or podman"), "{body}");
        }
        (_, Some(_)) => {
            put_integration_scripts(&client).await;
            let (task, logs) = run_as_curl_does(&client, &seed_fullstack_request()).await;
            assert_eq!(
                task.state.status,
                TaskStatus::Succeeded,
                "{case} (fullstack): {logs} {task:?}"
            );
            assert!(
                logs.contains("integration-ok"),
                "{case} (fullstack): {logs}"
            );
            // The engine is connected by now, so an unknown service is refused at submission.
            let body = json!({ "environment": "fullstack", "services": ["mongo:6"], "commands": ["true"] });
            let (status, body) = post_task(&client, body).await;
            assert_eq!(status, 422, "{body}");
            assert!(body.contains("mongo:6"), "{body}");
        }
        (_, None) => skip(
            &format!("{case} (fullstack)"),
            "environment fullstack is not built",
        ),
    }
    // The tools are python-dev's (the host need not have them): the task ran in the environment.
    let task = client
        .submit(json!({
            "environment": "python-dev",
            "commands": [
                "black --version && flake8 --version && python3 -c 'import pytest'",
                where_am_i(executor),
            ]
        }))
        .await;
    let task = client.finished(&task).await;
    let logs = client.logs(task.id).await;
    assert_eq!(task.state.status, TaskStatus::Succeeded, "{case}: {logs}");
    server.terminate();
}

/// A command that succeeds only on `executor`.
fn where_am_i(executor: &str) -> &'static str {
    match executor {
        // The engine's init is pid 1 of the container.
        "docker" => "grep -q docker-init /proc/1/cmdline",
        "podman" => "grep -q catatonit /proc/1/cmdline",
        _ => "! grep -q -e docker-init -e catatonit /proc/1/cmdline && hostname | grep -q '^conductor-'",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_run_on_the_namespace_executor() {
    seed_examples_on("namespace").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_run_on_docker() {
    seed_examples_on("docker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_run_on_podman() {
    seed_examples_on("podman").await;
}

/// Docker "down": its socket points nowhere.
const DOCKER_DOWN: (&str, &str) = ("DOCKER_HOST", "unix:///nonexistent/docker.sock");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_is_down_fails_its_tasks_clearly_and_degrades_health() {
    if let Some(reason) = missing("namespace", "minimal") {
        return skip("daemon down", &reason);
    }
    let envs = built_envs("minimal").unwrap();
    let home = home_with_envs(&envs, "[environments.minimal]\nexecutor = \"docker\"\n");
    let server = Server::start_env(home.path(), 1, &["--executor", "namespace"], &[DOCKER_DOWN]);
    let client = server.client();

    let (status, body) = client.send(reqwest::Method::GET, "/health", None).await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded", "{body}");
    assert_eq!(health["checks"]["executor:host"], "ok", "{body}");
    let minimal = health["checks"]["executor:minimal"].as_str().unwrap();
    assert!(
        minimal.contains("docker does not answer on /nonexistent/docker.sock"),
        "{body}"
    );

    let task = client
        .submit(json!({ "environment": "minimal", "commands": ["true"] }))
        .await;
    let task = client.finished(&task).await;
    assert_eq!(task.state.status, TaskStatus::Failed);
    let error = task.results[0].error.as_deref().unwrap();
    assert!(
        error.contains("the docker executor is unavailable")
            && error.contains("start it: scripts/services"),
        "{error}"
    );
    // The other environments still run.
    let task = client
        .submit(json!({ "commands": ["echo still-here"] }))
        .await;
    assert_eq!(
        client.finished(&task).await.state.status,
        TaskStatus::Succeeded
    );
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_fallback_runs_the_tasks_while_the_daemon_is_down() {
    if let Some(reason) = missing("namespace", "minimal") {
        return skip("fallback", &reason);
    }
    let envs = built_envs("minimal").unwrap();
    let home = home_with_envs(
        &envs,
        "[environments.minimal]\nexecutor = \"docker\"\nfallback = \"namespace\"\n",
    );
    let server = Server::start_env(home.path(), 1, &[], &[DOCKER_DOWN]);
    let client = server.client();
    let (status, body) = client.send(reqwest::Method::GET, "/health", None).await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded", "{body}");
    let minimal = health["checks"]["executor:minimal"].as_str().unwrap();
    assert!(
        minimal.contains("tasks run on the namespace executor instead"),
        "{body}"
    );

    let task = client
        .submit(json!({ "environment": "minimal", "commands": ["cat /etc/debian_version"] }))
        .await;
    let task = client.finished(&task).await;
    let logs = client.logs(task.id).await;
    assert_eq!(task.state.status, TaskStatus::Succeeded, "{logs}");
    assert!(logs.trim().starts_with("12."), "{logs}");
    // Recorded on the task: which executor really ran the command.
    assert_eq!(task.results[0].executor.as_deref(), Some("namespace"));
    server.terminate();
}

/// `warm_reuse` reaches the docker executor through `conductor serve`'s config: a task runs in
/// the container the task before it used (its init's start time), which the reset left with
/// an empty `/tmp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_warm_reuse_serves_tasks_from_one_reset_container() {
    if let Some(reason) = missing("docker", "minimal") {
        return skip("warm reuse", &reason);
    }
    let envs = built_envs("minimal").unwrap();
    let home = home_with_envs(
        &envs,
        "[environments.minimal]\nexecutor = \"docker\"\nwarm_pool = 1\nwarm_reuse = 20\n",
    );
    let server = Server::start_with(home.path(), 1, &[]);
    let client = server.client();
    let run = |script: &str| {
        let request = json!({ "environment": "minimal", "commands": [script] });
        let client = &client;
        async move {
            let task = client.submit(request).await;
            let task = client.finished(&task).await;
            let logs = client.logs(task.id).await;
            assert_eq!(task.state.status, TaskStatus::Succeeded, "{logs}");
            logs
        }
    };
    // Each task leaves a file in /tmp; one that runs where the previous one ran (the first may
    // run cold while the pool fills, and a reused container comes back after its reset, in
    // milliseconds) must find /tmp empty all the same.
    let mut previous = String::new();
    let mut reused = false;
    for _ in 0..20 {
        let logs = run("cut -d' ' -f22 /proc/1/stat; ls -A /tmp; echo secret > /tmp/left").await;
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 1, "/tmp is not empty: {logs}");
        if lines[0] == previous {
            reused = true;
            break;
        }
        previous = lines[0].to_owned();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        reused,
        "no task ran in the container the task before it used"
    );
    server.terminate();
}

/// The heavy presets build offline from Debian packages (and the npm registry) and their tools
/// run. Opt-in: `CONDUCTOR_TEST_HEAVY_PRESETS=1` (builds take minutes and ~2 GB the first time).
#[test]
fn heavy_presets_build_and_their_tools_run() {
    if std::env::var_os("CONDUCTOR_TEST_HEAVY_PRESETS").is_none() {
        return skip(
            "heavy presets",
            "opt-in: set CONDUCTOR_TEST_HEAVY_PRESETS=1",
        );
    }
    if !is_root() {
        return skip("heavy presets", "needs root");
    }
    let conductor = env!("CARGO_BIN_EXE_conductor");
    let presets = [
        (
            "fullstack",
            "node --version && psql --version && redis-cli --version && python -m pytest --version",
        ),
        (
            "python-ml",
            "python3 -c 'import numpy, pandas, sklearn; print(\"ml-ok\")' && jupyter --version",
        ),
        ("security-tools", "bandit --version"),
    ];
    for (preset, smoke) in presets {
        let status = std::process::Command::new(conductor)
            .args(["env", "build", preset])
            .status()
            .unwrap();
        assert!(status.success(), "building {preset}");
        let workspace = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(conductor)
            .args([
                "exec",
                "--executor",
                "namespace",
                "--environment",
                preset,
                "--workspace",
            ])
            .arg(workspace.path())
            .args(["--", "/bin/sh", "-c", smoke])
            // Through a resident executor of this test's own (an environment's root as
            // the resident's prebuilt root), gone 5 s after the last preset.
            .env("CONDUCTOR_RESIDENT", "wait")
            .env(
                "CONDUCTOR_RESIDENT_DIR",
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("resident-presets"),
            )
            .env("CONDUCTOR_RESIDENT_IDLE", "5")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{preset}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_custom_environment_is_left_out_and_the_server_starts() {
    let home = tempfile::tempdir().unwrap();
    let broken = home.path().join("envs/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("spec.json"), "{ not json").unwrap();
    let server = Server::start(home.path(), 1);
    let client = server.client();
    let (status, body) = post_task(
        &client,
        json!({ "environment": "broken", "commands": ["true"] }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("the environments that exist are \\\"host\\\""),
        "{body}"
    );
    let task = client.submit(json!({ "commands": ["true"] })).await;
    assert_eq!(
        client.finished(&task).await.state.status,
        TaskStatus::Succeeded
    );
    server.terminate();
}

/// Why the environment-building cases cannot run here, if they cannot: they need root and the
/// base `minimal` is built from (so a build copies it instead of running debootstrap).
fn cannot_build() -> Option<String> {
    if !is_root() {
        return Some("needs root".into());
    }
    // Not built at all is a reason to skip too (`?` here read it as "can build").
    let Some(envs) = built_envs("minimal") else {
        return Some("environment minimal is not built: conductor env build minimal".into());
    };
    (!envs.join(".base").is_dir()).then(|| "the base of environment minimal is not built".into())
}

/// A home whose `envs` has this machine's bases and nothing else: what it builds stays in it.
fn home_sharing_bases() -> tempfile::TempDir {
    let envs = built_envs("minimal").unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("envs")).unwrap();
    std::os::unix::fs::symlink(envs.join(".base"), home.path().join("envs/.base")).unwrap();
    home
}

/// Waits up to `limit` for the task to finish (a build takes longer than a command).
async fn finished_within(client: &Client, task: &Task, limit: std::time::Duration) -> Task {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let now = client.task(task.id).await;
        if now.state.status.is_finished() {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never finished: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

const JQ_DOCKERFILE: &str = "FROM debian:bookworm\n\
    RUN apt-get update && apt-get install -y --no-install-recommends jq\n\
    RUN echo '{\"tool\": \"jq\", \"built\": true}' > /etc/conductor-inline.json\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_defined_in_the_request_is_built_once_and_runs_on_namespace() {
    let case = "environment defined in the request";
    if let Some(reason) = cannot_build() {
        return skip(case, &reason);
    }
    let home = home_sharing_bases();
    let server = Server::start_with(home.path(), 2, &["--executor", "namespace"]);
    let client = server.client();
    let request = |command: &str| {
        json!({
            "environments": [{ "name": "custom-env", "dockerfile": JQ_DOCKERFILE }],
            "environment": "custom-env",
            "commands": [command, where_am_i("namespace")],
        })
    };

    // A bad Dockerfile is refused at submission, naming the line and what is supported.
    let (status, body) = post_task(
        &client,
        json!({
            "environments": [{ "name": "custom-env", "dockerfile": "FROM debian:bookworm\nADD . /src\n" }],
            "environment": "custom-env",
            "commands": ["true"],
        }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        error["error"],
        json!({
            "code": "invalid_dockerfile",
            "message": "environments[0]: environment custom-env: Dockerfile line 2: ADD is not supported yet: there is no build context; fetch files in a RUN step or put them in the task's workspace",
        })
    );
    // A preset's name with other content is a conflict.
    let (status, body) = post_task(
        &client,
        json!({
            "environments": [{ "name": "minimal", "dockerfile": JQ_DOCKERFILE }],
            "environment": "minimal",
            "commands": ["true"],
        }),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("\"code\":\"environment_conflict\""), "{body}");

    // First use, by two tasks at once: one build, with its progress in the logs of both (the
    // second joins the first's build), then the commands run in it.
    let started = std::time::Instant::now();
    let first = client
        .submit(request("jq -r .tool /etc/conductor-inline.json"))
        .await;
    let other = client
        .submit(request("jq -r .built /etc/conductor-inline.json"))
        .await;
    let build = first.spec.inline_environment.clone().unwrap().build;
    assert!(build.starts_with("inline-"), "{build}");
    assert_eq!(other.spec.inline_environment, first.spec.inline_environment);
    let first = finished_within(&client, &first, std::time::Duration::from_secs(600)).await;
    let first_took = started.elapsed();
    let other = finished_within(&client, &other, std::time::Duration::from_secs(60)).await;
    let (logs, other_logs) = (client.logs(first.id).await, client.logs(other.id).await);
    assert_eq!(
        (first.state.status, other.state.status),
        (TaskStatus::Succeeded, TaskStatus::Succeeded),
        "{logs}\n{other_logs}\n{first:?}"
    );
    assert!(logs.ends_with("\njq\n"), "{logs}");
    assert!(other_logs.ends_with("\ntrue\n"), "{other_logs}");
    // Which of the two was dispatched first is the scheduler's choice.
    let joined =
        format!("environment custom-env: waiting for the build of {build} another task started\n");
    let (builder_logs, joiner_logs) = if other_logs.starts_with(&joined) {
        (&logs, &other_logs)
    } else {
        (&other_logs, &logs)
    };
    assert!(joiner_logs.starts_with(&joined), "{joiner_logs}");
    assert!(!builder_logs.contains(&joined), "{builder_logs}");
    assert!(
        builder_logs.contains("environment custom-env: step 1/4: copying the base"),
        "{builder_logs}"
    );
    // The joiner sees the build's lines printed after it subscribed, so it may have the first
    // step too when it joined early; it never has a line the builder does not.
    for line in joiner_logs.lines().filter(|line| line.contains("step ")) {
        assert!(
            builder_logs.contains(line),
            "{line:?} not in {builder_logs}"
        );
    }
    assert!(
        builder_logs.contains("environment custom-env: step 2/4: apt-get install 1 package(s): jq"),
        "{builder_logs}"
    );
    assert!(
        builder_logs.contains("environment custom-env: step 3/4: setup 1/1: echo"),
        "{builder_logs}"
    );
    let done = format!("environment custom-env: built {build} (");
    assert!(
        builder_logs.contains(&done) && joiner_logs.contains(&done),
        "{joiner_logs}"
    );
    assert!(
        first
            .results
            .iter()
            .chain(&other.results)
            .all(|r| r.executor.as_deref() == Some("namespace")),
        "{:?}",
        first.results
    );
    let hash = build.trim_start_matches("inline-");
    let manifest = home
        .path()
        .join(format!("envs/{build}/{hash}/manifest.json"));
    let built_at = std::fs::metadata(&manifest).unwrap().modified().unwrap();

    // Again, the same text: the cached build, nothing rebuilt.
    let started = std::time::Instant::now();
    let second = client.submit(request("jq -n '1 + 2'")).await;
    let second = finished_within(&client, &second, std::time::Duration::from_secs(60)).await;
    let second_took = started.elapsed();
    let logs = client.logs(second.id).await;
    assert_eq!(second.state.status, TaskStatus::Succeeded, "{logs}");
    assert_eq!(
        logs,
        format!("environment custom-env: using the cached build {build} ({hash})\n3\n")
    );
    assert_eq!(
        std::fs::metadata(&manifest).unwrap().modified().unwrap(),
        built_at
    );
    eprintln!(
        "{case}: first task (build + run) {:.1} s, a later one (cached build) {:.2} s",
        first_took.as_secs_f64(),
        second_took.as_secs_f64()
    );
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_built_after_the_start_is_usable_without_a_restart() {
    let case = "environment built after the start";
    if let Some(reason) = cannot_build() {
        return skip(case, &reason);
    }
    let home = home_sharing_bases();
    let server = Server::start_with(home.path(), 1, &["--executor", "namespace"]);
    let client = server.client();
    let request = json!({ "environment": "late-env", "commands": ["cat /etc/late-marker"] });
    let (status, body) = post_task(&client, request.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("unknown environment \\\"late-env\\\""),
        "{body}"
    );

    let dockerfile = home.path().join("Dockerfile");
    std::fs::write(
        &dockerfile,
        "FROM debian:bookworm\nRUN echo late > /etc/late-marker\n",
    )
    .unwrap();
    let built = std::process::Command::new(env!("CARGO_BIN_EXE_conductor"))
        .args([
            "env",
            "build",
            "late-env",
            "--import",
            "none",
            "--dockerfile",
        ])
        .arg(&dockerfile)
        .env("CONDUCTOR_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let task = client.submit(request).await;
    let task = client.finished(&task).await;
    let logs = client.logs(task.id).await;
    assert_eq!(task.state.status, TaskStatus::Succeeded, "{logs}");
    assert_eq!(logs, "late\n");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_defined_in_the_request_runs_on_the_executor_its_name_configures() {
    let case = "environment defined in the request, on docker";
    if let Some(reason) = cannot_build().or_else(|| missing("docker", "minimal")) {
        return skip(case, &reason);
    }
    let home = home_sharing_bases();
    std::fs::write(
        home.path().join("config.toml"),
        "[environments.custom-env]\nexecutor = \"docker\"\n",
    )
    .unwrap();
    let server = Server::start_with(home.path(), 1, &[]);
    let client = server.client();
    let task = client
        .submit(json!({
            "environments": [{ "name": "custom-env", "dockerfile": JQ_DOCKERFILE }],
            "environment": "custom-env",
            "commands": ["jq -r .tool /etc/conductor-inline.json", where_am_i("docker")],
        }))
        .await;
    let build = task.spec.inline_environment.clone().unwrap().build;
    let task = finished_within(&client, &task, std::time::Duration::from_secs(600)).await;
    let logs = client.logs(task.id).await;
    // Built (or found built) here, imported into Docker on first use, run there.
    let image = format!(
        "conductor-env/{build}:{}",
        build.trim_start_matches("inline-")
    );
    let removed = std::process::Command::new("docker")
        .args(["image", "rm", &image])
        .output();
    assert_eq!(task.state.status, TaskStatus::Succeeded, "{logs}\n{task:?}");
    assert!(logs.ends_with("\njq\n"), "{logs}");
    assert!(
        task.results
            .iter()
            .all(|r| r.executor.as_deref() == Some("docker")),
        "{:?}",
        task.results
    );
    assert!(
        removed.is_ok_and(|o| o.status.success()),
        "the image {image} was not there to remove"
    );
    server.terminate();
}
