-- Scheduled sends: a request may name when its messages go out (`send_at`, NULL: at
-- once). Its jobs carry the time as `run_after`, which the claim respects.
ALTER TABLE requests ADD COLUMN send_at timestamptz;

-- The reconciler checks a pushed but unclaimed job only once it is due and the
-- redelivery timeout has passed since: after `greatest(dispatched_at, run_after)`
-- (GREATEST ignores NULL, so an unscheduled job keeps its `dispatched_at`). Ordered by
-- that, jobs scheduled for later are never read by its sweep.
CREATE INDEX jobs_unclaimed_due_idx ON jobs (greatest(dispatched_at, run_after))
    WHERE status = 'queued' AND dispatched_at IS NOT NULL;
DROP INDEX jobs_unclaimed_idx;
