-- Foundation: helpers later tables use.

-- Keeps an `updated_at` column honest: attach with
--   CREATE TRIGGER <table>_set_updated_at BEFORE UPDATE ON <table>
--   FOR EACH ROW EXECUTE FUNCTION conveyor_set_updated_at();
CREATE FUNCTION conveyor_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
