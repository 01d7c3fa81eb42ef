-- Periodic jobs: the schedules the workers' scheduler role enqueues from (registered
-- by the workers at start, from code and configuration), with their last and next run
-- as operators see them, and the pause an operator can set. A tick is enqueued once
-- across every worker: the scheduler takes due rows FOR UPDATE SKIP LOCKED, moves
-- `next_run_at` past now in the same transaction as the job, and the job carries the
-- tick in its unique key.

CREATE TABLE schedules (
    name          text PRIMARY KEY,
    queue         text NOT NULL,
    -- `every 300s`, or `cron 0 3 * * *` (evaluated in `time_zone`).
    every         text NOT NULL,
    time_zone     text NOT NULL DEFAULT 'UTC',
    paused        boolean NOT NULL DEFAULT false,
    paused_by     text,
    next_run_at   timestamptz NOT NULL,
    -- The tick last enqueued, its job, and ticks skipped by the missed-tick policy.
    last_run_at   timestamptz,
    last_job_id   uuid,
    missed        bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE NOT paused;

CREATE TRIGGER schedules_set_updated_at BEFORE UPDATE ON schedules
    FOR EACH ROW EXECUTE FUNCTION conveyor_set_updated_at();
