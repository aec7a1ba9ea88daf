-- A deterministic popularity prior so unknown users get a sensible ranking before any event.
INSERT INTO item_popularity (item_id, category_id, prior, score)
SELECT item_id, category_id, round((100.0 / power(item_id, 0.6))::numeric, 6),
       round((100.0 / power(item_id, 0.6))::numeric, 6)
FROM items;
