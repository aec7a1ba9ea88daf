-- Interaction events accepted by POST /v1/events; event_id is chosen by the client.
CREATE TABLE events (
    event_id    uuid PRIMARY KEY,
    client_id   text NOT NULL,
    user_id     text NOT NULL,
    item_id     bigint NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('view', 'click', 'purchase')),
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id  text
);

CREATE INDEX events_user_idx ON events (user_id);
