-- Statistics on the category expression, so that the planner knows each
-- category's share of the events. The category index is a partial
-- expression index, and PostgreSQL keeps no statistics for the expression
-- of a partial index: without these, every category is estimated at 0.5%
-- of the rows, and a read of a large category is planned as a scan and sort
-- of all its later appends instead of an ordered walk of the index that
-- stops when the page is full. Statistics on an expression need
-- PostgreSQL 14; on older servers the reads keep their shape and rely on
-- the default estimate.
DO $migration$
BEGIN
    IF current_setting('server_version_num')::integer >= 140000 THEN
        EXECUTE 'CREATE STATISTICS events_category ON (split_part(stream_id, ''-'', 1)) FROM events';
    END IF;
END
$migration$;

-- Fill them now rather than at the next automatic ANALYZE.
ANALYZE events;
