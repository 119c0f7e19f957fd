-- Versioned rebuilds: which version of each projection readers are served.
--
-- Each version of a projection runs under its own key in `projections`
-- (its name for version 1, `name@vN` after that), with its own checkpoint,
-- lease and dead letters. `serving` is the version whose data readers
-- see; a runner of a newer version builds alongside it and, once caught
-- up, sets `serving` to its own version in the transaction that also runs
-- its switch hook. The serving runner then retires the older versions
-- whose records remain.
CREATE TABLE projection_versions (
    name        text        PRIMARY KEY,
    serving     bigint      NOT NULL CHECK (serving >= 1),
    switched_at timestamptz NOT NULL DEFAULT now()
);
