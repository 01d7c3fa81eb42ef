DROP INDEX IF EXISTS requests_status_created_idx;
