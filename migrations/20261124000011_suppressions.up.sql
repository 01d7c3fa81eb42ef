-- Sending like a real sender: each sending account's suppression list, the
-- `suppressed` final state of a message, and what happened to sent mail afterwards
-- (bounces, complaints, unsubscribes) for campaign statistics.

-- A message to a suppressed address ends `suppressed`: final, never sent, counted on
-- its request apart from failures.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'retrying', 'dead', 'cancelled', 'suppressed'));
ALTER TABLE requests ADD COLUMN suppressed integer NOT NULL DEFAULT 0;
ALTER TABLE requests DROP CONSTRAINT requests_status_check;
ALTER TABLE requests ADD CONSTRAINT requests_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'partially_failed', 'cancelled', 'suppressed'));

-- Addresses an account no longer sends to. The address is personal data: sealed
-- (AES-256-GCM, like users.email) and found by its blind index (HMAC-SHA256).
CREATE TABLE suppressions (
    id              uuid PRIMARY KEY,
    owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address_index   bytea NOT NULL,
    address         bytea NOT NULL,
    reason          text NOT NULL CHECK (reason IN ('bounce', 'complaint', 'unsubscribe', 'manual')),
    -- What caused it: an SMTP reply, a DSN status, a feedback type (no address in it).
    detail          text,
    -- The message it came from, if any (kept when the job is pruned).
    job_id          uuid,
    request_id      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, address_index)
);

-- The owner's list, newest first (keyset pagination).
CREATE INDEX suppressions_owner_created_idx ON suppressions (owner_id, created_at DESC, id DESC);

-- What happened to a message after it was handed to the relay, once per kind.
CREATE TABLE email_events (
    job_id          uuid NOT NULL,
    request_id      uuid NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('bounced', 'complained', 'unsubscribed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, kind)
);

CREATE INDEX email_events_request_idx ON email_events (request_id, kind);

-- The per-campaign complaint-rate gauge reads recent campaigns among all requests.
CREATE INDEX requests_campaigns_idx ON requests (created_at DESC) WHERE kind = 'campaign';
