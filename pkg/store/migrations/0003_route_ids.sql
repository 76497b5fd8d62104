-- Route ids are never reused: events and conversations keep the id of the
-- route they went through, so a new route must not inherit a removed one's
-- history. SQLite reuses the highest rowid after a delete unless the key is
-- AUTOINCREMENT, which it cannot add to a table: rebuild it.
CREATE TABLE routes_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
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
INSERT INTO routes_new (id, name, inbox_id, dify_url, dify_key, dify_key_env, inputs, mode, keywords,
                        handoff_team, handoff_labels, enabled, app_name, app_mode, created_at, updated_at)
SELECT id, name, inbox_id, dify_url, dify_key, dify_key_env, inputs, mode, keywords,
       handoff_team, handoff_labels, enabled, app_name, app_mode, created_at, updated_at
FROM routes;
DROP TABLE routes;
ALTER TABLE routes_new RENAME TO routes;

-- Ids removed before this migration are not reused either: start after the
-- highest id the journal remembers.
INSERT INTO sqlite_sequence (name, seq)
SELECT 'routes', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'routes');
UPDATE sqlite_sequence
SET seq = max(seq,
              (SELECT coalesce(max(id), 0) FROM routes),
              (SELECT coalesce(max(route_id), 0) FROM events),
              (SELECT coalesce(max(route_id), 0) FROM conversations))
WHERE name = 'routes';
