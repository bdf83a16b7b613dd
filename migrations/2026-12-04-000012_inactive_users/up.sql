-- The InventoryActor checks each batch's callers for deactivated accounts
-- (their access tokens may still be valid). This index holds deactivated
-- users only, so that check reads a handful of entries, not the whole key.
CREATE INDEX users_inactive_idx ON users (id) WHERE NOT is_active;
