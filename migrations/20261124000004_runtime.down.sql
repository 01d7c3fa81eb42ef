DROP INDEX IF EXISTS requests_finished_idx;

DELETE FROM requests WHERE kind = 'canary';

ALTER TABLE requests DROP CONSTRAINT requests_kind_check;
ALTER TABLE requests ADD CONSTRAINT requests_kind_check
    CHECK (kind IN ('email', 'campaign', 'upload', 'scan'));

ALTER TABLE jobs DROP CONSTRAINT jobs_queue_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_queue_check
    CHECK (queue IN ('emails', 'uploads', 'scans'));
