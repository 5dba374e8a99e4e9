//! Task secrets at rest: sealed in the database, the key in its own 0600 file, older databases
//! sealed at open, a missing or wrong key refused.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use conductor_core::Store;
use conductor_store::secrets::KEY_FILE;
use conductor_store::SqliteStore;
use conductor_types::{TaskId, Timestamp};
use sqlx::{ConnectOptions, Connection};

use super::spec;

const SECRET: &str = "hunter2-do-not-store-me";

fn database(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("conductor.db")
}

/// Every file SQLite keeps for the database, with its contents.
fn database_bytes(db: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = PathBuf::from(format!("{}{suffix}", db.display()));
            std::fs::read(&path).ok().map(|bytes| (path, bytes))
        })
        .collect()
}

fn assert_no_plaintext(db: &Path) {
    let files = database_bytes(db);
    assert!(!files.is_empty());
    for (path, bytes) in files {
        let found = bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
        assert!(!found, "{} holds the secret in plaintext", path.display());
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn secrets() -> BTreeMap<String, String> {
    BTreeMap::from([("API_TOKEN".to_owned(), SECRET.to_owned())])
}

async fn task_with_secret(store: &SqliteStore) -> TaskId {
    let id = TaskId::random();
    store
        .create_task(id, &spec(&["true"], &[]), &secrets(), Timestamp(1))
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn a_fresh_database_is_private_and_holds_no_secret_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir);
    let store = SqliteStore::open(&db).await.unwrap();
    let id = task_with_secret(&store).await;
    // While open (the WAL holds the insert) and after the close (checkpointed into the file).
    assert_no_plaintext(&db);
    for (path, _) in database_bytes(&db) {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
    assert_eq!(store.task_secrets(id).await.unwrap(), secrets());
    store.close().await;
    assert_no_plaintext(&db);
    let store = SqliteStore::open(&db).await.unwrap();
    assert_eq!(store.task_secrets(id).await.unwrap(), secrets());
    store.close().await;
}

#[tokio::test]
async fn an_older_database_is_sealed_and_restricted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir);
    // An older store: secrets as JSON, no key file, files readable by everyone.
    let store = SqliteStore::open(&db).await.unwrap();
    let id = TaskId::random();
    store
        .create_task(id, &spec(&["true"], &[]), &BTreeMap::new(), Timestamp(1))
        .await
        .unwrap();
    store.close().await;
    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
    let json = serde_json::to_string(&secrets()).unwrap();
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .connect()
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET secrets = ? WHERE id = ?")
        .bind(&json)
        .bind(id.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let found = |db: &Path| {
        database_bytes(db)
            .iter()
            .any(|(_, b)| b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()))
    };
    assert!(found(&db), "the fixture must hold the plaintext");

    let store = SqliteStore::open(&db).await.unwrap();
    assert_no_plaintext(&db);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(store.task_secrets(id).await.unwrap(), secrets());
    store.close().await;
    // Idempotent: a second open changes nothing and still opens them.
    let store = SqliteStore::open(&db).await.unwrap();
    assert_eq!(store.task_secrets(id).await.unwrap(), secrets());
    store.close().await;
    assert_no_plaintext(&db);
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir);
    let store = SqliteStore::open(&db).await.unwrap();
    let id = task_with_secret(&store).await;
    store.close().await;
    let key = dir.path().join(KEY_FILE);
    let saved = std::fs::read(&key).unwrap();

    std::fs::remove_file(&key).unwrap();
    let err = SqliteStore::open(&db).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "the secrets key {} is missing but 1 task(s) in the database have sealed secrets",
            key.display()
        )),
        "{err}"
    );
    // No new key was made over the sealed data.
    assert!(!key.exists());

    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let err = SqliteStore::open(&db).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "the secrets of task {id} do not open with the key {}",
            key.display()
        )),
        "{err}"
    );

    std::fs::write(&key, saved).unwrap();
    let store = SqliteStore::open(&db).await.unwrap();
    assert_eq!(store.task_secrets(id).await.unwrap(), secrets());
    store.close().await;
}
