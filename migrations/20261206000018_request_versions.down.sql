DROP TRIGGER IF EXISTS requests_bump_version ON requests;
DROP FUNCTION IF EXISTS conveyor_bump_version();
ALTER TABLE requests DROP COLUMN version;
