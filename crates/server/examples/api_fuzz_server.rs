//! The HTTP API over a real SQLite store and workspace root, for fuzzing from the outside
//! (`scripts/api-fuzz`): tasks are accepted, stored, listed, cancelled and deleted, but nothing
//! ever runs them. There is no dispatch loop and the only executor refuses to execute, so random
//! requests never build an environment, clone a repository or start a process on the host.
//!
//! `api_fuzz_server HOME`: listens on 127.0.0.1 (a free port), writes `HOME/admin.token` and
//! `HOME/user.token` (a non-admin token), prints `listening on http://ADDR` and serves until
//! killed.
#![allow(clippy::print_stdout)] // the script reads the address from stdout

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use conductor_core::{Executor, Store};
use conductor_server::{app, auth, AppState, EventBus, Scheduler, SchedulerConfig};
use conductor_testkit::FakeExecutor;
use conductor_types::Capability;

/// Declares every limit (so the server's defaults apply as on a real sandbox) and runs nothing.
fn refuses() -> Arc<dyn Executor> {
    Arc::new(
        FakeExecutor::new(
            "refuses",
            [
                Capability::CpuLimit,
                Capability::MemoryLimit,
                Capability::PidsLimit,
                Capability::NetworkNone,
                Capability::NetworkLocalhost,
            ],
        )
        .refusing("anything (this server is for API fuzzing)"),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let home = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: api_fuzz_server HOME")?,
    );
    std::fs::create_dir_all(home.join("workspaces"))?;
    let store = conductor_store::SqliteStore::open(&home.join("conductor.db")).await?;
    let admin = auth::create_token(&store, "fuzz-admin", true).await?;
    let user = auth::create_token(&store, "fuzz-user", false).await?;
    std::fs::write(home.join("admin.token"), &admin.token)?;
    std::fs::write(home.join("user.token"), &user.token)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let executors: BTreeMap<String, Arc<dyn Executor>> =
        BTreeMap::from([("host".to_owned(), refuses())]);
    let config = SchedulerConfig::new(home.join("workspaces"));
    let scheduler = Scheduler::new(store, executors, config, EventBus::default());
    let router = app(AppState::new(
        scheduler,
        conductor_server::DEFAULT_BODY_LIMIT,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
