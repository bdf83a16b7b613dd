CREATE INDEX products_search_trgm_idx ON products
    USING gin ((name || ' ' || coalesce(description, '')) gin_trgm_ops);
DROP INDEX products_search_text_trgm_idx;
ALTER TABLE products DROP COLUMN search_text;
