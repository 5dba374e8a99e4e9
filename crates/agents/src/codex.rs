//! The Codex CLI (`@openai/codex`): `codex exec --json PROMPT` (or `codex exec resume ID PROMPT`
//! for a follow-up), talking to the gateway through a custom model provider in
//! `$CODEX_HOME/config.toml` (Responses wire API over HTTP: recent versions prefer WebSockets to
//! the built-in provider and ignore `OPENAI_BASE_URL`), with its own sandbox off — ours is the
//! sandbox, and its bubblewrap cannot nest under our seccomp policy.

mod parse;

use conductor_types::{AgentKind, AgentSpec};

use crate::adapter::{AgentAdapter, AgentCommand, AgentContext, HomeFile, StreamParser};

pub use parse::CodexParser;

/// The Codex adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Codex;

/// The provider name in `config.toml`.
const PROVIDER: &str = "conductor";
/// The variable the provider reads its key from (the task's token).
const KEY_VAR: &str = "CONDUCTOR_GATEWAY_TOKEN";
/// `CODEX_HOME` under the agent's home.
const CODEX_DIR: &str = ".codex";

impl AgentAdapter for Codex {
    fn kind(&self) -> AgentKind {
        AgentKind::Codex
    }

    fn command(&self, spec: &AgentSpec, ctx: &AgentContext) -> AgentCommand {
        let mut argv: Vec<String> = vec!["codex".into(), "exec".into()];
        if let Some(session) = &ctx.resume {
            argv.extend(["resume".into(), session.clone()]);
        }
        argv.extend(
            ["--json", "--skip-git-repo-check"]
                .into_iter()
                .chain(["--dangerously-bypass-approvals-and-sandbox"])
                .map(str::to_owned),
        );
        if let Some(model) = &spec.model {
            argv.extend(["--model".into(), model.clone()]);
        }
        if let Some(system) = &spec.system_prompt {
            // Codex has no "append to the system prompt" flag: developer instructions are the
            // equivalent layer.
            argv.extend([
                "-c".into(),
                format!("developer_instructions={}", toml_string(system)),
            ]);
        }
        // After the options: a prompt starting with `-` must not read as one.
        argv.push("--".into());
        argv.push(spec.prompt.clone());
        let home = ctx.home.trim_end_matches('/');
        AgentCommand {
            argv,
            cwd: ctx.workdir.clone(),
            env: vec![
                ("HOME".into(), home.to_owned()),
                ("CODEX_HOME".into(), format!("{home}/{CODEX_DIR}")),
                (KEY_VAR.into(), ctx.token.clone()),
                ("NO_PROXY".into(), "127.0.0.1".into()),
                ("no_proxy".into(), "127.0.0.1".into()),
            ],
            files: vec![HomeFile {
                path: format!("{CODEX_DIR}/config.toml"),
                contents: config(ctx),
            }],
        }
    }

    fn parser(&self) -> Box<dyn StreamParser> {
        Box::new(CodexParser::default())
    }

    fn probe_argv(&self) -> Vec<String> {
        vec!["codex".to_owned(), "--version".to_owned()]
    }

    fn preset(&self) -> &'static str {
        "codex"
    }
}

/// `config.toml`: the gateway as the only provider, over HTTP, no approvals (nobody is there to
/// answer), no sandbox of its own, nothing sent elsewhere (analytics, feedback, update checks).
/// `max_turns` has no Codex equivalent; the gateway's budget bounds a run instead.
fn config(ctx: &AgentContext) -> String {
    let base = format!("{}/v1", ctx.gateway.base());
    format!(
        r#"# Written by Conductor for each turn: the gateway is the only model provider.
model_provider = "{PROVIDER}"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.{PROVIDER}]
name = "Conductor gateway"
base_url = {base}
wire_api = "responses"
env_key = "{KEY_VAR}"
supports_websockets = false
requires_openai_auth = false

[analytics]
enabled = false

[feedback]
enabled = false
"#,
        base = toml_string(&base),
    )
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    // A JSON string is a valid TOML basic string for everything JSON escapes.
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use conductor_types::AgentKind;

    use super::*;
    use crate::adapter::{GatewayUrl, RunAs};

    fn ctx(resume: Option<&str>) -> AgentContext {
        AgentContext {
            gateway: GatewayUrl::loopback(4200),
            token: "ct_tok".into(),
            home: "/home/conductor".into(),
            workdir: "/workspace".into(),
            resume: resume.map(str::to_owned),
            run_as: RunAs::User,
        }
    }

    fn spec(model: Option<&str>, system: Option<&str>) -> AgentSpec {
        AgentSpec {
            kind: AgentKind::Codex,
            prompt: "fix it".into(),
            model: model.map(str::to_owned),
            max_turns: Some(5),
            allowed_tools: None,
            permission_mode: None,
            system_prompt: system.map(str::to_owned),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    const FLAGS: [&str; 3] = [
        "--json",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
    ];

    #[test]
    fn a_first_turn_and_a_follow_up() {
        let first = Codex.command(&spec(Some("gpt-5-codex"), Some("say \"hi\"")), &ctx(None));
        let mut expected = strings(&["codex", "exec"]);
        expected.extend(strings(&FLAGS));
        expected.extend(strings(&[
            "--model",
            "gpt-5-codex",
            "-c",
            r#"developer_instructions="say \"hi\"""#,
            "--",
            "fix it",
        ]));
        assert_eq!(first.argv, expected);

        let next = Codex.command(&spec(None, None), &ctx(Some("019a-thread")));
        let mut expected = strings(&["codex", "exec", "resume", "019a-thread"]);
        expected.extend(strings(&FLAGS));
        expected.extend(strings(&["--", "fix it"]));
        assert_eq!(next.argv, expected);
        assert_eq!(next.cwd, "/workspace");
    }

    #[test]
    fn the_gateway_is_the_only_provider_and_the_token_only_in_the_env() {
        let command = Codex.command(&spec(None, None), &ctx(None));
        let env: Vec<(&str, &str)> = command
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("HOME", "/home/conductor"),
                ("CODEX_HOME", "/home/conductor/.codex"),
                ("CONDUCTOR_GATEWAY_TOKEN", "ct_tok"),
                ("NO_PROXY", "127.0.0.1"),
                ("no_proxy", "127.0.0.1"),
            ]
        );
        let [file] = command.files.as_slice() else {
            panic!("one config file: {command:?}");
        };
        assert_eq!(file.path, ".codex/config.toml");
        assert!(!file.contents.contains("ct_tok"));
        let config: toml::Value = toml::from_str(&file.contents).unwrap();
        let provider = &config["model_providers"]["conductor"];
        assert_eq!(config["model_provider"].as_str(), Some("conductor"));
        assert_eq!(config["sandbox_mode"].as_str(), Some("danger-full-access"));
        assert_eq!(config["approval_policy"].as_str(), Some("never"));
        assert_eq!(
            provider["base_url"].as_str(),
            Some("http://127.0.0.1:4200/v1")
        );
        assert_eq!(provider["wire_api"].as_str(), Some("responses"));
        assert_eq!(
            provider["env_key"].as_str(),
            Some("CONDUCTOR_GATEWAY_TOKEN")
        );
        assert_eq!(provider["supports_websockets"].as_bool(), Some(false));
        assert_eq!(Codex.probe_argv(), strings(&["codex", "--version"]));
    }
}
