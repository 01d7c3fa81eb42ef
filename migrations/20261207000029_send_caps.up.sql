-- Daily send caps (shared::db::send_caps): messages admitted per scope
-- (`campaign:<uuid>`, `account:<uuid>`) and local day, taken one at a time up to the
-- cap and given back when an admitted message is not sent.
CREATE TABLE send_counts (
    scope text NOT NULL,
    day   date NOT NULL,
    count integer NOT NULL CHECK (count >= 0),
    PRIMARY KEY (scope, day)
);

-- Retention deletes old days (prune_before).
CREATE INDEX send_counts_day_idx ON send_counts (day);
