-- The token of the request that owns an unfinished key. A retry that takes
-- over a stale claim writes a new token; the first request then no longer
-- owns the key and can neither complete nor release it.
ALTER TABLE idempotency_keys ADD COLUMN claim_token uuid NOT NULL DEFAULT gen_random_uuid();
