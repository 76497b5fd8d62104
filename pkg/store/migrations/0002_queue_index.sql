-- The dispatcher reads the open queue often: cover what it needs (order,
-- conversation, state, debounce time) so it never touches the rows, whose
-- payloads spill onto overflow pages. It replaces events_open, whose only
-- column (id) it leads with.
CREATE INDEX events_queue ON events (id, account_id, conversation_id, status, not_before)
    WHERE status IN ('accepted', 'working');
DROP INDEX events_open;

-- Retention deletes ignored and rejected events by age: find exactly those,
-- oldest first, without reading the rest of the journal.
CREATE INDEX events_prunable ON events (received_at) WHERE status IN ('ignored', 'rejected');
