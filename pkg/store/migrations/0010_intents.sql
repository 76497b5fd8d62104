-- A post bridge is about to make, written durably before the POST. A crash
-- between Chatwoot's answer and the commit that records it then leaves the
-- post "in doubt" (an intent without a message id) instead of forgotten,
-- and the content it meant to post is kept, so a resumed event resolves or
-- repeats exactly that post, never a freshly generated one.
CREATE TABLE intents (
    event_id        INTEGER NOT NULL,
    step            TEXT    NOT NULL,
    account_id      INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    private         INTEGER NOT NULL DEFAULT 0,
    content         TEXT    NOT NULL,
    content_hash    TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    message_id      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, step)
);
-- An echo of a post is matched to the open intent of its conversation with
-- the same content.
CREATE INDEX intents_open ON intents (account_id, conversation_id, content_hash, at)
    WHERE message_id = 0;

-- Statuses arrive as snapshots, out of order: status_at is the time of the
-- snapshot that set status (Chatwoot's clock for payloads, bridge's for the
-- status bridge set itself), so an older snapshot never overwrites a newer.
ALTER TABLE conversations ADD COLUMN status_at INTEGER NOT NULL DEFAULT 0;
