-- Conductor's first schema. Timestamps are milliseconds since the Unix epoch; JSON columns hold
-- conductor-types values serialised with serde_json.

CREATE TABLE tasks (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT, -- insertion order: list order and cursors
    id            TEXT    NOT NULL UNIQUE,           -- TaskId (UUID)
    status        TEXT    NOT NULL,                  -- TaskStatus name
    status_reason TEXT,
    attempt       INTEGER NOT NULL DEFAULT 0,
    agent_id      TEXT,
    exit_code     INTEGER,
    priority      INTEGER NOT NULL,
    spec          TEXT    NOT NULL,                  -- TaskSpec JSON (labels inside)
    secrets       TEXT    NOT NULL DEFAULT '{}',     -- secret values JSON; never returned by the API
    queued_at     INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER
);
CREATE INDEX tasks_by_status ON tasks (status, priority DESC, queued_at, seq);

CREATE TABLE command_results (
    task_id     TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    command     TEXT    NOT NULL,
    exit_code   INTEGER,
    signal      INTEGER,
    timed_out   INTEGER NOT NULL,
    oom_killed  INTEGER NOT NULL,
    error       TEXT,
    stats       TEXT    NOT NULL,                    -- ExecutionStats JSON
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, attempt, idx)
);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,       -- global, monotonic: SSE ids
    task_id TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    at      INTEGER NOT NULL,
    body    TEXT    NOT NULL                         -- TaskEventKind JSON
);
CREATE INDEX events_by_task ON events (task_id, id);

CREATE TABLE agents (
    id             TEXT    PRIMARY KEY,
    state          TEXT    NOT NULL,
    task_id        TEXT,
    workspace_root TEXT    NOT NULL,
    updated_at     INTEGER NOT NULL
);

CREATE TABLE tokens (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,              -- hex SHA-256 of the bearer token
    admin      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
