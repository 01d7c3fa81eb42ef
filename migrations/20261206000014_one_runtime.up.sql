-- One runtime for all durable work. Jobs may belong to no request (webhook
-- deliveries, operators' operations, periodic chores: they are not counted on any
-- request); a job may carry a unique key (a periodic tick is enqueued once however
-- many workers race for it); the new queues. Completion webhooks move onto the
-- runtime: the trigger and its function go (the delivery job is enqueued by the code
-- that finishes the request, in its transaction), and every delivery becomes a job of
-- the `webhooks` queue, its state carried over. A delivery row keeps what the job does
-- not: its `webhook-id` (the row's id), the URL, the event, the receiver's last status.

ALTER TABLE jobs ALTER COLUMN request_id DROP NOT NULL;
ALTER TABLE jobs ADD COLUMN unique_key text;
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key) WHERE unique_key IS NOT NULL;
-- Finished jobs of no request, for retention (a request's jobs go with it).
CREATE INDEX jobs_unowned_finished_idx ON jobs (finished_at)
    WHERE request_id IS NULL AND finished_at IS NOT NULL;

ALTER TABLE jobs DROP CONSTRAINT jobs_queue_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_queue_check
    CHECK (queue IN ('emails', 'uploads', 'scans', 'canary', 'webhooks', 'operations', 'chores'));

DROP TRIGGER requests_enqueue_webhook ON requests;
DROP FUNCTION conveyor_enqueue_webhook();

-- Pending deliveries wait for the dispatcher (not dispatched: it pushes them on its
-- next round; one waiting for its retry is pushed when due); finished ones keep their
-- outcome, so clients read the same state as before.
INSERT INTO jobs (id, request_id, queue, payload, status, attempt, max_attempts, run_after,
                      last_error, dispatched_at, created_at, started_at, finished_at)
    SELECT m.id, NULL, 'webhooks', jsonb_build_object('delivery_id', m.id),
           CASE m.status WHEN 'delivered' THEN 'succeeded' WHEN 'dead' THEN 'dead'
                ELSE CASE WHEN m.attempts > 0 THEN 'retrying' ELSE 'queued' END END,
           m.attempts, greatest(10, m.attempts + 1),
           CASE WHEN m.status = 'pending' AND m.attempts > 0 THEN m.next_attempt_at END,
           m.last_error, NULL, m.created_at,
           CASE WHEN m.attempts > 0 THEN m.created_at END,
           CASE m.status WHEN 'delivered' THEN m.delivered_at WHEN 'dead' THEN now() END
    FROM webhook_deliveries m;

ALTER TABLE webhook_deliveries
    DROP COLUMN status,
    DROP COLUMN attempts,
    DROP COLUMN next_attempt_at,
    DROP COLUMN last_error,
    DROP COLUMN delivered_at;

-- Operators' bulk operations are jobs of the `operations` queue (the operation's id);
-- no api process runs or takes them over any more. One still running is carried over
-- as a queued job, which resumes it from its progress.
DROP INDEX admin_operations_running_idx;
INSERT INTO jobs (id, request_id, queue, payload, max_attempts)
SELECT o.id, NULL, 'operations', jsonb_build_object('operation_id', o.id), 5
FROM admin_operations o WHERE o.state = 'running';
