-- A job may wait for other jobs (`NewJob::after`): it is inserted `waiting`, with one
-- row here per dependency that had not ended at its enqueue, and becomes `queued` when
-- its last row is gone — the dependency ended, or the wait moved on to the follow-up
-- jobs the dependency's success inserted. A waiting job is neither claimable nor final.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('waiting', 'queued', 'running', 'succeeded', 'retrying', 'dead', 'cancelled', 'suppressed'));

CREATE TABLE job_dependencies (
    -- The waiting job (its rows go with it).
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- The job it waits for. No foreign key: the rows naming a job are deleted when it
    -- ends, and a job that never existed (or was pruned) is nothing to wait for.
    depends_on  uuid NOT NULL,
    PRIMARY KEY (job_id, depends_on)
);

-- The dependents of jobs that just ended (the completer's release, every batch).
CREATE INDEX job_dependencies_depends_on_idx ON job_dependencies (depends_on);
