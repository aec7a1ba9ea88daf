-- Item catalogue with a deterministic seed: 40 categories, 5,000 items.
CREATE TABLE categories (
    category_id smallint PRIMARY KEY,
    name        text NOT NULL UNIQUE
);

CREATE TABLE items (
    item_id     bigint PRIMARY KEY,
    category_id smallint NOT NULL REFERENCES categories (category_id),
    title       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX items_category_idx ON items (category_id, item_id);

INSERT INTO categories (category_id, name)
SELECT g, 'category-' || lpad(g::text, 2, '0') FROM generate_series(1, 40) AS g;

-- Items cycle through categories with a stride so neighbours differ in category.
INSERT INTO items (item_id, category_id, title)
SELECT g, ((g * 7) % 40) + 1, 'item ' || g FROM generate_series(1, 5000) AS g;
