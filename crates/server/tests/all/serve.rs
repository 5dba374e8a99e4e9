//! Starting and stopping the whole service on a home directory.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use conductor_core::Executor;
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
