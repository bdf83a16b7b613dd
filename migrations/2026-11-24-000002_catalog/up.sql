CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE categories (
    id          BIGSERIAL PRIMARY KEY,
    name        VARCHAR(100) NOT NULL,
    description TEXT,
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX categories_name_key ON categories (lower(name));
CREATE INDEX categories_name_id_idx ON categories (name, id);
SELECT diesel_manage_updated_at('categories');

CREATE TABLE products (
    id             BIGSERIAL PRIMARY KEY,
    name           VARCHAR(255)   NOT NULL,
    description    TEXT,
    price          NUMERIC(10, 2) NOT NULL CONSTRAINT products_price_positive CHECK (price > 0),
    stock_quantity INTEGER        NOT NULL DEFAULT 0
                   CONSTRAINT products_stock_non_negative CHECK (stock_quantity >= 0),
    -- RESTRICT: deleting a category that products still use is refused.
    category_id    BIGINT REFERENCES categories (id) ON DELETE RESTRICT,
    is_active      BOOLEAN        NOT NULL DEFAULT TRUE,
    created_at     TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ    NOT NULL DEFAULT now()
);
CREATE INDEX products_category_id_idx ON products (category_id);
-- Substring search on name or description (ILIKE '%term%').
CREATE INDEX products_search_trgm_idx ON products
    USING gin ((name || ' ' || coalesce(description, '')) gin_trgm_ops);
-- Default sort and keyset pagination for each sort order.
CREATE INDEX products_created_at_id_idx ON products (created_at DESC, id DESC);
CREATE INDEX products_price_id_idx ON products (price, id);
CREATE INDEX products_name_id_idx ON products (name, id);
SELECT diesel_manage_updated_at('products');
