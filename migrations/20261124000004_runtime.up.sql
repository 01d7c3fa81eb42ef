-- The job runtime for every queue: the `canary` queue and request kind (no-op jobs that
-- prove the pipeline), and the index the pruner uses to delete finished requests past
-- their retention (their jobs go with them, ON DELETE CASCADE).

ALTER TABLE jobs DROP CONSTRAINT jobs_queue_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_queue_check
    CHECK (queue IN ('emails', 'uploads', 'scans', 'canary'));

ALTER TABLE requests DROP CONSTRAINT requests_kind_check;
ALTER TABLE requests ADD CONSTRAINT requests_kind_check
    CHECK (kind IN ('email', 'campaign', 'upload', 'scan', 'canary'));

CREATE INDEX requests_finished_idx ON requests (finished_at) WHERE finished_at IS NOT NULL;
