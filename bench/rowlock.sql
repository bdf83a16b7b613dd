-- The row-lock-per-request baseline (BENCHMARKS.md): one transaction per order,
-- on storefront's own schema. :pid is the product, :uid the buyer.
BEGIN;
UPDATE products SET stock_quantity = stock_quantity - 1 WHERE id = :pid AND stock_quantity >= 1;
INSERT INTO orders (user_id, status, total_amount) VALUES (:uid, 'pending', 10.00);
INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (currval('orders_id_seq'), :pid, 1, 10.00);
COMMIT;
