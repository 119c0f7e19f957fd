-- Appends across streams, archived and deleted streams.
--
-- A stream is archived or deleted by an event of its own, `$archived` or
-- `$deleted` (types that only the store writes): its newest row, which
-- every append reads anyway, says what state it is in, so neither appends
-- nor reads need another table. An archived stream is restored by the next
-- append; a deleted one refuses every append (outcome 8).
--
-- append_events is as in 0004_round_trip.sql, plus the deleted check.
--
-- Outcomes: 0 appended, 1 idempotent replay, 2 wrong expected version,
-- 3 some ids stored (partial overlap), 4 ids stored in another stream,
-- 5 ids stored out of order, 6 retry (this transaction's id is older than
-- the stream's last writer's; nothing written), 7 the batch would take the
-- stream's version past the bigint range (nothing written), 8 the stream
-- was deleted (nothing written).
--
-- Expected kinds: 0 any, 1 no stream, 2 stream exists, 3 exact.

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
    last_type   text;
    this_tx     xid8;
    i           integer;
    passes      boolean;
    deleted     boolean;
BEGIN
    -- Serialize appends to this stream before the first write, so that this
    -- transaction's id is newer than the previous writer's. Advisory locks
    -- do not assign a transaction id.
    PERFORM pg_advisory_xact_lock(hashtextextended(%2$L || p_stream, 7305));

    -- The stream's version and last writer: its newest event.
    SELECT e.version, e.tx_id, e.event_type INTO actual, last_tx, last_type
      FROM %1$I.events e WHERE e.stream_id = p_stream
     ORDER BY e.version DESC LIMIT 1;
    actual := coalesce(actual, 0);
    -- A deleted stream takes nothing more, whatever the expectation; but a
    -- batch stored before the deletion, sent again, is still a replay, so
    -- its ids are looked up first.
    deleted := coalesce(last_type = '$deleted', false);
    passes := NOT deleted AND CASE p_expected_kind
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

    IF deleted THEN
        outcome := 8;
        RETURN;
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

-- Appends to several streams in one statement, all or nothing.
--
-- The streams' locks are taken in the order of their keys, whatever order
-- the request names them in, so two requests over overlapping streams
-- never wait for each other in a cycle. Every check (deleted streams, the
-- request's ids, each expected version, the version range, the last
-- writers) runs before the first row is written; then the events are
-- inserted in request order with consecutive `seq`s, contiguous in the
-- feed.
--
-- Each event travels with its stream (`p_entries`, 1-based into
-- p_streams) and its place in that stream's batch (`p_offsets`, from 1).
-- `failed` names the stream (1-based) an outcome is about; `versions` is
-- each stream's version after the request (for a replay, the stored
-- batches' last versions, and the current version of a stream without
-- events).
DO $migration$
BEGIN
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.append_many(
    p_streams           text[],
    p_expected_kinds    smallint[],
    p_expected          bigint[],
    p_counts            integer[],
    p_entries           integer[],
    p_offsets           integer[],
    p_ids               uuid[],
    p_types             text[],
    p_schema_versions   integer[],
    p_data              jsonb,      -- the payloads, as one array
    p_metadata          jsonb[],
    p_check             boolean,
    OUT outcome         smallint,
    OUT failed          integer,
    OUT actual          bigint,
    OUT conflict_id     uuid,
    OUT versions        bigint[],
    OUT tx_id           bigint,
    OUT first_seq       bigint,
    OUT tx_ids          bigint[],
    OUT seqs            bigint[]
)
LANGUAGE plpgsql
SET enable_seqscan TO off
AS $body$
DECLARE
    m           integer := coalesce(array_length(p_streams, 1), 0);
    n           integer := coalesce(array_length(p_ids, 1), 0);
    lock_key    bigint;
    actuals     bigint[] := '{}';
    last_txs    xid8[] := '{}';
    head_ver    bigint;
    head_tx     xid8;
    head_type   text;
    this_tx     xid8;
    passes      boolean := true;
    this_ok     boolean;
    found_strs  text[];
    found_vers  bigint[];
    found_n     integer;
    i           integer;
    k           integer;
    start       integer;
    deleted_at  integer;
BEGIN
    FOR lock_key IN
        SELECT DISTINCT hashtextextended(%2$L || s, 7305) FROM unnest(p_streams) s ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(lock_key);
    END LOOP;

    -- Each stream's version and last writer, in request order. The first
    -- deleted stream refuses the request, once its ids are known not to be
    -- stored (a request stored before the deletion is still a replay).
    FOR i IN 1 .. m LOOP
        head_ver := NULL;
        head_tx := NULL;
        head_type := NULL;
        SELECT e.version, e.tx_id, e.event_type INTO head_ver, head_tx, head_type
          FROM %1$I.events e WHERE e.stream_id = p_streams[i]
         ORDER BY e.version DESC LIMIT 1;
        IF head_type = '$deleted' AND deleted_at IS NULL THEN
            deleted_at := i;
        END IF;
        actuals[i] := coalesce(head_ver, 0);
        last_txs[i] := head_tx;
        this_ok := head_type IS DISTINCT FROM '$deleted' AND CASE p_expected_kinds[i]
            WHEN 0 THEN true
            WHEN 1 THEN actuals[i] = 0
            WHEN 2 THEN actuals[i] > 0
            ELSE actuals[i] = p_expected[i]
        END;
        IF passes AND NOT this_ok THEN
            passes := false;
            failed := i;
        END IF;
    END LOOP;

    -- Is the request (or part of it) stored already? As in append_events,
    -- only after a failed check or a unique violation.
    IF n > 0 AND (p_check OR NOT passes) THEN
        SELECT array_agg(e.stream_id ORDER BY u.ord),
               array_agg(e.version ORDER BY u.ord),
               array_agg(e.tx_id::text::bigint ORDER BY u.ord),
               array_agg(e.seq ORDER BY u.ord),
               count(e.event_id)
          INTO found_strs, found_vers, tx_ids, seqs, found_n
          FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
          LEFT JOIN %1$I.events e ON e.event_id = u.id;

        IF found_n > 0 THEN
            IF found_n < n THEN
                outcome := 3;
                tx_ids := NULL;
                seqs := NULL;
                FOR k IN 1 .. n LOOP
                    IF found_strs[k] IS NOT NULL THEN
                        conflict_id := p_ids[k];
                        failed := p_entries[k];
                        EXIT;
                    END IF;
                END LOOP;
                RETURN;
            END IF;
            start := 0;
            FOR i IN 1 .. m LOOP
                versions[i] := actuals[i];
                FOR k IN start + 1 .. start + p_counts[i] LOOP
                    IF found_strs[k] <> p_streams[i] THEN
                        outcome := 4;
                        failed := i;
                        conflict_id := p_ids[k];
                        RETURN;
                    END IF;
                    IF found_vers[k] <> found_vers[start + 1] + (k - start - 1) THEN
                        outcome := 5;
                        failed := i;
                        conflict_id := p_ids[k];
                        RETURN;
                    END IF;
                    versions[i] := found_vers[k];
                END LOOP;
                start := start + p_counts[i];
            END LOOP;
            outcome := 1;
            RETURN;
        END IF;
        tx_ids := NULL;
        seqs := NULL;
    END IF;

    IF deleted_at IS NOT NULL THEN
        outcome := 8;
        failed := deleted_at;
        actual := actuals[deleted_at];
        RETURN;
    END IF;
    IF NOT passes THEN
        outcome := 2;
        actual := actuals[failed];
        RETURN;
    END IF;

    FOR i IN 1 .. m LOOP
        IF actuals[i] > 9223372036854775807 - p_counts[i] THEN
            outcome := 7;
            failed := i;
            actual := actuals[i];
            RETURN;
        END IF;
        versions[i] := actuals[i] + p_counts[i];
    END LOOP;
    outcome := 0;
    IF n = 0 THEN
        RETURN;
    END IF;

    this_tx := pg_current_xact_id();
    FOR i IN 1 .. m LOOP
        IF last_txs[i] IS NOT NULL AND this_tx < last_txs[i] THEN
            outcome := 6;
            failed := i;
            RETURN;
        END IF;
    END LOOP;

    SELECT e.seq INTO first_seq
      FROM %1$I.events e WHERE e.tx_id = this_tx
     ORDER BY e.seq DESC LIMIT 1;
    first_seq := coalesce(first_seq, 0) + 1;

    INSERT INTO %1$I.events
           (tx_id, seq, event_id, stream_id, starts_append, version, event_type, schema_version,
            data, metadata)
    SELECT this_tx, first_seq - 1 + u.ord, u.id, p_streams[u.entry], u.off = 1,
           actuals[u.entry] + u.off, u.typ, u.sv, u.d, coalesce(u.m, '{}')
      FROM ROWS FROM (unnest(p_ids), unnest(p_entries), unnest(p_offsets), unnest(p_types),
                      unnest(p_schema_versions), jsonb_array_elements(p_data),
                      unnest(p_metadata))
           WITH ORDINALITY AS u(id, entry, off, typ, sv, d, m, ord);

    tx_id := this_tx::text::bigint;

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

-- Archives (`$archived`) or deletes (`$deleted`) a stream: appends the
-- marker event through append_events, unless the stream's newest event is
-- that marker already (outcome 1, with its place). Deleting drops the
-- stream's snapshot in the same transaction.
DO $migration$
BEGIN
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.close_stream(
    p_stream            text,
    p_marker            text,
    p_expected_kind     smallint,
    p_expected          bigint,
    p_id                uuid,
    p_metadata          jsonb,
    OUT outcome         smallint,
    OUT actual          bigint,
    OUT conflict_id     uuid,
    OUT tx_id           bigint,
    OUT first_seq       bigint,
    OUT tx_ids          bigint[],
    OUT seqs            bigint[]
)
LANGUAGE plpgsql
SET enable_seqscan TO off
AS $body$
DECLARE
    head_type   text;
    head_tx     bigint;
    head_seq    bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(%2$L || p_stream, 7305));
    SELECT e.version, e.event_type, e.tx_id::text::bigint, e.seq
      INTO actual, head_type, head_tx, head_seq
      FROM %1$I.events e WHERE e.stream_id = p_stream
     ORDER BY e.version DESC LIMIT 1;
    IF head_type = p_marker THEN
        outcome := 1;
        tx_ids := ARRAY[head_tx];
        seqs := ARRAY[head_seq];
        RETURN;
    END IF;
    SELECT a.outcome, a.actual, a.conflict_id, a.tx_id, a.first_seq, a.tx_ids, a.seqs
      INTO outcome, actual, conflict_id, tx_id, first_seq, tx_ids, seqs
      FROM %1$I.append_events(p_stream, p_expected_kind, p_expected, ARRAY[p_id],
                              ARRAY[p_marker], ARRAY[1], jsonb_build_array('{}'::jsonb),
                              ARRAY[p_metadata], false) a;
    IF outcome = 0 AND p_marker = '$deleted' THEN
        DELETE FROM %1$I.snapshots s WHERE s.stream_id = p_stream;
    END IF;
END
$body$
$function$,
    current_schema(),
    current_schema() || ':');
END
$migration$;

-- Saves a snapshot unless a newer one is stored, under the stream's lock,
-- so that a snapshot saved as the stream is deleted cannot outlive the
-- deletion: returns the `$deleted` event's version when the stream is
-- deleted (nothing saved), NULL otherwise. Each statement of a function
-- sees what committed before it ran, so the deletion is seen once the
-- lock is held.
DO $migration$
BEGIN
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.save_snapshot(
    p_stream            text,
    p_version           bigint,
    p_schema_version    integer,
    p_data              jsonb,
    p_taken_at          timestamptz
) RETURNS bigint
LANGUAGE plpgsql
SET enable_seqscan TO off
AS $body$
DECLARE
    head_ver    bigint;
    head_type   text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(%2$L || p_stream, 7305));
    SELECT e.version, e.event_type INTO head_ver, head_type
      FROM %1$I.events e WHERE e.stream_id = p_stream
     ORDER BY e.version DESC LIMIT 1;
    IF head_type = '$deleted' THEN
        RETURN head_ver;
    END IF;
    INSERT INTO %1$I.snapshots AS s (stream_id, version, schema_version, data, taken_at)
    VALUES (p_stream, p_version, p_schema_version, p_data, p_taken_at)
    ON CONFLICT (stream_id) DO UPDATE
    SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
        data = EXCLUDED.data, taken_at = EXCLUDED.taken_at
    WHERE s.version <= EXCLUDED.version;
    RETURN NULL;
END
$body$
$function$,
    current_schema(),
    current_schema() || ':');
END
$migration$;
