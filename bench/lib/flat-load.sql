-- scripts/bench flat_cost: finished work as the completer leaves it, one chunk of requests
-- :lo..:hi (two jobs each: jobs 2i and 2i+1) of :n requests spread evenly over the last
-- seven days, owned by :'owner'. Ids are time-ordered like the uuid v7 ids Conveyor makes;
-- one request in 100 has one dead job (kept for operators), the rest succeeded.
-- psql -v owner=UUID -v lo=1 -v hi=500000 -v n=5000000 -f bench/lib/flat-load.sql
BEGIN;
CREATE TEMP TABLE flat_chunk ON COMMIT DROP AS
SELECT i,
       now() - interval '7 days' * (1 - i::float8 / :n) AS at,
       (lpad(to_hex((extract(epoch FROM now() - interval '7 days' * (1 - i::float8 / :n)) * 1000)::bigint), 12, '0')
        || substr(md5('flat-r' || i), 13, 20))::uuid AS id
FROM generate_series(:lo, :hi) i;

INSERT INTO requests (id, owner_id, kind, status, total, succeeded, failed, correlation_id,
                      created_at, updated_at, finished_at)
SELECT id, :'owner', 'email',
       CASE WHEN i % 100 = 0 THEN 'partially_failed' ELSE 'succeeded' END,
       2, CASE WHEN i % 100 = 0 THEN 1 ELSE 2 END, CASE WHEN i % 100 = 0 THEN 1 ELSE 0 END,
       md5('corr' || i), at, at + interval '2 seconds', at + interval '2 seconds'
FROM flat_chunk;

INSERT INTO jobs (id, request_id, queue, payload, max_attempts, status, attempt, last_error,
                  dispatched_at, claimed_by, heartbeat_at, created_at, updated_at, started_at,
                  finished_at, lane_owner)
SELECT (lpad(to_hex((extract(epoch FROM c.at) * 1000)::bigint), 12, '0')
        || substr(md5('flat-j' || c.i || '-' || k), 13, 20))::uuid,
       c.id, 'emails',
       jsonb_build_object('to', 'reader' || c.i || '@example.org',
                          'sealed', repeat(md5(c.i::text), 3)),
       5,
       CASE WHEN k = 1 AND c.i % 100 = 0 THEN 'dead' ELSE 'succeeded' END,
       CASE WHEN k = 1 AND c.i % 100 = 0 THEN 5 ELSE 1 END,
       CASE WHEN k = 1 AND c.i % 100 = 0 THEN '550 5.1.1 mailbox unavailable' END,
       c.at, 'worker-flat', c.at + interval '1 second', c.at, c.at + interval '2 seconds',
       c.at + interval '1 second', c.at + interval '2 seconds', :'owner'
FROM flat_chunk c CROSS JOIN (VALUES (0), (1)) AS t (k);
COMMIT;
