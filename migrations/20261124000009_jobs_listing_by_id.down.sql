DROP INDEX IF EXISTS jobs_status_id_idx;
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, id DESC) INCLUDE (queue);
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC) INCLUDE (queue);
