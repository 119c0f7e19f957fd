-- no-transaction
-- The list of streams: one entry per stream (its first event), by category
-- then id, so that listing a category's streams, counting streams and
-- counting them per category read this index and not the events. Only an
-- append that starts a stream adds an entry.
--
-- Built CONCURRENTLY, outside a transaction, so that appends go on while
-- an existing store's events are scanned (one statement only: several
-- would run as one transaction). A build that was interrupted leaves an
-- invalid index that IF NOT EXISTS keeps; `DROP INDEX es.events_streams`
-- and migrating again rebuilds it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_streams
    ON events (split_part(stream_id, '-', 1), stream_id) WHERE version = 1;
