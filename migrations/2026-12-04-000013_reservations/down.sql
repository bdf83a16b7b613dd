ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
DELETE FROM idempotency_keys WHERE scope <> 'orders';
ALTER TABLE idempotency_keys ADD PRIMARY KEY (user_id, key);
ALTER TABLE idempotency_keys DROP COLUMN scope;

-- Units still held go back to stock: the books balance without holds.
UPDATE products SET stock_quantity = stock_quantity + reserved_quantity WHERE reserved_quantity > 0;

DROP TABLE reservation_items;
DROP TABLE reservations;
ALTER TABLE products DROP COLUMN reserved_quantity;
