-- Second factors (TOTP): the secret sealed under the tenant's key; the last time step
-- accepted, so that a code never works twice.
CREATE TABLE mfa_factors (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    friendly_name TEXT,
    secret TEXT NOT NULL,
    verified_at TEXT,
    last_step BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX mfa_factors_user ON mfa_factors (user_id, created_at);

-- One-use recovery codes, hashed.
CREATE TABLE mfa_recovery_codes (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    used_at TEXT
);
CREATE INDEX mfa_recovery_codes_user ON mfa_recovery_codes (user_id);

-- Five failed second-factor checks lock them for 15 minutes.
ALTER TABLE users ADD COLUMN mfa_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN mfa_locked_until TEXT;

-- The tenant's bot-check secret (Turnstile-style), sealed.
ALTER TABLE auth_configs ADD COLUMN turnstile_secret TEXT;
