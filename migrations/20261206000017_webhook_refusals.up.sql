-- Why a delivery's address was refused, as the request's owner may read it: the
-- resolver's findings (what a name resolves to) stay in the job's last_error, for
-- operators and the logs. Reset on every attempt, so a retried delivery that fails
-- otherwise shows its own error.
ALTER TABLE webhook_deliveries ADD COLUMN refusal text;
