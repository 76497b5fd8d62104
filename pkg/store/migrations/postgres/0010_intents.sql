-- Twin of ../0010_intents.sql.
CREATE TABLE intents (
    event_id        BIGINT  NOT NULL,
    step            TEXT    NOT NULL,
    account_id      BIGINT  NOT NULL,
    conversation_id BIGINT  NOT NULL,
    private         BOOLEAN NOT NULL DEFAULT false,
    content         TEXT    NOT NULL,
    content_hash    TEXT    NOT NULL,
    at              BIGINT  NOT NULL,
    message_id      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, step)
);
CREATE INDEX intents_open ON intents (account_id, conversation_id, content_hash, at)
    WHERE message_id = 0;

ALTER TABLE conversations ADD COLUMN status_at BIGINT NOT NULL DEFAULT 0;
