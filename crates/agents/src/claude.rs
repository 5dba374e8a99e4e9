//! Claude Code (`@anthropic-ai/claude-code`): `claude -p PROMPT --output-format stream-json
//! --verbose`, pointed at the gateway by `ANTHROPIC_BASE_URL` with the task's token as its API key,
//! its private state under `$HOME/.claude`, and everything that would call home turned off.

mod parse;

use conductor_types::{AgentKind, AgentSpec};

use crate::adapter::{AgentAdapter, AgentCommand, AgentContext, RunAs, StreamParser};

pub use parse::ClaudeParser;

/// The Claude Code adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClaudeCode;

/// Variables that keep the CLI from calling anywhere but the gateway and from changing itself:
/// no auto-update (the version is the environment's), no telemetry, error reports or
/// feature-flag fetches.
const QUIET: [(&str, &str); 5] = [
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_UPDATES", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
];

impl AgentAdapter for ClaudeCode {
    fn kind(&self) -> AgentKind {
        AgentKind::ClaudeCode
    }

    fn command(&self, spec: &AgentSpec, ctx: &AgentContext) -> AgentCommand {
        let mut argv: Vec<String> = ["claude", "-p", spec.prompt.as_str()]
            .into_iter()
            .chain(["--output-format", "stream-json", "--verbose"])
            .map(str::to_owned)
            .collect();
        let mut flag = |name: &str, value: &str| {
            argv.push(name.to_owned());
            argv.push(value.to_owned());
        };
        if let Some(mode) = &spec.permission_mode {
            flag("--permission-mode", mode);
        }
        if let Some(tools) = &spec.allowed_tools {
            flag("--allowedTools", &tools.join(","));
        }
        if let Some(turns) = spec.max_turns {
            flag("--max-turns", &turns.to_string());
        }
        if let Some(model) = &spec.model {
            flag("--model", model);
        }
        if let Some(system) = &spec.system_prompt {
            flag("--append-system-prompt", system);
        }
        if let Some(session) = &ctx.resume {
            flag("--resume", session);
        }
        AgentCommand {
            argv,
            cwd: ctx.workdir.clone(),
            env: environment(ctx),
            files: Vec::new(),
        }
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        Box::new(ClaudeParser::default())
    }

    fn probe_argv(&self) -> Vec<String> {
        vec!["claude".to_owned(), "--version".to_owned()]
    }
}

fn environment(ctx: &AgentContext) -> Vec<(String, String)> {
    let home = ctx.home.trim_end_matches('/');
    let mut env = vec![
        ("ANTHROPIC_BASE_URL".to_owned(), ctx.gateway.base()),
        ("ANTHROPIC_API_KEY".to_owned(), ctx.token.clone()),
        ("HOME".to_owned(), home.to_owned()),
        ("CLAUDE_CONFIG_DIR".to_owned(), format!("{home}/.claude")),
        ("NO_PROXY".to_owned(), "127.0.0.1".to_owned()),
        ("no_proxy".to_owned(), "127.0.0.1".to_owned()),
    ];
    env.extend(
        QUIET
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    if ctx.run_as == RunAs::Root {
        env.push(("IS_SANDBOX".to_owned(), "1".to_owned()));
    }
    env
}
