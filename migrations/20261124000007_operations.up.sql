-- Operators' queue administration: dead jobs discarded (kept for audit), the audit log
-- of every admin action, the progress of bulk operations (so any api replica can
-- answer for it), and the indexes of the admin listings and per-queue counts.

-- A discarded job stays `dead` (its request's counts do not change); it is left out of
-- retries and of the `dead` count. NOT VALID: every existing row is NULL, and new
-- writes are checked all the same.
ALTER TABLE jobs ADD COLUMN discarded_at timestamptz;
ALTER TABLE jobs ADD COLUMN discarded_by text;
ALTER TABLE jobs ADD CONSTRAINT jobs_discarded_dead_check
    CHECK (discarded_at IS NULL OR status = 'dead') NOT VALID;

-- Admin listings, newest first: by status (and queue, read from the index), and
-- unfiltered (or by queue). The status index also serves the per-queue counts of the
-- open states and of dead jobs.
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, id DESC) INCLUDE (queue);
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC) INCLUDE (queue);
-- Jobs that succeeded lately, per queue ("succeeded in the last hour").
CREATE INDEX jobs_succeeded_finished_idx ON jobs (finished_at) INCLUDE (queue)
    WHERE status = 'succeeded';

-- Every admin action, through the api or the `api` command line. Rows are never
-- changed or deleted (a trigger refuses it); there is no foreign key to `users`, so the
-- log outlives the accounts it names.
CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    -- `admin:<user id>` (api) or `cli:<operator>` (command line).
    actor       text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    actor_id    uuid,
    action      text NOT NULL,
    -- What it acted on: `job:<id>`, `queue:<name>`, `user:<id>`, `request:<id>`.
    target      text,
    details     jsonb NOT NULL DEFAULT '{}',
    -- The x-request-id of the HTTP request (or the command line run).
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_created_idx ON audit_log (created_at DESC, id DESC);

CREATE FUNCTION conveyor_audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION conveyor_audit_log_append_only();

-- Bulk operations (a bulk retry of a queue's dead or cancelled jobs), run in batches
-- by one process at a time (`runner`), which refreshes `heartbeat_at` with every batch.
-- A running operation whose heartbeat stopped (its process died) is taken over by an
-- api replica and continued: it retries only jobs that ended before it was created, so
-- continuing it never retries a job twice.
CREATE TABLE admin_operations (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('bulk_retry')),
    actor         text NOT NULL,
    queue         text NOT NULL,
    job_status    text NOT NULL CHECK (job_status IN ('dead', 'cancelled')),
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    -- Jobs in scope when it was created; `done` of them are back in the queue.
    total         bigint NOT NULL CHECK (total >= 0),
    done          bigint NOT NULL DEFAULT 0 CHECK (done >= 0),
    error         text,
    runner        text NOT NULL,
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    -- Times another process took it over after its runner stopped.
    resumed       integer NOT NULL DEFAULT 0,
    request_id    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

CREATE INDEX admin_operations_running_idx ON admin_operations (heartbeat_at) WHERE state = 'running';

CREATE TRIGGER admin_operations_set_updated_at BEFORE UPDATE ON admin_operations
    FOR EACH ROW EXECUTE FUNCTION conveyor_set_updated_at();
