//! The fake Anthropic Messages API: `POST /v1/messages` (streamed or not) plays the script for
//! conversation requests — those that declare tools — and answers a CLI's side requests (title
//! and topic calls on a small model, the quota probe) with a short text; `count_tokens` and any
//! other path get a small answer of their own.

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use super::script::{Block, Script, Turn, TurnUsage};
use super::server::{
    failure, json, sse, FakeError, FakeServer, Incoming, Protocol, RequestKind, Shared,
};

/// The text side requests get. Claude Code's title and topic calls expect JSON, so it is JSON.
pub const SIDE_TEXT: &str = r#"{"title": "Fake session", "isNewTopic": false}"#;

/// Starts fake Anthropic upstreams.
#[derive(Debug)]
pub struct AnthropicFake;

impl AnthropicFake {
    /// A fake Anthropic API on `127.0.0.1:0` playing `script`.
    pub async fn start(script: Script) -> Result<FakeServer, FakeError> {
        FakeServer::start(Protocol::Anthropic, script).await
    }
}

pub(crate) fn answer(shared: &Shared, request: &Incoming) -> (RequestKind, Response) {
    let path = request.path.split('?').next().unwrap_or_default();
    if request.method != Method::POST || !path.starts_with("/v1/messages") {
        return (RequestKind::Side, json(200, &json!({})));
    }
    if path.ends_with("/count_tokens") {
        let tokens = request.body.to_string().len() / 4;
        return (
            RequestKind::Side,
            json(200, &json!({"input_tokens": tokens})),
        );
    }
    let model = request.body["model"].as_str().unwrap_or("claude-fake");
    let stream = request.body["stream"].as_bool().unwrap_or(false);
    if !declares_tools(&request.body) {
        let side = Turn::text(SIDE_TEXT).tokens(10, 5);
        return (RequestKind::Side, message(&side, "msg_side", model, stream));
    }
    match shared.next_turn() {
        Some((index, turn)) => {
            let id = format!("msg_fake_{index}");
            let answer = match turn.failure {
                Some(failed) => failure(failed, &error(failed.status)),
                None => message(turn, &id, model, stream),
            };
            (RequestKind::Turn(index), answer)
        }
        None => {
            let error = json!({"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "fake upstream: the script has no more turns",
            }});
            (RequestKind::PastScript, json(400, &error))
        }
    }
}

/// Anthropic's error body for `status`.
fn error(status: u16) -> Value {
    let kind = match status {
        429 => "rate_limit_error",
        529 => "overloaded_error",
        401 => "authentication_error",
        403 => "permission_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": format!("fake upstream: {kind}")}})
}

fn declares_tools(body: &Value) -> bool {
    body["tools"]
        .as_array()
        .is_some_and(|tools| !tools.is_empty())
}

fn message(turn: &Turn, id: &str, model: &str, stream: bool) -> Response {
    if stream {
        sse(&events(turn, id, model))
    } else {
        json(200, &whole(turn, id, model))
    }
}

fn stop_reason(turn: &Turn) -> &'static str {
    if turn.calls_tools() {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn content(turn: &Turn, id: &str) -> Vec<Value> {
    let mut tools = 0;
    let mut blocks = Vec::new();
    for block in &turn.blocks {
        blocks.push(match block {
            Block::Text(text) => json!({"type": "text", "text": text}),
            Block::Tool { name, input } => {
                tools += 1;
                json!({"type": "tool_use", "id": format!("toolu_{id}_{tools}"), "name": name, "input": input})
            }
        });
    }
    blocks
}

fn usage(usage: TurnUsage, output: u64) -> Value {
    json!({
        "input_tokens": usage.input,
        "output_tokens": output,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation_input_tokens": usage.cache_write,
    })
}

fn whole(turn: &Turn, id: &str, model: &str) -> Value {
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": content(turn, id),
        "stop_reason": stop_reason(turn), "stop_sequence": null,
        "usage": usage(turn.usage, turn.usage.output),
    })
}

/// The stream of one message: `message_start` with the input usage, each block as start, one
/// delta and stop, then `message_delta` with the final (cumulative) output usage.
fn events(turn: &Turn, id: &str, model: &str) -> Vec<(&'static str, Value)> {
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage(turn.usage, 1),
        }}),
    )];
    for (index, block) in content(turn, id).into_iter().enumerate() {
        let (start, delta) = if block["type"] == "text" {
            let delta = json!({"type": "text_delta", "text": block["text"]});
            (json!({"type": "text", "text": ""}), delta)
        } else {
            let partial = block["input"].to_string();
            let start =
                json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}});
            (
                start,
                json!({"type": "input_json_delta", "partial_json": partial}),
            )
        };
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        ));
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(turn), "stop_sequence": null},
            "usage": usage(turn.usage, turn.usage.output)}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
}
