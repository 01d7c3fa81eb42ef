DROP TRIGGER IF EXISTS requests_enqueue_webhook ON requests;
DROP FUNCTION IF EXISTS conveyor_enqueue_webhook();
DROP TABLE IF EXISTS webhook_deliveries;
DROP TABLE IF EXISTS webhook_secrets;
ALTER TABLE requests DROP COLUMN IF EXISTS callback_url;
