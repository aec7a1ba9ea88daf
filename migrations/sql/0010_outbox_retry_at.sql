-- A row the broker refused (unroutable, nacked, unconfirmed) waits until retry_at before a
-- relay claims it again, so refused rows at the head of the outbox do not hold back the rows
-- behind them. NULL: claimable now. Adding a nullable column without a default rewrites
-- nothing and takes its lock only for a moment.
ALTER TABLE outbox ADD COLUMN retry_at timestamptz;
