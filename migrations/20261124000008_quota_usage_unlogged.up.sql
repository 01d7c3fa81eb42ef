-- Quota charges commit without a WAL flush (see shared/src/db/quotas.rs): one busy
-- sender's submissions no longer wait in line for each other's disk flush. A crash
-- or a failover forgets the current windows' usage.
ALTER TABLE message_quota_usage SET UNLOGGED;
