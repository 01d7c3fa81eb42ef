CREATE INDEX IF NOT EXISTS jobs_unclaimed_idx ON jobs (dispatched_at)
    WHERE status = 'queued' AND dispatched_at IS NOT NULL;
DROP INDEX IF EXISTS jobs_unclaimed_due_idx;
ALTER TABLE requests DROP COLUMN IF EXISTS send_at;
