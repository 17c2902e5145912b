-- Single-use secrets sent to a user (email verification, password reset, magic link, SMS code),
-- stored hashed, expiring, with the attempts made at guessing them.
CREATE TABLE auth_codes (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    target TEXT,
    redirect_to TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
CREATE INDEX auth_codes_hash ON auth_codes (code_hash);
CREATE INDEX auth_codes_target ON auth_codes (tenant_id, purpose, target, created_at);

-- Emails and text messages to send: committed with the request that caused them, sent by a
-- worker with retries. The body (a link or a code) is sealed, and wiped once sent.
CREATE TABLE outbound_messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    lease_until TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX outbound_messages_due ON outbound_messages (status, next_attempt_at);
