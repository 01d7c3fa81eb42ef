DROP FUNCTION IF EXISTS conveyor_set_updated_at();
