-- Every failed attempt of a job, written by the completer in the transaction that
-- records the failure (a retry scheduled, or the job dead): what the operators'
-- console shows as a job's attempts, and its failure rate over the last hour. A
-- success writes nothing here (the job row has it), so the hot path pays nothing.
CREATE TABLE job_failures (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    queue       text NOT NULL,
    attempt     integer NOT NULL,
    error       text NOT NULL,
    -- The attempt's start (the claim), when known.
    started_at  timestamptz,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    -- The last attempt: the job ended dead.
    dead        boolean NOT NULL
);

-- A job's attempts (its page; the cascade when the job is pruned).
CREATE INDEX job_failures_job_idx ON job_failures (job_id, id);
-- The last hour's failures by minute and queue (the console's overview).
CREATE INDEX job_failures_failed_at_idx ON job_failures (failed_at) INCLUDE (queue, dead);
