//! Reading token usage out of an upstream's response as it streams past, without holding it:
//! Server-Sent Events are split incrementally and only the few events that carry usage are
//! parsed. Anthropic: `message_start.message.usage`, then `message_delta.usage`, which is
//! cumulative (each field present replaces the last value; deltas are never summed). OpenAI
//! Responses: `response.completed` (or `.incomplete`/`.failed`) `.response.usage`, whose
//! `input_tokens` include the cached ones. A non-streamed body is JSON with a top-level `usage`.

use conductor_types::Usage;
use serde_json::Value;

use crate::config::Provider;

/// A non-streamed body past this size is not kept for parsing (its usage then reads as zero).
const MAX_JSON_BYTES: usize = 16 << 20;

/// What the meter read from a response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metered {
    /// Tokens (`requests` and `cost_usd` are left for the caller).
    pub usage: Usage,
    /// The model the upstream says answered.
    pub model: Option<String>,
    /// The type of an `error` event inside a stream (`overloaded_error`, …).
    pub stream_error: Option<String>,
    /// The response reached its final usage (Anthropic's `message_stop`, OpenAI's
    /// `response.completed`/`.incomplete`/`.failed`, an `error` event, or a whole JSON body
    /// read): `false` when the client left, the stream broke off or the body was too large to
    /// read, and `usage` is then only what had been seen.
    pub complete: bool,
}

/// Feeds on a response's chunks as they pass.
#[derive(Debug)]
pub struct UsageMeter {
    provider: Provider,
    streamed: bool,
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for an event's end.
    scanned: usize,
    overflow: bool,
    seen: Metered,
}

impl UsageMeter {
    /// A meter for a response of `provider`, streamed (SSE) or not (JSON).
    pub fn new(provider: Provider, streamed: bool) -> Self {
        Self {
            provider,
            streamed,
            buf: Vec::new(),
            scanned: 0,
            overflow: false,
            seen: Metered::default(),
        }
    }

    /// Reads one chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.streamed {
            if self.buf.len() + chunk.len() > MAX_JSON_BYTES {
                self.overflow = true;
                self.buf = Vec::new();
            } else if !self.overflow {
                self.buf.extend_from_slice(chunk);
            }
            return;
        }
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some((end, next)) = event_end(&self.buf, start, self.scanned.max(start)) {
            let event = self.buf[start..end].to_vec();
            self.sse_event(&event);
            start = next;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len().saturating_sub(3);
    }

    /// What was read, once the body ended (or was cut off).
    pub fn finish(mut self) -> Metered {
        if !self.streamed && !self.overflow {
            if let Ok(body) = serde_json::from_slice::<Value>(&self.buf) {
                self.seen.model = body["model"].as_str().map(str::to_owned);
                self.apply_usage(&body["usage"]);
                self.seen.complete = true;
            }
        }
        self.seen
    }

    fn sse_event(&mut self, event: &[u8]) {
        let Ok(text) = std::str::from_utf8(event) else {
            return;
        };
        let mut name = None;
        let mut data = String::new();
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = Some(value.trim());
            } else if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        let wanted = match name {
            Some(name) => WANTED.contains(&name),
            None => data.contains("usage") || data.contains("\"error\""),
        };
        if !wanted {
            return;
        }
        if let Ok(value) = serde_json::from_str::<Value>(&data) {
            self.data(&value);
        }
    }

    fn data(&mut self, data: &Value) {
        match data["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let message = &data["message"];
                self.seen.model = message["model"].as_str().map(str::to_owned);
                self.apply_usage(&message["usage"]);
            }
            "message_delta" => self.apply_usage(&data["usage"]),
            "message_stop" => self.seen.complete = true,
            "response.completed" | "response.incomplete" | "response.failed" => {
                let response = &data["response"];
                if let Some(model) = response["model"].as_str() {
                    self.seen.model = Some(model.to_owned());
                }
                self.apply_usage(&response["usage"]);
                self.seen.complete = true;
            }
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or("error");
                self.seen.stream_error = Some(kind.to_owned());
                self.seen.complete = true;
            }
            _ => {}
        }
    }

    fn apply_usage(&mut self, usage: &Value) {
        if !usage.is_object() {
            return;
        }
        let seen = &mut self.seen.usage;
        match self.provider {
            Provider::Anthropic => {
                replace(&mut seen.input_tokens, &usage["input_tokens"]);
                replace(&mut seen.output_tokens, &usage["output_tokens"]);
                replace(
                    &mut seen.cache_read_input_tokens,
                    &usage["cache_read_input_tokens"],
                );
                replace(
                    &mut seen.cache_creation_input_tokens,
                    &usage["cache_creation_input_tokens"],
                );
            }
            Provider::OpenAi => {
                let input = usage["input_tokens"].as_u64().unwrap_or(0);
                let cached = usage["input_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap_or(0);
                seen.input_tokens = input.saturating_sub(cached);
                seen.cache_read_input_tokens = cached;
                seen.output_tokens = usage["output_tokens"].as_u64().unwrap_or(0);
            }
        }
    }
}

/// The SSE events whose data may carry usage (or an error).
const WANTED: [&str; 7] = [
    "message_start",
    "message_delta",
    "message_stop",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

/// Overwrites `field` with `value` when the upstream sent a number for it.
fn replace(field: &mut u64, value: &Value) {
    if let Some(value) = value.as_u64() {
        *field = value;
    }
}

/// The end of the SSE event starting at `start` (a blank line, `\n\n` or `\r\n\r\n`), searching
/// from `from`: the event's last byte + 1 and where the next begins.
fn event_end(buf: &[u8], start: usize, from: usize) -> Option<(usize, usize)> {
    let mut i = from.max(start);
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, read: u64, write: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: read,
            cache_creation_input_tokens: write,
            requests: 0,
            cost_usd: 0.0,
        }
    }

    const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",",
        "\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":7,",
        "\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":10}}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn cumulative_deltas_keep_the_last_value_whatever_the_chunking() {
        for size in [1, 2, 3, 7, 64, ANTHROPIC_STREAM.len()] {
            let mut meter = UsageMeter::new(Provider::Anthropic, true);
            for chunk in ANTHROPIC_STREAM.as_bytes().chunks(size) {
                meter.feed(chunk);
            }
            let seen = meter.finish();
            assert_eq!(
                seen,
                Metered {
                    usage: usage(25, 15, 100, 7),
                    model: Some("claude-sonnet-4-5".into()),
                    stream_error: None,
                    complete: true,
                },
                "chunks of {size}"
            );
        }
        // Cut off before `message_stop` (the client left): what was seen, marked incomplete.
        let cut = ANTHROPIC_STREAM.find("event: message_stop").unwrap();
        let mut meter = UsageMeter::new(Provider::Anthropic, true);
        meter.feed(&ANTHROPIC_STREAM.as_bytes()[..cut]);
        let seen = meter.finish();
        assert!(!seen.complete);
        assert_eq!(seen.usage, usage(25, 15, 100, 7));
    }

    #[test]
    fn crlf_events_and_stream_errors_are_read() {
        let stream = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\r\n\r\nevent: error\r\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\r\n\r\n";
        let mut meter = UsageMeter::new(Provider::Anthropic, true);
        meter.feed(stream.as_bytes());
        let seen = meter.finish();
        assert_eq!(seen.usage, usage(3, 1, 0, 0));
        assert_eq!(seen.stream_error.as_deref(), Some("overloaded_error"));
    }

    #[test]
    fn openai_usage_splits_cached_input_out() {
        let stream = concat!(
            "event: response.created\n",
            "data: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-5\",\"usage\":null}}\n\n",
            "event: response.completed\n",
            "data: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5-codex\",\"usage\":",
            "{\"input_tokens\":120,\"input_tokens_details\":{\"cached_tokens\":100},\"output_tokens\":9}}}\n\n",
        );
        let mut meter = UsageMeter::new(Provider::OpenAi, true);
        for chunk in stream.as_bytes().chunks(5) {
            meter.feed(chunk);
        }
        let seen = meter.finish();
        assert_eq!(seen.usage, usage(20, 9, 100, 0));
        assert_eq!(seen.model.as_deref(), Some("gpt-5-codex"));
    }

    #[test]
    fn json_bodies_are_read_whole() {
        let body = br#"{"model":"claude-haiku-4-5","usage":{"input_tokens":5,"output_tokens":2,"cache_read_input_tokens":1,"cache_creation_input_tokens":0}}"#;
        let mut meter = UsageMeter::new(Provider::Anthropic, false);
        for chunk in body.chunks(10) {
            meter.feed(chunk);
        }
        let seen = meter.finish();
        assert_eq!(seen.usage, usage(5, 2, 1, 0));
        assert_eq!(seen.model.as_deref(), Some("claude-haiku-4-5"));
    }
}
