-- Twin of ../0020_fair_queue.sql: the queue-head indexes the fair dispatcher
-- reads (PostgreSQL's planner picks them itself; SQLite is told to).
CREATE INDEX events_route_queue ON events (route_id, id, account_id, conversation_id, status, not_before)
    WHERE status IN ('accepted', 'working');
CREATE INDEX events_conversation_queue ON events (account_id, conversation_id, id, route_id, status, not_before)
    WHERE status IN ('accepted', 'working');

-- A route's cap on events in progress at once (0: none).
ALTER TABLE routes ADD COLUMN max_in_flight INTEGER NOT NULL DEFAULT 0;
