-- migrate: no-transaction
-- events_user_idx (0002) serves no query: recommendations read the feature tables, and the
-- status endpoint and the audit find events by event_id. Every accepted event still paid an
-- index insert and its WAL for it. CONCURRENTLY, so writers are not blocked meanwhile.
-- lint: allow drop
DROP INDEX CONCURRENTLY IF EXISTS events_user_idx;
