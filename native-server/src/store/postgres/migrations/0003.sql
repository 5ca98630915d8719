CREATE TABLE assets(
    app TEXT COLLATE "C" NOT NULL, uuid TEXT COLLATE "C" NOT NULL, content_type TEXT NOT NULL,
    data BYTEA NOT NULL, PRIMARY KEY(app, uuid));
