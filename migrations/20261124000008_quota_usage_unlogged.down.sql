ALTER TABLE message_quota_usage SET LOGGED;
