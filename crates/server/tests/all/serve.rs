//! Starting and stopping the whole service on a home directory.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use conductor_core::{Executor, Store};
use conductor_server::{ServeConfig, ServeError, Server};

use crate::support::FakeExecutor;

fn config(home: &std::path::Path) -> ServeConfig {
    let mut config = ServeConfig::new(home.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config
}

fn executors() -> BTreeMap<String, Arc<dyn Executor>> {
    BTreeMap::from([(
        "host".to_owned(),
        Arc::new(FakeExecutor::default()) as Arc<dyn Executor>,
    )])
}

#[tokio::test]
async fn one_server_per_home_and_the_admin_token_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let first = Server::start(config(&home), executors()).await.unwrap();
    let token_path = first.admin_token_path().to_owned();
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert!(token.starts_with("cdt_"));
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let home_mode = std::fs::metadata(&home).unwrap().permissions().mode();
    assert_eq!(home_mode & 0o777, 0o700);

    let second = Server::start(config(&home), executors()).await;
    assert!(
        matches!(second, Err(ServeError::HomeInUse { .. })),
        "{second:?}"
    );
    first.stop().await;

    let again = Server::start(config(&home), executors()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&token_path).unwrap(), token);
    again.stop().await;
}

#[tokio::test]
async fn a_configured_admin_token_is_used_and_written_for_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.admin_token = Some("cdt_configured_admin_token_0001".into());
    let server = Server::start(config, executors()).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(server.admin_token_path()).unwrap(),
        "cdt_configured_admin_token_0001\n"
    );
    server.stop().await;
}

/// Each agent has a token of its own: not an admin, its secret in `agents/<id>.token` (0600),
/// listed by id with the agent, kept across restarts while valid and replaced once revoked.
#[tokio::test]
async fn agents_have_their_own_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let server = Server::start(config(&home), executors()).await.unwrap();
    let agents = server.scheduler().slots();
    assert_eq!(agents.len(), 2);
    let store = server.store();
    let mut ids = Vec::new();
    for agent in &agents {
        let path = conductor_server::auth::slot_token_path(&home, &agent.id);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        let secret = std::fs::read_to_string(&path).unwrap();
        let info = store
            .token_by_hash(&conductor_server::auth::hash_token(secret.trim()))
            .await
            .unwrap()
            .unwrap();
        assert!(!info.admin && info.revoked_at.is_none());
        assert_eq!(agent.token_id.as_deref(), Some(info.id.as_str()));
        ids.push(info.id);
    }
    assert_ne!(ids[0], ids[1]);
    // Revoke agent-1's token: the next start replaces it and keeps agent-2's.
    store
        .revoke_token(&ids[0], conductor_types::Timestamp::now())
        .await
        .unwrap();
    server.stop().await;
    let again = Server::start(config(&home), executors()).await.unwrap();
    let now: Vec<_> = again
        .scheduler()
        .slots()
        .into_iter()
        .map(|a| a.token_id.unwrap())
        .collect();
    assert_ne!(now[0], ids[0]);
    assert_eq!(now[1], ids[1]);
    again.stop().await;
}
