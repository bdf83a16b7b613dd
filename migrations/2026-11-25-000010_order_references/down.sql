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
