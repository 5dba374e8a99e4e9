//! Durable storage for Conductor: [`SqliteStore`], the SQLite implementation of
//! [`conductor_core::Store`].
//!
//! One file (`conductor.db`) in WAL mode. Writes go through exactly one connection, held under an
//! async mutex, so every read-modify-write (a state transition) is serialised without
//! `SQLITE_BUSY` retries; reads use a separate read-only pool and never wait for writers. Each
//! statement is a round trip to the connection's thread, so the hot paths send a transaction's
//! statements that need nothing from Rust in between as one batch, and no connection is pinged
//! before use (an in-process SQLite connection cannot have hung up). Migrations are embedded and
//! applied at open. `synchronous = NORMAL`: a committed write survives a crash of the process
//! (kill -9); a power loss may drop the last transactions.
//!
//! The database and its `-wal`/`-shm` files are 0600, deleted content is zeroed
//! (`secure_delete`), and task secrets are sealed under a key kept outside the database (see
//! [`secrets`]).

mod agents;
mod migrate;
mod rows;
pub mod secrets;
mod token_cache;

use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conductor_core::{apply, Candidate, Store, StoreError, TaskQuery, Transition, TransitionError};
use conductor_types::{
    CommandResult, EventId, LlmRequest, Session, SessionId, Slot, Task, TaskEvent, TaskEventKind,
    TaskId, TaskPage, TaskSpec, TaskState, TaskStatus, Timestamp, TokenInfo, Usage, Workspace,
    WorkspaceId,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

pub use migrate::SCHEMA_VERSION;
use secrets::{KeyFile, KeySource, Sealer, SecretsError};
pub use token_cache::{TOKEN_CACHE_ENTRIES, TOKEN_CACHE_TTL};

/// Most tasks one page of `list_tasks` returns.
pub const MAX_PAGE: u32 = 500;

const WORKSPACE_COLUMNS: &str =
    "id, name, cleanup, created_at, last_used_at, size_bytes, owner, disk_bytes";

// `agent_id` is the slot (`TaskState::slot_id`): columns and the `agents` table kept their names.
const TASK_COLUMNS: &str = "seq, id, status, status_reason, failure_code, attempt, agent_id, \
     exit_code, spec, queued_at, started_at, finished_at";

/// Conductor's state in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The one write connection (see the module docs); `None` once closed.
    writer: Arc<Mutex<Option<SqliteConnection>>>,
    reader: SqlitePool,
    /// Tokens verified recently (`token_by_hash` runs on every request).
    tokens: Arc<token_cache::TokenCache>,
    /// Seals task secrets before they are written and opens them when a task starts.
    sealer: Sealer,
}

fn backend<C: Into<String>>(context: C) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| StoreError::Backend {
        context: context.into(),
        message: error.to_string(),
    }
}

fn corrupt(context: impl Into<String>, message: impl ToString) -> StoreError {
    StoreError::Corrupt {
        context: context.into(),
        message: message.to_string(),
    }
}

fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("encoding {what}"), e))
}

fn ms(at: Timestamp) -> i64 {
    i64::try_from(at.millis()).unwrap_or(i64::MAX)
}

fn sealing(error: SecretsError) -> StoreError {
    StoreError::Backend {
        context: "handling task secrets".to_owned(),
        message: error.to_string(),
    }
}

/// The database's file and SQLite's companions to it.
fn database_files(path: &Path) -> [std::path::PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

/// Creates the database file 0600 when it is missing (SQLite gives its `-wal` and `-shm` the
/// database's mode) and takes group and other access away from existing ones.
fn restrict_database_files(path: &Path) -> Result<(), StoreError> {
    let io_error = |action: &str, file: &Path, e: std::io::Error| StoreError::Backend {
        context: format!("{action} {}", file.display()),
        message: e.to_string(),
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error("creating", path, e))?;
    for file in database_files(path) {
        let mode = match std::fs::metadata(&file) {
            Ok(meta) => meta.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("reading", &file, e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(|e| io_error("restricting", &file, e))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations, and seals
    /// task secrets with the key in [`secrets::KEY_FILE`] beside it (created on first open).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_key(path, &KeyFile::beside(path)).await
    }

    /// [`open`](Self::open) with the secrets key from `keys`. The key must open the secrets
    /// already sealed; secrets an older store kept in plaintext are sealed now, in one
    /// transaction.
    pub async fn open_with_key(path: &Path, keys: &dyn KeySource) -> Result<Self, StoreError> {
        restrict_database_files(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Deleted and overwritten content (such as secrets sealed in place) is zeroed.
            .pragma("secure_delete", "on")
            .busy_timeout(Duration::from_secs(10));
        let opening = format!("opening {}", path.display());
        let mut writer = options.connect().await.map_err(backend(opening.clone()))?;
        migrate::migrate(&mut writer).await?;
        let sealer = prepare_secrets(&mut writer, keys).await?;
        restrict_database_files(path)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            // A ping is one more round trip to the connection's thread per query.
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await
            .map_err(backend(opening))?;
        Ok(Self {
            writer: Arc::new(Mutex::new(Some(writer))),
            reader,
            tokens: Arc::default(),
            sealer,
        })
    }

    /// Closes the read pool and the write connection, waiting for queries in flight.
    pub async fn close(&self) {
        self.reader.close().await;
        if let Some(writer) = self.writer.lock().await.take() {
            if let Err(error) = writer.close().await {
                tracing::warn!(%error, "closing the database");
            }
        }
    }

    /// The write connection, for as long as the guard lives.
    async fn writer(&self) -> Result<MappedMutexGuard<'_, SqliteConnection>, StoreError> {
        MutexGuard::try_map(self.writer.lock().await, Option::as_mut).map_err(|_| {
            StoreError::Backend {
                context: "writing".to_owned(),
                message: "the database is closed".to_owned(),
            }
        })
    }

    /// What the secrets column holds for `secrets` of task `id`: sealed, or `{}` for none.
    fn stored_secrets(
        &self,
        id: TaskId,
        secrets: &BTreeMap<String, String>,
    ) -> Result<String, StoreError> {
        let json = to_json("secrets", secrets)?;
        if secrets.is_empty() {
            return Ok(json);
        }
        self.sealer.seal(&id.to_string(), &json).map_err(sealing)
    }

    async fn results_of(&self, id: TaskId, attempt: u32) -> Result<Vec<CommandResult>, StoreError> {
        let rows = sqlx::query(
            "SELECT idx, attempt, command, exit_code, signal, timed_out, oom_killed, error, stats, \
             started_at, finished_at, executor FROM command_results WHERE task_id = ? AND attempt = ? \
             ORDER BY idx",
        )
        .bind(id.to_string())
        .bind(attempt)
        .fetch_all(&self.reader)
        .await
        .map_err(backend("reading command results"))?;
        rows.iter().map(rows::command_result).collect()
    }

    async fn with_results(
        &self,
        (state_id, spec, state): rows::TaskRow,
    ) -> Result<Task, StoreError> {
        let results = self.results_of(state_id, state.attempt).await?;
        let usage = match spec.agent {
            Some(_) => self.usage_column(state_id).await?,
            None => None,
        };
        Ok(Task {
            id: state_id,
            state,
            spec,
            results,
            usage,
        })
    }
}

async fn insert_event(
    conn: &mut SqliteConnection,
    id: TaskId,
    at: Timestamp,
    kind: &TaskEventKind,
) -> Result<EventId, StoreError> {
    let body = to_json("an event", kind)?;
    let row = sqlx::query("INSERT INTO events (task_id, at, body) VALUES (?, ?, ?) RETURNING id")
        .bind(id.to_string())
        .bind(ms(at))
        .bind(body)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend("appending an event"))?;
    row.try_get::<i64, _>("id")
        .map_err(backend("reading an event id"))
}

async fn load_task_row(
    conn: &mut SqliteConnection,
    id: TaskId,
) -> Result<rows::TaskRow, StoreError> {
    let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend("reading a task"))?
        .ok_or(StoreError::TaskNotFound(id))?;
    rows::task(&row).map(|(_, row)| row)
}

/// Applies `transition` to the task inside `conn`'s transaction: read, [`apply`], update, and
/// the `state` event. Returns the task's spec and new state.
async fn transition_in(
    conn: &mut SqliteConnection,
    id: TaskId,
    transition: &Transition,
) -> Result<(TaskSpec, TaskState), StoreError> {
    let (_, spec, state) = load_task_row(&mut *conn, id).await?;
    let next = apply(&state, transition, spec.retries)?;
    let at = match transition {
        Transition::Start { at, .. }
        | Transition::Finish { at, .. }
        | Transition::Cancel { at }
        | Transition::Interrupt { at, .. }
        | Transition::Retry { at } => *at,
    };
    // The update and its `state` event in one request to the connection's thread.
    sqlx::query(
        "UPDATE tasks SET status = ?1, status_reason = ?2, failure_code = ?3, attempt = ?4, \
             agent_id = ?5, exit_code = ?6, started_at = ?7, finished_at = ?8 WHERE id = ?9; \
         INSERT INTO events (task_id, at, body) VALUES (?9, ?10, ?11)",
    )
    .bind(next.status.as_str())
    .bind(next.status_reason.as_deref())
    .bind(next.failure_code.map(|code| code.as_str()))
    .bind(next.attempt)
    .bind(next.slot_id.as_deref())
    .bind(next.exit_code)
    .bind(next.started_at.map(ms))
    .bind(next.finished_at.map(ms))
    .bind(id.to_string())
    .bind(ms(at))
    .bind(to_json("an event", &state_event(&next))?)
    .execute(&mut *conn)
    .await
    .map_err(backend("updating a task's state"))?;
    Ok((spec, next))
}

/// Inserts (or replaces) a command's result and its `command_finished` event inside `conn`'s
/// transaction; returns the event's id.
async fn insert_result(
    conn: &mut SqliteConnection,
    id: TaskId,
    result: &CommandResult,
) -> Result<EventId, StoreError> {
    let finished = TaskEventKind::CommandFinished {
        index: result.index,
        exit_code: result.exit_code,
    };
    // The result and its event in one request to the connection's thread.
    let row = sqlx::query(
        "INSERT OR REPLACE INTO command_results (task_id, attempt, idx, command, exit_code, \
             signal, timed_out, oom_killed, error, stats, started_at, finished_at, executor) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13); \
         INSERT INTO events (task_id, at, body) VALUES (?1, ?12, ?14) RETURNING id",
    )
    .bind(id.to_string())
    .bind(result.attempt)
    .bind(result.index)
    .bind(&result.command)
    .bind(result.exit_code)
    .bind(result.signal)
    .bind(result.timed_out)
    .bind(result.oom_killed)
    .bind(result.error.as_deref())
    .bind(to_json("stats", &result.stats)?)
    .bind(ms(result.started_at))
    .bind(ms(result.finished_at))
    .bind(result.executor.as_deref())
    .bind(to_json("an event", &finished)?)
    .fetch_one(&mut *conn)
    .await
    .map_err(backend("recording a command result"))?;
    row.try_get::<i64, _>("id")
        .map_err(backend("reading an event id"))
}

fn state_event(state: &TaskState) -> TaskEventKind {
    TaskEventKind::State {
        status: state.status,
        attempt: state.attempt,
        reason: state.status_reason.clone(),
    }
}

/// The sealer for this database: the key from `keys` (a new one only while nothing is sealed),
/// checked against a sealed value, then every plaintext value sealed. Each read visits only the
/// tasks with secrets (`secrets <> '{}'`: the partial index `tasks_with_secrets`), never every
/// row.
async fn prepare_secrets(
    conn: &mut SqliteConnection,
    keys: &dyn KeySource,
) -> Result<Sealer, StoreError> {
    let sealed = format!("{}%", secrets::SEALED_PREFIX);
    let key = match keys.load().map_err(sealing)? {
        Some(key) => key,
        None => {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM tasks WHERE secrets <> '{}' AND secrets LIKE ?",
            )
            .bind(&sealed)
            .fetch_one(&mut *conn)
            .await
            .map_err(backend("counting sealed secrets"))?;
            if count > 0 {
                return Err(sealing(SecretsError::KeyMissing {
                    path: keys.location(),
                    count,
                }));
            }
            keys.create().map_err(sealing)?
        }
    };
    let sealer = Sealer::new(&key, keys.location());
    let sample: Option<(String, String)> = sqlx::query_as(
        "SELECT id, secrets FROM tasks WHERE secrets <> '{}' AND secrets LIKE ? LIMIT 1",
    )
    .bind(&sealed)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend("reading sealed secrets"))?;
    if let Some((id, stored)) = sample {
        sealer.open(&id, &stored).map_err(sealing)?;
    }
    seal_plaintext(conn, &sealer).await?;
    Ok(sealer)
}

/// Seals the secrets an older store kept in plaintext, in one transaction; then checkpoints so
/// the write-ahead log keeps no page that held them.
async fn seal_plaintext(conn: &mut SqliteConnection, sealer: &Sealer) -> Result<(), StoreError> {
    let mut tx = conn
        .begin()
        .await
        .map_err(backend("starting a transaction"))?;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, secrets FROM tasks WHERE secrets <> '{}' AND secrets LIKE '{%'")
            .fetch_all(&mut *tx)
            .await
            .map_err(backend("reading plaintext secrets"))?;
    let mut count = 0;
    for (id, stored) in rows.iter().filter(|(_, s)| secrets::is_plaintext(s)) {
        let value = sealer.seal(id, stored).map_err(sealing)?;
        sqlx::query("UPDATE tasks SET secrets = ? WHERE id = ?")
            .bind(value)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend("sealing plaintext secrets"))?;
        count += 1;
    }
    tx.commit()
        .await
        .map_err(backend("committing sealed secrets"))?;
    if count > 0 {
        sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *conn)
            .await
            .map_err(backend("checkpointing after sealing secrets"))?;
        tracing::info!(tasks = count, "sealed task secrets stored in plaintext");
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(backend("pinging the database"))?;
        Ok(())
    }

    async fn create_task(
        &self,
        id: TaskId,
        spec: &TaskSpec,
        secrets: &BTreeMap<String, String>,
        at: Timestamp,
    ) -> Result<Task, StoreError> {
        let state = TaskState::queued(at);
        let mut writer = self.writer().await?;
        let mut tx = writer
            .begin()
            .await
            .map_err(backend("starting a transaction"))?;
        // The task and its `queued` event in one request to the connection's thread.
        sqlx::query(
            "INSERT INTO tasks (id, status, attempt, priority, spec, secrets, queued_at) \
             VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6); \
             INSERT INTO events (task_id, at, body) VALUES (?1, ?6, ?7)",
        )
        .bind(id.to_string())
        .bind(state.status.as_str())
        .bind(spec.priority)
        .bind(to_json("a task spec", spec)?)
        .bind(self.stored_secrets(id, secrets)?)
        .bind(ms(at))
        .bind(to_json("an event", &state_event(&state))?)
        .execute(&mut *tx)
        .await
        .map_err(backend("inserting a task"))?;
        tx.commit()
            .await
            .map_err(backend("committing a new task"))?;
        Ok(Task {
            id,
            state,
            spec: spec.clone(),
            results: Vec::new(),
            usage: None,
        })
    }

    async fn get_task(&self, id: TaskId) -> Result<Task, StoreError> {
        let mut conn = self
            .reader
            .acquire()
            .await
            .map_err(backend("acquiring a connection"))?;
        let row = load_task_row(&mut conn, id).await?;
        drop(conn);
        self.with_results(row).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let cursor = match &query.cursor {
            Some(text) => Some(
                text.parse::<i64>()
                    .ok()
                    .filter(|seq| *seq > 0)
                    .ok_or_else(|| StoreError::InvalidCursor(text.clone()))?,
            ),
            None => None,
        };
        let limit = query.limit.clamp(1, MAX_PAGE);
        let (label_path, label_value) = match &query.label {
            // Label keys are validated to [A-Za-z0-9._/-], so they need no escaping in a path.
            Some((key, value)) => (Some(format!("$.labels.\"{key}\"")), value.clone()),
            None => (None, None),
        };
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks \
             WHERE (?1 IS NULL OR status = ?1) \
               AND (?2 IS NULL OR json_extract(spec, ?2) IS NOT NULL) \
               AND (?3 IS NULL OR json_extract(spec, ?2) = ?3) \
               AND (?4 IS NULL OR seq < ?4) \
             ORDER BY seq DESC LIMIT ?5"
        ))
        .bind(query.status.map(TaskStatus::as_str))
        .bind(label_path)
        .bind(label_value)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(backend("listing tasks"))?;
        let mut next_cursor = None;
        let mut tasks = Vec::with_capacity(rows.len().min(limit as usize));
        for (n, row) in rows.iter().enumerate() {
            let (seq, task_row) = rows::task(row)?;
            if n == limit as usize {
                break;
            }
            if n + 1 == limit as usize && rows.len() > limit as usize {
                next_cursor = Some(seq.to_string());
            }
            tasks.push(self.with_results(task_row).await?);
        }
        Ok(TaskPage { tasks, next_cursor })
    }

    async fn delete_task(&self, id: TaskId) -> Result<(), StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = writer
            .begin()
            .await
            .map_err(backend("starting a transaction"))?;
        let (_, _, state) = load_task_row(&mut tx, id).await?;
        if !state.status.is_finished() {
            return Err(StoreError::NotFinished {
                id,
                status: state.status,
            });
        }
        for table in ["events", "command_results", "tasks"] {
            let column = if table == "tasks" { "id" } else { "task_id" };
            sqlx::query(&format!("DELETE FROM {table} WHERE {column} = ?"))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend(format!("deleting from {table}")))?;
        }
        tx.commit().await.map_err(backend("committing a delete"))?;
        Ok(())
    }

    async fn transition(&self, id: TaskId, transition: Transition) -> Result<Task, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = writer
            .begin()
            .await
            .map_err(backend("starting a transaction"))?;
        let (spec, next) = transition_in(&mut tx, id, &transition).await?;
        tx.commit()
            .await
            .map_err(backend("committing a state change"))?;
        if matches!(transition, Transition::Start { .. }) {
            // A new attempt has no results yet: skip the read on the dispatch path.
            return Ok(Task {
                id,
                state: next,
                spec,
                results: Vec::new(),
                usage: None,
            });
        }
        self.with_results((id, spec, next)).await
    }

    async fn start_known(
        &self,
        task: &Task,
        slot_id: &str,
        at: Timestamp,
    ) -> Result<Option<Task>, StoreError> {
        let start = Transition::Start {
            slot_id: slot_id.to_owned(),
            at,
        };
        let Ok(next) = apply(&task.state, &start, task.spec.retries) else {
            return Ok(None);
        };
        // Start sets every state column from the attempt alone, so with the row still queued at
        // that attempt this writes what `transition` would, and the event only if the update
        // did: no read of the row and its spec first.
        let mut writer = self.writer().await?;
        let mut tx = writer
            .begin()
            .await
            .map_err(backend("starting a transaction"))?;
        let event = sqlx::query(
            "UPDATE tasks SET status = ?1, status_reason = NULL, failure_code = NULL, \
                 attempt = ?2, agent_id = ?3, exit_code = NULL, started_at = ?4, \
                 finished_at = NULL WHERE id = ?5 AND status = 'queued' AND attempt = ?6; \
             INSERT INTO events (task_id, at, body) SELECT ?5, ?4, ?7 WHERE changes() = 1 \
                 RETURNING id",
        )
        .bind(next.status.as_str())
        .bind(next.attempt)
        .bind(next.slot_id.as_deref())
        .bind(ms(at))
        .bind(task.id.to_string())
        .bind(task.state.attempt)
        .bind(to_json("an event", &state_event(&next))?)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend("starting a task"))?;
        // Nothing was written when the row was not as held (the transaction ends either way).
        tx.commit()
            .await
            .map_err(backend("committing a state change"))?;
        Ok(event.map(|_| Task {
            id: task.id,
            state: next,
            spec: task.spec.clone(),
            results: Vec::new(),
            usage: task.usage,
        }))
    }

    async fn task_secrets(&self, id: TaskId) -> Result<BTreeMap<String, String>, StoreError> {
        let text: String = sqlx::query_scalar("SELECT secrets FROM tasks WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend("reading secrets"))?
            .ok_or(StoreError::TaskNotFound(id))?;
        let json = self.sealer.open(&id.to_string(), &text).map_err(sealing)?;
        serde_json::from_str(&json).map_err(|e| corrupt("secrets", e))
    }

    async fn queued_tasks(&self, limit: u32) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'queued' \
             ORDER BY priority DESC, queued_at, seq LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(backend("reading the queue"))?;
        rows.iter()
            .map(|row| {
                rows::task(row).map(|(_, (id, spec, state))| Task {
                    id,
                    state,
                    spec,
                    results: Vec::new(),
                    usage: None,
                })
            })
            .collect()
    }

    async fn queued_candidates(&self, limit: u32) -> Result<Vec<Candidate>, StoreError> {
        // SQLite reads the few fields out of the spec's JSON: no spec crosses to Rust, none is
        // decoded (a queue of tasks is read on every wake-up of the dispatcher).
        let rows = sqlx::query(
            "SELECT id, priority, queued_at, \
             CAST(json_extract(spec, '$.resources.cpus') AS REAL) AS cpus, \
             CAST(json_extract(spec, '$.resources.memory') AS INTEGER) AS memory, \
             json_extract(spec, '$.workspace') AS workspace \
             FROM tasks WHERE status = 'queued' ORDER BY priority DESC, queued_at, seq LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(backend("reading the queue"))?;
        rows.iter().map(rows::candidate).collect()
    }

    async fn task_ids_with_status(&self, status: TaskStatus) -> Result<Vec<TaskId>, StoreError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM tasks WHERE status = ? ORDER BY seq")
                .bind(status.as_str())
                .fetch_all(&self.reader)
                .await
                .map_err(backend("reading task ids"))?;
        ids.iter()
            .map(|id| TaskId::from_str(id).map_err(|e| corrupt("a task id", e)))
            .collect()
    }

    async fn count_by_status(&self) -> Result<BTreeMap<TaskStatus, u64>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status")
            .fetch_all(&self.reader)
            .await
            .map_err(backend("counting tasks"))?;
        let mut counts: BTreeMap<TaskStatus, u64> =
            TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in rows {
            let status: String = row.try_get("status").map_err(backend("reading counts"))?;
            let n: i64 = row.try_get("n").map_err(backend("reading counts"))?;
            let status = status.parse().map_err(|e| corrupt("a task status", e))?;
            counts.insert(status, n.max(0) as u64);
        }
        Ok(counts)
    }

    async fn append_event(
        &self,
        id: TaskId,
        at: Timestamp,
        kind: &TaskEventKind,
    ) -> Result<EventId, StoreError> {
        let mut writer = self.writer().await?;
        insert_event(&mut writer, id, at, kind).await
    }

    async fn events(
        &self,
        id: TaskId,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, body FROM events WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(id.to_string())
        .bind(after.unwrap_or(0))
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(backend("reading events"))?;
        rows.iter().map(|row| rows::event(id, row)).collect()
    }

    async fn state_events(&self, after: EventId, limit: u32) -> Result<Vec<TaskEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, task_id, at, body FROM events WHERE kind = 'state' AND id > ? \
             ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(backend("reading state events"))?;
        rows.iter().map(rows::any_event).collect()
    }

    async fn last_event_id(&self) -> Result<EventId, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&self.reader)
            .await
            .map_err(backend("reading the last event id"))
    }

    async fn record_result(
        &self,
        id: TaskId,
        result: &CommandResult,
    ) -> Result<EventId, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = writer
            .begin()
            .await
            .map_err(backend("starting a transaction"))?;
        let event = insert_result(&mut tx, id, result).await?;
        tx.commit()
            .await
            .map_err(backend("committing a command result"))?;
        Ok(event)
    }

    async fn record_result_and_finish(
        &self,
        id: TaskId,
        result: &CommandResult,
        finish: Transition,
    ) -> Result<Result<TaskState, TransitionError>, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = writer
            .begin()
            .await
            .map_err(backend("starting a transaction"))?;
        insert_result(&mut tx, id, result).await?;
        // `apply` refuses before anything of the transition is written: the result stands.
        let finished = match transition_in(&mut tx, id, &finish).await {
            Ok((_, state)) => Ok(state),
            Err(StoreError::Transition(refused)) => Err(refused),
            Err(other) => return Err(other),
        };
        tx.commit()
            .await
            .map_err(backend("committing a command result and the task's end"))?;
        Ok(finished)
    }

    async fn put_slot(&self, slot: &Slot) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agents (id, state, task_id, workspace_root, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
             task_id = excluded.task_id, workspace_root = excluded.workspace_root, \
             updated_at = excluded.updated_at",
        )
        .bind(&slot.id)
        .bind(slot.state.as_str())
        .bind(slot.task_id.map(|id| id.to_string()))
        .bind(&slot.workspace_root)
        .bind(ms(slot.updated_at))
        .execute(&mut *self.writer().await?)
        .await
        .map_err(backend("saving a slot"))?;
        Ok(())
    }

    async fn slots(&self) -> Result<Vec<Slot>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, state, task_id, workspace_root, updated_at FROM agents ORDER BY id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(backend("listing slots"))?;
        rows.iter().map(rows::slot).collect()
    }

    async fn create_token(&self, info: &TokenInfo, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, name, hash, admin, created_at, revoked_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&info.id)
        .bind(&info.name)
        .bind(hash)
        .bind(info.admin)
        .bind(ms(info.created_at))
        .bind(info.revoked_at.map(ms))
        .execute(&mut *self.writer().await?)
        .await
        .map_err(backend("saving a token"))?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenInfo>, StoreError> {
        let generation = match self.tokens.get(hash, Instant::now()) {
            Ok(info) => return Ok(Some(info)),
            Err(generation) => generation,
        };
        let read = Instant::now();
        let row = sqlx::query(
            "SELECT id, name, admin, created_at, revoked_at FROM tokens WHERE hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.reader)
        .await
        .map_err(backend("looking up a token"))?;
        let info = row.as_ref().map(rows::token).transpose()?;
        if let Some(info) = &info {
            self.tokens.put(hash, info, generation, read);
        }
        Ok(info)
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, admin, created_at, revoked_at FROM tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(backend("listing tokens"))?;
        rows.iter().map(rows::token).collect()
    }

    async fn revoke_token(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(ms(at))
                .bind(id)
                .execute(&mut *self.writer().await?)
                .await;
        // Committed (or in doubt): no cached copy may still say it is valid.
        self.tokens.invalidate();
        let done = done.map_err(backend("revoking a token"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_workspace(&self, workspace: &Workspace) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO workspaces \
             (id, name, cleanup, created_at, last_used_at, size_bytes, owner, disk_bytes) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(workspace.id.as_str())
        .bind(&workspace.name)
        .bind(&workspace.cleanup)
        .bind(ms(workspace.created_at))
        .bind(workspace.last_used_at.map(ms))
        .bind(
            workspace
                .size_bytes
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        )
        .bind(workspace.owner.as_deref())
        .bind(
            workspace
                .disk
                .map(|n| i64::try_from(n.get()).unwrap_or(i64::MAX)),
        )
        .execute(&mut *self.writer().await?)
        .await
        .map_err(backend("saving a workspace"))?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::WorkspaceExists(workspace.name.clone()));
        }
        Ok(())
    }

    async fn find_workspace(&self, id_or_name: &str) -> Result<Option<Workspace>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = ?1 OR name = ?1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.reader)
        .await
        .map_err(backend("reading a workspace"))?;
        row.as_ref().map(rows::workspace).transpose()
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces ORDER BY name"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(backend("listing workspaces"))?;
        rows.iter().map(rows::workspace).collect()
    }

    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<Workspace, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = writer
            .begin()
            .await
            .map_err(backend("starting a transaction"))?;
        let row = sqlx::query(&format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend("reading a workspace"))?
        .ok_or_else(|| StoreError::WorkspaceNotFound(id.to_string()))?;
        let workspace = rows::workspace(&row)?;
        let user = sqlx::query(
            "SELECT id, status FROM tasks WHERE status IN ('queued', 'running') \
             AND json_extract(spec, '$.workspace') = ? ORDER BY seq LIMIT 1",
        )
        .bind(&workspace.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend("looking for tasks in a workspace"))?;
        if let Some(user) = user {
            let task: String = user.try_get("id").map_err(backend("reading a task id"))?;
            let status: String = user
                .try_get("status")
                .map_err(backend("reading a task status"))?;
            return Err(StoreError::WorkspaceInUse {
                name: workspace.name,
                task: TaskId::from_str(&task).map_err(|e| corrupt("a task id", e))?,
                status: status.parse().map_err(|e| corrupt("a task status", e))?,
            });
        }
        sqlx::query("DELETE FROM workspaces WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend("deleting a workspace"))?;
        tx.commit()
            .await
            .map_err(backend("committing a workspace delete"))?;
        Ok(workspace)
    }

    async fn touch_workspace(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query("UPDATE workspaces SET last_used_at = ? WHERE name = ?")
            .bind(ms(at))
            .bind(name)
            .execute(&mut *self.writer().await?)
            .await
            .map_err(backend("recording a workspace's use"))?;
        Ok(())
    }

    async fn set_workspace_size(&self, id: &WorkspaceId, bytes: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE workspaces SET size_bytes = ? WHERE id = ?")
            .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
            .bind(id.as_str())
            .execute(&mut *self.writer().await?)
            .await
            .map_err(backend("recording a workspace's size"))?;
        Ok(())
    }

    async fn record_usage(&self, id: TaskId, usage: &Usage) -> Result<(), StoreError> {
        self.write_usage(id, usage).await
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        self.insert_session(session).await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.read_session(id).await
    }

    async fn set_cli_session(&self, id: &SessionId, cli_session: &str) -> Result<(), StoreError> {
        self.write_cli_session(id, cli_session).await
    }

    async fn record_llm_request(&self, request: &LlmRequest) -> Result<(), StoreError> {
        self.insert_llm_request(request).await
    }

    async fn llm_requests(&self, task: TaskId) -> Result<Vec<LlmRequest>, StoreError> {
        self.read_llm_requests(task).await
    }
}
