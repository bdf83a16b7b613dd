ALTER TABLE products ALTER COLUMN search_text SET STATISTICS -1;
ALTER INDEX products_search_text_trgm_idx RESET (gin_pending_list_limit);
