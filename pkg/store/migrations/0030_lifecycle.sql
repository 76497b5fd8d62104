-- A route's lifecycle settings (handoff table, return rule, memory, opening
-- hours, note summary) as JSON; a route without a row has the defaults.
CREATE TABLE route_lifecycle (
    route_id   INTEGER PRIMARY KEY,
    settings   TEXT    NOT NULL DEFAULT '{}',
    updated_at INTEGER NOT NULL DEFAULT 0
);

-- Who holds a conversation, change by change, with the cause, plus the
-- resolves and reopenings Chatwoot reports: the outcomes `bridge stats`
-- counts. kind: handoff, takeover, keep, return, resolved, reopened; owner
-- is the holder after the entry.
CREATE TABLE ownership (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    account_id      INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    route_id        INTEGER NOT NULL DEFAULT 0,
    kind            TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    cause           TEXT    NOT NULL DEFAULT '',
    detail          TEXT    NOT NULL DEFAULT '',
    event_id        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ownership_conversation ON ownership (account_id, conversation_id, id);
CREATE INDEX ownership_at ON ownership (at);

-- What the lifecycle remembers of a conversation besides its holder: when a
-- human last wrote in it (the idle return), why it was last handed off, and
-- the summary the next fresh Dify conversation receives.
CREATE TABLE conversation_lifecycle (
    account_id      INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    last_human_at   INTEGER NOT NULL DEFAULT 0,
    handoff_cause   TEXT    NOT NULL DEFAULT '',
    summary         TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (account_id, conversation_id)
);
