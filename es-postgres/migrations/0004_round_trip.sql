-- What append accepts, every read returns equal; what it cannot, it
-- refuses before writing (see es-core/src/json.rs for the JSON rules).
--
-- The append function refuses a batch that would take a stream's version
-- past the bigint range with an outcome of its own, instead of failing on
-- the overflow. And a projection that parks an event it cannot read keeps
-- the event's stored text with it.

ALTER TABLE projection_dead_letters
    -- The stored data and metadata of an event that could not be read
    -- back (null when the handler failed on a readable event).
    ADD COLUMN raw_data      text,
    ADD COLUMN raw_metadata  text,
    ALTER COLUMN attempts TYPE bigint;

-- Appends one batch to one stream, in one statement.
--
-- Outcomes: 0 appended, 1 idempotent replay, 2 wrong expected version,
-- 3 some ids stored (partial overlap), 4 ids stored in another stream,
-- 5 ids stored out of order, 6 retry (this transaction's id is older than
-- the stream's last writer's; nothing written), 7 the batch would take the
-- stream's version past the bigint range (nothing written).
--
-- Expected kinds: 0 any, 1 no stream, 2 stream exists, 3 exact.
--
-- An append's events are at (tx_id, first_seq + i); a replay's, which an
-- earlier transaction wrote, at (tx_ids[i], seqs[i]).
--
-- The function is created through format() so that its body names the
-- schema's tables directly: a `SET search_path` clause would cost a
-- configuration change on every call.
DO $migration$
BEGIN
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.append_events(
    p_stream            text,
    p_expected_kind     smallint,
    p_expected          bigint,
    p_ids               uuid[],
    p_types             text[],
    p_schema_versions   integer[],
    p_data              jsonb,      -- the payloads, as one array
    p_metadata          jsonb[],
    p_check             boolean,
    OUT outcome         smallint,
    OUT actual          bigint,
    OUT conflict_id     uuid,
    OUT first_version   bigint,
    OUT tx_id           bigint,
    OUT first_seq       bigint,
    OUT tx_ids          bigint[],
    OUT seqs            bigint[]
)
LANGUAGE plpgsql
-- Every statement here has an index to use. Plans are cached per session,
-- and a plan made while the tables were small (or before statistics
-- existed) would otherwise scan the whole events table.
SET enable_seqscan TO off
AS $body$
DECLARE
    n           integer := coalesce(array_length(p_ids, 1), 0);
    found_ids   uuid[];
    found_strs  text[];
    found_vers  bigint[];
    last_tx     xid8;
    this_tx     xid8;
    i           integer;
    passes      boolean;
BEGIN
    -- Serialize appends to this stream before the first write, so that this
    -- transaction's id is newer than the previous writer's. Advisory locks
    -- do not assign a transaction id.
    PERFORM pg_advisory_xact_lock(hashtextextended(%2$L || p_stream, 7305));

    -- The stream's version and last writer: its newest event.
    SELECT e.version, e.tx_id INTO actual, last_tx
      FROM %1$I.events e WHERE e.stream_id = p_stream
     ORDER BY e.version DESC LIMIT 1;
    actual := coalesce(actual, 0);
    passes := CASE p_expected_kind
        WHEN 0 THEN true
        WHEN 1 THEN actual = 0
        WHEN 2 THEN actual > 0
        ELSE actual = p_expected
    END;

    -- Is this batch (or part of it) stored already? A new batch needs no
    -- lookup: when the version check passes, the insert below meets any
    -- stored id in the event-id index and fails with a unique violation,
    -- and the caller runs the function again with p_check. Only a failed
    -- version check (a retry of an Exact or NoStream append) and that second
    -- run look the ids up here.
    IF n > 0 AND (p_check OR NOT passes) THEN
        SELECT array_agg(e.event_id ORDER BY u.ord),
               array_agg(e.stream_id ORDER BY u.ord),
               array_agg(e.version ORDER BY u.ord),
               array_agg(e.tx_id::text::bigint ORDER BY u.ord),
               array_agg(e.seq ORDER BY u.ord)
          INTO found_ids, found_strs, found_vers, tx_ids, seqs
          FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
          JOIN %1$I.events e ON e.event_id = u.id;

        IF found_ids IS NOT NULL THEN
            conflict_id := found_ids[1];
            IF array_length(found_ids, 1) < n THEN
                outcome := 3;
                RETURN;
            END IF;
            FOR i IN 1 .. n LOOP
                IF found_strs[i] <> p_stream THEN
                    outcome := 4;
                    conflict_id := found_ids[i];
                    RETURN;
                END IF;
            END LOOP;
            FOR i IN 1 .. n LOOP
                IF found_ids[i] <> p_ids[i] OR found_vers[i] <> found_vers[1] + i - 1 THEN
                    outcome := 5;
                    conflict_id := p_ids[i];
                    RETURN;
                END IF;
            END LOOP;
            outcome := 1;
            first_version := found_vers[1];
            actual := found_vers[n];
            RETURN;
        END IF;
        tx_ids := NULL;
        seqs := NULL;
    END IF;

    IF NOT passes THEN
        outcome := 2;
        RETURN;
    END IF;

    outcome := 0;
    IF n = 0 THEN
        RETURN;
    END IF;
    IF actual > 9223372036854775807 - n THEN
        outcome := 7;
        RETURN;
    END IF;
    first_version := actual + 1;

    this_tx := pg_current_xact_id();
    IF last_tx IS NOT NULL AND this_tx < last_tx THEN
        outcome := 6;
        RETURN;
    END IF;

    -- The events go after this transaction's earlier ones, if an append in
    -- the same transaction came first.
    SELECT e.seq INTO first_seq
      FROM %1$I.events e WHERE e.tx_id = this_tx
     ORDER BY e.seq DESC LIMIT 1;
    first_seq := coalesce(first_seq, 0) + 1;

    INSERT INTO %1$I.events
           (tx_id, seq, event_id, stream_id, starts_append, version, event_type, schema_version,
            data, metadata)
    SELECT this_tx, first_seq - 1 + u.ord, u.id, p_stream, u.ord = 1, actual + u.ord, u.typ,
           u.sv, u.d, coalesce(u.m, '{}')
      FROM ROWS FROM (unnest(p_ids), unnest(p_types), unnest(p_schema_versions),
                      jsonb_array_elements(p_data), unnest(p_metadata))
           WITH ORDINALITY AS u(id, typ, sv, d, m, ord);

    tx_id := this_tx::text::bigint;
    actual := actual + n;

    -- Wake listeners in other processes, if there are any, but let only one
    -- concurrent committer pay for NOTIFY (it serializes commits on a global
    -- lock); the others' events are found by the reader's next read or poll.
    IF pg_try_advisory_xact_lock(hashtextextended(%3$L, 7305))
        AND EXISTS (SELECT FROM %1$I.listeners) THEN
        PERFORM pg_notify(%4$L, '');
    END IF;
END
$body$
$function$,
    current_schema(),
    current_schema() || ':',
    'es-notify:' || current_schema(),
    'es_events_' || current_schema());
END
$migration$;
