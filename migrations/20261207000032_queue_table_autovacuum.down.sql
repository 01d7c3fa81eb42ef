ALTER TABLE jobs RESET (
    autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_insert_threshold, autovacuum_vacuum_insert_scale_factor,
    autovacuum_analyze_threshold, autovacuum_analyze_scale_factor, autovacuum_vacuum_cost_delay
);
ALTER TABLE requests RESET (
    autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_insert_threshold, autovacuum_vacuum_insert_scale_factor,
    autovacuum_analyze_threshold, autovacuum_analyze_scale_factor, autovacuum_vacuum_cost_delay
);
ALTER TABLE message_quota_usage RESET (
    autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor, autovacuum_vacuum_cost_delay
);
ALTER TABLE send_counts RESET (
    autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor, autovacuum_vacuum_cost_delay
);
ALTER TABLE job_dependencies RESET (
    autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor, autovacuum_vacuum_cost_delay
);
