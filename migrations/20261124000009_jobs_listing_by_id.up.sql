-- Admin job listings are newest first by id (UUIDv7, time-ordered): the primary key
-- serves the unfiltered listing, so the created_at index goes. Every job transition
-- is a non-HOT update that inserts into each index of the table: one index fewer is
-- one insert fewer per claim and per outcome.
DROP INDEX IF EXISTS jobs_created_idx;
DROP INDEX IF EXISTS jobs_status_created_idx;
-- By status (and queue, read from the index); also serves the per-queue counts of the
-- open states and of dead jobs.
CREATE INDEX jobs_status_id_idx ON jobs (status, id DESC) INCLUDE (queue);
