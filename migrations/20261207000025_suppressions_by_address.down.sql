DROP INDEX IF EXISTS suppressions_address_idx;
