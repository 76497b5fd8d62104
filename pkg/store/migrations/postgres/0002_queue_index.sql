-- Twin of ../0002_queue_index.sql.
CREATE INDEX events_queue ON events (id, account_id, conversation_id, status, not_before)
    WHERE status IN ('accepted', 'working');
DROP INDEX events_open;

CREATE INDEX events_prunable ON events (received_at) WHERE status IN ('ignored', 'rejected');
