//! `conductor task submit|list|get|logs|cancel` and `conductor run`: the client side of the
//! task API. Tables for humans, `--json` for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use conductor_server::TaskDiffView;
use conductor_types::{
    GitSource, OutputStream, Task, TaskEventKind, TaskId, TaskPage, TaskRequest, TaskStatus,
    Timestamp,
};
use reqwest::Method;

use crate::client::{emit, emit_bytes, Client, ClientArgs};

/// `conductor task …`.
#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TaskCommand {
    /// Submit a task from flags or a JSON file (the body of POST /api/v1/tasks).
    Submit(Box<SubmitArgs>),
    /// List tasks, newest first.
    List(ListArgs),
    /// Show one task: spec, status, per-command exit codes, phase timestamps.
    Get {
        /// The task id.
        id: TaskId,
    },
    /// Print a task's output.
    Logs {
        /// The task id.
        id: TaskId,
        /// Keep streaming until the task is over.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a queued or running task.
    Cancel {
        /// The task id.
        id: TaskId,
    },
    /// What a task changed in the git repository it cloned (--git): changed paths, then the
    /// patch.
    Diff {
        /// The task id.
        id: TaskId,
    },
}

/// What a task runs and how, as flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SpecArgs {
    /// Environment to run in: host (default) or one built on the server (python-dev, …).
    #[arg(long, short = 'e')]
    environment: Option<String>,
    /// CPU cores, e.g. 0.5.
    #[arg(long)]
    cpus: Option<conductor_types::Cpus>,
    /// Memory limit, e.g. 512m.
    #[arg(long)]
    memory: Option<conductor_types::Bytes>,
    /// Most processes at once.
    #[arg(long)]
    pids: Option<u32>,
    /// Disk quota of the workspace, e.g. 1g.
    #[arg(long)]
    disk: Option<conductor_types::Bytes>,
    /// Network: none, full (outbound through a namespace of its own), host (the host
    /// executor's only one), localhost or allowlist:HOST,… (default: none, or the server's
    /// `default_network` for the environment).
    #[arg(long)]
    network: Option<conductor_types::NetworkPolicy>,
    /// Service sidecar such as postgres:14 or redis:7 (repeatable; docker and podman).
    #[arg(long = "service")]
    services: Vec<String>,
    /// Limit for the whole task: 30s, 5m, 1h.
    #[arg(long)]
    timeout: Option<String>,
    /// Environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// Secret variable NAME=VALUE, redacted from output (repeatable).
    #[arg(long = "secret", value_parser = parse_pair)]
    secrets: Vec<(String, String)>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_pair)]
    labels: Vec<(String, String)>,
    /// Higher runs first.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Runs again after a failure, timeout or interruption.
    #[arg(long)]
    retries: Option<u32>,
    /// Named persistent workspace (default: a fresh one).
    #[arg(long)]
    workspace: Option<String>,
    /// Git repository (local path or URL) cloned into the fresh workspace before the commands.
    #[arg(long)]
    git: Option<String>,
    /// Branch, tag or commit of --git (default: its default branch).
    #[arg(long, requires = "git")]
    git_ref: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SubmitArgs {
    /// JSON file with the whole request ("-" for standard input).
    #[arg(long, short = 'f', conflicts_with = "commands")]
    file: Option<PathBuf>,
    /// Shell command line (repeatable; run in order).
    #[arg(long = "command", short = 'c')]
    commands: Vec<String>,
    /// Free text.
    #[arg(long)]
    description: Option<String>,
    /// Run the remaining commands after one fails.
    #[arg(long)]
    continue_on_error: bool,
    #[command(flatten)]
    spec: SpecArgs,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Only this status.
    #[arg(long)]
    status: Option<TaskStatus>,
    /// Only this label: KEY or KEY=VALUE.
    #[arg(long)]
    label: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue from a previous page's cursor.
    #[arg(long)]
    cursor: Option<String>,
}

/// `conductor run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    spec: SpecArgs,
    /// The command: one argument is a shell command line; several are quoted and joined.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

fn map(pairs: &[(String, String)]) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| pairs.iter().cloned().collect())
}

impl SpecArgs {
    pub(crate) fn apply(&self, request: &mut TaskRequest) -> anyhow::Result<()> {
        request.environment = self.environment.clone();
        let limits = conductor_types::ResourceLimits {
            cpus: self.cpus,
            memory: self.memory,
            pids: self.pids,
            disk: self.disk,
            ..conductor_types::ResourceLimits::default()
        };
        if limits != conductor_types::ResourceLimits::default() {
            request.resources = Some(limits);
        }
        request.network = self.network.clone();
        if !self.services.is_empty() {
            request.services = Some(self.services.clone());
        }
        if let Some(text) = &self.timeout {
            request.timeout = Some(conductor_types::parse_duration(text).context("--timeout")?);
        }
        request.env = map(&self.env);
        request.secrets = map(&self.secrets);
        request.labels = map(&self.labels);
        request.priority = self.priority;
        request.retries = self.retries;
        request.workspace = self.workspace.clone();
        request.git = self.git.clone().map(|repository| GitSource {
            repository,
            reference: self.git_ref.clone(),
        });
        Ok(())
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Runs `conductor task …`.
pub fn main(args: TaskArgs) -> ExitCode {
    let outcome = runtime().and_then(|rt| rt.block_on(task(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => crate::fail(&error),
    }
}

async fn task(args: TaskArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    match args.command {
        TaskCommand::Submit(submit) => {
            let request = submit_request(*submit)?;
            let task: Task = client
                .json(client.request(Method::POST, "/api/v1/tasks").json(&request))
                .await?;
            if json {
                print_json(&task)?;
            } else {
                emit(&format!("{}\n", task.id))?;
            }
        }
        TaskCommand::List(list) => {
            let mut request = client.request(Method::GET, "/api/v1/tasks");
            let mut query = vec![("limit", list.limit.to_string())];
            if let Some(status) = list.status {
                query.push(("status", status.to_string()));
            }
            if let Some(label) = list.label {
                query.push(("label", label));
            }
            if let Some(cursor) = list.cursor {
                query.push(("cursor", cursor));
            }
            request = request.query(&query);
            let page: TaskPage = client.json(request).await?;
            if json {
                print_json(&page)?;
            } else {
                emit(&table(&page))?;
            }
        }
        TaskCommand::Get { id } => {
            let task: Task = client
                .json(client.request(Method::GET, &format!("/api/v1/tasks/{id}")))
                .await?;
            if json {
                print_json(&task)?;
            } else {
                emit(&details(&task))?;
            }
        }
        TaskCommand::Logs { id, follow } => {
            let path = format!("/api/v1/tasks/{id}/logs");
            let request = client
                .request(Method::GET, &path)
                .query(&[("follow", follow)]);
            let mut response = client.send(request).await?;
            while let Some(chunk) = response.chunk().await.context("reading the logs")? {
                emit_bytes(&chunk)?;
            }
        }
        TaskCommand::Diff { id } => {
            let path = format!("/api/v1/tasks/{id}/diff");
            let diff: TaskDiffView = client.json(client.request(Method::GET, &path)).await?;
            if json {
                print_json(&diff)?;
            } else {
                emit(&diff_text(&diff))?;
            }
        }
        TaskCommand::Cancel { id } => {
            let path = format!("/api/v1/tasks/{id}/cancel");
            let task: Task = client.json(client.request(Method::POST, &path)).await?;
            if json {
                print_json(&task)?;
            } else {
                emit(&format!("{} {}\n", task.id, task.state.status))?;
            }
        }
    }
    Ok(())
}

fn submit_request(args: SubmitArgs) -> anyhow::Result<TaskRequest> {
    if let Some(path) = args.file {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
        };
        // The server validates; this only checks that it is JSON of the right shape.
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not a task request", path.display()));
    }
    if args.commands.is_empty() {
        bail!("give --command (repeatable) or --file");
    }
    let mut request = TaskRequest {
        commands: Some(args.commands),
        description: args.description,
        continue_on_error: args.continue_on_error.then_some(true),
        ..TaskRequest::default()
    };
    args.spec.apply(&mut request)?;
    Ok(request)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    emit(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// A task's diff for humans: its base, one line per changed path, then the patch.
fn diff_text(diff: &TaskDiffView) -> String {
    let mut out = format!(
        "{} {} {} ({})\n",
        diff.repository, diff.kind, diff.reference, diff.commit
    );
    for file in &diff.files {
        match &file.from {
            Some(from) => {
                let _ = writeln!(out, "{:<12} {from} -> {}", file.change, file.path);
            }
            None => {
                let _ = writeln!(out, "{:<12} {}", file.change, file.path);
            }
        }
    }
    if !diff.patch.is_empty() {
        out.push('\n');
        out.push_str(&diff.patch);
    }
    if diff.truncated {
        out.push_str("\n[patch truncated]\n");
    }
    out
}

fn age(at: Timestamp) -> String {
    let seconds = Timestamp::now().millis_since(at) / 1000;
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn summary(task: &Task) -> String {
    let text = task
        .spec
        .description
        .clone()
        .unwrap_or_else(|| task.spec.commands.join(" && "));
    let mut short: String = text.chars().take(50).collect();
    if text.chars().count() > 50 {
        short.push('…');
    }
    short.replace('\n', " ")
}

fn table(page: &TaskPage) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36}  {:<11}  {:>4}  {:>4}  DESCRIPTION",
        "ID", "STATUS", "EXIT", "AGE"
    );
    for task in &page.tasks {
        let exit = task
            .state
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<36}  {:<11}  {:>4}  {:>4}  {}",
            task.id,
            task.state.status,
            exit,
            age(task.state.queued_at),
            summary(task)
        );
    }
    if let Some(cursor) = &page.next_cursor {
        let _ = writeln!(out, "(more: --cursor {cursor})");
    }
    out
}

fn details(task: &Task) -> String {
    let mut out = String::new();
    let state = &task.state;
    let _ = writeln!(out, "id:          {}", task.id);
    let _ = writeln!(out, "status:      {}", state.status);
    if let Some(reason) = &state.status_reason {
        let _ = writeln!(out, "reason:      {reason}");
    }
    if let Some(description) = &task.spec.description {
        let _ = writeln!(out, "description: {description}");
    }
    let _ = writeln!(out, "environment: {}", task.spec.environment);
    let _ = writeln!(out, "attempt:     {}", state.attempt);
    if let Some(code) = state.exit_code {
        let _ = writeln!(out, "exit code:   {code}");
    }
    let _ = writeln!(out, "queued at:   {}", state.queued_at);
    if let Some(at) = state.started_at {
        let _ = writeln!(out, "started at:  {at}");
    }
    if let Some(at) = state.finished_at {
        let _ = writeln!(out, "finished at: {at}");
    }
    let _ = writeln!(out, "commands:");
    for (index, command) in task.spec.commands.iter().enumerate() {
        let result = task.results.iter().find(|r| r.index as usize == index);
        let outcome = match result {
            Some(r) if r.timed_out => "timed out".to_owned(),
            Some(r) => match (r.exit_code, &r.error) {
                (_, Some(error)) => format!("error: {error}"),
                (Some(code), None) => format!("exit {code}, {} ms", r.stats.duration_ms),
                (None, None) => "-".to_owned(),
            },
            None => "not run".to_owned(),
        };
        let _ = writeln!(out, "  [{index}] {command}  ({outcome})");
    }
    out
}

/// Runs `conductor run`: submits, streams output live, exits with the task's exit code.
pub fn run_main(args: RunArgs) -> ExitCode {
    let outcome = runtime().and_then(|rt| rt.block_on(run(args)));
    match outcome {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => crate::fail(&error),
    }
}

/// Joins argv into a shell command line, quoting where needed; one argument is taken as is.
fn shell_line(argv: &[String]) -> String {
    if let [line] = argv {
        return line.clone();
    }
    argv.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.client)?;
    let mut request = TaskRequest {
        commands: Some(vec![shell_line(&args.command)]),
        ..TaskRequest::default()
    };
    args.spec.apply(&mut request)?;
    let task: Task = client
        .json(client.request(Method::POST, "/api/v1/tasks").json(&request))
        .await?;
    let id = task.id;
    tokio::select! {
        streamed = stream_output(&client, id) => streamed?,
        _ = tokio::signal::ctrl_c() => {
            let path = format!("/api/v1/tasks/{id}/cancel");
            let _ = client.send(client.request(Method::POST, &path)).await;
            eprintln!("conductor: cancelled task {id}");
            return Ok(130);
        }
    }
    let task: Task = client
        .json(client.request(Method::GET, &format!("/api/v1/tasks/{id}")))
        .await?;
    let code = match task.state.status {
        TaskStatus::Succeeded => 0,
        TaskStatus::TimedOut => 124,
        TaskStatus::Cancelled => 130,
        _ => task.state.exit_code.filter(|c| *c != 0).unwrap_or(1),
    };
    if task.state.status != TaskStatus::Succeeded {
        let reason = task
            .state
            .status_reason
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        eprintln!("conductor: task {id} {}{reason}", task.state.status);
    }
    Ok(code)
}

/// Follows the task's SSE stream, writing output to stdout and stderr as it comes.
async fn stream_output(client: &Client, id: TaskId) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr();
    crate::sse::follow(client, id, |event| {
        match event.kind {
            TaskEventKind::Output { stream, text, .. } => match stream {
                OutputStream::Stdout => emit_bytes(text.as_bytes())?,
                OutputStream::Stderr => stderr.write_all(text.as_bytes())?,
            },
            // The build of an environment the request defined: progress, on stderr.
            TaskEventKind::EnvironmentBuild { text } => stderr.write_all(text.as_bytes())?,
            _ => {}
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_what_needs_quoting() {
        let argv = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(shell_line(&argv(&["echo hi && ls"])), "echo hi && ls");
        assert_eq!(
            shell_line(&argv(&["echo", "it's", "a b", "x=1"])),
            r"echo 'it'\''s' 'a b' x=1"
        );
    }
}
