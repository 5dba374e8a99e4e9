-- Opening the store checks the sealed secrets and seals any left in plaintext by an older
-- store. Those reads visit only the tasks that have secrets (most have '{}'), through this
-- partial index, instead of every row: opening a store of many tasks stays as fast as an empty
-- one's.
CREATE INDEX tasks_with_secrets ON tasks (id) WHERE secrets <> '{}';
