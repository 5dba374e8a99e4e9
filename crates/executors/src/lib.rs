//! Executors: each turns an `ExecutionRequest` into a running, isolated process tree and an
//! `ExecutionResult`, implementing `conductor_core::Executor`.

pub mod output;
