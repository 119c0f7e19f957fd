-- What the projection API reads and asks for.
--
-- A projection's row records the event types it reads (its runner writes
-- them as it starts), so that its lag can be measured without the
-- projection at hand; its state is one of three, named on the Rust side by
-- ProjectionState (es-postgres/src/data/projections.rs, whose test reads
-- the list below); and a parked event can be marked for a retry, which the
-- projection's runner carries out.

ALTER TABLE projections
    ADD COLUMN event_types text[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT projections_state_check CHECK (state IN ('running', 'stopped', 'failed'));

ALTER TABLE projection_dead_letters
    ADD COLUMN retry_requested boolean NOT NULL DEFAULT false;
