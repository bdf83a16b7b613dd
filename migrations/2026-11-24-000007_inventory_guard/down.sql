DROP FUNCTION storefront_expect_rows(bigint, bigint);
