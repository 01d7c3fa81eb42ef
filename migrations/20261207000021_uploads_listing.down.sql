DROP INDEX IF EXISTS uploads_status_created_idx;
DROP INDEX IF EXISTS uploads_created_idx;
