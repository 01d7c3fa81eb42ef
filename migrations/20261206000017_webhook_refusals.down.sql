ALTER TABLE webhook_deliveries DROP COLUMN refusal;
