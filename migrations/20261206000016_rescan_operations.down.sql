DELETE FROM admin_operations WHERE kind = 'rescan_all';
ALTER TABLE admin_operations DROP COLUMN IF EXISTS cursor;
ALTER TABLE admin_operations DROP COLUMN IF EXISTS work_request_id;
ALTER TABLE admin_operations ALTER COLUMN job_status SET NOT NULL;
ALTER TABLE admin_operations DROP CONSTRAINT admin_operations_kind_check;
ALTER TABLE admin_operations ADD CONSTRAINT admin_operations_kind_check CHECK (kind IN ('bulk_retry'));
