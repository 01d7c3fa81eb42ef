DELETE FROM requests WHERE kind = 'account_email';
ALTER TABLE requests DROP CONSTRAINT requests_kind_check;
ALTER TABLE requests ADD CONSTRAINT requests_kind_check
    CHECK (kind IN ('email', 'campaign', 'upload', 'scan', 'canary'));
DROP TABLE IF EXISTS message_quota_usage;
DROP TABLE IF EXISTS email_verifications;
DROP INDEX IF EXISTS users_unverified_created_idx;
ALTER TABLE users DROP COLUMN IF EXISTS account_mail_sent_at;
ALTER TABLE users DROP COLUMN IF EXISTS email_verified_at;
