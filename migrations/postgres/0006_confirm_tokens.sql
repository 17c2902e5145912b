-- Single-use tokens confirming the deletion of a parent with dependants (5 minutes).
CREATE TABLE confirm_tokens (
    token_hash TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX confirm_tokens_expiry ON confirm_tokens (expires_at);
