//! Test doubles shared by the tests, benches and examples of several crates (a dev-dependency
//! only; nothing in a shipped binary uses it):
//!
//! - [`FakeExecutor`]: an [`Executor`](conductor_core::Executor) that runs a small script
//!   language instead of a shell (`echo`, `exit N`, `sleep MS` with timeout and cancel, …),
//!   records what it was asked and counts the calls; or refuses everything.
//! - [`HostGit`]: the git sandbox's stand-in, running a clone's git commands on the host with
//!   `/workspace` mapped to the workspace, recording each call.
//!
//! A double that cannot do what a test asked panics: that is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod executor;
mod git;

pub use executor::FakeExecutor;
pub use git::HostGit;
