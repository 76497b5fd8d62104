-- Routes map a Chatwoot inbox to a Dify app.
CREATE TABLE routes (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL DEFAULT '',
    inbox_id       INTEGER NOT NULL UNIQUE,
    dify_url       TEXT    NOT NULL DEFAULT '',
    dify_key       TEXT    NOT NULL DEFAULT '',
    dify_key_env   TEXT    NOT NULL DEFAULT '',
    inputs         TEXT    NOT NULL DEFAULT '{}',
    mode           TEXT    NOT NULL DEFAULT 'auto',
    keywords       TEXT,
    handoff_team   INTEGER,
    handoff_labels TEXT,
    enabled        INTEGER NOT NULL DEFAULT 1,
    app_name       TEXT    NOT NULL DEFAULT '',
    app_mode       TEXT    NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

-- One row per Chatwoot conversation bridge has seen in a routed inbox.
CREATE TABLE conversations (
    account_id           INTEGER NOT NULL,
    conversation_id      INTEGER NOT NULL,
    inbox_id             INTEGER NOT NULL DEFAULT 0,
    contact_id           INTEGER NOT NULL DEFAULT 0,
    route_id             INTEGER NOT NULL DEFAULT 0,
    dify_conversation_id TEXT    NOT NULL DEFAULT '',
    state                TEXT    NOT NULL DEFAULT 'bot',
    state_reason         TEXT    NOT NULL DEFAULT '',
    state_at             INTEGER NOT NULL DEFAULT 0,
    status               TEXT    NOT NULL DEFAULT '',
    messages_in          INTEGER NOT NULL DEFAULT 0,
    answers              INTEGER NOT NULL DEFAULT 0,
    handoffs             INTEGER NOT NULL DEFAULT 0,
    last_activity_at     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, conversation_id)
);

-- The journal: every webhook, acted on, ignored or rejected.
CREATE TABLE events (
    id                INTEGER PRIMARY KEY,
    received_at       INTEGER NOT NULL,
    delivery_id       TEXT    NOT NULL DEFAULT '',
    event             TEXT    NOT NULL DEFAULT '',
    kind              TEXT    NOT NULL DEFAULT '',
    account_id        INTEGER NOT NULL DEFAULT 0,
    inbox_id          INTEGER NOT NULL DEFAULT 0,
    conversation_id   INTEGER NOT NULL DEFAULT 0,
    message_id        INTEGER NOT NULL DEFAULT 0,
    contact_id        INTEGER NOT NULL DEFAULT 0,
    route_id          INTEGER NOT NULL DEFAULT 0,
    status            TEXT    NOT NULL,
    reason            TEXT    NOT NULL DEFAULT '',
    http_status       INTEGER NOT NULL DEFAULT 200,
    payload           BLOB,
    text              TEXT    NOT NULL DEFAULT '',
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT    NOT NULL DEFAULT '',
    posted_message_id INTEGER NOT NULL DEFAULT 0,
    steps             TEXT    NOT NULL DEFAULT '',
    merged_into       INTEGER NOT NULL DEFAULT 0,
    not_before        INTEGER NOT NULL DEFAULT 0,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_open ON events (id) WHERE status IN ('accepted', 'working');
CREATE INDEX events_message ON events (message_id) WHERE status NOT IN ('rejected', 'ignored');
CREATE INDEX events_conversation ON events (account_id, conversation_id, id);
CREATE INDEX events_status ON events (status, id);
CREATE INDEX events_received ON events (received_at);

-- The trace of an event, hop by hop.
CREATE TABLE hops (
    event_id    INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    stage       TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT '',
    duration_ms REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, seq)
) WITHOUT ROWID;

-- Chatwoot messages bridge posted itself, so their webhooks are never answered.
CREATE TABLE posted (
    message_id INTEGER PRIMARY KEY,
    event_id   INTEGER NOT NULL,
    step       TEXT    NOT NULL,
    at         INTEGER NOT NULL
);
