-- Kept dead jobs, counted by queue (discarded or not) from the index alone: the queue
-- counts of `GET /admin/queues`, the console and the workers' sampler no longer read
-- each dead job's heap row, scattered over a table of finished jobs (an index-only scan
-- once autovacuum has marked their pages all-visible; dead jobs change rarely).
CREATE INDEX jobs_dead_idx ON jobs (queue) INCLUDE (discarded_at) WHERE status = 'dead';
