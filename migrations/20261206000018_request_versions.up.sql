-- A request's version: one more with every change of its row, in the order the row's
-- lock serialises them (commit order for one request). Its events carry it, so an event
-- stream can drop a state older than the one it already sent: events are published by
-- several processes and may arrive out of order.
ALTER TABLE requests ADD COLUMN version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION conveyor_bump_version() RETURNS trigger AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER requests_bump_version BEFORE UPDATE ON requests
    FOR EACH ROW EXECUTE FUNCTION conveyor_bump_version();
