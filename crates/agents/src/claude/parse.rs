//! Claude Code's `stream-json` lines into normalized events.
//!
//! What the CLI writes (2.1.x, with `--verbose`): a `system`/`init` line with its session id; an
//! `assistant` line per content block of each model message (all lines of a message share its id
//! and repeat its usage, counted once here); a `user` line carrying each tool's result; and one
//! `result` line at the end with the outcome (`subtype` `success`, `error_max_turns`,
//! `error_during_execution`, …, and `is_error`), the turn count, the final text and the run's
//! total usage and cost. Streamed messages report `output_tokens` as of their start, so the usage
//! summed from messages undercounts output until the `result` line gives the true totals. An API
//! error ends the run with `is_error`, `terminal_reason: "api_error"` and the upstream's
//! `api_error_status`; the turn limit with `subtype: "error_max_turns"`.

use std::collections::HashSet;

use conductor_types::{AgentEvent, AgentOutcome, FailureCode, Usage};
use serde_json::Value;

use crate::adapter::{ParseError, StreamParser};
use crate::summary::{one_line, tool_input, tool_output, OUTPUT_CHARS};

/// The parser of one Claude Code run.
#[derive(Debug, Default)]
pub struct ClaudeParser {
    /// Message ids whose usage is counted.
    seen: HashSet<String>,
    /// The usage summed over messages so far.
    usage: Usage,
    /// How the run failed, once its `result` line came (`Some(None)`: it succeeded).
    end: Option<Option<FailureCode>>,
}

impl StreamParser for ClaudeParser {
    fn line(&mut self, line: &str) -> Result<Vec<AgentEvent>, ParseError> {
        let value: Value = match serde_json::from_str(line) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                return Err(ParseError::NotJson {
                    start: one_line(line, 80),
                })
            }
        };
        Ok(match value["type"].as_str() {
            Some("assistant") => self.assistant(&value["message"]),
            Some("user") => tool_results(&value["message"]),
            Some("result") => {
                self.end = Some(failure(&value));
                result(&value, self.usage.requests)
            }
            _ => Vec::new(),
        })
    }

    fn failure(&self) -> Option<FailureCode> {
        self.end.unwrap_or(Some(FailureCode::AgentCrashed))
    }
}

impl ClaudeParser {
    fn assistant(&mut self, message: &Value) -> Vec<AgentEvent> {
        let mut events: Vec<AgentEvent> = blocks(message)
            .iter()
            .filter_map(|block| match block["type"].as_str()? {
                "text" => {
                    let text = block["text"].as_str()?.trim();
                    (!text.is_empty()).then(|| AgentEvent::AgentText {
                        text: text.to_owned(),
                    })
                }
                "tool_use" => Some(AgentEvent::AgentToolCall {
                    call_id: block["id"].as_str().unwrap_or_default().to_owned(),
                    tool: block["name"].as_str().unwrap_or_default().to_owned(),
                    input: tool_input(&block["input"]),
                }),
                _ => None,
            })
            .collect();
        let id = message["id"].as_str().unwrap_or_default();
        // The CLI reports an API error as a message of its own making: no request was answered.
        let synthetic = message["model"] == "<synthetic>";
        if !synthetic && !id.is_empty() && self.seen.insert(id.to_owned()) {
            let this = usage(&message["usage"], 0.0);
            self.usage = self.usage.add(&Usage {
                requests: 1,
                ..this
            });
            events.push(AgentEvent::AgentUsage { usage: self.usage });
        }
        events
    }
}

fn blocks(message: &Value) -> &[Value] {
    message["content"].as_array().map_or(&[], Vec::as_slice)
}

fn tool_results(message: &Value) -> Vec<AgentEvent> {
    blocks(message)
        .iter()
        .filter(|block| block["type"] == "tool_result")
        .map(|block| AgentEvent::AgentToolResult {
            call_id: block["tool_use_id"].as_str().unwrap_or_default().to_owned(),
            ok: !block["is_error"].as_bool().unwrap_or(false),
            output: tool_output(&result_text(&block["content"])),
        })
        .collect()
}

/// A tool result's content: a string, or text blocks (images and the like are left out).
fn result_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn usage(value: &Value, cost_usd: f64) -> Usage {
    let tokens = |key: &str| value[key].as_u64().unwrap_or(0);
    Usage {
        input_tokens: tokens("input_tokens"),
        output_tokens: tokens("output_tokens"),
        cache_read_input_tokens: tokens("cache_read_input_tokens"),
        cache_creation_input_tokens: tokens("cache_creation_input_tokens"),
        requests: 0,
        cost_usd,
    }
}

/// Why the run of this `result` line failed: its `terminal_reason` (`max_turns`, `api_error`)
/// and, for an API error, the upstream's status (`api_error_status`, absent when there was no
/// answer at all).
fn failure(value: &Value) -> Option<FailureCode> {
    if value["subtype"] == "error_max_turns" || value["terminal_reason"] == "max_turns" {
        return Some(FailureCode::MaxTurns);
    }
    if value["subtype"] == "success" && value["is_error"] != true {
        return None;
    }
    match (
        value["terminal_reason"].as_str(),
        value["api_error_status"].as_u64(),
    ) {
        (_, Some(429)) => Some(FailureCode::UpstreamUnavailable),
        (_, Some(status)) if status >= 500 => Some(FailureCode::UpstreamUnavailable),
        (_, Some(_)) => Some(FailureCode::UpstreamRejected),
        (Some("api_error"), None) => Some(FailureCode::UpstreamUnavailable),
        _ => Some(FailureCode::AgentCrashed),
    }
}

/// The final line: the run's true totals (with the `requests` counted from messages), then how it
/// ended.
fn result(value: &Value, requests: u64) -> Vec<AgentEvent> {
    let subtype = value["subtype"].as_str().unwrap_or_default();
    let is_error = value["is_error"].as_bool().unwrap_or(false);
    let outcome = match subtype {
        "error_max_turns" => AgentOutcome::MaxTurns,
        "success" if !is_error => AgentOutcome::Success,
        _ => AgentOutcome::Error,
    };
    let text = match value["result"].as_str() {
        Some(text) => text.to_owned(),
        // Error subtypes carry `errors` (a list of messages) instead of `result`.
        None => value["errors"]
            .as_array()
            .map(|errors| {
                let all: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
                tool_output(&all.join("; "))
            })
            .unwrap_or_default(),
    };
    let text = if outcome == AgentOutcome::Success {
        text
    } else {
        one_line(&text, OUTPUT_CHARS)
    };
    let turns = value["num_turns"].as_u64().unwrap_or(0);
    let cost = value["total_cost_usd"].as_f64().unwrap_or(0.0);
    let totals = Usage {
        requests,
        ..usage(&value["usage"], cost)
    };
    vec![
        AgentEvent::AgentUsage { usage: totals },
        AgentEvent::AgentResult {
            outcome,
            turns: u32::try_from(turns).unwrap_or(u32::MAX),
            text,
            cli_session: value["session_id"].as_str().map(str::to_owned),
        },
    ]
}
