-- The job pipeline: client-facing requests and the jobs (the outbox) that carry them
-- out. PostgreSQL is the record; Redis only carries job ids.

CREATE TABLE requests (
    id              uuid PRIMARY KEY,
    owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('email', 'campaign', 'upload', 'scan')),
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'partially_failed', 'cancelled')),
    name            text,
    -- Content shared by every job of the request (a campaign's subject and body).
    content         jsonb,
    -- The x-request-id of the POST that made it, so job logs join the request's.
    correlation_id  text,
    total           integer NOT NULL CHECK (total >= 0),
    succeeded       integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0,
    cancelled       integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- Keyset pagination, newest first: per owner, and for admins across owners.
CREATE INDEX requests_owner_created_idx ON requests (owner_id, created_at DESC, id DESC);
CREATE INDEX requests_created_idx ON requests (created_at DESC, id DESC);

CREATE TRIGGER requests_set_updated_at BEFORE UPDATE ON requests
    FOR EACH ROW EXECUTE FUNCTION conveyor_set_updated_at();

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    request_id      uuid NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    queue           text NOT NULL CHECK (queue IN ('emails', 'uploads', 'scans')),
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'retrying', 'dead', 'cancelled')),
    attempt         integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL CHECK (max_attempts >= 1),
    run_after       timestamptz,
    last_error      text,
    dispatched_at   timestamptz,
    claimed_by      text,
    heartbeat_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);

CREATE INDEX jobs_request_id_idx ON jobs (request_id, status);
-- The dispatcher: committed but never pushed.
CREATE INDEX jobs_undispatched_idx ON jobs (created_at) WHERE status = 'queued' AND dispatched_at IS NULL;
-- The reconciler: pushed but not claimed, retries past due, running without a heartbeat.
CREATE INDEX jobs_unclaimed_idx ON jobs (dispatched_at) WHERE status = 'queued' AND dispatched_at IS NOT NULL;
CREATE INDEX jobs_retrying_idx ON jobs (run_after) WHERE status = 'retrying';
CREATE INDEX jobs_running_idx ON jobs (heartbeat_at) WHERE status = 'running';

CREATE TRIGGER jobs_set_updated_at BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION conveyor_set_updated_at();

-- Idempotency-Key: one request per (owner, key) for 24 hours.
CREATE TABLE idempotency_keys (
    owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key             text NOT NULL,
    fingerprint     bytea NOT NULL,
    request_id      uuid REFERENCES requests (id) ON DELETE CASCADE,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
