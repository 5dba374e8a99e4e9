-- The list-level event stream (`GET /api/v1/events`) reads the `state` events of every task
-- after a cursor: the kind as a generated column (computed from the stored JSON, nothing to
-- write) and an index on it, so the stream never scans output events.
ALTER TABLE events ADD COLUMN kind TEXT GENERATED ALWAYS AS (json_extract(body, '$.type')) VIRTUAL;
CREATE INDEX events_by_kind ON events (kind, id);
