-- The list of streams: one entry per stream (its first event), by category
-- then id, so that listing a category's streams, counting streams and
-- counting them per category read this index and not the events. Only an
-- append that starts a stream adds an entry.
CREATE INDEX events_streams ON events (split_part(stream_id, '-', 1), stream_id)
    WHERE version = 1;
