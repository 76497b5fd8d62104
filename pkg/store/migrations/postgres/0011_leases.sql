-- Twin of ../0011_leases.sql.
ALTER TABLE events ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
CREATE INDEX events_open_conversation ON events (account_id, conversation_id, id)
    WHERE status IN ('accepted', 'working');
