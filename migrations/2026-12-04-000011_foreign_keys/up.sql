-- The references of orders and order items are foreign keys again, as
-- migration 000003 created them; the trigger functions of 000010 go.

DROP TRIGGER orders_user_id_fkey_truncate ON users;
DROP TRIGGER order_items_product_id_fkey_truncate ON products;
DROP TRIGGER order_items_order_id_fkey_truncate ON orders;
DROP FUNCTION storefront_truncated_unreferenced();
DROP TRIGGER orders_user_id_fkey_parent ON users;
DROP TRIGGER order_items_product_id_fkey_parent ON products;
DROP TRIGGER order_items_order_id_fkey_parent ON orders;
DROP FUNCTION storefront_unreferenced();
DROP TRIGGER orders_user_id_fkey_update ON orders;
DROP TRIGGER order_items_order_id_fkey_update ON order_items;
DROP TRIGGER order_items_product_id_fkey_update ON order_items;
DROP FUNCTION storefront_reference_exists();
DROP TRIGGER order_items_parents_exist ON order_items;
DROP FUNCTION storefront_order_items_parents_exist();
DROP TRIGGER orders_user_id_fkey ON orders;
DROP FUNCTION storefront_orders_users_exist();
DROP FUNCTION storefront_missing_reference(text, text, text, bigint, text);
ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE order_items
    ADD CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE,
    ADD CONSTRAINT order_items_product_id_fkey FOREIGN KEY (product_id) REFERENCES products (id);

DROP FUNCTION storefront_expect_rows(bigint, bigint);

-- An idempotency key keeps the order its first 201 showed (response_data,
-- the JSON of the order) and that response's envelope timestamp
-- (responded_at); a replay wraps them in the same envelope, byte for byte.
ALTER TABLE idempotency_keys RENAME COLUMN response_body TO response_data;
ALTER TABLE idempotency_keys ADD COLUMN responded_at TIMESTAMPTZ;
UPDATE idempotency_keys
SET responded_at  = substr(response_data, length(response_data) - 38, 20)::timestamptz,
    response_data = substr(response_data, 63, length(response_data) - 62 - 53)
WHERE response_status = 201
  AND response_data LIKE '{"success":true,"message":"Order created successfully","data":%';
