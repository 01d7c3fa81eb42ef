DROP TABLE IF EXISTS admin_operations;
DROP TABLE IF EXISTS audit_log;
DROP FUNCTION IF EXISTS conveyor_audit_log_append_only();
DROP INDEX IF EXISTS jobs_succeeded_finished_idx;
DROP INDEX IF EXISTS jobs_created_idx;
DROP INDEX IF EXISTS jobs_status_created_idx;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_discarded_dead_check;
ALTER TABLE jobs DROP COLUMN IF EXISTS discarded_by;
ALTER TABLE jobs DROP COLUMN IF EXISTS discarded_at;
