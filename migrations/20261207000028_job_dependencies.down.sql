-- Waiting jobs lose their wait: queued, undispatched (the dispatcher pushes them).
DROP TABLE IF EXISTS job_dependencies;
UPDATE jobs SET status = 'queued', dispatched_at = NULL WHERE status = 'waiting';
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'retrying', 'dead', 'cancelled', 'suppressed'));
