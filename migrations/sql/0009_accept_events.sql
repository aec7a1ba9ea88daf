-- POST /v1/events as one statement. Called in autocommit, the call is its own transaction:
-- one round trip where BEGIN, lock, lookup, item check, three inserts and COMMIT took eight.
--
-- Outcomes: 'in_flight' (another request holds the key), 'replay' (a live record: its
-- fingerprint, status and body), 'unknown_items' (sorted ids; nothing written) and
-- 'accepted' (events, outbox rows and the idempotency record committed together). The
-- response body is rendered here, where the outcome is known, exactly as the API documents
-- it (EventBatchResult), so the stored body and the first answer are the same bytes.
CREATE FUNCTION accept_events(
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
    new_ids uuid[];
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

    SELECT array_agg(w.id ORDER BY w.id) INTO missing_items
      FROM (SELECT DISTINCT unnest(p_item_ids) AS id) w
     WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = w.id);
    IF missing_items IS NOT NULL THEN
        outcome := 'unknown_items';
        RETURN;
    END IF;

    IF expired THEN
        DELETE FROM idempotency_keys
         WHERE client_id = p_client_id AND key = p_key AND expires_at <= now();
    END IF;

    -- A repeated event_id (known already, or twice in this batch) inserts nothing.
    WITH inserted AS (
        INSERT INTO events (event_id, client_id, user_id, item_id, kind, occurred_at, request_id)
        SELECT e.event_id, p_client_id, e.user_id, e.item_id, e.kind, e.occurred_at, p_request_id
          FROM unnest(p_event_ids, p_user_ids, p_item_ids, p_kinds, p_occurred)
               AS e(event_id, user_id, item_id, kind, occurred_at)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    )
    SELECT coalesce(array_agg(event_id), '{}') INTO new_ids FROM inserted;

    -- One outbox row per new event, in request order (the relay publishes in id order).
    INSERT INTO outbox (event_id, event_type, routing_key, payload, headers)
    SELECT f.event_id, p_event_type, f.routing_key, f.payload, p_headers
      FROM (
          SELECT DISTINCT ON (b.event_id) b.event_id, b.routing_key, b.payload, b.ord
            FROM unnest(p_event_ids, p_routing_keys, p_payloads) WITH ORDINALITY
                 AS b(event_id, routing_key, payload, ord)
           WHERE b.event_id = ANY (new_ids)
           ORDER BY b.event_id, b.ord
      ) f
     ORDER BY f.ord;

    -- The first occurrence of a new id is 'accepted'; every other one a 'duplicate'.
    WITH results AS (
        SELECT r.event_id::text AS id, r.ord,
               r.event_id = ANY (new_ids)
               AND r.ord = min(r.ord) OVER (PARTITION BY r.event_id) AS is_new
          FROM unnest(p_event_ids) WITH ORDINALITY AS r(event_id, ord)
    )
    SELECT count(*) FILTER (WHERE is_new),
           convert_to(format(
               '{"accepted":%s,"duplicates":%s,"results":[%s]}',
               count(*) FILTER (WHERE is_new),
               count(*) FILTER (WHERE NOT is_new),
               string_agg(format(
                   '{"event_id":"%s","status":"%s","href":"/v1/events/%s"}',
                   id, CASE WHEN is_new THEN 'accepted' ELSE 'duplicate' END, id
               ), ',' ORDER BY ord)
           ), 'UTF8')
      INTO accepted, response_body
      FROM results;

    response_status := 202;
    INSERT INTO idempotency_keys
        (client_id, key, fingerprint, response_status, response_body, expires_at)
    VALUES (p_client_id, p_key, p_fingerprint, response_status, response_body,
            now() + make_interval(secs => p_ttl_s));
    outcome := 'accepted';
END;
$$;
