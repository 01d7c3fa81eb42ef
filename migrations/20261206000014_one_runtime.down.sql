-- Back to deliveries run beside the runtime: their state returns to the delivery rows
-- (from their jobs), the trigger returns, and jobs of no request are deleted.

ALTER TABLE webhook_deliveries
    ADD COLUMN status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_error text,
    ADD COLUMN delivered_at timestamptz;

UPDATE webhook_deliveries d SET
    status = CASE j.status WHEN 'succeeded' THEN 'delivered' WHEN 'dead' THEN 'dead'
                           WHEN 'cancelled' THEN 'dead' ELSE 'pending' END,
    attempts = j.attempt,
    next_attempt_at = coalesce(j.run_after, now()),
    last_error = j.last_error,
    delivered_at = CASE WHEN j.status = 'succeeded' THEN j.finished_at END
FROM jobs j WHERE j.id = d.id;

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';

DELETE FROM jobs WHERE request_id IS NULL;
CREATE INDEX admin_operations_running_idx ON admin_operations (heartbeat_at) WHERE state = 'running';
DROP INDEX IF EXISTS jobs_unowned_finished_idx;
DROP INDEX IF EXISTS jobs_unique_key_idx;
ALTER TABLE jobs DROP COLUMN unique_key;
ALTER TABLE jobs ALTER COLUMN request_id SET NOT NULL;
ALTER TABLE jobs DROP CONSTRAINT jobs_queue_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_queue_check
    CHECK (queue IN ('emails', 'uploads', 'scans', 'canary'));

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
