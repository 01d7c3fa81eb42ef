-- The operators' console lists every account's uploads newest first, all of them or
-- in one status (infected ones, say): uploads_owner_created_idx serves only one
-- owner's, so without these the page sorts the whole table. No update that is HOT
-- today stops being one: an upload's status and location were already indexed
-- (predicates of uploads_owner_sha256_idx and uploads_scannable_idx), created_at and
-- id never change, and a rescan with the same verdict touches neither index.
CREATE INDEX uploads_created_idx ON uploads (created_at DESC, id DESC);
CREATE INDEX uploads_status_created_idx ON uploads (status, created_at DESC, id DESC);
