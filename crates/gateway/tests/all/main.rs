//! conductor-gateway integration tests: the gateway served on loopback in front of scripted fake
//! upstreams (real axum servers), one module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

mod accounting;
mod budgets;
mod fake;
mod routing;
mod secrets;
mod upstream;
