DROP INDEX requests_campaigns_idx;
DROP TABLE email_events;
DROP TABLE suppressions;
UPDATE requests SET status = 'succeeded' WHERE status = 'suppressed';
ALTER TABLE requests DROP CONSTRAINT requests_status_check;
ALTER TABLE requests ADD CONSTRAINT requests_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'partially_failed', 'cancelled'));
ALTER TABLE requests DROP COLUMN suppressed;
UPDATE jobs SET status = 'cancelled' WHERE status = 'suppressed';
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'retrying', 'dead', 'cancelled'));
