//! Finding and running a real agent CLI on the host, recording what it wrote.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use conductor_agents::{AgentCommand, StreamParser};
use conductor_types::{AgentEvent, Usage};

/// The CLI `name` on `PATH`, or why the test skips.
pub fn find_cli(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("`{name}` is not on PATH (install it with npm to run this test)"))
}

/// Prints why a test skips.
pub fn skip(test: &str, reason: &str) {
    eprintln!("skipping {test}: {reason}");
}

/// What one run of a CLI gave.
#[derive(Debug)]
pub struct Run {
    pub status: std::process::ExitStatus,
    pub lines: Vec<String>,
    #[allow(dead_code)] // shown by `Debug` when a run fails
    pub stderr: String,
    pub events: Vec<AgentEvent>,
    pub usage: Vec<Usage>,
}

/// Runs `command` (with `PATH` kept, nothing else inherited), parsing its stdout; the events
/// exclude usage (checked apart).
pub async fn run(
    command: &AgentCommand,
    cli: &Path,
    parser: &mut dyn StreamParser,
    label: &str,
) -> Run {
    let mut process = tokio::process::Command::new(cli);
    process
        .args(&command.argv[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&command.cwd)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), process.output())
        .await
        .expect("the CLI finishes within 120 s")
        .expect("the CLI starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    let mut events = Vec::new();
    let mut usage = Vec::new();
    for line in &lines {
        for event in parser.line(line).expect("every stdout line is JSON") {
            match event {
                AgentEvent::AgentUsage { usage: u } => usage.push(u),
                other => events.push(other),
            }
        }
    }
    // `CONDUCTOR_RECORD_DIR=crates/agents/tests/fixtures` re-records the fixtures.
    if let Some(dir) = std::env::var_os("CONDUCTOR_RECORD_DIR") {
        std::fs::write(Path::new(&dir).join(format!("{label}.jsonl")), &stdout).unwrap();
    }
    Run {
        status: output.status,
        lines,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        events,
        usage,
    }
}

/// Writes the command's home files under `home` (what the server does in the session's home).
pub fn write_home_files(command: &AgentCommand, home: &Path) {
    for file in &command.files {
        let path = home.join(&file.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &file.contents).unwrap();
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// The events of a run with tool outputs cut to `ok` (CLIs word their messages freely), except
/// those listed in `keep` by call id.
pub fn shapes(events: &[AgentEvent], keep: &[&str]) -> Vec<AgentEvent> {
    events
        .iter()
        .map(|event| match event {
            AgentEvent::AgentToolResult { call_id, ok, .. }
                if !keep.contains(&call_id.as_str()) =>
            {
                AgentEvent::AgentToolResult {
                    call_id: call_id.clone(),
                    ok: *ok,
                    output: String::from("…"),
                }
            }
            other => other.clone(),
        })
        .collect()
}

/// A text step.
pub fn text(text: &str) -> AgentEvent {
    AgentEvent::AgentText { text: text.into() }
}

/// A tool call `id` of `tool` with `input`.
pub fn call(id: &str, tool: &str, input: &str) -> AgentEvent {
    AgentEvent::AgentToolCall {
        call_id: id.into(),
        tool: tool.into(),
        input: input.into(),
    }
}

/// The successful result of call `id`.
pub fn result(id: &str, output: &str) -> AgentEvent {
    AgentEvent::AgentToolResult {
        call_id: id.into(),
        ok: true,
        output: output.into(),
    }
}
