//! Environments through the [`EnvironmentPort`]: defined in a request (checked at submission,
//! built once before the first command, progress in the logs, a failed build fails the task
//! with `environment_build_failed`) and built after the server started (found on demand).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use conductor_core::Executor;
use conductor_server::{DefineError, EnvironmentPort, Progress};
use conductor_types::{EnvironmentDefinition, FailureCode, InlineEnvironment, TaskStatus};
use serde_json::json;

use crate::support::{error_of, FakeExecutor, Options, TestApp};

/// Builds "environments" in memory: a Dockerfile is valid unless it has `COPY`, keyed by its
/// text; `RUN false` fails the build; a build takes 300 ms and is cached after.
#[derive(Debug, Default)]
struct FakePort {
    executor: Arc<FakeExecutor>,
    /// Builds done (by key), and how many times each was really built.
    built: Mutex<BTreeMap<String, usize>>,
    /// Environments "built by `conductor env build`" after the start.
    late: Mutex<BTreeSet<String>>,
}

#[async_trait]
impl EnvironmentPort for FakePort {
    fn define(&self, definition: &EnvironmentDefinition) -> Result<InlineEnvironment, DefineError> {
        if definition.dockerfile.contains("COPY") {
            return Err(DefineError::Invalid(format!(
                "environment {}: Dockerfile line 2: COPY is not supported yet",
                definition.name
            )));
        }
        if definition.name == "python-dev" {
            return Err(DefineError::Conflict(
                "environment \"python-dev\" already exists on the server".into(),
            ));
        }
        Ok(InlineEnvironment {
            name: definition.name.clone(),
            dockerfile: definition.dockerfile.clone(),
            build: format!("inline-{}", definition.dockerfile.len()),
        })
    }

    async fn find(&self, name: &str) -> Result<Option<Arc<dyn Executor>>, String> {
        Ok(self
            .late
            .lock()
            .unwrap()
            .contains(name)
            .then(|| self.executor.clone() as Arc<dyn Executor>))
    }

    async fn executor(&self, _inline: &InlineEnvironment) -> Result<Arc<dyn Executor>, String> {
        Ok(self.executor.clone())
    }

    async fn build(&self, inline: &InlineEnvironment, progress: Progress) -> Result<(), String> {
        if self.built.lock().unwrap().contains_key(&inline.build) {
            progress(format!("using the cached build {}", inline.build));
            return Ok(());
        }
        progress("step 1/2: copying the base".into());
        let slow = inline.dockerfile.contains("RUN sleep");
        tokio::time::sleep(Duration::from_millis(if slow { 3000 } else { 300 })).await;
        if inline.dockerfile.contains("RUN false") {
            progress("step 2/2: false".into());
            return Err("setup 1/1: false failed (exit status 1)".into());
        }
        progress("step 2/2: recording the manifest".into());
        *self
            .built
            .lock()
            .unwrap()
            .entry(inline.build.clone())
            .or_default() += 1;
        Ok(())
    }

    async fn built_names(&self) -> Vec<String> {
        self.late.lock().unwrap().iter().cloned().collect()
    }
}

async fn app_with_port() -> (TestApp, Arc<FakePort>) {
    let port = Arc::new(FakePort::default());
    let app = TestApp::with(Options {
        environment_port: Some(port.clone()),
        ..Options::default()
    })
    .await;
    (app, port)
}

const DOCKERFILE: &str = "FROM debian:bookworm\nRUN apt-get install -y jq\n";

fn inline_request(command: &str) -> String {
    json!({
        "environments": [{ "name": "custom-env", "dockerfile": DOCKERFILE }],
        "environment": "custom-env",
        "commands": [command],
        // The fake executor enforces no network policy.
        "network": "full",
    })
    .to_string()
}

async fn logs(app: &TestApp, id: conductor_types::TaskId) -> String {
    let (status, text) = app
        .send(Method::GET, &format!("/api/v1/tasks/{id}/logs"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    text
}

#[tokio::test]
async fn a_defined_environment_is_built_once_and_its_progress_logged() {
    let (app, port) = app_with_port().await;
    // Two tasks at once: one build, the second waits for it.
    let first = app.submit(&inline_request("echo one")).await;
    let second = app.submit(&inline_request("echo two")).await;
    let build = format!("inline-{}", DOCKERFILE.len());
    assert_eq!(
        first.spec.inline_environment,
        Some(InlineEnvironment {
            name: "custom-env".into(),
            dockerfile: DOCKERFILE.into(),
            build: build.clone(),
        })
    );
    assert_eq!(first.spec.environment, "custom-env");
    let first = app.wait_for(first.id, TaskStatus::Succeeded).await;
    let second = app.wait_for(second.id, TaskStatus::Succeeded).await;
    assert_eq!(
        *port.built.lock().unwrap(),
        BTreeMap::from([(build.clone(), 1)])
    );
    let mut logs_of = BTreeMap::new();
    for task in [&first, &second] {
        logs_of.insert(task.id, logs(&app, task.id).await);
    }
    let mut all: Vec<&str> = logs_of.values().map(String::as_str).collect();
    all.sort();
    // Which task started the build and which joined it depends on dispatch order.
    let started = "step 1/2: copying the base\nstep 2/2: recording the manifest\n";
    let joined =
        format!("environment custom-env: waiting for the build of {build} another task started\n");
    let outputs = [
        (logs_of[&first.id].as_str(), "one\n"),
        (logs_of[&second.id].as_str(), "two\n"),
    ];
    let mut kinds = Vec::new();
    for (text, output) in outputs {
        let prefix = text
            .strip_suffix(output)
            .unwrap_or_else(|| panic!("{text:?}"));
        kinds.push(if prefix == started {
            "started"
        } else {
            // The joiner sees the lines printed after it subscribed: none, the last, or both
            // (when it joined before the first).
            assert!(
                prefix == joined
                    || prefix == format!("{joined}step 2/2: recording the manifest\n")
                    || prefix == format!("{joined}{started}"),
                "{prefix:?}"
            );
            "joined"
        });
    }
    kinds.sort_unstable();
    assert_eq!(kinds, ["joined", "started"]);
    // The build lines are events of their own kind, before the first command.
    let (_, events) = app
        .send(
            Method::GET,
            &format!("/api/v1/tasks/{}/events", first.id),
            None,
        )
        .await;
    let build_event = events.find("\"type\":\"environment_build\"").unwrap();
    let command_started = events.find("\"type\":\"command_started\"").unwrap();
    assert!(build_event < command_started, "{events}");

    // Later: the build is cached, the task says so.
    let third = app.submit(&inline_request("echo three")).await;
    let third = app.wait_for(third.id, TaskStatus::Succeeded).await;
    assert_eq!(
        logs(&app, third.id).await,
        format!("using the cached build {build}\nthree\n")
    );
    assert_eq!(*port.built.lock().unwrap(), BTreeMap::from([(build, 1)]));
    assert_eq!(app.executor.requests.lock().unwrap().len(), 0);
    assert_eq!(port.executor.requests.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_failed_build_fails_the_task_with_its_code_and_error() {
    let (app, _port) = app_with_port().await;
    let body = json!({
        "environments": [{ "name": "broken", "dockerfile": "FROM debian:bookworm\nRUN false\n" }],
        "environment": "broken",
        "commands": ["echo never"],
        "network": "full",
    });
    let task = app.submit(&body.to_string()).await;
    let task = app.wait_for(task.id, TaskStatus::Failed).await;
    assert_eq!(
        task.state.failure_code,
        Some(FailureCode::EnvironmentBuildFailed)
    );
    assert_eq!(
        task.state.status_reason.as_deref(),
        Some("could not build environment \"broken\" (inline-31): setup 1/1: false failed (exit status 1)")
    );
    assert!(task.results.is_empty());
    assert_eq!(
        logs(&app, task.id).await,
        "step 1/2: copying the base\nstep 2/2: false\n"
    );
}

#[tokio::test]
async fn definitions_are_checked_at_submission() {
    let (app, _port) = app_with_port().await;
    let post = |body: serde_json::Value| {
        let app = &app;
        async move {
            let (status, text) = app
                .send(Method::POST, "/api/v1/tasks", Some(&body.to_string()))
                .await;
            (status, error_of(&text))
        }
    };
    let dockerfile = |text: &str| json!([{ "name": "custom-env", "dockerfile": text }]);
    assert_eq!(
        post(json!({ "environments": dockerfile("FROM debian:12\nCOPY . ."), "environment": "custom-env", "commands": ["true"] })).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            (
                "invalid_dockerfile".into(),
                "environments[0]: environment custom-env: Dockerfile line 2: COPY is not supported yet".into()
            )
        )
    );
    // Checked even when the task does not use it.
    assert_eq!(
        post(
            json!({ "environments": dockerfile("FROM debian:12\nCOPY . ."), "commands": ["true"] })
        )
        .await
        .1
         .0,
        "invalid_dockerfile"
    );
    assert_eq!(
        post(json!({ "environments": [{ "name": "python-dev", "dockerfile": DOCKERFILE }], "environment": "python-dev", "commands": ["true"] })).await,
        (
            StatusCode::CONFLICT,
            (
                "environment_conflict".into(),
                "environments[0]: environment \"python-dev\" already exists on the server".into()
            )
        )
    );
    assert_eq!(
        post(json!({ "environments": [{ "name": "host", "dockerfile": DOCKERFILE }], "commands": ["true"] })).await,
        (
            StatusCode::CONFLICT,
            (
                "environment_conflict".into(),
                "environments[0]: environment name \"host\" is reserved (the host's own filesystem): give the definition another name".into()
            )
        )
    );
    let twice = json!([
        { "name": "a", "dockerfile": DOCKERFILE },
        { "name": "a", "dockerfile": DOCKERFILE },
    ]);
    assert_eq!(
        post(json!({ "environments": twice, "environment": "a", "commands": ["true"] })).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            (
                "invalid_field".into(),
                "environments[1]: environment \"a\" is defined twice".into()
            )
        )
    );
    assert_eq!(
        post(json!({ "environments": [{ "name": "a" }], "commands": ["true"] })).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            (
                "invalid_field".into(),
                "environments[0]: missing field `dockerfile` at line 1 column 49".into()
            )
        )
    );
    // A definition the task does not name is checked, and the task runs where it says.
    let body = json!({ "environments": dockerfile(DOCKERFILE), "commands": ["echo host"] });
    let task = app.submit(&body.to_string()).await;
    assert_eq!(
        (task.spec.environment.as_str(), task.spec.inline_environment),
        ("host", None)
    );
    app.wait_for(task.id, TaskStatus::Succeeded).await;
}

#[tokio::test]
async fn a_server_without_a_builder_refuses_definitions() {
    let app = TestApp::new().await;
    let (status, text) = app
        .send(Method::POST, "/api/v1/tasks", Some(&inline_request("true")))
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            (
                "not_supported".into(),
                "environments: environments defined in a request are not supported yet by this server (it has no environment builder)".into()
            )
        )
    );
}

#[tokio::test]
async fn an_environment_built_after_the_start_is_found_without_a_restart() {
    let (app, port) = app_with_port().await;
    port.late.lock().unwrap().insert("other".into());
    let body = json!({ "environment": "late-env", "commands": ["echo late"], "network": "full" })
        .to_string();
    let (status, text) = app.send(Method::POST, "/api/v1/tasks", Some(&body)).await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            (
                "invalid_field".into(),
                "environment: unknown environment \"late-env\": the environments that exist are \"host\", \"other\" (the server offers every environment built on it, also one built while it runs: `conductor env build NAME`; or define it in the request's `environments`)".into()
            )
        )
    );
    // `conductor env build late-env` happens; no restart.
    port.late.lock().unwrap().insert("late-env".into());
    let task = app.submit(&body).await;
    let task = app.wait_for(task.id, TaskStatus::Succeeded).await;
    assert_eq!(logs(&app, task.id).await, "late\n");
    assert_eq!(port.executor.requests.lock().unwrap().len(), 1);
    assert_eq!(app.executor.requests.lock().unwrap().len(), 0);
}

#[tokio::test]
async fn defining_an_environment_needs_an_admin_token() {
    let (app, _port) = app_with_port().await;
    let agent = conductor_server::auth::create_token(app.store.as_ref(), "agent", false)
        .await
        .unwrap();
    let (status, text) = app
        .send_as(
            Some(&agent.token),
            Method::POST,
            "/api/v1/tasks",
            Some(&inline_request("true")),
        )
        .await;
    assert_eq!(
        (status, error_of(&text)),
        (
            StatusCode::FORBIDDEN,
            (
                "forbidden".into(),
                "environments: defining an environment needs an admin token: its RUN steps run as root on the server while it is built (in a chroot, not a sandbox); have it built with `conductor env build NAME --dockerfile PATH` and name it in `environment`".into()
            )
        )
    );
}

#[tokio::test]
async fn a_task_cancelled_while_its_environment_builds_stops_and_the_build_goes_on() {
    let (app, port) = app_with_port().await;
    let body = json!({
        "environments": [{ "name": "slow", "dockerfile": "FROM debian:bookworm\nRUN sleep 3\n" }],
        "environment": "slow",
        "commands": ["echo never"],
        "network": "full",
    });
    let task = app.submit(&body.to_string()).await;
    app.wait_for(task.id, TaskStatus::Running).await;
    let (status, text) = app
        .send(
            Method::POST,
            &format!("/api/v1/tasks/{}/cancel", task.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // The agent is free again well before the build ends.
    let started = std::time::Instant::now();
    loop {
        let agents = app.scheduler.slots();
        if agents.iter().all(|a| a.task_id.is_none()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{agents:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let task = app.wait_for(task.id, TaskStatus::Cancelled).await;
    assert!(task.results.is_empty());
    assert!(port.executor.requests.lock().unwrap().is_empty());
    // The build finishes for whoever needs it next.
    for _ in 0..100 {
        if !port.built.lock().unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the build stopped with the cancelled task");
}
