ALTER TABLE jobs DROP COLUMN deferred_reason;
DROP TABLE sending_limits;
