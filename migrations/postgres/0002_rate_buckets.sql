-- Token buckets shared by every node: tokens left, whether the last draw was allowed, and when
-- (database epoch seconds) the bucket was last drawn from.
CREATE TABLE rate_buckets (
    bucket TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    allowed BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
