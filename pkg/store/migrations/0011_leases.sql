-- Who drives a working event, and until when (Unix milliseconds, the
-- database's clock): a process holding an event renews its lease while it
-- works, and an event whose lease ran out is put back in the queue for
-- another process. SQLite has one serve per file and keeps the columns
-- only so that both backends share one schema; PostgreSQL replicas rely on
-- them.
ALTER TABLE events ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
