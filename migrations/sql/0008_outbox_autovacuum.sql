-- The outbox churns: each row is inserted, marked published once, then purged by retention.
-- Vacuum and analyze it after a fixed number of changes rather than a share of its size, so
-- dead entries in the partial index and stale statistics never make the relay's claim slow
-- (without statistics the planner sorts the whole backlog instead of walking the index).
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
