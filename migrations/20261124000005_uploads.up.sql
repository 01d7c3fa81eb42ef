-- Uploads and scans: one row per uploaded file. The object lives in storage under a
-- server-made key (`<location>/<id>`); the client's file name is sanitized metadata.
-- An upload moves staging → stored (the `uploads` job) → quarantine (an `infected`
-- verdict) and is served only while `clean`.

CREATE TABLE uploads (
    id              uuid PRIMARY KEY,
    owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The request that carried it (upload, then its first scan). Pruned requests
    -- leave the upload in place.
    request_id      uuid REFERENCES requests (id) ON DELETE SET NULL,
    file_name       text NOT NULL CHECK (length(file_name) BETWEEN 1 AND 255),
    description     text CHECK (length(description) <= 1000),
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    sha256          bytea NOT NULL CHECK (length(sha256) = 32),
    file_type       text NOT NULL,
    status          text NOT NULL DEFAULT 'pending_scan'
                    CHECK (status IN ('pending_scan', 'clean', 'infected', 'rejected')),
    location        text NOT NULL DEFAULT 'staging'
                    CHECK (location IN ('staging', 'stored', 'quarantine')),
    -- The rules an `infected` verdict matched; empty otherwise.
    rules           text[] NOT NULL DEFAULT '{}',
    -- Why the upload was rejected (its staged object failed verification).
    error           text,
    scans           integer NOT NULL DEFAULT 0,
    scanned_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Keyset pages of an owner's uploads, newest first; the per-hour limit counts these.
CREATE INDEX uploads_owner_created_idx ON uploads (owner_id, created_at DESC, id DESC);
-- The same content twice by one owner is one upload (rejected ones do not count).
CREATE UNIQUE INDEX uploads_owner_sha256_idx ON uploads (owner_id, sha256) WHERE status <> 'rejected';
-- Rescan-all walks every stored (or quarantined) upload.
CREATE INDEX uploads_scannable_idx ON uploads (id) WHERE location <> 'staging';

CREATE TRIGGER uploads_set_updated_at BEFORE UPDATE ON uploads
    FOR EACH ROW EXECUTE FUNCTION conveyor_set_updated_at();
