-- The operators' console lists every account's requests in one state (failed ones,
-- say), newest first: without this index that page reads requests_created_idx until
-- it has found a page of them, the whole table when they are rare. A request changes
-- state only when it starts and when it finishes; its counts change without touching
-- an indexed column, so those updates stay HOT. Its finish was already a non-HOT
-- update (finished_at is indexed); its start becomes one.
CREATE INDEX requests_status_created_idx ON requests (status, created_at DESC, id DESC);
