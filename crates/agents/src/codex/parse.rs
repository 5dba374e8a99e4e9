//! Codex's `exec --json` lines into normalized events.
//!
//! What the CLI writes (0.171): `thread.started` with the thread id (the session to resume),
//! `turn.started`, `item.started`/`item.completed` per item — `agent_message` (text),
//! `reasoning`, `command_execution` (command, aggregated output, exit code), `file_change`,
//! `mcp_tool_call`, `web_search`, `todo_list`, and `error` items for warnings — then
//! `turn.completed` with the turn's usage (OpenAI's `input_tokens` include the cached ones) or
//! `turn.failed` with an error (the upstream's JSON error body when it refused); a top-level
//! `error` line reports a stream error. On a resumed thread the usage is the thread's total. One `exec` run is
//! one user turn, so its end is the run's result. Codex reports no turn count: `turns` here is
//! the model responses the run needed at least, one per tool call plus the last.

use std::collections::HashSet;

use conductor_types::{AgentEvent, AgentOutcome, FailureCode, Usage};
use serde_json::Value;

use crate::adapter::{ParseError, StreamParser};
use crate::summary::{one_line, tool_input, tool_output, OUTPUT_CHARS};

/// The parser of one Codex run.
#[derive(Debug, Default)]
pub struct CodexParser {
    thread: Option<String>,
    /// Items whose call was already reported (at `item.started`).
    started: HashSet<String>,
    tool_calls: u32,
    last_text: String,
    last_error: Option<String>,
    usage: Usage,
    /// How the run failed, once its turn ended (`Some(None)`: it succeeded).
    end: Option<Option<FailureCode>>,
}

impl StreamParser for CodexParser {
    fn line(&mut self, line: &str) -> Result<Vec<AgentEvent>, ParseError> {
        let value: Value = match serde_json::from_str(line) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                return Err(ParseError::NotJson {
                    start: one_line(line, 80),
                })
            }
        };
        Ok(match value["type"].as_str().unwrap_or_default() {
            "thread.started" => {
                self.thread = value["thread_id"].as_str().map(str::to_owned);
                Vec::new()
            }
            "item.started" => self.started(&value["item"]).into_iter().collect(),
            "item.completed" => self.completed(&value["item"]),
            "turn.completed" => self.turn_completed(&value["usage"]),
            "turn.failed" => {
                let message = value["error"]["message"].as_str().unwrap_or("turn failed");
                self.end = Some(Some(failure(message)));
                vec![self.result(AgentOutcome::Error, message.to_owned())]
            }
            "error" => {
                self.last_error = value["message"].as_str().map(str::to_owned);
                Vec::new()
            }
            _ => Vec::new(),
        })
    }

    fn failure(&self) -> Option<FailureCode> {
        self.end.unwrap_or(Some(FailureCode::AgentCrashed))
    }
}

/// Why a turn failed: Codex puts the upstream's error body in the message when the upstream
/// answered (a refusal); any other message is about reaching it (retries exhausted, stream
/// disconnected).
fn failure(message: &str) -> FailureCode {
    match serde_json::from_str::<Value>(message) {
        Ok(body) if body.get("error").is_some() => FailureCode::UpstreamRejected,
        _ => FailureCode::UpstreamUnavailable,
    }
}

impl CodexParser {
    /// The call of a tool item, once (at its start, or at its completion if it never started).
    fn started(&mut self, item: &Value) -> Option<AgentEvent> {
        let (tool, input) = call(item)?;
        let id = item["id"].as_str().unwrap_or_default().to_owned();
        if !self.started.insert(id.clone()) {
            return None;
        }
        self.tool_calls += 1;
        Some(AgentEvent::AgentToolCall {
            call_id: id,
            tool,
            input,
        })
    }

    fn completed(&mut self, item: &Value) -> Vec<AgentEvent> {
        if item["type"] == "agent_message" {
            let text = item["text"].as_str().unwrap_or_default().trim();
            if text.is_empty() {
                return Vec::new();
            }
            self.last_text = text.to_owned();
            return vec![AgentEvent::AgentText {
                text: text.to_owned(),
            }];
        }
        let Some(call) = self.started(item) else {
            // Known call items were started already; the rest (reasoning, todo lists, warnings)
            // carry no step of their own.
            return outcome(item).into_iter().collect();
        };
        std::iter::once(call).chain(outcome(item)).collect()
    }

    fn turn_completed(&mut self, usage: &Value) -> Vec<AgentEvent> {
        let tokens = |key: &str| usage[key].as_u64().unwrap_or(0);
        let cached = tokens("cached_input_tokens");
        self.usage = self.usage.add(&Usage {
            input_tokens: tokens("input_tokens").saturating_sub(cached),
            output_tokens: tokens("output_tokens"),
            cache_read_input_tokens: cached,
            cache_creation_input_tokens: tokens("cache_write_input_tokens"),
            requests: 0,
            cost_usd: 0.0,
        });
        let text = self.last_text.clone();
        self.end = Some(None);
        vec![
            AgentEvent::AgentUsage { usage: self.usage },
            self.result(AgentOutcome::Success, text),
        ]
    }

    fn result(&self, outcome: AgentOutcome, text: String) -> AgentEvent {
        let text = match (outcome, &self.last_error) {
            (AgentOutcome::Success, _) => text,
            (_, Some(stream)) if text.is_empty() => one_line(stream, OUTPUT_CHARS),
            _ => one_line(&text, OUTPUT_CHARS),
        };
        AgentEvent::AgentResult {
            outcome,
            turns: self.tool_calls.saturating_add(1),
            text,
            cli_session: self.thread.clone(),
        }
    }
}

/// The tool and one-line input of an item that is a tool call.
fn call(item: &Value) -> Option<(String, String)> {
    Some(match item["type"].as_str()? {
        "command_execution" => ("shell".to_owned(), tool_input(item)),
        "file_change" => {
            let paths: Vec<&str> = item["changes"]
                .as_array()
                .map(|changes| changes.iter().filter_map(|c| c["path"].as_str()).collect())
                .unwrap_or_default();
            ("apply_patch".to_owned(), one_line(&paths.join(" "), 160))
        }
        "mcp_tool_call" => {
            let server = item["server"].as_str().unwrap_or_default();
            let tool = item["tool"].as_str().unwrap_or_default();
            (format!("{server}.{tool}"), tool_input(&item["arguments"]))
        }
        "web_search" => ("web_search".to_owned(), tool_input(item)),
        _ => return None,
    })
}

/// The result of a completed tool item.
fn outcome(item: &Value) -> Option<AgentEvent> {
    call(item)?;
    let status = item["status"].as_str().unwrap_or_default();
    let ok = match item["exit_code"].as_i64() {
        Some(code) => code == 0,
        None => status == "completed",
    };
    let output = match &item["aggregated_output"] {
        Value::String(output) => output.clone(),
        _ => item["error"]["message"]
            .as_str()
            .unwrap_or(status)
            .to_owned(),
    };
    Some(AgentEvent::AgentToolResult {
        call_id: item["id"].as_str().unwrap_or_default().to_owned(),
        ok,
        output: tool_output(&output),
    })
}
