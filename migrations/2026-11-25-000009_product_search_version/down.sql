DROP TRIGGER product_search_truncated ON product_search;
DROP TRIGGER product_search_changed ON product_search;
DROP FUNCTION product_search_changed();
DROP TABLE product_search_version;
