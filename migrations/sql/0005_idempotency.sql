-- Idempotency records, scoped per API client; written in the same transaction as the events.
CREATE TABLE idempotency_keys (
    client_id       text NOT NULL,
    key             text NOT NULL,
    fingerprint     text NOT NULL,
    response_status smallint NOT NULL,
    response_body   bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (client_id, key)
);

CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
