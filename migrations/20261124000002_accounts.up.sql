-- Accounts and sessions. PII (email, phone, TOTP secret) is stored only encrypted
-- (AES-256-GCM, key id inside the value); email lookups use a keyed HMAC blind index.

CREATE TABLE users (
    id                      uuid PRIMARY KEY,
    role                    text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'promoter', 'user')),
    email_ciphertext        bytea NOT NULL,
    email_index             bytea NOT NULL,
    phone_ciphertext        bytea,
    display_name            text CHECK (char_length(display_name) <= 100),
    password_hash           text NOT NULL,
    password_changed_at     timestamptz NOT NULL DEFAULT now(),
    -- A secret made by /2fa/setup waits here until /2fa/enable proves the app has it.
    totp_pending_ciphertext bytea,
    totp_secret_ciphertext  bytea,
    -- The last TOTP time step accepted: a code for this step or earlier is a replay.
    totp_last_step          bigint,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_index_key ON users (email_index);
CREATE INDEX users_role_idx ON users (role);

CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION conveyor_set_updated_at();

-- One login = one session (a refresh-token family). Revoking it ends every token of
-- the family and, because access tokens name their session, every access token too.
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    mfa            boolean NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

CREATE TABLE recovery_codes (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX recovery_codes_user_code_key ON recovery_codes (user_id, code_hash);
