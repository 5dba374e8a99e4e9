//! Schema migrations, embedded in the binary and applied in order at open. The schema version is
//! SQLite's `PRAGMA user_version`; each migration runs in its own transaction with the bump.

use sqlx::SqliteConnection;

use crate::{backend, StoreError};

/// Every migration, in order; the version after applying `MIGRATIONS[i]` is `i + 1`.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    (
        "0002_workspaces",
        include_str!("../migrations/0002_workspaces.sql"),
    ),
    (
        "0003_owners_quotas_failure_codes",
        include_str!("../migrations/0003_owners_quotas_failure_codes.sql"),
    ),
    (
        "0004_command_executor",
        include_str!("../migrations/0004_command_executor.sql"),
    ),
    ("0005_agents", include_str!("../migrations/0005_agents.sql")),
    (
        "0006_event_kinds",
        include_str!("../migrations/0006_event_kinds.sql"),
    ),
    (
        "0007_tasks_with_secrets",
        include_str!("../migrations/0007_tasks_with_secrets.sql"),
    ),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`]; refuses a database from a newer binary.
pub(crate) async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let current: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(backend("reading the schema version"))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Backend {
            context: "checking the schema version".into(),
            message: format!(
                "the database has schema version {current} but this conductor knows only up to {SCHEMA_VERSION}: use a newer conductor"
            ),
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let context = || format!("applying migration {name}");
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(backend(context()))?;
        let applied = async {
            sqlx::raw_sql(sql).execute(&mut *conn).await?;
            // PRAGMA does not take bound parameters; the version is our own integer.
            sqlx::raw_sql(&format!("PRAGMA user_version = {version}"))
                .execute(&mut *conn)
                .await?;
            sqlx::raw_sql("COMMIT").execute(&mut *conn).await
        }
        .await;
        if let Err(error) = applied {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            return Err(backend(context())(error));
        }
        tracing::info!(migration = name, version, "applied database migration");
    }
    Ok(())
}
