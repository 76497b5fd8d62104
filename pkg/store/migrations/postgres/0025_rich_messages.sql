-- Twin of ../0025_rich_messages.sql.
ALTER TABLE routes ADD COLUMN options TEXT NOT NULL DEFAULT '{}';

CREATE TABLE transcripts (
    message_id BIGINT PRIMARY KEY,
    text       TEXT   NOT NULL,
    at         BIGINT NOT NULL
);

CREATE TABLE outbox (
    event_id BIGINT PRIMARY KEY,
    parts    TEXT   NOT NULL,
    at       BIGINT NOT NULL
);

CREATE TABLE answers (
    account_id      BIGINT NOT NULL,
    conversation_id BIGINT NOT NULL,
    event_id        BIGINT NOT NULL,
    route_id        BIGINT NOT NULL,
    dify_message_id TEXT   NOT NULL,
    dify_user       TEXT   NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (account_id, conversation_id)
);
