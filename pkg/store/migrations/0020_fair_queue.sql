-- The dispatcher serves routes in turn, and in each route the conversations
-- by their oldest waiting event, without reading the backlog behind them.
-- events_route_queue lists a route's open events in order (and, by its
-- leading column, which routes have any); events_conversation_queue finds a
-- conversation's oldest open event and its debounce time in one seek,
-- however long the conversation's history. Both cover what the dispatcher
-- reads, so it never touches the rows and their payloads.
CREATE INDEX events_route_queue ON events (route_id, id, account_id, conversation_id, status, not_before)
    WHERE status IN ('accepted', 'working');
CREATE INDEX events_conversation_queue ON events (account_id, conversation_id, id, route_id, status, not_before)
    WHERE status IN ('accepted', 'working');

-- A route's cap on events in progress at once (0: none), for a Dify app
-- whose own concurrency cap (APP_MAX_ACTIVE_REQUESTS) is lower than bridge's.
ALTER TABLE routes ADD COLUMN max_in_flight INTEGER NOT NULL DEFAULT 0;
