-- The property index (store/index.rs): a row per value of every property, a row per word of
-- every string, kept with the entity in each write; the primary keys are the walk orders.
-- A table rather than JSON expression or GIN indexes: `jsonb_path_ops` answers containment,
-- not ranges or `order by`, and an expression index needs the property named in advance.
CREATE TABLE props(
    app TEXT COLLATE "C" NOT NULL, collection TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL, kind INTEGER NOT NULL, num DOUBLE PRECISION NOT NULL,
    str TEXT COLLATE "C" NOT NULL, uuid TEXT COLLATE "C" NOT NULL, direct INTEGER NOT NULL,
    PRIMARY KEY(app, collection, name, kind, num, str, uuid, direct));
CREATE INDEX props_entity ON props(app, uuid, name, direct);
CREATE TABLE words(
    app TEXT COLLATE "C" NOT NULL, collection TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL, word TEXT COLLATE "C" NOT NULL,
    uuid TEXT COLLATE "C" NOT NULL, PRIMARY KEY(app, collection, name, word, uuid));
CREATE INDEX words_entity ON words(app, uuid);
