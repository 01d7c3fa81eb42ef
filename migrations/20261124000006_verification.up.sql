-- Email verification and message quotas.
--
-- A self-registered account may sign in at once but submits no email, campaign or
-- upload until its address is confirmed with a single-use link sent through the
-- emails queue. Accounts made by an operator (`api create-user`, `create-admin`) and
-- every account that existed before this migration count as verified.

ALTER TABLE users ADD COLUMN email_verified_at timestamptz;
-- The last account email (verification link or "someone tried to register") sent to
-- this address: the bound that stops registration being used to flood a mailbox.
ALTER TABLE users ADD COLUMN account_mail_sent_at timestamptz;
UPDATE users SET email_verified_at = created_at;

-- Unverified accounts are deleted after UNVERIFIED_ACCOUNT_TTL_SECS (retention).
CREATE INDEX users_unverified_created_idx ON users (created_at) WHERE email_verified_at IS NULL;

-- Verification links: only the SHA-256 of the 256-bit token is kept.
CREATE TABLE email_verifications (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX email_verifications_user_idx ON email_verifications (user_id);
CREATE INDEX email_verifications_expires_idx ON email_verifications (expires_at);

-- Messages (one per recipient) an owner submitted, per clock hour: the hourly and
-- daily quotas are sliding windows over these buckets.
CREATE TABLE message_quota_usage (
    owner_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hour      timestamptz NOT NULL,
    messages  bigint NOT NULL CHECK (messages >= 0),
    PRIMARY KEY (owner_id, hour)
);
CREATE INDEX message_quota_usage_hour_idx ON message_quota_usage (hour);

-- Account emails (verification links, registration notices) are requests of their
-- own kind, owned by the account they are about.
ALTER TABLE requests DROP CONSTRAINT requests_kind_check;
ALTER TABLE requests ADD CONSTRAINT requests_kind_check
    CHECK (kind IN ('email', 'campaign', 'upload', 'scan', 'canary', 'account_email'));
