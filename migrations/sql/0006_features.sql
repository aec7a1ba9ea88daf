-- Feature tables maintained by the consumer with commutative, order-insensitive updates.
CREATE TABLE item_popularity (
    item_id    bigint PRIMARY KEY,
    category_id smallint,
    views      bigint NOT NULL DEFAULT 0,
    clicks     bigint NOT NULL DEFAULT 0,
    purchases  bigint NOT NULL DEFAULT 0,
    prior      double precision NOT NULL DEFAULT 0,
    score      double precision NOT NULL DEFAULT 0,
    last_at    timestamptz
);

CREATE INDEX item_popularity_score_idx ON item_popularity (score DESC, item_id);

CREATE TABLE user_category_affinity (
    user_id     text NOT NULL,
    category_id smallint NOT NULL,
    weight      double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, category_id)
);

CREATE TABLE user_item_interactions (
    user_id     text NOT NULL,
    item_id     bigint NOT NULL,
    interactions bigint NOT NULL DEFAULT 0,
    last_at     timestamptz,
    PRIMARY KEY (user_id, item_id)
);
