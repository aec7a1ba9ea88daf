-- accept_events: an event_id another client already used is 'taken', not 'duplicate'.
--
-- event_id is unique across clients, so an id another client recorded inserts nothing. The
-- result used to call it a 'duplicate' with an href the caller cannot read (GET answers 404
-- for another client's event), as if the caller's own event were stored. It is now 'taken',
-- without href: this event was not recorded, and the client knows to choose a new id. The
-- owner is looked up only when an id inserted nothing, in a statement of its own, whose
-- snapshot sees an id that a concurrent transaction committed while the insert waited on it.
-- The batch path therefore renders the body after the writes; the one-event path is
-- unchanged when the event is new (migration 0012).
CREATE OR REPLACE FUNCTION accept_events(
    p_client_id text,
    p_key text,
    p_lock_key bigint,
    p_fingerprint text,
    p_ttl_s integer,
    p_request_id text,
    p_event_type text,
    p_headers jsonb,
    p_event_ids uuid[],
    p_user_ids text[],
    p_item_ids bigint[],
    p_item_set bigint[],  -- the distinct item ids
    p_kinds text[],
    p_occurred timestamptz[],
    p_routing_keys text[],
    p_payloads bytea[],
    OUT outcome text,
    OUT stored_fingerprint text,
    OUT response_status integer,
    OUT response_body bytea,
    OUT missing_items bigint[],
    OUT accepted integer
) LANGUAGE plpgsql AS $$
DECLARE
    live boolean;
    expired boolean := false;
    result text;
    accepted_ords bigint[];
    taken_ids uuid[] := '{}';
BEGIN
    IF NOT pg_try_advisory_xact_lock(p_lock_key) THEN
        outcome := 'in_flight';
        RETURN;
    END IF;

    SELECT k.fingerprint, k.response_status, k.response_body, k.expires_at > now()
      INTO stored_fingerprint, response_status, response_body, live
      FROM idempotency_keys k
     WHERE k.client_id = p_client_id AND k.key = p_key;
    IF FOUND THEN
        IF live THEN
            outcome := 'replay';
            RETURN;
        END IF;
        expired := true;
        stored_fingerprint := NULL;
        response_status := NULL;
        response_body := NULL;
    END IF;

    -- One primary-key probe per distinct id; which ones are missing only when some are.
    IF (SELECT count(*) FROM items WHERE item_id = ANY (p_item_set)) < cardinality(p_item_set)
    THEN
        SELECT array_agg(w.id ORDER BY w.id) INTO missing_items
          FROM unnest(p_item_set) AS w(id)
         WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = w.id);
        outcome := 'unknown_items';
        RETURN;
    END IF;

    IF expired THEN
        DELETE FROM idempotency_keys
         WHERE client_id = p_client_id AND key = p_key AND expires_at <= now();
    END IF;

    -- One event, the usual request: three single-row statements, each cheap to start.
    IF cardinality(p_event_ids) = 1 THEN
        INSERT INTO events (event_id, client_id, user_id, item_id, kind, occurred_at, request_id)
        VALUES (p_event_ids[1], p_client_id, p_user_ids[1], p_item_ids[1], p_kinds[1],
                p_occurred[1], p_request_id)
        ON CONFLICT (event_id) DO NOTHING;
        IF FOUND THEN
            INSERT INTO outbox (event_id, event_type, routing_key, payload, headers)
            VALUES (p_event_ids[1], p_event_type, p_routing_keys[1], p_payloads[1], p_headers);
            accepted := 1;
            result := 'accepted';
        ELSE
            accepted := 0;
            SELECT CASE WHEN e.client_id = p_client_id THEN 'duplicate' ELSE 'taken' END
              INTO result
              FROM events e
             WHERE e.event_id = p_event_ids[1];
            result := coalesce(result, 'duplicate');
        END IF;
        response_status := 202;
        response_body := convert_to(format(
            '{"accepted":%s,"duplicates":%s,"results":[%s]}',
            accepted,
            1 - accepted,
            format(
                '{"event_id":"%s","status":"%s"%s}',
                p_event_ids[1],
                result,
                CASE WHEN result = 'taken' THEN ''
                     ELSE format(',"href":"/v1/events/%s"', p_event_ids[1]) END
            )
        ), 'UTF8');
        INSERT INTO idempotency_keys
            (client_id, key, fingerprint, response_status, response_body, expires_at)
        VALUES (p_client_id, p_key, p_fingerprint, 202, response_body,
                now() + make_interval(secs => p_ttl_s));
        outcome := 'accepted';
        RETURN;
    END IF;

    -- The writes as one statement (each statement in a function has its own overhead).
    -- A repeated event_id (known already, or twice in this batch) inserts nothing; the
    -- first occurrence of a new id is 'accepted', one known to another client 'taken', every
    -- other one a 'duplicate'; one outbox row per new event, in request order (the relay
    -- publishes in id order).
    WITH batch AS (
        SELECT * FROM unnest(p_event_ids, p_user_ids, p_item_ids, p_kinds, p_occurred,
                             p_routing_keys, p_payloads) WITH ORDINALITY
               AS b(event_id, user_id, item_id, kind, occurred_at, routing_key, payload, ord)
    ), inserted AS (
        INSERT INTO events (event_id, client_id, user_id, item_id, kind, occurred_at, request_id)
        SELECT event_id, p_client_id, user_id, item_id, kind, occurred_at, p_request_id
          FROM batch
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    ), firsts AS (
        SELECT DISTINCT ON (b.event_id) b.event_id, b.routing_key, b.payload, b.ord
          FROM batch b JOIN inserted i ON i.event_id = b.event_id
         ORDER BY b.event_id, b.ord
    ), outboxed AS (
        INSERT INTO outbox (event_id, event_type, routing_key, payload, headers)
        SELECT event_id, p_event_type, routing_key, payload, p_headers
          FROM firsts
         ORDER BY ord
    )
    SELECT coalesce(array_agg(ord), '{}') INTO accepted_ords FROM firsts;
    accepted := cardinality(accepted_ords);

    IF accepted < cardinality(p_event_ids) THEN
        SELECT coalesce(array_agg(e.event_id), '{}') INTO taken_ids
          FROM events e
         WHERE e.event_id = ANY (p_event_ids) AND e.client_id <> p_client_id;
    END IF;

    WITH rendered AS (
        SELECT convert_to(format(
                   '{"accepted":%s,"duplicates":%s,"results":[%s]}',
                   accepted,
                   cardinality(p_event_ids) - accepted,
                   string_agg(format(
                       '{"event_id":"%s","status":"%s"%s}',
                       b.event_id,
                       CASE WHEN b.ord = ANY (accepted_ords) THEN 'accepted'
                            WHEN b.event_id = ANY (taken_ids) THEN 'taken'
                            ELSE 'duplicate' END,
                       CASE WHEN b.event_id = ANY (taken_ids) THEN ''
                            ELSE format(',"href":"/v1/events/%s"', b.event_id) END
                   ), ',' ORDER BY b.ord)
               ), 'UTF8') AS body
          FROM unnest(p_event_ids) WITH ORDINALITY AS b(event_id, ord)
    )
    INSERT INTO idempotency_keys
        (client_id, key, fingerprint, response_status, response_body, expires_at)
    SELECT p_client_id, p_key, p_fingerprint, 202, body, now() + make_interval(secs => p_ttl_s)
      FROM rendered
    RETURNING idempotency_keys.response_status, idempotency_keys.response_body
      INTO response_status, response_body;
    outcome := 'accepted';
END;
$$;
