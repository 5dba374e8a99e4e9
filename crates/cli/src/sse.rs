//! Following a task's event stream (`GET /api/v1/tasks/{id}/events`, SSE) from the client
//! commands: each complete `data:` block decoded into a [`TaskEvent`], in order.

use anyhow::Context;
use conductor_types::{TaskEvent, TaskId};
use reqwest::Method;

use crate::client::Client;

/// Calls `on_event` with every event of task `id` until the server ends the stream (the task
/// finished). Blocks that do not decode as an event (comments, keep-alives) are skipped.
pub async fn follow(
    client: &Client,
    id: TaskId,
    mut on_event: impl FnMut(TaskEvent) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/tasks/{id}/events");
    let mut response = client.send(client.request(Method::GET, &path)).await?;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.context("reading events")? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = find_blank_line(&pending) {
            let block: Vec<u8> = pending.drain(..end).collect();
            if let Some(event) = decode(&String::from_utf8_lossy(&block)) {
                on_event(event)?;
            }
        }
    }
    Ok(())
}

/// The event in one SSE block, if it holds one.
fn decode(block: &str) -> Option<TaskEvent> {
    let data: String = block
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data).ok()
}

/// The end (past the blank line) of the first complete SSE block.
fn find_blank_line(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| at + 2)
}

#[cfg(test)]
mod tests {
    use conductor_types::{AgentEvent, TaskEventKind};

    use super::*;

    #[test]
    fn blocks_decode_into_events_and_the_rest_is_skipped() {
        let block = "id: 7\nevent: agent_text\ndata: {\"id\":7,\"task_id\":\"67e55044-10b1-426f-9247-bb680e5fe0c8\",\"at\":\"2026-12-07T00:00:00.000Z\",\"type\":\"agent_text\",\"text\":\"hi\"}\n\n";
        let event = decode(block).unwrap();
        assert_eq!(
            event.kind,
            TaskEventKind::Agent(AgentEvent::AgentText { text: "hi".into() })
        );
        assert_eq!(decode(": keep-alive\n\n"), None);
        assert_eq!(find_blank_line(b"data: x\n\nrest"), Some(9));
        assert_eq!(find_blank_line(b"data: x\n"), None);
    }
}
