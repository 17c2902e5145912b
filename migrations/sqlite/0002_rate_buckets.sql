-- Kept for schema parity with PostgreSQL: in the embedded mode buckets live in memory.
CREATE TABLE rate_buckets (
    bucket TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    allowed BIGINT NOT NULL,
    updated_at REAL NOT NULL
);
