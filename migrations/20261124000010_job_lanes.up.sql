-- Fair lanes: a job of bulk work (a campaign's message) names the owner whose turn it
-- takes in its queue's fair lane; NULL is the priority lane (transactional work). The
-- dispatcher, the reconciler, retries and operators' requeues push a job back to its
-- lane. Nullable without a default: adding it rewrites nothing.
ALTER TABLE jobs ADD COLUMN lane_owner uuid;
