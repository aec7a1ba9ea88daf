-- Consumer inbox: one row per (consumer, event) applied; the dedupe key of exactly-once effect.
CREATE TABLE inbox (
    consumer      text NOT NULL,
    event_id      uuid NOT NULL,
    event_created timestamptz,
    applied_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX inbox_applied_at_idx ON inbox (applied_at);
-- Event status lookups (GET /v1/events/{id}) and audits find an event whatever the consumer.
CREATE INDEX inbox_event_idx ON inbox (event_id);
