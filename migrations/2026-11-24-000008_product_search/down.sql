DROP TRIGGER products_search_updated ON products;
DROP TRIGGER products_search_inserted ON products;
DROP FUNCTION product_search_updated();
DROP FUNCTION product_search_inserted();
DROP TABLE product_search;
