-- The newest snapshot of each stream. Snapshots are a cache: rows may be
-- deleted at any time, at the cost of a longer load.
CREATE TABLE snapshots (
    stream_id       text        PRIMARY KEY,
    version         bigint      NOT NULL CHECK (version > 0),
    schema_version  integer     NOT NULL,
    data            jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL
);
