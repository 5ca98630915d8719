CREATE TABLE write_ids(
    app TEXT COLLATE "C" NOT NULL, write_id TEXT COLLATE "C" NOT NULL, owner TEXT NOT NULL,
    fingerprint TEXT NOT NULL, created BIGINT NOT NULL, status INTEGER, body TEXT,
    PRIMARY KEY(app, write_id));
CREATE INDEX write_ids_created ON write_ids(created);
