//! Agent adapters (issue 12): for each coding-agent CLI Conductor runs in a sandbox, the command
//! line and environment of a turn (pointed at the LLM gateway with a per-task token), the parser
//! of its JSON-lines stream into the normalized [`AgentEvent`](conductor_types::AgentEvent)s, the
//! probe that tells whether an environment has the CLI, and the redaction of the stored stream.
//! Pure: nothing here starts a process or opens a file. With the `fake` feature, [`fake`] serves
//! scripted Anthropic and OpenAI upstreams for tests.

mod adapter;
mod claude;
mod codex;
#[cfg(feature = "fake")]
pub mod fake;
mod redact;
mod summary;

pub use adapter::{
    adapter, resumable, AgentAdapter, AgentCommand, AgentContext, GatewayUrl, HomeFile, ParseError,
    RunAs, StreamParser,
};
pub use claude::ClaudeCode;
pub use codex::Codex;
pub use redact::{Redactor, REDACTED};
