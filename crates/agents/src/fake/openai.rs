//! The fake OpenAI Responses API (for Codex): `POST /v1/responses` plays the script for
//! conversation requests — those that declare tools — as a stream of `response.*` events ending in
//! `response.completed` with the turn's usage. A tool block whose input is an object becomes a
//! `function_call` (arguments as JSON text); one whose input is a string becomes a
//! `custom_tool_call` (Codex's free-form `apply_patch`). Other requests get a short answer of
//! their own.

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use super::script::{Block, Script, Turn, TurnUsage};
use super::server::{
    failure, json, sse, FakeError, FakeServer, Incoming, Protocol, RequestKind, Shared,
};

/// Starts fake OpenAI upstreams.
#[derive(Debug)]
pub struct OpenAiFake;

impl OpenAiFake {
    /// A fake OpenAI API on `127.0.0.1:0` playing `script`.
    pub async fn start(script: Script) -> Result<FakeServer, FakeError> {
        FakeServer::start(Protocol::OpenAi, script).await
    }
}

pub(crate) fn answer(shared: &Shared, request: &Incoming) -> (RequestKind, Response) {
    let path = request.path.split('?').next().unwrap_or_default();
    if path.ends_with("/models") {
        return (
            RequestKind::Side,
            json(200, &json!({"object": "list", "data": [], "models": []})),
        );
    }
    if request.method != Method::POST || !path.ends_with("/responses") {
        return (RequestKind::Side, json(200, &json!({})));
    }
    let model = request.body["model"].as_str().unwrap_or("gpt-fake");
    let declares_tools = request.body["tools"]
        .as_array()
        .is_some_and(|tools| !tools.is_empty());
    if !declares_tools {
        let side = Turn::text("Fake answer").tokens(10, 5);
        return (RequestKind::Side, sse(&events(&side, "resp_side", model)));
    }
    match shared.next_turn() {
        Some((index, turn)) => {
            let id = format!("resp_fake_{index}");
            let answer = match turn.failure {
                Some(failed) => {
                    let body = json!({"error": {"type": "fake_error", "code": failed.status,
                        "message": format!("fake upstream: status {}", failed.status)}});
                    failure(failed, &body)
                }
                None => sse(&events(turn, &id, model)),
            };
            (RequestKind::Turn(index), answer)
        }
        None => {
            let error = json!({"error": {
                "type": "invalid_request_error", "code": "script_exhausted",
                "message": "fake upstream: the script has no more turns",
            }});
            (RequestKind::PastScript, json(400, &error))
        }
    }
}

fn item(block: &Block, id: &str, index: usize) -> Value {
    match block {
        Block::Text(text) => json!({
            "type": "message", "id": format!("msg_{id}_{index}"), "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }),
        Block::Tool {
            name,
            input: Value::String(input),
        } => json!({
            "type": "custom_tool_call", "id": format!("ctc_{id}_{index}"),
            "call_id": format!("call_{id}_{index}"), "name": name, "input": input,
            "status": "completed",
        }),
        Block::Tool { name, input } => json!({
            "type": "function_call", "id": format!("fc_{id}_{index}"),
            "call_id": format!("call_{id}_{index}"), "name": name,
            "arguments": input.to_string(), "status": "completed",
        }),
    }
}

fn usage(usage: TurnUsage) -> Value {
    // OpenAI counts cached tokens inside `input_tokens`.
    let input = usage.input + usage.cache_read;
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + usage.output,
    })
}

fn events(turn: &Turn, id: &str, model: &str) -> Vec<(&'static str, Value)> {
    let response = |status: &str, output: Vec<Value>| json!({"id": id, "object": "response", "status": status, "model": model, "output": output});
    let mut events = vec![(
        "response.created",
        json!({"type": "response.created", "response": response("in_progress", vec![])}),
    )];
    let items: Vec<Value> = turn
        .blocks
        .iter()
        .enumerate()
        .map(|(index, block)| item(block, id, index))
        .collect();
    for (index, item) in items.iter().enumerate() {
        events.push((
            "response.output_item.added",
            json!({
                "type": "response.output_item.added", "output_index": index, "item": item,
            }),
        ));
        if let Some(text) = item["content"][0]["text"].as_str() {
            events.push((
                "response.output_text.delta",
                json!({
                    "type": "response.output_text.delta", "item_id": item["id"],
                    "output_index": index, "content_index": 0, "delta": text,
                }),
            ));
        }
        events.push((
            "response.output_item.done",
            json!({
                "type": "response.output_item.done", "output_index": index, "item": item,
            }),
        ));
    }
    let mut done = response("completed", items);
    done["usage"] = usage(turn.usage);
    events.push((
        "response.completed",
        json!({"type": "response.completed", "response": done}),
    ));
    events
}
