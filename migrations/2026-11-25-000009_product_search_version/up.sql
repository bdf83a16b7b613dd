-- The version of `product_search`: one row, bumped by the first statement of
-- each transaction that changes the table, in that transaction. Every
-- snapshot that reads version V sees the same rows of `product_search`
-- (bumps are serialized by the row's lock, which a writer holds until it
-- commits), so a search `total` counted in a statement that also read V is
-- exact for as long as the version reads V, on every instance: servers keep
-- such totals in memory and ask only for the version (`models::product`,
-- README "Search").
--
-- Writers of the catalog's search text (admins creating, renaming,
-- deactivating products) queue on this row for the rest of their transaction;
-- stock updates never change `product_search` and never touch it.
CREATE TABLE product_search_version (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    version   BIGINT  NOT NULL
);
INSERT INTO product_search_version (version) VALUES (1);

-- Once per transaction (a transaction-local flag; a rolled-back savepoint
-- rolls back both its bump and its flag): a bulk change of 100k products
-- bumps once, not 100k times.
CREATE FUNCTION product_search_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('storefront.search_version_bumped', true) IS DISTINCT FROM 'on' THEN
        UPDATE product_search_version SET version = version + 1;
        PERFORM set_config('storefront.search_version_bumped', 'on', true);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER product_search_changed AFTER INSERT OR UPDATE OR DELETE ON product_search
    FOR EACH STATEMENT EXECUTE FUNCTION product_search_changed();
CREATE TRIGGER product_search_truncated AFTER TRUNCATE ON product_search
    FOR EACH STATEMENT EXECUTE FUNCTION product_search_changed();
