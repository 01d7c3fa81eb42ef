-- Autovacuum for the runtime's hot tables. PostgreSQL's defaults wait until 20 % of a
-- table is dead rows (and re-analyze after 10 % changed): with 10 million finished jobs
-- that is 2 million dead versions before a vacuum and a million changes before fresh
-- statistics, while every job leaves two dead versions (claim and outcome) and a
-- backlog is a fraction of a percent of the table. A queue table wants small, frequent,
-- unthrottled vacuums instead: a fixed threshold plus 1-2 % of the table, analyzed
-- sooner, with the insert-driven vacuum on so the visibility map stays current for
-- the index-only counts. These are storage parameters: they apply wherever autovacuum
-- runs (the server's `autovacuum = on`, PostgreSQL's default) and change nothing
-- where it is off.
ALTER TABLE jobs SET (
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.005,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE requests SET (
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0
);

-- Rewritten on every submission of an owner (one row per owner and hour) and every
-- admission of a campaign's message: small tables of very hot rows.
ALTER TABLE message_quota_usage SET (
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE send_counts SET (
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE job_dependencies SET (
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
