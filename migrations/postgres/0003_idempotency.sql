-- Answers to keyed writes, kept 24 hours per tenant ("platform" for the admin) and key.
-- `status` is null while the first request runs; `locked_until` lets a retry take over a
-- request that died with its process.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT,
    response_body TEXT,
    content_type TEXT,
    locked_until TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
