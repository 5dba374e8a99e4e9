//! Fake model upstreams for tests (feature `fake`): an Anthropic Messages API and an OpenAI
//! Responses API on `127.0.0.1:0` that play a [`Script`] of assistant turns — text and tool calls
//! with usage numbers — and record every request they get, so a test can check what a real agent
//! CLI sent (the earlier messages on a resumed turn, nothing past a budget). Requests that are not
//! part of the conversation (a CLI's title, topic or quota calls on a small model, token counts,
//! telemetry) are answered without consuming the script.

mod anthropic;
mod openai;
mod script;
mod server;

pub use anthropic::AnthropicFake;
pub use openai::OpenAiFake;
pub use script::{Block, Failure, Script, Turn, TurnUsage};
pub use server::{FakeError, FakeServer, Recorded, RequestKind};
