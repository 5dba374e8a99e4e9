//! The parsers on streams recorded from the real CLIs against the fakes (`tests/fixtures`,
//! re-recorded by running the CLI tests with `CONDUCTOR_RECORD_DIR` pointing there). Ids and
//! temp paths are read from each stream's first line, so a re-recording keeps these tests true.

use conductor_agents::{adapter, ParseError, Redactor, StreamParser};
use conductor_types::{AgentEvent, AgentKind, AgentOutcome, FailureCode, Usage};
use serde_json::Value;

use crate::support::{call, result, text};

struct Parsed {
    first: Value,
    events: Vec<AgentEvent>,
    usage: Vec<Usage>,
    failure: Option<FailureCode>,
}

fn parse(kind: AgentKind, name: &str) -> Parsed {
    let path = format!("{}/tests/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut parser = adapter(kind).parser();
    let (mut events, mut usage) = (Vec::new(), Vec::new());
    for line in text.lines() {
        for event in parser.line(line).unwrap() {
            match event {
                AgentEvent::AgentUsage { usage: u } => usage.push(u),
                other => events.push(other),
            }
        }
    }
    let first = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    Parsed {
        first,
        events,
        usage,
        failure: parser.failure(),
    }
}

fn end(outcome: AgentOutcome, turns: u32, text: &str, session: &Value) -> AgentEvent {
    AgentEvent::AgentResult {
        outcome,
        turns,
        text: text.into(),
        cli_session: session.as_str().map(str::to_owned),
    }
}

#[test]
fn a_claude_code_session_becomes_steps_usage_and_a_result() {
    let run = parse(AgentKind::ClaudeCode, "claude-session");
    let session = &run.first["session_id"];
    let file = format!("{}/hello.txt", run.first["cwd"].as_str().unwrap());
    let write = format!(
        "File created successfully at: {file} (file state is current in your context — no need \
         to Read it back)"
    );
    let edit = format!(
        "The file {file} has been updated successfully. (file state is current in your context — \
         no need to Read it back)"
    );
    assert_eq!(
        run.events,
        [
            text("I'll write the file."),
            call("toolu_msg_fake_0_1", "Write", &file),
            result("toolu_msg_fake_0_1", &write),
            call("toolu_msg_fake_1_1", "Edit", &file),
            result("toolu_msg_fake_1_1", &edit),
            call("toolu_msg_fake_2_1", "Bash", "cat hello.txt"),
            result("toolu_msg_fake_2_1", "hello world"),
            text("Done: hello.txt says hello world."),
            end(
                AgentOutcome::Success,
                4,
                "Done: hello.txt says hello world.",
                session
            ),
        ]
    );
    // One usage per model message (its input and cache numbers, output as of its start), then
    // the result line's totals.
    let inputs: Vec<u64> = run.usage.iter().map(|u| u.input_tokens).collect();
    assert_eq!(inputs, [100, 220, 360, 520, 520]);
    assert_eq!(
        run.usage.last().copied().unwrap(),
        Usage {
            input_tokens: 520,
            output_tokens: 72,
            cache_read_input_tokens: 50,
            cache_creation_input_tokens: 50,
            requests: 4,
            cost_usd: 0.0028425,
        }
    );
    assert_eq!(run.failure, None);
}

#[test]
fn claude_code_tells_its_turn_limit_from_an_upstream_refusal() {
    let limited = parse(AgentKind::ClaudeCode, "claude-max-turns");
    assert_eq!(
        limited.events.last(),
        Some(&end(
            AgentOutcome::MaxTurns,
            2,
            "Reached maximum number of turns (1)",
            &limited.first["session_id"]
        ))
    );
    assert_eq!(limited.failure, Some(FailureCode::MaxTurns));

    let refused = parse(AgentKind::ClaudeCode, "claude-refused");
    let message = "API Error: 400 fake upstream: the script has no more turns";
    assert_eq!(
        refused.events,
        [
            text(message),
            end(
                AgentOutcome::Error,
                1,
                message,
                &refused.first["session_id"]
            ),
        ]
    );
    assert_eq!(refused.failure, Some(FailureCode::UpstreamRejected));
    // The CLI's synthetic error message is no answered request.
    assert_eq!(refused.usage, [Usage::default()]);
}

#[test]
fn a_codex_session_becomes_steps_usage_and_a_result() {
    let run = parse(AgentKind::Codex, "codex-session");
    let thread = &run.first["thread_id"];
    assert_eq!(
        run.events,
        [
            text("Writing the file."),
            call(
                "item_2",
                "shell",
                r#"/bin/bash -lc "printf 'hello\\n' > hello.txt""#
            ),
            result("item_2", ""),
            call(
                "item_3",
                "shell",
                "/bin/bash -lc \"sed -i 's/hello/hello world/' hello.txt && cat hello.txt\""
            ),
            result("item_3", "hello world"),
            text("Done."),
            end(AgentOutcome::Success, 3, "Done.", thread),
        ]
    );
    assert_eq!(
        run.usage,
        [Usage {
            input_tokens: 370,
            output_tokens: 60,
            cache_read_input_tokens: 50,
            ..Usage::default()
        }]
    );
    assert_eq!(run.failure, None);

    let resumed = parse(AgentKind::Codex, "codex-resume");
    assert_eq!(
        resumed.events,
        [
            text("Resumed."),
            end(
                AgentOutcome::Success,
                1,
                "Resumed.",
                &resumed.first["thread_id"]
            )
        ]
    );
}

#[test]
fn codex_reports_a_refusal_as_a_failed_turn() {
    let refused = parse(AgentKind::Codex, "codex-refused");
    let Some(AgentEvent::AgentResult { outcome, text, .. }) = refused.events.last() else {
        panic!("no result");
    };
    assert_eq!(*outcome, AgentOutcome::Error);
    assert!(text.contains("the script has no more turns"), "{text}");
    assert_eq!(refused.failure, Some(FailureCode::UpstreamRejected));
}

#[test]
fn a_stream_without_a_result_is_a_crash_and_stray_text_an_error() {
    for kind in AgentKind::ALL {
        let mut parser: Box<dyn StreamParser> = adapter(kind).parser();
        assert_eq!(parser.line(r#"{"type":"something_new"}"#), Ok(vec![]));
        assert_eq!(
            parser.line("Segmentation fault"),
            Err(ParseError::NotJson {
                start: "Segmentation fault".into()
            })
        );
        assert_eq!(
            parser.failure(),
            Some(FailureCode::AgentCrashed),
            "{kind:?}"
        );
    }
}

#[test]
fn the_token_is_cut_from_stored_lines() {
    let redactor = Redactor::new(["ct_secret".to_owned()]);
    let line = r#"{"type":"user","message":"echo $KEY -> ct_secret"}"#;
    assert_eq!(
        redactor.redact(line),
        r#"{"type":"user","message":"echo $KEY -> [redacted]"}"#
    );
}
