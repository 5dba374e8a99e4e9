//! The fake upstreams on their own (no CLI): what they answer and what they record.

use conductor_agents::fake::{AnthropicFake, OpenAiFake, RequestKind, Script, Turn};
use serde_json::{json, Value};

/// The `data:` payloads of an SSE body, with their `event:` names.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|chunk| !chunk.trim().is_empty())
        .map(|chunk| {
            let mut lines = chunk.lines();
            let event = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (event.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

fn conversation_request(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5", "max_tokens": 1000, "stream": stream,
        "tools": [{"name": "Write", "input_schema": {}}],
        "messages": [{"role": "user", "content": "go"}],
    })
}

#[tokio::test]
async fn the_anthropic_fake_plays_its_script_and_answers_side_requests_apart() {
    let fake = AnthropicFake::start(Script::new([
        Turn::tool("Write", json!({"file_path": "/w/a", "content": "x"}))
            .saying("Writing.")
            .tokens(100, 20)
            .cache(7, 3),
        Turn::text("Done.").tokens(5, 2),
    ]))
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let messages = format!("{}/v1/messages?beta=true", fake.url());

    // A side request (no tools: a title or quota call) does not consume the script.
    let side = json!({"model": "claude-haiku-4-5", "max_tokens": 1, "messages": []});
    let answer: Value = client
        .post(&messages)
        .json(&side)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["content"][0]["type"], "text");
    let count = format!("{}/v1/messages/count_tokens", fake.url());
    let counted: Value = client
        .post(&count)
        .json(&side)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0);

    let body = client
        .post(&messages)
        .header("x-api-key", "tok")
        .json(&conversation_request(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let streamed = events(&body);
    let names: Vec<&str> = streamed.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        streamed[0].1["message"]["usage"],
        json!({"input_tokens": 100, "output_tokens": 1,
               "cache_read_input_tokens": 7, "cache_creation_input_tokens": 3})
    );
    assert_eq!(
        streamed[4].1["content_block"],
        json!({"type": "tool_use", "id": "toolu_msg_fake_0_1", "name": "Write", "input": {}})
    );
    assert_eq!(
        streamed[5].1["delta"],
        json!({"type": "input_json_delta", "partial_json": r#"{"content":"x","file_path":"/w/a"}"#})
    );
    assert_eq!(streamed[7].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(streamed[7].1["usage"]["output_tokens"], 20);

    // Not streamed: one message; then the script is out.
    let whole: Value = client
        .post(&messages)
        .json(&conversation_request(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (whole["content"].clone(), whole["stop_reason"].clone()),
        (
            json!([{"type": "text", "text": "Done."}]),
            json!("end_turn")
        )
    );
    let past = client
        .post(&messages)
        .json(&conversation_request(true))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 400);

    let kinds: Vec<RequestKind> = fake.requests().iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RequestKind::Side,
            RequestKind::Side,
            RequestKind::Turn(0),
            RequestKind::Turn(1),
            RequestKind::PastScript,
        ]
    );
    assert_eq!(fake.turns_played(), 2);
    let first = &fake.conversation()[0];
    assert_eq!(
        (first.path.as_str(), first.header("x-api-key")),
        ("/v1/messages?beta=true", Some("tok"))
    );
    assert_eq!(first.body, conversation_request(true));
}

#[tokio::test]
async fn the_openai_fake_streams_responses_with_calls_and_usage() {
    let fake = OpenAiFake::start(Script::new([Turn::tool(
        "exec_command",
        json!({"cmd": "ls"}),
    )
    .saying("Looking.")
    .tokens(100, 20)
    .cache(30, 0)]))
    .await
    .unwrap();
    let request = json!({"model": "gpt-5-codex", "stream": true,
        "tools": [{"type": "function", "name": "exec_command"}], "input": []});
    let body = reqwest::Client::new()
        .post(format!("{}/v1/responses", fake.url()))
        .json(&request)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let streamed = events(&body);
    let names: Vec<&str> = streamed.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.output_item.added",
            "response.output_text.delta",
            "response.output_item.done",
            "response.output_item.added",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(
        streamed[5].1["item"],
        json!({"type": "function_call", "id": "fc_resp_fake_0_1", "call_id": "call_resp_fake_0_1",
               "name": "exec_command", "arguments": r#"{"cmd":"ls"}"#, "status": "completed"})
    );
    assert_eq!(
        streamed[6].1["response"]["usage"],
        json!({"input_tokens": 130, "input_tokens_details": {"cached_tokens": 30},
               "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 150})
    );
    assert_eq!(fake.conversation()[0].kind, RequestKind::Turn(0));
}

#[tokio::test]
async fn a_failing_turn_answers_its_status_and_retry_after_then_the_next_turn_plays() {
    let fake = AnthropicFake::start(Script::new([
        Turn::failing(529, Some(2)),
        Turn::text("After the retry."),
    ]))
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/messages", fake.url());
    let overloaded = client
        .post(&url)
        .json(&conversation_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(overloaded.status(), 529);
    assert_eq!(overloaded.headers()["retry-after"], "2");
    let body: Value = overloaded.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    let retried: Value = client
        .post(&url)
        .json(&conversation_request(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retried["content"][0]["text"], "After the retry.");
    assert_eq!(fake.turns_played(), 2);
}
