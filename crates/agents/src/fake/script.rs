//! What a fake upstream says: a list of assistant turns, played in order, one per conversation
//! request.

use serde_json::Value;

/// One block of an assistant turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Text.
    Text(String),
    /// A tool call: the tool's name as the CLI declared it and its input.
    Tool {
        /// Tool name (`Write`, `Bash`, Codex's `shell`, …).
        name: String,
        /// Its input (arguments) object.
        input: Value,
    },
}

/// Token numbers a turn reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TurnUsage {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the cache.
    pub cache_read: u64,
    /// Input tokens written to the cache.
    pub cache_write: u64,
}

/// One assistant message.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Its blocks, in order.
    pub blocks: Vec<Block>,
    /// What it reports having used.
    pub usage: TurnUsage,
    /// Instead of the message, an error answer (a 429 or 529 to retry, a 4xx refusal).
    pub failure: Option<Failure>,
}

/// An error a turn answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status.
    pub status: u16,
    /// The `retry-after` header, in seconds.
    pub retry_after: Option<u32>,
}

impl Turn {
    /// A turn that only says `text` (ends the agent's run).
    pub fn text(text: &str) -> Self {
        Self {
            blocks: vec![Block::Text(text.to_owned())],
            usage: TurnUsage::default(),
            failure: None,
        }
    }

    /// A turn that calls tool `name` with `input`.
    pub fn tool(name: &str, input: Value) -> Self {
        Self {
            blocks: vec![Block::Tool {
                name: name.to_owned(),
                input,
            }],
            usage: TurnUsage::default(),
            failure: None,
        }
    }

    /// A turn that answers HTTP `status` (with `retry-after` when given) instead of a message; a
    /// client's retry gets the next turn.
    pub fn failing(status: u16, retry_after: Option<u32>) -> Self {
        Self {
            blocks: Vec::new(),
            usage: TurnUsage::default(),
            failure: Some(Failure {
                status,
                retry_after,
            }),
        }
    }

    /// This turn with `text` before its blocks.
    pub fn saying(mut self, text: &str) -> Self {
        self.blocks.insert(0, Block::Text(text.to_owned()));
        self
    }

    /// This turn reporting `input` and `output` tokens (and no cache use).
    pub fn tokens(mut self, input: u64, output: u64) -> Self {
        self.usage.input = input;
        self.usage.output = output;
        self
    }

    /// This turn reporting cache reads and writes.
    pub fn cache(mut self, read: u64, write: u64) -> Self {
        self.usage.cache_read = read;
        self.usage.cache_write = write;
        self
    }

    /// Whether the turn calls a tool (so the agent will send another request).
    pub fn calls_tools(&self) -> bool {
        self.blocks.iter().any(|b| matches!(b, Block::Tool { .. }))
    }
}

/// The turns a fake plays, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Script {
    /// The turns.
    pub turns: Vec<Turn>,
}

impl Script {
    /// A script of `turns`.
    pub fn new(turns: impl IntoIterator<Item = Turn>) -> Self {
        Self {
            turns: turns.into_iter().collect(),
        }
    }
}
