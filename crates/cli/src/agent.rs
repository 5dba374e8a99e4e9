//! `conductor agent run|continue|session`: an AI coding agent as a task on a server. Streams
//! the agent's steps as they happen (its text, one line per tool call with its outcome), then a
//! summary; exits 0 when the agent succeeded.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use conductor_types::{
    AgentEvent, AgentKind, AgentSpec, Budget, ChangedPath, Session, SessionId, Task, TaskEventKind,
    TaskId, TaskRequest, TaskStatus, TaskType,
};
use reqwest::Method;
use serde::Serialize;

use crate::client::{emit, Client, ClientArgs};
use crate::task::SpecArgs;

/// `conductor agent …`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// Start a session: the agent works on PROMPT in the workspace.
    Run(Box<RunArgs>),
    /// The next turn of a session: the agent resumes with PROMPT, in the same workspace.
    Continue(ContinueArgs),
    /// A session's turns and what they used.
    Session {
        /// The session's id (`ses_…`, in every turn's `session_id`).
        id: SessionId,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Which agent CLI.
    #[arg(long, default_value = "claude-code", value_parser = parse_kind)]
    kind: AgentKind,
    /// Model (the CLI's default when absent).
    #[arg(long)]
    model: Option<String>,
    /// Most agent turns.
    #[arg(long)]
    max_turns: Option<u32>,
    /// A tool the agent may use without asking (repeatable): Read, Write, Edit, Bash, …
    #[arg(long = "allow-tool")]
    allowed_tools: Vec<String>,
    /// The CLI's permission mode: default, acceptEdits, plan, …
    #[arg(long)]
    permission_mode: Option<String>,
    /// Text appended to the agent's system prompt.
    #[arg(long)]
    system_prompt: Option<String>,
    /// Stop once input + output + cache-write tokens reach this.
    #[arg(long)]
    budget_tokens: Option<u64>,
    /// Stop once the cost in US dollars reaches this.
    #[arg(long)]
    budget_usd: Option<f64>,
    #[command(flatten)]
    spec: SpecArgs,
    /// What the agent should do.
    #[arg(required = true, num_args = 1..)]
    prompt: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ContinueArgs {
    /// The session's latest turn (a task id).
    task: TaskId,
    /// The next message.
    #[arg(required = true, num_args = 1..)]
    prompt: Vec<String>,
}

fn parse_kind(text: &str) -> Result<AgentKind, String> {
    AgentKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| format!("unknown agent {text:?}: claude-code or codex"))
}

/// Runs `conductor agent`.
pub fn main(args: AgentArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(agent(args)));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => crate::fail(&error),
    }
}

async fn agent(args: AgentArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.client)?;
    let task: Task = match args.command {
        AgentCommand::Run(run) => {
            let request = run_request(*run)?;
            client
                .json(client.request(Method::POST, "/api/v1/tasks").json(&request))
                .await?
        }
        AgentCommand::Continue(next) => {
            #[derive(Serialize)]
            struct Message {
                content: String,
            }
            let path = format!("/api/v1/tasks/{}/messages", next.task);
            let body = Message {
                content: next.prompt.join(" "),
            };
            client
                .json(client.request(Method::POST, &path).json(&body))
                .await?
        }
        AgentCommand::Session { id } => {
            let path = format!("/api/v1/sessions/{id}");
            let session: Session = client.json(client.request(Method::GET, &path)).await?;
            if args.client.json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&session)?))?;
            } else {
                emit(&session_text(&session))?;
            }
            return Ok(0);
        }
    };
    if let Some(session) = &task.spec.session_id {
        eprintln!("conductor: task {} (session {session})", task.id);
    }
    follow(&client, task.id).await
}

fn run_request(run: RunArgs) -> anyhow::Result<TaskRequest> {
    let budget = (run.budget_tokens.is_some() || run.budget_usd.is_some()).then_some(Budget {
        tokens: run.budget_tokens,
        usd: run.budget_usd,
    });
    let mut request = TaskRequest {
        task_type: Some(TaskType::Agent),
        agent: Some(AgentSpec {
            kind: run.kind,
            prompt: run.prompt.join(" "),
            model: run.model,
            max_turns: run.max_turns,
            allowed_tools: (!run.allowed_tools.is_empty()).then_some(run.allowed_tools),
            permission_mode: run.permission_mode,
            system_prompt: run.system_prompt,
        }),
        budget,
        ..TaskRequest::default()
    };
    run.spec.apply(&mut request)?;
    Ok(request)
}

/// Streams the turn's steps, then prints the summary; the exit code says how it ended.
async fn follow(client: &Client, id: TaskId) -> anyhow::Result<u8> {
    let mut seen = Seen::default();
    let streamed = tokio::select! {
        streamed = crate::sse::follow(client, id, |event| {
            if let TaskEventKind::Agent(step) = event.kind {
                emit(&step_line(&step))?;
                seen.note(step);
            }
            Ok(())
        }) => streamed,
        _ = tokio::signal::ctrl_c() => {
            let path = format!("/api/v1/tasks/{id}/cancel");
            let _ = client.send(client.request(Method::POST, &path)).await;
            eprintln!("conductor: cancelled task {id}");
            return Ok(130);
        }
    };
    streamed?;
    let task: Task = client
        .json(client.request(Method::GET, &format!("/api/v1/tasks/{id}")))
        .await?;
    let _ = std::io::stdout().flush();
    eprint!("{}", summary(&task, &seen));
    Ok(match task.state.status {
        TaskStatus::Succeeded => 0,
        TaskStatus::Cancelled => 130,
        TaskStatus::TimedOut => 124,
        _ => 1,
    })
}

/// One step as a line (or the text, as the agent wrote it).
fn step_line(step: &AgentEvent) -> String {
    match step {
        AgentEvent::AgentText { text } => format!("{}\n", text.trim_end()),
        AgentEvent::AgentToolCall { tool, input, .. } => format!("→ {tool} {input}\n"),
        AgentEvent::AgentToolResult { ok, output, .. } => {
            let first = output.lines().next().unwrap_or_default();
            format!("  {} {first}\n", if *ok { "✓" } else { "✗" })
        }
        AgentEvent::AgentUsage { .. }
        | AgentEvent::AgentResult { .. }
        | AgentEvent::AgentFilesChanged { .. } => String::new(),
    }
}

/// What the summary takes from the turn's steps.
#[derive(Debug, Default)]
struct Seen {
    /// The agent's turns, from its result.
    turns: Option<u32>,
    /// The changed paths and how many more there were.
    files: Option<(Vec<ChangedPath>, u64)>,
}

impl Seen {
    fn note(&mut self, step: AgentEvent) {
        match step {
            AgentEvent::AgentResult { turns, .. } => self.turns = Some(turns),
            AgentEvent::AgentFilesChanged { files, more } => self.files = Some((files, more)),
            _ => {}
        }
    }
}

/// The changed files as summary lines (the first few, then how many more).
fn files_lines(out: &mut String, files: &[ChangedPath], more: u64) {
    const SHOWN: usize = 20;
    let total = files.len() as u64 + more;
    let _ = writeln!(out, "   files changed: {total}");
    for file in files.iter().take(SHOWN) {
        let _ = writeln!(out, "     {} {}", file.change.mark(), file.path);
    }
    if total > SHOWN as u64 {
        let _ = writeln!(out, "     … and {} more", total - SHOWN as u64);
    }
}

/// The summary after a turn: outcome, turns, tokens, cost, CPU and memory, files changed.
fn summary(task: &Task, seen: &Seen) -> String {
    let mut out = String::new();
    let reason = task
        .state
        .failure_code
        .map(|code| format!(" ({code})"))
        .unwrap_or_default();
    let _ = writeln!(out, "── task {} {}{reason}", task.id, task.state.status);
    if let Some(reason) = task
        .state
        .status_reason
        .as_deref()
        .filter(|_| task.state.status != TaskStatus::Succeeded)
    {
        let _ = writeln!(out, "   {reason}");
    }
    if let Some(turns) = seen.turns {
        let _ = writeln!(out, "   turns {turns}");
    }
    if let Some(usage) = &task.usage {
        let _ = writeln!(
            out,
            "   tokens in {} out {} (cache read {}, write {}), {} requests, ${:.4}",
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
            usage.requests,
            usage.cost_usd
        );
    }
    if let Some(result) = task.results.first() {
        let cpu = result
            .stats
            .cpu_time_us
            .map_or("?".into(), |us| format!("{:.2}", us as f64 / 1e6));
        let memory = result
            .stats
            .peak_memory_bytes
            .map_or("?".into(), |b| format!("{} MiB", b / (1024 * 1024)));
        let _ = writeln!(
            out,
            "   {:.1} s, cpu {cpu} s, peak memory {memory}",
            result.stats.duration_ms as f64 / 1000.0
        );
    }
    if let Some((files, more)) = &seen.files {
        files_lines(&mut out, files, *more);
    }
    if let Some(session) = &task.spec.session_id {
        let _ = writeln!(
            out,
            "   next turn: conductor agent continue {} \"…\" (session {session})",
            task.id
        );
    }
    out
}

fn session_text(session: &Session) -> String {
    let mut out = format!(
        "session {} ({}, workspace {})\n",
        session.id,
        session.kind.as_str(),
        session.workspace
    );
    for (index, turn) in session.turns.iter().enumerate() {
        let _ = writeln!(out, "  turn {}: task {turn}", index + 1);
    }
    let usage = &session.usage;
    let _ = writeln!(
        out,
        "  tokens in {} out {}, {} requests, ${:.4}",
        usage.input_tokens, usage.output_tokens, usage.requests, usage.cost_usd
    );
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }

    #[test]
    fn run_builds_an_agent_task_request() {
        let cli = Cli::try_parse_from([
            "x",
            "run",
            "--workspace",
            "proj",
            "--budget-tokens",
            "5000",
            "--allow-tool",
            "Bash",
            "add",
            "a",
            "flag",
        ])
        .unwrap();
        let AgentCommand::Run(run) = cli.args.command else {
            panic!("not run");
        };
        let request = run_request(*run).unwrap();
        assert_eq!(request.task_type, Some(TaskType::Agent));
        assert_eq!(request.workspace.as_deref(), Some("proj"));
        let agent = request.agent.unwrap();
        assert_eq!(agent.kind, AgentKind::ClaudeCode);
        assert_eq!(agent.prompt, "add a flag");
        assert_eq!(agent.allowed_tools, Some(vec!["Bash".to_owned()]));
        assert_eq!(request.budget.unwrap().tokens, Some(5000));
        assert!(Cli::try_parse_from(["x", "run", "--kind", "gpt", "hi"]).is_err());
    }

    #[test]
    fn steps_print_as_one_line_each() {
        let call = AgentEvent::AgentToolCall {
            call_id: "t".into(),
            tool: "Bash".into(),
            input: "pytest -q".into(),
        };
        assert_eq!(step_line(&call), "→ Bash pytest -q\n");
        let result = AgentEvent::AgentToolResult {
            call_id: "t".into(),
            ok: false,
            output: "1 failed\nmore".into(),
        };
        assert_eq!(step_line(&result), "  ✗ 1 failed\n");
    }

    #[test]
    fn the_summary_has_the_turns_and_the_files_changed() {
        let mut seen = Seen::default();
        seen.note(AgentEvent::AgentFilesChanged {
            files: (0..25)
                .map(|i| ChangedPath {
                    path: format!("src/f{i}.py"),
                    change: conductor_types::PathChange::Modified,
                })
                .collect(),
            more: 5,
        });
        seen.note(AgentEvent::AgentResult {
            outcome: conductor_types::AgentOutcome::Success,
            turns: 3,
            text: "done".into(),
            cli_session: None,
        });
        let mut out = String::new();
        let (files, more) = seen.files.as_ref().unwrap();
        files_lines(&mut out, files, *more);
        assert_eq!(seen.turns, Some(3));
        assert!(
            out.starts_with("   files changed: 30\n     M src/f0.py\n"),
            "{out}"
        );
        assert!(out.ends_with("     … and 10 more\n"), "{out}");
        assert_eq!(out.lines().count(), 22);
    }
}
