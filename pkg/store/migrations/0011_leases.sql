-- Who drives a working event, and until when (Unix milliseconds, the
-- database's clock): a process holding an event renews its lease while it
-- works, and an event whose lease ran out is put back in the queue for
-- another process. SQLite has one serve per file and keeps the columns so
-- that both backends share one schema; PostgreSQL replicas rely on them.
ALTER TABLE events ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;

-- A claim checks that no earlier event of the conversation is still open:
-- the open events of one conversation, by id.
CREATE INDEX events_open_conversation ON events (account_id, conversation_id, id)
    WHERE status IN ('accepted', 'working');
