-- The embedded store's schema, applied at every start (every statement is IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS orgs(
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    client_id TEXT NOT NULL UNIQUE, client_secret TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS admins(
    uuid TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE, name TEXT NOT NULL,
    password_hash TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS org_admins(
    org_uuid TEXT NOT NULL, admin_uuid TEXT NOT NULL, PRIMARY KEY(org_uuid, admin_uuid));
CREATE TABLE IF NOT EXISTS apps(
    uuid TEXT PRIMARY KEY, org_uuid TEXT NOT NULL, name TEXT NOT NULL COLLATE NOCASE,
    client_id TEXT NOT NULL UNIQUE, client_secret TEXT NOT NULL, created INTEGER NOT NULL,
    UNIQUE(org_uuid, name));
CREATE TABLE IF NOT EXISTS tokens(
    hash BLOB PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, scope TEXT NOT NULL,
    created INTEGER NOT NULL, expires INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_subject ON tokens(subject);
CREATE TABLE IF NOT EXISTS entities(
    app TEXT NOT NULL, uuid TEXT NOT NULL, collection TEXT NOT NULL, name TEXT COLLATE NOCASE,
    data TEXT NOT NULL, secret TEXT, PRIMARY KEY(app, uuid));
CREATE UNIQUE INDEX IF NOT EXISTS entities_name ON entities(app, collection, name)
    WHERE name IS NOT NULL;
CREATE INDEX IF NOT EXISTS entities_collection ON entities(app, collection, uuid);
CREATE TABLE IF NOT EXISTS relations(
    id INTEGER PRIMARY KEY, app TEXT NOT NULL, source TEXT NOT NULL, relation TEXT NOT NULL,
    target TEXT NOT NULL, UNIQUE(app, source, relation, target));
CREATE INDEX IF NOT EXISTS relations_target ON relations(app, target, relation);
CREATE TABLE IF NOT EXISTS app_seq(app TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes(
    app TEXT NOT NULL, seq INTEGER NOT NULL, created INTEGER NOT NULL, kind TEXT NOT NULL,
    collection TEXT NOT NULL, uuid TEXT NOT NULL, name TEXT, entity TEXT NOT NULL,
    previous TEXT, feed_owner TEXT, queue TEXT, PRIMARY KEY(app, seq));
CREATE INDEX IF NOT EXISTS changes_created ON changes(created);
CREATE TABLE IF NOT EXISTS queue_messages(
    id INTEGER PRIMARY KEY AUTOINCREMENT, app TEXT NOT NULL, queue TEXT NOT NULL,
    uuid TEXT NOT NULL, seq INTEGER NOT NULL, created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS queue_messages_queue ON queue_messages(app, queue, id);
CREATE TABLE IF NOT EXISTS queue_consumers(
    app TEXT NOT NULL, queue TEXT NOT NULL, consumer TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY(app, queue, consumer));
CREATE TABLE IF NOT EXISTS queue_tx(
    id TEXT PRIMARY KEY, app TEXT NOT NULL, queue TEXT NOT NULL, consumer TEXT NOT NULL,
    message_id INTEGER NOT NULL, expires INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS queue_tx_consumer ON queue_tx(app, queue, consumer, expires);
CREATE TABLE IF NOT EXISTS queue_subs(
    app TEXT NOT NULL, queue TEXT NOT NULL, subscriber TEXT NOT NULL,
    PRIMARY KEY(app, queue, subscriber));
CREATE TABLE IF NOT EXISTS permissions(
    app TEXT NOT NULL, owner TEXT NOT NULL, permission TEXT NOT NULL,
    PRIMARY KEY(app, owner, permission));
CREATE TABLE IF NOT EXISTS write_ids(
    app TEXT NOT NULL, write_id TEXT NOT NULL, owner TEXT NOT NULL, fingerprint TEXT NOT NULL,
    created INTEGER NOT NULL, status INTEGER, body TEXT, PRIMARY KEY(app, write_id));
CREATE INDEX IF NOT EXISTS write_ids_created ON write_ids(created);
CREATE TABLE IF NOT EXISTS assets(
    app TEXT NOT NULL, uuid TEXT NOT NULL, content_type TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY(app, uuid));
-- The property index (store/index.rs): a row per value of every property, a row per word of
-- every string, kept with the entity in each write. The primary keys are the walk orders.
CREATE TABLE IF NOT EXISTS props(
    app TEXT NOT NULL, collection TEXT NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL,
    num REAL NOT NULL, str TEXT NOT NULL, uuid TEXT NOT NULL, direct INTEGER NOT NULL,
    PRIMARY KEY(app, collection, name, kind, num, str, uuid, direct)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS props_entity ON props(app, uuid, name, direct);
CREATE TABLE IF NOT EXISTS words(
    app TEXT NOT NULL, collection TEXT NOT NULL, name TEXT NOT NULL, word TEXT NOT NULL,
    uuid TEXT NOT NULL, PRIMARY KEY(app, collection, name, word, uuid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS words_entity ON words(app, uuid);
