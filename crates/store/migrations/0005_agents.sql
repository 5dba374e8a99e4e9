-- Agent tasks (issue 12): what each task used of the model provider (Usage JSON, as the LLM
-- gateway counted it; NULL for command tasks), the sessions their turns belong to, and one audit
-- row per request the gateway forwarded (kept when the task is deleted; never a body).
ALTER TABLE tasks ADD COLUMN usage TEXT;
CREATE INDEX tasks_by_session ON tasks (json_extract(spec, '$.session_id'), seq)
    WHERE json_extract(spec, '$.session_id') IS NOT NULL;

CREATE TABLE sessions (
    id          TEXT    PRIMARY KEY,               -- ses_ and 32 hex digits
    kind        TEXT    NOT NULL,                  -- AgentKind name
    workspace   TEXT    NOT NULL,                  -- workspace name every turn works in
    cli_session TEXT,                              -- the agent CLI's own session id
    created_at  INTEGER NOT NULL
);

CREATE TABLE llm_requests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       TEXT    NOT NULL,
    session_id    TEXT,
    model         TEXT    NOT NULL,
    status        INTEGER NOT NULL,                -- HTTP status the agent got
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read    INTEGER NOT NULL,
    cache_write   INTEGER NOT NULL,
    cost_usd      REAL    NOT NULL,
    latency_ms    INTEGER NOT NULL,
    at            INTEGER NOT NULL
);
CREATE INDEX llm_requests_by_task ON llm_requests (task_id, id);
