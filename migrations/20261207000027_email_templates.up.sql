-- Email templates: an account's named templates, each edit a new version (a message
-- records the version it was rendered from). The parts are minijinja templates
-- (shared::mail::template), checked before they are stored.
CREATE TABLE email_templates (
    id              uuid PRIMARY KEY,
    owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text NOT NULL,
    current_version integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);

-- The owner's templates, newest first (keyset pagination).
CREATE INDEX email_templates_owner_created_idx ON email_templates (owner_id, created_at DESC, id DESC);

CREATE TABLE email_template_versions (
    template_id uuid NOT NULL REFERENCES email_templates (id) ON DELETE CASCADE,
    version     integer NOT NULL,
    subject     text NOT NULL,
    text        text NOT NULL,
    html        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, version)
);
