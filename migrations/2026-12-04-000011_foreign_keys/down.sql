UPDATE idempotency_keys
SET response_data = '{"success":true,"message":"Order created successfully","data":' || response_data
        || ',"timestamp":"' || to_char(responded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        || '","statusCode":201}'
WHERE response_status = 201 AND responded_at IS NOT NULL;
ALTER TABLE idempotency_keys DROP COLUMN responded_at;
ALTER TABLE idempotency_keys RENAME COLUMN response_data TO response_body;

CREATE FUNCTION storefront_expect_rows(actual bigint, expected bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF actual <> expected THEN
        RAISE EXCEPTION 'storefront: stock changed under the batch (% of % rows matched)', actual, expected
            USING ERRCODE = 'SF409';
    END IF;
    RETURN actual;
END
$$;

ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey;
ALTER TABLE order_items DROP CONSTRAINT order_items_order_id_fkey,
                        DROP CONSTRAINT order_items_product_id_fkey;

-- The error a foreign key raises for a row that refers to a missing one.
CREATE FUNCTION storefront_missing_reference(constraint_name text, tbl text, col text, key bigint, parent text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%"', tbl, constraint_name
        USING ERRCODE = 'foreign_key_violation', CONSTRAINT = constraint_name, TABLE = tbl,
              DETAIL = format('Key (%s)=(%s) is not present in table "%s".', col, key, parent);
END
$$;

-- Inserted orders: every buyer exists (locked FOR KEY SHARE).
CREATE FUNCTION storefront_orders_users_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    SELECT n.user_id INTO missing FROM storefront_inserted n
     WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = n.user_id FOR KEY SHARE)
     LIMIT 1;
    IF FOUND THEN
        PERFORM storefront_missing_reference('orders_user_id_fkey', 'orders', 'user_id', missing, 'users');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER orders_user_id_fkey AFTER INSERT ON orders
    REFERENCING NEW TABLE AS storefront_inserted
    FOR EACH STATEMENT EXECUTE FUNCTION storefront_orders_users_exist();

-- Inserted items: every order and every product exists (locked FOR KEY SHARE).
CREATE FUNCTION storefront_order_items_parents_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    SELECT n.order_id INTO missing FROM storefront_inserted n
     WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = n.order_id FOR KEY SHARE)
     LIMIT 1;
    IF FOUND THEN
        PERFORM storefront_missing_reference('order_items_order_id_fkey', 'order_items', 'order_id', missing, 'orders');
    END IF;
    SELECT n.product_id INTO missing FROM storefront_inserted n
     WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.id = n.product_id FOR KEY SHARE)
     LIMIT 1;
    IF FOUND THEN
        PERFORM storefront_missing_reference('order_items_product_id_fkey', 'order_items', 'product_id', missing, 'products');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER order_items_parents_exist AFTER INSERT ON order_items
    REFERENCING NEW TABLE AS storefront_inserted
    FOR EACH STATEMENT EXECUTE FUNCTION storefront_order_items_parents_exist();

-- A reference changed by UPDATE (rare: storefront never does it), row by
-- row. Arguments: constraint, referencing column, referenced table.
CREATE FUNCTION storefront_reference_exists() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    key bigint := (to_jsonb(NEW) ->> TG_ARGV[1])::bigint;
    found_it boolean;
BEGIN
    EXECUTE format('SELECT true FROM %I WHERE id = $1 FOR KEY SHARE', TG_ARGV[2]) INTO found_it USING key;
    IF found_it IS NULL THEN
        PERFORM storefront_missing_reference(TG_ARGV[0], TG_TABLE_NAME, TG_ARGV[1], key, TG_ARGV[2]);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER orders_user_id_fkey_update AFTER UPDATE OF user_id ON orders FOR EACH ROW
    WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION storefront_reference_exists('orders_user_id_fkey', 'user_id', 'users');
CREATE TRIGGER order_items_order_id_fkey_update AFTER UPDATE OF order_id ON order_items FOR EACH ROW
    WHEN (OLD.order_id IS DISTINCT FROM NEW.order_id)
    EXECUTE FUNCTION storefront_reference_exists('order_items_order_id_fkey', 'order_id', 'orders');
CREATE TRIGGER order_items_product_id_fkey_update AFTER UPDATE OF product_id ON order_items FOR EACH ROW
    WHEN (OLD.product_id IS DISTINCT FROM NEW.product_id)
    EXECUTE FUNCTION storefront_reference_exists('order_items_product_id_fkey', 'product_id', 'products');

-- A referenced row deleted or given another id: refused while referenced,
-- or (cascade) its referencing rows deleted with it. Arguments: constraint,
-- referencing table, referencing column, 'restrict' or 'cascade'.
CREATE FUNCTION storefront_unreferenced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    referenced boolean;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.id = NEW.id THEN
        RETURN NULL;
    END IF;
    -- At REPEATABLE READ this check would not see a referencing row
    -- committed after the transaction's snapshot (a foreign key's own check
    -- would); READ COMMITTED sees every committed row, and a referencing
    -- transaction still running holds the row FOR KEY SHARE, so this DELETE
    -- waited for it.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% on table "%" must run at READ COMMITTED (rows of "%" refer to it)',
            lower(TG_OP), TG_TABLE_NAME, TG_ARGV[1]
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF TG_OP = 'DELETE' AND TG_ARGV[3] = 'cascade' THEN
        EXECUTE format('DELETE FROM %I WHERE %I = $1', TG_ARGV[1], TG_ARGV[2]) USING OLD.id;
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT true FROM %I WHERE %I = $1 LIMIT 1', TG_ARGV[1], TG_ARGV[2]) INTO referenced USING OLD.id;
    IF referenced THEN
        RAISE EXCEPTION 'update or delete on table "%" violates foreign key constraint "%" on table "%"',
                TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[1]
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = TG_ARGV[0], TABLE = TG_ARGV[1],
                  DETAIL = format('Key (id)=(%s) is still referenced from table "%s".', OLD.id, TG_ARGV[1]);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER orders_user_id_fkey_parent AFTER DELETE OR UPDATE OF id ON users FOR EACH ROW
    EXECUTE FUNCTION storefront_unreferenced('orders_user_id_fkey', 'orders', 'user_id', 'restrict');
CREATE TRIGGER order_items_product_id_fkey_parent AFTER DELETE OR UPDATE OF id ON products FOR EACH ROW
    EXECUTE FUNCTION storefront_unreferenced('order_items_product_id_fkey', 'order_items', 'product_id', 'restrict');
CREATE TRIGGER order_items_order_id_fkey_parent AFTER DELETE OR UPDATE OF id ON orders FOR EACH ROW
    EXECUTE FUNCTION storefront_unreferenced('order_items_order_id_fkey', 'order_items', 'order_id', 'cascade');

-- TRUNCATE of a referenced table: the referencing table must be empty after
-- the command (AFTER TRUNCATE runs once every table it names is truncated).
-- Arguments: constraint, referencing table.
CREATE FUNCTION storefront_truncated_unreferenced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    referenced boolean;
BEGIN
    EXECUTE format('SELECT true FROM %I LIMIT 1', TG_ARGV[1]) INTO referenced;
    IF referenced THEN
        RAISE EXCEPTION 'cannot truncate a table referenced in a foreign key constraint'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('Table "%s" references "%s" (%s).', TG_ARGV[1], TG_TABLE_NAME, TG_ARGV[0]),
                  HINT = format('Truncate table "%s" at the same time.', TG_ARGV[1]);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER orders_user_id_fkey_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION storefront_truncated_unreferenced('orders_user_id_fkey', 'orders');
CREATE TRIGGER order_items_product_id_fkey_truncate AFTER TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION storefront_truncated_unreferenced('order_items_product_id_fkey', 'order_items');
CREATE TRIGGER order_items_order_id_fkey_truncate AFTER TRUNCATE ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION storefront_truncated_unreferenced('order_items_order_id_fkey', 'order_items');
