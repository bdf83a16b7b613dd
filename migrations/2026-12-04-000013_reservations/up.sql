-- Checkout holds. A hold's units leave products.stock_quantity for
-- products.reserved_quantity until the hold is confirmed (they become the
-- items of its order), released or expired (they go back to stock_quantity).
-- Per product, at any quiet moment:
--   stock_quantity + reserved_quantity + units in orders not cancelled
--     = initial stock + stock adjustments.
ALTER TABLE products
    ADD COLUMN reserved_quantity INTEGER NOT NULL DEFAULT 0 CHECK (reserved_quantity >= 0);

CREATE TABLE reservations (
    id           UUID           PRIMARY KEY,
    user_id      BIGINT         NOT NULL REFERENCES users (id),
    status       VARCHAR(20)    NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'confirmed', 'released', 'expired')),
    total_amount NUMERIC(16, 2) NOT NULL CHECK (total_amount >= 0),
    expires_at   TIMESTAMPTZ    NOT NULL,
    -- The order a confirmed hold became; only confirmed holds have one, and
    -- an order comes from at most one hold.
    order_id     BIGINT UNIQUE REFERENCES orders (id),
    created_at   TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ    NOT NULL DEFAULT now(),
    CONSTRAINT reservations_order_iff_confirmed CHECK ((status = 'confirmed') = (order_id IS NOT NULL))
);
-- Lists: a user's holds and everyone's, newest first.
CREATE INDEX reservations_user_id_idx ON reservations (user_id, created_at DESC, id DESC);
CREATE INDEX reservations_created_at_id_idx ON reservations (created_at DESC, id DESC);
-- Expiry claims the due active holds in expiry order; the per-user limit
-- counts a user's active holds. Both indexes hold active holds only.
CREATE INDEX reservations_due_idx ON reservations (expires_at) WHERE status = 'active';
CREATE INDEX reservations_active_user_idx ON reservations (user_id) WHERE status = 'active';
SELECT diesel_manage_updated_at('reservations');

-- A hold's lines: one per product, `position` keeps the request's order.
CREATE TABLE reservation_items (
    reservation_id UUID           NOT NULL REFERENCES reservations (id) ON DELETE CASCADE,
    product_id     BIGINT         NOT NULL REFERENCES products (id),
    position       SMALLINT       NOT NULL CHECK (position >= 0),
    quantity       INTEGER        NOT NULL CHECK (quantity > 0),
    unit_price     NUMERIC(10, 2) NOT NULL CHECK (unit_price > 0),
    PRIMARY KEY (reservation_id, product_id)
);
CREATE INDEX reservation_items_product_id_idx ON reservation_items (product_id);

-- Orders and reservations have separate Idempotency-Key spaces.
ALTER TABLE idempotency_keys
    ADD COLUMN scope VARCHAR(20) NOT NULL DEFAULT 'orders' CHECK (scope IN ('orders', 'reservations'));
ALTER TABLE idempotency_keys ALTER COLUMN scope DROP DEFAULT;
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_pkey,
    ADD PRIMARY KEY (user_id, scope, key);
