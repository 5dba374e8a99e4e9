-- Workspaces as a resource. A task names one in its spec (`$.workspace`, the workspace's name);
-- the directory is `<workspace_root>/named/<name>`. Timestamps in milliseconds since the epoch.

CREATE TABLE workspaces (
    id            TEXT    PRIMARY KEY,               -- ws_ and 32 hex digits
    name          TEXT    NOT NULL UNIQUE,
    cleanup       TEXT    NOT NULL,                  -- delete | keep | ttl:<duration>
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    size_bytes    INTEGER                            -- NULL until measured
);
