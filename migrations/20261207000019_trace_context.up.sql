-- Tracing: the W3C traceparent of the span that enqueued a job (its first attempt is a
-- child of it, a retry links to it) and of the request that submitted a request (its
-- completion webhook continues that trace). NULL when tracing is off.
ALTER TABLE jobs ADD COLUMN trace_context text;
ALTER TABLE requests ADD COLUMN trace_context text;
