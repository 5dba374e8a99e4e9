//! The real Claude Code (when `claude` is on `PATH`) against the fake Anthropic upstream: a
//! multi-turn session with Write, Edit and Bash, a resumed follow-up, the turn limit, an upstream
//! refusal. As root the adapter sets `IS_SANDBOX=1`; `--permission-mode acceptEdits` with
//! `--allowedTools` then runs every tool without a prompt.

use std::path::Path;

use conductor_agents::fake::{AnthropicFake, FakeServer, RequestKind, Script, Turn};
use conductor_agents::{adapter, AgentContext, GatewayUrl, RunAs};
use conductor_types::{AgentEvent, AgentKind, AgentOutcome, AgentSpec, Usage};
use serde_json::json;

use crate::support::{call, find_cli, is_root, result, run, shapes, skip, text, Run};

const TOKEN: &str = "ct_task_token_for_tests";

fn spec(prompt: &str, max_turns: u32) -> AgentSpec {
    AgentSpec {
        kind: AgentKind::ClaudeCode,
        prompt: prompt.to_owned(),
        model: Some("claude-sonnet-4-5".to_owned()),
        max_turns: Some(max_turns),
        allowed_tools: Some(vec![
            "Read".into(),
            "Write".into(),
            "Edit".into(),
            "Bash".into(),
        ]),
        permission_mode: Some("acceptEdits".to_owned()),
        system_prompt: Some("You work for Conductor's tests.".to_owned()),
    }
}

fn context(fake: &FakeServer, home: &Path, work: &Path) -> AgentContext {
    AgentContext {
        gateway: GatewayUrl::loopback(fake.port()),
        token: TOKEN.to_owned(),
        home: home.display().to_string(),
        workdir: work.display().to_string(),
        resume: None,
        run_as: if is_root() { RunAs::Root } else { RunAs::User },
    }
}

async fn claude(spec: &AgentSpec, ctx: &AgentContext, label: &str) -> Option<Run> {
    let cli = match find_cli("claude") {
        Ok(cli) => cli,
        Err(reason) => {
            skip(label, &reason);
            return None;
        }
    };
    let agent = adapter(AgentKind::ClaudeCode);
    let command = agent.command(spec, ctx);
    let run = run(&command, &cli, agent.parser().as_mut(), label).await;
    assert!(
        run.lines.iter().all(|line| !line.contains(TOKEN)),
        "the token is not in the stream"
    );
    Some(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_writes_edits_runs_and_resumes_against_the_fake() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("hello.txt");
    let path = file.display().to_string();
    let script = Script::new([
        Turn::tool("Write", json!({"file_path": file, "content": "hello\n"}))
            .saying("I'll write the file.")
            .tokens(100, 20)
            .cache(0, 50),
        Turn::tool(
            "Edit",
            json!({"file_path": file, "old_string": "hello", "new_string": "hello world"}),
        )
        .tokens(120, 30)
        .cache(50, 0),
        Turn::tool(
            "Bash",
            json!({"command": "cat hello.txt", "description": "Show the file"}),
        )
        .tokens(140, 10),
        Turn::text("Done: hello.txt says hello world.").tokens(160, 12),
        Turn::text("Resumed and still done.").tokens(200, 8),
    ]);
    let fake = AnthropicFake::start(script).await.unwrap();
    let mut ctx = context(&fake, home.path(), work.path());
    let Some(first) = claude(&spec("write hello.txt", 10), &ctx, "claude-session").await else {
        return;
    };
    assert!(first.status.success(), "{first:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello world\n");
    let Some(AgentEvent::AgentResult { cli_session, .. }) = first.events.last().cloned() else {
        panic!("no result: {first:?}");
    };
    let session = cli_session.expect("a session id");
    assert_eq!(
        shapes(&first.events, &["toolu_msg_fake_2_1"]),
        [
            text("I'll write the file."),
            call("toolu_msg_fake_0_1", "Write", &path),
            result("toolu_msg_fake_0_1", "…"),
            call("toolu_msg_fake_1_1", "Edit", &path),
            result("toolu_msg_fake_1_1", "…"),
            call("toolu_msg_fake_2_1", "Bash", "cat hello.txt"),
            result("toolu_msg_fake_2_1", "hello world"),
            text("Done: hello.txt says hello world."),
            AgentEvent::AgentResult {
                outcome: AgentOutcome::Success,
                turns: 4,
                text: "Done: hello.txt says hello world.".into(),
                cli_session: Some(session.clone()),
            },
        ]
    );
    let totals = first.usage.last().copied().unwrap();
    assert_eq!(
        Usage {
            cost_usd: 0.0,
            ..totals
        },
        Usage {
            input_tokens: 520,
            output_tokens: 72,
            cache_read_input_tokens: 50,
            cache_creation_input_tokens: 50,
            requests: 4,
            cost_usd: 0.0,
        }
    );
    let conversation = fake.conversation();
    let kinds: Vec<RequestKind> = conversation.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, (0..4).map(RequestKind::Turn).collect::<Vec<_>>());
    // With the adapter's quiet variables the CLI sends nothing but the conversation (without
    // them it also sends `HEAD /api/hello`, which the fake answers as a side request).
    assert_eq!(fake.requests(), conversation);
    assert!(conversation
        .iter()
        .all(|r| r.header("x-api-key") == Some(TOKEN)));

    // The follow-up resumes the session: the fake sees the earlier messages.
    ctx.resume = Some(session.clone());
    let Some(second) = claude(&spec("--anything else?", 10), &ctx, "claude-resume").await else {
        return;
    };
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        second.events,
        [
            text("Resumed and still done."),
            AgentEvent::AgentResult {
                outcome: AgentOutcome::Success,
                turns: 1,
                text: "Resumed and still done.".into(),
                cli_session: Some(session),
            },
        ]
    );
    let resumed = fake.conversation().pop().unwrap();
    assert_eq!(resumed.kind, RequestKind::Turn(4));
    let sent = resumed.body["messages"].to_string();
    for earlier in [
        "--anything else?",
        "write hello.txt",
        "toolu_msg_fake_2_1",
        "Done: hello.txt says hello world.",
    ] {
        assert!(sent.contains(earlier), "{earlier} was resent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_stops_at_its_turn_limit_and_on_upstream_refusal() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let script = Script::new([
        Turn::tool("Bash", json!({"command": "true", "description": "Nothing"})).tokens(10, 5),
        Turn::tool("Bash", json!({"command": "true", "description": "Again"})).tokens(10, 5),
    ]);
    let fake = AnthropicFake::start(script).await.unwrap();
    let ctx = context(&fake, home.path(), work.path());
    let Some(limited) = claude(&spec("loop", 1), &ctx, "claude-max-turns").await else {
        return;
    };
    let Some(AgentEvent::AgentResult { outcome, .. }) = limited.events.last() else {
        panic!("no result: {limited:?}");
    };
    assert_eq!(*outcome, AgentOutcome::MaxTurns, "{limited:?}");
    assert_eq!(fake.turns_played(), 1);

    // The fake's script has one turn left; a fresh fake with none refuses the first request.
    let empty = AnthropicFake::start(Script::default()).await.unwrap();
    let ctx = context(&empty, home.path(), work.path());
    let Some(refused) = claude(&spec("hi", 3), &ctx, "claude-refused").await else {
        return;
    };
    let Some(AgentEvent::AgentResult { outcome, text, .. }) = refused.events.last() else {
        panic!("no result: {refused:?}");
    };
    assert_eq!(*outcome, AgentOutcome::Error, "{refused:?}");
    assert!(text.contains("no more turns"), "{text}");
    assert_eq!(empty.conversation()[0].kind, RequestKind::PastScript);
}
