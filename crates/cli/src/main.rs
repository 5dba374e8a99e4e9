//! The `conductor` binary.

use std::ffi::OsStr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod client;
mod config;
mod env;
mod environments;
mod exec;
mod executor;
mod gitbox;
mod helper;
mod resident;
mod serve;
mod sse;
mod sweep;
mod task;
mod token;
mod workspace;

fn main() -> ExitCode {
    // The sandbox helper must start before any thread or async runtime exists.
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(conductor_sandbox::HELPER_ARG)) {
        conductor_sandbox::helper::main();
    }
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(resident::RESIDENT_ARG)) {
        resident::main();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    init_tracing();
    match cli.command {
        Command::Exec(args) => exec::main(args),
        Command::Serve(args) => serve::main(args),
        Command::Task(args) => task::main(args),
        Command::Run(args) => task::run_main(args),
        Command::Agent(args) => agent::main(args),
        Command::Token(args) => token::main(args),
        Command::Config(args) => config::main(args),
        Command::Env(args) => env::main(args),
        Command::Workspace(args) => workspace::main(args),
    }
}

/// Runs work in sandboxes.
#[derive(Debug, Parser)]
#[command(name = "conductor", version, about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one command in a sandbox right here, without a server.
    Exec(exec::ExecArgs),
    /// Run the orchestrator: HTTP API, scheduler and its execution slots (127.0.0.1:8081).
    Serve(serve::ServeArgs),
    /// Submit, list, inspect, follow and cancel tasks on a server.
    Task(task::TaskArgs),
    /// Run one command as a task on a server, streaming its output; exits with its exit code.
    Run(task::RunArgs),
    /// Run an AI coding agent (Claude Code, Codex) as a task on a server, and continue its
    /// session.
    Agent(agent::AgentArgs),
    /// Create, list and revoke API tokens.
    Token(token::TokenArgs),
    /// Show, export and import the server's configuration.
    Config(config::ConfigArgs),
    /// Build, list, show and remove environments (root filesystems and container images).
    Env(env::EnvArgs),
    /// Create, list and remove workspaces; snapshot, restore, diff, export and import them.
    Workspace(workspace::WorkspaceArgs),
}

/// Exit code for conductor's own errors: bad flags, unsupported requests, missing facilities.
pub const EXIT_USAGE: u8 = 2;

/// Prints `conductor: error: <message>` and returns the usage exit code.
pub fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("conductor: error: {error:#}");
    ExitCode::from(EXIT_USAGE)
}

/// Help and version go out as clap renders them (help for a bare `conductor` exits 2); every
/// other parse error becomes one line.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            return ExitCode::from(EXIT_USAGE);
        }
        _ => {}
    }
    let rendered = error.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty() && !line.starts_with("Usage:"))
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("conductor: error: {message} (see conductor --help)");
    ExitCode::from(EXIT_USAGE)
}

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONDUCTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
