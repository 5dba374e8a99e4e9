-- Who created a workspace (the creating token's id, `tok_…`; NULL for workspaces created before
-- this migration), its disk quota in bytes (NULL: none), and a task's machine-readable failure
-- code (`disk_quota_exceeded`, …; NULL when it has none).

ALTER TABLE workspaces ADD COLUMN owner TEXT;
ALTER TABLE workspaces ADD COLUMN disk_bytes INTEGER;
ALTER TABLE tasks ADD COLUMN failure_code TEXT;
