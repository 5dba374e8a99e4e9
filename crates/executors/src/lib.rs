//! Executors: each turns an `ExecutionRequest` into a running, isolated process tree and an
//! `ExecutionResult`, implementing `conductor_core::Executor`.

pub mod bridge;
pub mod conformance;
pub mod container;
pub mod environment;
pub mod host;
pub mod namespace;
pub mod output;
pub mod run;
mod warm;
