//! A spawned `conductor serve` and an HTTP client for it, shared by the server tests, and the
//! conductor home the tests that use built environments read.
#![allow(dead_code)] // each test binary uses part of it
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conductor_types::{Task, TaskId};

/// A spawned `conductor serve` on a free port.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin token.
    pub token: String,
}

impl Server {
    pub fn start(home: &Path, agents: u16) -> Self {
        Self::start_with(home, agents, &["--executor", "host"])
    }

    pub fn start_with(home: &Path, agents: u16, flags: &[&str]) -> Self {
        Self::start_env(home, agents, flags, &[])
    }

    /// With `vars` set in the server's environment.
    /// A server on the host executor gets `default_network = "host"` (the only network that
    /// executor gives; tasks default to `none`) unless `vars` say otherwise.
    pub fn start_env(home: &Path, agents: u16, flags: &[&str], vars: &[(&str, &str)]) -> Self {
        let on_host = flags.windows(2).any(|pair| pair == ["--executor", "host"]);
        let default_network = if on_host { "host" } else { "none" };
        let mut child = Command::new(env!("CARGO_BIN_EXE_conductor"))
            .args(["serve", "--listen", "127.0.0.1:0", "--slots"])
            .arg(agents.to_string())
            .args(flags)
            .env("CONDUCTOR_DEFAULT_NETWORK", default_network)
            .envs(vars.iter().copied())
            .env("CONDUCTOR_HOME", home)
            .env("CONDUCTOR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .unwrap();
            if let Some(rest) = line.strip_prefix("conductor serving on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let token = std::fs::read_to_string(home.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Self { child, url, token }
    }

    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: self.url.clone(),
            token: self.token.clone(),
        }
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap();
    }
}

/// A test that fails must not leave its server (and its warm helpers) running: SIGTERM (so it
/// removes its kept quota filesystems and warm helpers), SIGKILL after 10 s.
impl Drop for Server {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub struct Client {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The server.
    pub url: String,
    /// The token sent.
    pub token: String,
}

impl Client {
    pub async fn submit(&self, body: serde_json::Value) -> Task {
        let response = self
            .http
            .post(format!("{}/api/v1/tasks", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub async fn task(&self, id: TaskId) -> Task {
        self.http
            .get(format!("{}/api/v1/tasks/{id}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn logs(&self, id: TaskId) -> String {
        self.http
            .get(format!("{}/api/v1/tasks/{id}/logs", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn wait_until(&self, id: TaskId, done: impl Fn(&Task) -> bool) -> Task {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let task = self.task(id).await;
            if done(&task) {
                return task;
            }
            assert!(Instant::now() < deadline, "task never got there: {task:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// `$CONDUCTOR_HOME`, else `~/.conductor`: where `conductor env build` put the environments.
pub fn conductor_home() -> std::path::PathBuf {
    match std::env::var_os("CONDUCTOR_HOME").filter(|h| !h.is_empty()) {
        Some(home) => home.into(),
        None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".conductor"),
    }
}
