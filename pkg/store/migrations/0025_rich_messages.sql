-- Per-route settings for rich messages (attachment transfer, answer
-- format, voice note fallback), as a JSON object; {} keeps the defaults.
ALTER TABLE routes ADD COLUMN options TEXT NOT NULL DEFAULT '{}';

-- Chatwoot's transcription of a voice note, taken from the message_updated
-- that carries it, for the event waiting to answer that message.
CREATE TABLE transcripts (
    message_id INTEGER PRIMARY KEY,
    text       TEXT    NOT NULL,
    at         INTEGER NOT NULL
);

-- An answer's plan: every part bridge will post for an event (the text
-- split to fit the channel, the files), written durably before the first
-- part goes out, so a restart between parts posts the rest, not a new
-- answer. Each part is posted through its own intent.
CREATE TABLE outbox (
    event_id INTEGER PRIMARY KEY,
    parts    TEXT    NOT NULL,
    at       INTEGER NOT NULL
);

-- The last answer bridge posted in a conversation, with the Dify message it
-- came from, so a CSAT rating can be sent to Dify as feedback on it.
CREATE TABLE answers (
    account_id      INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    event_id        INTEGER NOT NULL,
    route_id        INTEGER NOT NULL,
    dify_message_id TEXT    NOT NULL,
    dify_user       TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    PRIMARY KEY (account_id, conversation_id)
);
