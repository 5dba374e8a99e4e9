-- Which executor ran each command: the environment's own, or its fallback while that one was
-- down. NULL for commands that never ran and for results recorded before this migration.
ALTER TABLE command_results ADD COLUMN executor TEXT;
