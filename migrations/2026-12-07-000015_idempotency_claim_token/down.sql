ALTER TABLE idempotency_keys DROP COLUMN claim_token;
