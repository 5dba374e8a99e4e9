//! conductor-server integration tests: the HTTP API through `app().oneshot()`, and the scheduler
//! against a scripted fake executor and a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

mod api;
mod contract;
mod deep;
mod environments;
mod feed;
mod files;
mod git;
mod quota;
mod scheduler;
mod secrets;
mod serve;
mod support;
mod workspaces;
