CREATE TABLE orgs(
    uuid TEXT COLLATE "C" PRIMARY KEY, name TEXT COLLATE "C" NOT NULL,
    client_id TEXT COLLATE "C" NOT NULL UNIQUE, client_secret TEXT NOT NULL,
    created BIGINT NOT NULL);
CREATE UNIQUE INDEX orgs_name ON orgs(lower(name));
CREATE TABLE admins(
    uuid TEXT COLLATE "C" PRIMARY KEY, username TEXT COLLATE "C" NOT NULL,
    email TEXT COLLATE "C" NOT NULL, name TEXT NOT NULL, password_hash TEXT NOT NULL,
    created BIGINT NOT NULL);
CREATE UNIQUE INDEX admins_username ON admins(lower(username));
CREATE UNIQUE INDEX admins_email ON admins(lower(email));
CREATE TABLE org_admins(
    org_uuid TEXT COLLATE "C" NOT NULL, admin_uuid TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY(org_uuid, admin_uuid));
CREATE TABLE apps(
    uuid TEXT COLLATE "C" PRIMARY KEY, org_uuid TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL, client_id TEXT COLLATE "C" NOT NULL UNIQUE,
    client_secret TEXT NOT NULL, created BIGINT NOT NULL);
CREATE UNIQUE INDEX apps_name ON apps(org_uuid, lower(name));
CREATE TABLE tokens(
    hash BYTEA PRIMARY KEY, kind TEXT NOT NULL, subject TEXT COLLATE "C" NOT NULL,
    scope TEXT COLLATE "C" NOT NULL, created BIGINT NOT NULL, expires BIGINT NOT NULL);
CREATE INDEX tokens_subject ON tokens(subject);
CREATE TABLE entities(
    app TEXT COLLATE "C" NOT NULL, uuid TEXT COLLATE "C" NOT NULL,
    collection TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C", data TEXT NOT NULL,
    secret TEXT, PRIMARY KEY(app, uuid));
CREATE UNIQUE INDEX entities_name ON entities(app, collection, lower(name))
    WHERE name IS NOT NULL;
CREATE INDEX entities_collection ON entities(app, collection, uuid);
CREATE TABLE relations(
    id BIGSERIAL PRIMARY KEY, app TEXT COLLATE "C" NOT NULL, source TEXT COLLATE "C" NOT NULL,
    relation TEXT COLLATE "C" NOT NULL, target TEXT COLLATE "C" NOT NULL,
    UNIQUE(app, source, relation, target));
CREATE INDEX relations_target ON relations(app, target, relation);
CREATE TABLE app_seq(app TEXT COLLATE "C" PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE changes(
    app TEXT COLLATE "C" NOT NULL, seq BIGINT NOT NULL, created BIGINT NOT NULL,
    kind TEXT NOT NULL, collection TEXT COLLATE "C" NOT NULL, uuid TEXT COLLATE "C" NOT NULL,
    name TEXT, entity TEXT NOT NULL, previous TEXT, feed_owner TEXT, queue TEXT,
    PRIMARY KEY(app, seq));
CREATE INDEX changes_created ON changes(created);
CREATE TABLE queue_messages(
    id BIGSERIAL PRIMARY KEY, app TEXT COLLATE "C" NOT NULL, queue TEXT COLLATE "C" NOT NULL,
    uuid TEXT NOT NULL, seq BIGINT NOT NULL, created BIGINT NOT NULL, data TEXT NOT NULL);
CREATE INDEX queue_messages_queue ON queue_messages(app, queue, id);
CREATE TABLE queue_consumers(
    app TEXT COLLATE "C" NOT NULL, queue TEXT COLLATE "C" NOT NULL,
    consumer TEXT COLLATE "C" NOT NULL, position BIGINT NOT NULL,
    PRIMARY KEY(app, queue, consumer));
CREATE TABLE queue_tx(
    id TEXT COLLATE "C" PRIMARY KEY, app TEXT COLLATE "C" NOT NULL,
    queue TEXT COLLATE "C" NOT NULL, consumer TEXT COLLATE "C" NOT NULL,
    message_id BIGINT NOT NULL, expires BIGINT NOT NULL);
CREATE INDEX queue_tx_consumer ON queue_tx(app, queue, consumer, expires);
CREATE TABLE queue_subs(
    app TEXT COLLATE "C" NOT NULL, queue TEXT COLLATE "C" NOT NULL,
    subscriber TEXT COLLATE "C" NOT NULL, PRIMARY KEY(app, queue, subscriber));
CREATE TABLE permissions(
    app TEXT COLLATE "C" NOT NULL, owner TEXT COLLATE "C" NOT NULL,
    permission TEXT COLLATE "C" NOT NULL, PRIMARY KEY(app, owner, permission));
