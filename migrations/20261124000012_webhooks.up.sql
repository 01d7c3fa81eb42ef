-- Completion webhooks: a request may name a callback URL; when it reaches its final
-- state a trigger records one delivery (the outbox of webhooks) in the same
-- transaction that finished it, wherever that happens (the worker's completer, a
-- cancel, an upload's or a rescan's request closed by the api), and wakes the
-- workers with a notification. The workers sign and POST it, retrying with backoff.

ALTER TABLE requests ADD COLUMN callback_url text;

-- One signing secret per user, sealed with the PII cipher (purpose
-- "webhooks.secret"). On rotation the old one keeps signing until previous_until,
-- so receivers can move to the new one without losing events.
CREATE TABLE webhook_secrets (
    owner_id        uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret          bytea NOT NULL,
    previous        bytea,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    -- The `webhook-id` header: stable across retries, so receivers can deduplicate.
    id              uuid PRIMARY KEY,
    request_id      uuid NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    event           text NOT NULL,
    url             text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    -- Attempts claimed so far (a claim counts one; a shutdown gives it back).
    attempts        integer NOT NULL DEFAULT 0,
    -- When a pending delivery is due; a claim pushes it forward as its lease.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    last_status     integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (request_id, event)
);

-- The workers' claim: due pending deliveries, oldest due first.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';

CREATE FUNCTION conveyor_enqueue_webhook() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    delivery uuid;
BEGIN
    INSERT INTO webhook_deliveries (id, request_id, event, url)
    VALUES (gen_random_uuid(), NEW.id, 'request.finished', NEW.callback_url)
    ON CONFLICT (request_id, event) DO NOTHING
    RETURNING id INTO delivery;
    IF delivery IS NOT NULL THEN
        PERFORM pg_notify('conveyor_webhooks', delivery::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER requests_enqueue_webhook
    AFTER UPDATE OF finished_at ON requests
    FOR EACH ROW
    WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL AND NEW.callback_url IS NOT NULL)
    EXECUTE FUNCTION conveyor_enqueue_webhook();
