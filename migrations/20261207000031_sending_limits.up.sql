-- An account's own sending limits: a daily cap and a warm-up (a cap growing day by
-- day for a new sending domain), counted per local day of `time_zone`
-- (shared::mail::window, shared::db::send_caps). One row per account that set any.
CREATE TABLE sending_limits (
    owner_id   uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    time_zone  text NOT NULL,
    daily_cap  integer CHECK (daily_cap > 0),
    warmup     jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Why a job waits without spending an attempt (a send window, a daily cap, a
-- recipient domain's pace): what the campaign's view shows; cleared when it runs.
ALTER TABLE jobs ADD COLUMN deferred_reason text;
