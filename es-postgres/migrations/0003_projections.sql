-- Projection checkpoints, status and dead letters.

CREATE TABLE projections (
    name                text        PRIMARY KEY,
    -- The position of the last event applied (0/0: none yet).
    tx_id               bigint      NOT NULL DEFAULT 0,
    seq                 bigint      NOT NULL DEFAULT 0,
    -- 'running', 'stopped' (shut down), 'failed' (stopped at a poison event).
    state               text        NOT NULL DEFAULT 'stopped',
    last_error          text,
    rebuild_requested   boolean     NOT NULL DEFAULT false,
    events_applied      bigint      NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Events a projection could not apply and set aside (error policy "park").
CREATE TABLE projection_dead_letters (
    id          bigserial   PRIMARY KEY,
    projection  text        NOT NULL,
    event_id    uuid        NOT NULL,
    stream_id   text        NOT NULL,
    version     bigint      NOT NULL,
    tx_id       bigint      NOT NULL,
    seq         bigint      NOT NULL,
    event_type  text        NOT NULL,
    error       text        NOT NULL,
    attempts    integer     NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, event_id)
);
