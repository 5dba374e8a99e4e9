//! The adapter trait: what Conductor needs to know about an agent CLI to run it in a sandbox —
//! its command line and environment for one turn, how to read its JSON-lines stream, how to check
//! it is installed, and which secrets to keep out of the stored stream. Adapters are pure: they
//! decide, the server and executors do the I/O.

use std::fmt;

use conductor_types::{AgentEvent, AgentKind, AgentSpec, FailureCode};

use crate::redact::Redactor;

/// The gateway's address as the sandbox sees it: always the IPv4 loopback and a port, never
/// `localhost` (which may resolve to `::1`, where nothing listens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayUrl {
    port: u16,
}

impl GatewayUrl {
    /// The gateway bridged to `port` on the sandbox's own loopback.
    pub const fn loopback(port: u16) -> Self {
        Self { port }
    }

    /// The port.
    pub const fn port(self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base(self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl fmt::Display for GatewayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://127.0.0.1:{}", self.port)
    }
}

/// Whose uid the agent runs as inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// A non-root uid (the executor maps one).
    User,
    /// Root, where the executor can map only one uid: Claude Code then needs its documented
    /// sandbox switch `IS_SANDBOX=1` to accept edits without asking.
    Root,
}

/// The facts of one turn that are not in the task's [`AgentSpec`]: where the gateway is, the
/// task's capability, the agent's private home, and the CLI session to resume.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentContext {
    /// The gateway inside the sandbox.
    pub gateway: GatewayUrl,
    /// The per-task token the gateway accepts in place of the provider key.
    pub token: String,
    /// The agent's `HOME` inside the sandbox (a per-session directory, not `/workspace`).
    pub home: String,
    /// The working directory (the task's workspace).
    pub workdir: String,
    /// The CLI's own session id to resume (a follow-up turn).
    pub resume: Option<String>,
    /// The uid the CLI runs as.
    pub run_as: RunAs,
}

impl fmt::Debug for AgentContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentContext")
            .field("gateway", &self.gateway)
            .field("token", &"[redacted]")
            .field("home", &self.home)
            .field("workdir", &self.workdir)
            .field("resume", &self.resume)
            .field("run_as", &self.run_as)
            .finish()
    }
}

/// A file the agent needs in its home before it starts (Codex's `config.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeFile {
    /// Path relative to the agent's home (`.codex/config.toml`).
    pub path: String,
    /// Its contents.
    pub contents: String,
}

/// How to start the agent for one turn: with stdin at `/dev/null`, as every executor does (Codex
/// reads a piped stdin to its end before it starts, so an open pipe hangs it), stdout the stream
/// for [`StreamParser`], stderr the CLI's diagnostics.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// The command line (`argv[0]` is looked up in the environment's `PATH`).
    pub argv: Vec<String>,
    /// The working directory to start it in (the context's `workdir`).
    pub cwd: String,
    /// Environment variables to set, in order.
    pub env: Vec<(String, String)>,
    /// Files to write under the agent's home before starting (no secrets in them).
    pub files: Vec<HomeFile>,
}

impl AgentCommand {
    /// The value of environment variable `name`, if set.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl fmt::Debug for AgentCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment holds the task's token: show the names only.
        let names: Vec<&str> = self.env.iter().map(|(key, _)| key.as_str()).collect();
        f.debug_struct("AgentCommand")
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .field("env", &names)
            .field("files", &self.files)
            .finish()
    }
}

/// A line of an agent's stream that is not what its CLI writes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not a JSON object (a CLI's stray diagnostics, a truncated line).
    #[error("agent stream line is not a JSON object: {start:?}")]
    NotJson {
        /// The start of the line.
        start: String,
    },
}

/// Reads one agent run's stream, line by line, into normalized events. Lines of kinds the parser
/// does not know give no events (CLIs add kinds often); only a line that is not JSON is an error.
pub trait StreamParser: Send + fmt::Debug {
    /// The events one line of the stream carries, in order.
    fn line(&mut self, line: &str) -> Result<Vec<AgentEvent>, ParseError>;

    /// Once the stream ended: why the run failed by the agent's own account, `None` when it
    /// succeeded. `max_turns` when it hit its turn limit, `upstream_rejected` when the model API
    /// refused a request (a 4xx), `upstream_unavailable` when it could not be reached or kept
    /// failing (429, 5xx, no connection), `agent_crashed` for any other error and for a stream
    /// that ended without a result. The gateway's verdict (`budget_exceeded`) comes first where it
    /// has one.
    fn failure(&self) -> Option<FailureCode>;
}

/// One agent CLI.
pub trait AgentAdapter: Send + Sync + fmt::Debug {
    /// Which agent this adapts.
    fn kind(&self) -> AgentKind;

    /// The command line, environment and home files of one turn.
    fn command(&self, spec: &AgentSpec, ctx: &AgentContext) -> AgentCommand;

    /// A fresh parser for one run's stream (stdout).
    fn parser(&self) -> Box<dyn StreamParser>;

    /// A command that exits 0 when the CLI is installed in an environment (`claude --version`).
    fn probe_argv(&self) -> Vec<String>;

    /// The preset environment that has the CLI (`conductor env build NAME`), for the message
    /// that refuses a task whose environment lacks it.
    fn preset(&self) -> &'static str;

    /// The secrets to cut out of the stored raw stream and logs of a turn run with `ctx`.
    fn redactor(&self, ctx: &AgentContext) -> Redactor {
        Redactor::new([ctx.token.clone()])
    }
}

/// Whether `id`, a session id an agent CLI printed, may be handed back to it as `--resume ID`
/// (`resume ID`): letters, digits, `-` and `_` only, not starting with `-`, at most 128 bytes. The
/// agent controls what it prints; anything else (`--permission-mode=…`) could read as an option
/// of its next turn's command line.
pub fn resumable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The adapter of `kind`.
pub fn adapter(kind: AgentKind) -> &'static dyn AgentAdapter {
    match kind {
        AgentKind::ClaudeCode => &crate::claude::ClaudeCode,
        AgentKind::Codex => &crate::codex::Codex,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_plain_session_ids_are_handed_back() {
        for id in ["6f1c2a9e-0b7d-4e1a-9c3f-2d8b5a7e4f10", "thread_01ab", "x"] {
            assert!(super::resumable(id), "{id}");
        }
        for id in [
            "",
            "--permission-mode=bypassPermissions",
            "-x",
            "a b",
            "a;b",
            "ä",
        ] {
            assert!(!super::resumable(id), "{id}");
        }
        assert!(!super::resumable(&"a".repeat(129)));
    }

    use super::*;

    #[test]
    fn the_gateway_is_on_the_ipv4_loopback() {
        let url = GatewayUrl::loopback(4100);
        assert_eq!(url.base(), "http://127.0.0.1:4100");
        assert_eq!(url.to_string(), url.base());
    }

    #[test]
    fn each_kind_has_its_adapter_and_preset() {
        for kind in AgentKind::ALL {
            let agent = adapter(kind);
            assert_eq!(agent.kind(), kind);
            // The presets carry the kind's API name.
            assert_eq!(agent.preset(), kind.as_str());
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let ctx = AgentContext {
            gateway: GatewayUrl::loopback(1),
            token: "ct_secret".into(),
            home: "/home/conductor".into(),
            workdir: "/workspace".into(),
            resume: None,
            run_as: RunAs::User,
        };
        let command = AgentCommand {
            argv: vec!["x".into()],
            cwd: "/workspace".into(),
            env: vec![("KEY".into(), "ct_secret".into())],
            files: vec![],
        };
        assert!(!format!("{ctx:?}{command:?}").contains("ct_secret"));
        assert_eq!(command.env_var("KEY"), Some("ct_secret"));
    }
}
