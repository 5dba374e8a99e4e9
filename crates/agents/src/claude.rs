//! Claude Code (`@anthropic-ai/claude-code`): `claude -p --output-format stream-json --verbose
//! … -- PROMPT`, pointed at the gateway by `ANTHROPIC_BASE_URL` with the task's token as its API key,
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
        let mut argv: Vec<String> = [
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
        ]
        .into_iter()
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
        // Last, after `--`: a prompt starting with `-` must not read as an option.
        flag("--", &spec.prompt);
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

    fn preset(&self) -> &'static str {
        "claude-code"
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

#[cfg(test)]
mod tests {
    use conductor_types::AgentKind;

    use super::*;
    use crate::adapter::GatewayUrl;

    fn ctx(run_as: RunAs, resume: Option<&str>) -> AgentContext {
        AgentContext {
            gateway: GatewayUrl::loopback(4100),
            token: "ct_tok".into(),
            home: "/home/conductor/".into(),
            workdir: "/workspace".into(),
            resume: resume.map(str::to_owned),
            run_as,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_full_spec_becomes_flags_and_the_gateway_env() {
        let spec = AgentSpec {
            kind: AgentKind::ClaudeCode,
            prompt: "-fix it".into(),
            model: Some("claude-sonnet-4-5".into()),
            max_turns: Some(30),
            allowed_tools: Some(strings(&["Read", "Bash(git *)"])),
            permission_mode: Some("acceptEdits".into()),
            system_prompt: Some("be brief".into()),
        };
        let command = ClaudeCode.command(&spec, &ctx(RunAs::User, Some("s-1")));
        assert_eq!(
            command.argv,
            strings(&[
                "claude",
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
                "acceptEdits",
                "--allowedTools",
                "Read,Bash(git *)",
                "--max-turns",
                "30",
                "--model",
                "claude-sonnet-4-5",
                "--append-system-prompt",
                "be brief",
                "--resume",
                "s-1",
                "--",
                "-fix it",
            ])
        );
        let env: Vec<(&str, &str)> = command
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("ANTHROPIC_BASE_URL", "http://127.0.0.1:4100"),
                ("ANTHROPIC_API_KEY", "ct_tok"),
                ("HOME", "/home/conductor"),
                ("CLAUDE_CONFIG_DIR", "/home/conductor/.claude"),
                ("NO_PROXY", "127.0.0.1"),
                ("no_proxy", "127.0.0.1"),
                ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
                ("DISABLE_AUTOUPDATER", "1"),
                ("DISABLE_UPDATES", "1"),
                ("DISABLE_TELEMETRY", "1"),
                ("DISABLE_ERROR_REPORTING", "1"),
            ]
        );
        assert_eq!(command.cwd, "/workspace");
        assert!(command.files.is_empty());
    }

    #[test]
    fn a_bare_spec_leaves_the_cli_its_defaults_and_root_gets_the_sandbox_switch() {
        let spec = AgentSpec {
            kind: AgentKind::ClaudeCode,
            prompt: "hi".into(),
            model: None,
            max_turns: None,
            allowed_tools: None,
            permission_mode: None,
            system_prompt: None,
        };
        let command = ClaudeCode.command(&spec, &ctx(RunAs::Root, None));
        assert_eq!(
            command.argv,
            strings(&[
                "claude",
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--",
                "hi"
            ])
        );
        assert_eq!(command.env_var("IS_SANDBOX"), Some("1"));
        assert_eq!(ClaudeCode.probe_argv(), strings(&["claude", "--version"]));
        assert_eq!(ClaudeCode.kind(), AgentKind::ClaudeCode);
        assert_eq!(
            ClaudeCode
                .redactor(&ctx(RunAs::Root, None))
                .redact("key ct_tok"),
            "key [redacted]"
        );
    }
}
