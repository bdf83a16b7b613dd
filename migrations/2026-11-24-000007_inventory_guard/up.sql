-- The InventoryActor's batch statement checks that it updated every product
-- row it meant to; when a compare-and-set did not match (another instance
-- sold, a price changed), this fails the whole statement, so nothing of the
-- batch is written.
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
