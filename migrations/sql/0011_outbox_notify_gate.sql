-- NOTIFY outbox only while a relay waits for it. NOTIFY takes one instance-wide lock at
-- COMMIT and holds it through the commit's WAL flush, so every notifying write commits alone
-- (no group commit) and one stalled flush holds up all the others; a relay that is busy, or
-- not running, has no use for the signal.
--
-- The gate: a relay about to sleep takes every stripe of advisory lock (1919247215, 0..63)
-- in share mode (workers/notify.py) and then looks for claimable rows once more. A writer
-- that can take its own stripe exclusively knows that no relay waits or is arming: it skips
-- the NOTIFY and keeps the stripe until it commits, so a relay arming meanwhile waits for
-- that commit and then sees the row. A writer that cannot take its stripe (a relay holds or
-- waits for it, or another writer of the same stripe commits just now) notifies as before.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(1919247215, pg_backend_pid() % 64) THEN
        PERFORM pg_notify('outbox', '');
    END IF;
    RETURN NULL;
END;
$$;
