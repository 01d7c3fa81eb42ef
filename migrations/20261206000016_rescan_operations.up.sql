-- Rescanning every upload is an operation too: a job of the `operations` queue that
-- adds the scans to its request in chunks, walking the uploads by id from `cursor`.
ALTER TABLE admin_operations DROP CONSTRAINT admin_operations_kind_check;
ALTER TABLE admin_operations ADD CONSTRAINT admin_operations_kind_check
    CHECK (kind IN ('bulk_retry', 'rescan_all'));
-- Only a bulk retry has jobs of a status to retry.
ALTER TABLE admin_operations ALTER COLUMN job_status DROP NOT NULL;
-- The request a rescan carries out (the one its caller follows), and where it is.
ALTER TABLE admin_operations ADD COLUMN work_request_id uuid REFERENCES requests (id) ON DELETE CASCADE;
ALTER TABLE admin_operations ADD COLUMN cursor uuid;
