//! Secrets at rest through the whole service: a private home, sealed secrets, and an older
//! home fixed at start whose queued task still gets its secret.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conductor_core::{validate_request, Executor, Store};
use conductor_server::{ServeConfig, Server};
use conductor_store::SqliteStore;
use conductor_types::{TaskId, TaskRequest, TaskStatus, Timestamp};
use sqlx::{ConnectOptions, Connection};

use crate::support::FakeExecutor;

const SECRET: &str = "hunter2-never-on-disk";

fn config(home: &Path) -> ServeConfig {
    let mut config = ServeConfig::new(home.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The home's database files, admin token, lock and key, with their modes.
fn private_files(home: &Path) -> Vec<(PathBuf, u32)> {
    let names = [
        "conductor.db",
        "conductor.db-wal",
        "conductor.db-shm",
        "admin.token",
        "server.lock",
        "secrets.key",
    ];
    names
        .iter()
        .map(|name| home.join(name))
        .filter(|path| path.exists())
        .map(|path| {
            let mode = mode(&path);
            (path, mode)
        })
        .collect()
}

fn holds_secret(home: &Path) -> Vec<PathBuf> {
    ["conductor.db", "conductor.db-wal", "conductor.db-shm"]
        .iter()
        .map(|name| home.join(name))
        .filter(|path| {
            std::fs::read(path)
                .map(|bytes| bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn request() -> TaskRequest {
    TaskRequest {
        commands: Some(vec!["true".to_owned()]),
        secrets: Some(BTreeMap::from([(
            "API_TOKEN".to_owned(),
            SECRET.to_owned(),
        )])),
        ..TaskRequest::default()
    }
}

async fn finished(store: &SqliteStore, id: TaskId) -> TaskStatus {
    for _ in 0..200 {
        let status = store.get_task(id).await.unwrap().state.status;
        if status.is_finished() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("task {id} did not finish");
}

fn secret_given(fake: &FakeExecutor) -> bool {
    fake.requests
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.env.get("API_TOKEN").map(String::as_str) == Some(SECRET))
}

#[tokio::test]
async fn a_fresh_home_is_private_and_its_database_never_holds_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let fake = Arc::new(FakeExecutor::default());
    let executors = BTreeMap::from([("host".to_owned(), fake.clone() as Arc<dyn Executor>)]);
    let server = Server::start(config(&home), executors).await.unwrap();
    let task = validate_request(request(), &["host"]).unwrap();
    let id = TaskId::random();
    server
        .store()
        .create_task(id, &task.spec, &task.secrets, Timestamp(1))
        .await
        .unwrap();
    server.scheduler().wake();
    assert_eq!(finished(server.store(), id).await, TaskStatus::Succeeded);
    assert!(secret_given(&fake));
    assert_eq!(holds_secret(&home), Vec::<PathBuf>::new());
    assert_eq!(mode(&home), 0o700);
    let files = private_files(&home);
    assert!(files.len() >= 5, "{files:?}");
    for (path, mode) in files {
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    server.stop().await;
    assert_eq!(holds_secret(&home), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn an_older_home_is_fixed_at_start_and_its_task_runs_with_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let db = home.join("conductor.db");
    // What an older conductor left: a queued task whose secrets are plaintext JSON, no key,
    // everything readable by every local user.
    let store = SqliteStore::open(&db).await.unwrap();
    let task = validate_request(request(), &["host"]).unwrap();
    let id = TaskId::random();
    store
        .create_task(id, &task.spec, &BTreeMap::new(), Timestamp(1))
        .await
        .unwrap();
    store.close().await;
    std::fs::remove_file(home.join("secrets.key")).unwrap();
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .connect()
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET secrets = ? WHERE id = ?")
        .bind(serde_json::to_string(&task.secrets).unwrap())
        .bind(id.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    std::fs::write(home.join("admin.token"), "cdt_old_admin_token_0001\n").unwrap();
    std::fs::write(home.join("server.lock"), "").unwrap();
    for (path, _) in private_files(&home) {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(holds_secret(&home), vec![db.clone()]);

    let fake = Arc::new(FakeExecutor::default());
    let executors = BTreeMap::from([("host".to_owned(), fake.clone() as Arc<dyn Executor>)]);
    let server = Server::start(config(&home), executors).await.unwrap();
    assert_eq!(holds_secret(&home), Vec::<PathBuf>::new());
    assert_eq!(mode(&home), 0o700);
    for (path, mode) in private_files(&home) {
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    server.scheduler().wake();
    assert_eq!(finished(server.store(), id).await, TaskStatus::Succeeded);
    assert!(secret_given(&fake), "the task ran without its secret");
    server.stop().await;
}
