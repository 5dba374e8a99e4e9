//! Integration tests of the adapters: recorded streams of the real CLIs, the fakes, and the real
//! CLIs (when installed) completing multi-turn tool-using sessions against the fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

mod claude_cli;
mod codex_cli;
mod fakes;
mod fixtures;
mod support;
