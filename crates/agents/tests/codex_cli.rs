//! The real Codex CLI (when `codex` is on `PATH`) against the fake OpenAI Responses upstream,
//! through the custom provider of the adapter's `config.toml`: a session that writes and edits a
//! file with `exec_command`, then a resumed follow-up.

use conductor_agents::fake::{OpenAiFake, RequestKind, Script, Turn};
use conductor_agents::{adapter, AgentContext, GatewayUrl, RunAs};
use conductor_types::{AgentEvent, AgentKind, AgentOutcome, AgentSpec, Usage};
use serde_json::json;

use crate::support::{find_cli, run, skip, write_home_files, Run};

const TOKEN: &str = "ct_codex_token_for_tests";

fn spec(prompt: &str) -> AgentSpec {
    AgentSpec {
        kind: AgentKind::Codex,
        prompt: prompt.to_owned(),
        model: Some("gpt-5-codex".to_owned()),
        max_turns: None,
        allowed_tools: None,
        permission_mode: None,
        system_prompt: None,
    }
}

async fn codex(
    spec: &AgentSpec,
    ctx: &AgentContext,
    home: &std::path::Path,
    label: &str,
) -> Option<Run> {
    let cli = match find_cli("codex") {
        Ok(cli) => cli,
        Err(reason) => {
            skip(label, &reason);
            return None;
        }
    };
    let agent = adapter(AgentKind::Codex);
    let command = agent.command(spec, ctx);
    write_home_files(&command, home);
    let run = run(&command, &cli, agent.parser().as_mut(), label).await;
    assert!(run.lines.iter().all(|line| !line.contains(TOKEN)));
    Some(run)
}

/// The events with tool inputs and outputs left out (Codex words its command lines itself).
fn kinds(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| match event {
            AgentEvent::AgentText { text } => format!("text {text}"),
            AgentEvent::AgentToolCall { tool, .. } => format!("call {tool}"),
            AgentEvent::AgentToolResult { ok, .. } => format!("result {ok}"),
            AgentEvent::AgentUsage { .. } => "usage".to_owned(),
            // The server's, after the CLI's process ends: a parser never makes one.
            AgentEvent::AgentFilesChanged { .. } => "files".to_owned(),
            AgentEvent::AgentResult {
                outcome,
                turns,
                text,
                ..
            } => {
                format!("end {outcome:?} {turns} {text}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_commands_and_resumes_against_the_fake() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let script = Script::new([
        Turn::tool(
            "exec_command",
            json!({"cmd": "printf 'hello\\n' > hello.txt"}),
        )
        .saying("Writing the file.")
        .tokens(100, 20),
        Turn::tool(
            "exec_command",
            json!({"cmd": "sed -i 's/hello/hello world/' hello.txt && cat hello.txt"}),
        )
        .tokens(120, 30)
        .cache(50, 0),
        Turn::text("Done.").tokens(150, 10),
        Turn::text("Resumed.").tokens(200, 5),
    ]);
    let fake = OpenAiFake::start(script).await.unwrap();
    let mut ctx = AgentContext {
        gateway: GatewayUrl::loopback(fake.port()),
        token: TOKEN.to_owned(),
        home: home.path().display().to_string(),
        workdir: work.path().display().to_string(),
        resume: None,
        run_as: RunAs::User,
    };
    let mut with_system = spec("write hello.txt");
    with_system.system_prompt = Some("You work for Conductor's tests.".to_owned());
    let Some(first) = codex(&with_system, &ctx, home.path(), "codex-session").await else {
        return;
    };
    assert!(first.status.success(), "{first:?}");
    let file = work.path().join("hello.txt");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "hello world\n");
    assert_eq!(
        kinds(&first.events),
        [
            "text Writing the file.",
            "call shell",
            "result true",
            "call shell",
            "result true",
            "text Done.",
            "end Success 3 Done.",
        ]
    );
    let AgentEvent::AgentToolResult { output, .. } = &first.events[4] else {
        panic!("{first:?}");
    };
    assert_eq!(output, "hello world");
    assert_eq!(
        first.usage,
        [Usage {
            input_tokens: 370,
            output_tokens: 60,
            cache_read_input_tokens: 50,
            ..Usage::default()
        }]
    );
    let requests = fake.requests();
    // The system prompt went in as developer instructions.
    assert!(requests[0].body["input"]
        .to_string()
        .contains("You work for Conductor's tests."));
    assert!(requests
        .iter()
        .all(|r| r.header("authorization") == Some(&*format!("Bearer {TOKEN}"))));
    let Some(AgentEvent::AgentResult { cli_session, .. }) = first.events.last().cloned() else {
        panic!("{first:?}");
    };

    ctx.resume = cli_session.clone();
    let Some(second) = codex(&spec("--anything else?"), &ctx, home.path(), "codex-resume").await
    else {
        return;
    };
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        kinds(&second.events),
        ["text Resumed.", "end Success 1 Resumed."]
    );
    let Some(AgentEvent::AgentResult {
        cli_session: again,
        outcome,
        ..
    }) = second.events.last()
    else {
        panic!("{second:?}");
    };
    assert_eq!((again, *outcome), (&cli_session, AgentOutcome::Success));
    let resumed = fake.conversation().pop().unwrap();
    assert_eq!(resumed.kind, RequestKind::Turn(3));
    let sent = resumed.body["input"].to_string();
    for earlier in [
        "write hello.txt",
        "Writing the file.",
        "hello world",
        "--anything else?",
    ] {
        assert!(sent.contains(earlier), "{earlier} was sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_reports_an_upstream_refusal_as_a_failed_turn() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let empty = OpenAiFake::start(Script::default()).await.unwrap();
    let ctx = AgentContext {
        gateway: GatewayUrl::loopback(empty.port()),
        token: TOKEN.to_owned(),
        home: home.path().display().to_string(),
        workdir: work.path().display().to_string(),
        resume: None,
        run_as: RunAs::User,
    };
    let Some(refused) = codex(&spec("hi"), &ctx, home.path(), "codex-refused").await else {
        return;
    };
    let Some(AgentEvent::AgentResult { outcome, text, .. }) = refused.events.last() else {
        panic!("no result: {refused:?}");
    };
    assert_eq!(*outcome, AgentOutcome::Error, "{refused:?}");
    assert!(text.contains("no more turns"), "{text}");
    assert_eq!(empty.conversation()[0].kind, RequestKind::PastScript);
}
