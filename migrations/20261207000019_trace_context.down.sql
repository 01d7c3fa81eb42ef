ALTER TABLE requests DROP COLUMN trace_context;
ALTER TABLE jobs DROP COLUMN trace_context;
