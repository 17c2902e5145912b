-- Per-tenant data keys: random, stored wrapped (AES-256-GCM) under a key derived from the master
-- key, with the tenant id as associated data. Stored secrets are encrypted under them.
CREATE TABLE tenant_keys (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    wrapped_key TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Outbound webhook endpoints. Secrets are stored encrypted under the tenant's data key.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    object_types TEXT NOT NULL,
    status TEXT NOT NULL,
    description TEXT,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until TEXT,
    success_count BIGINT NOT NULL DEFAULT 0,
    failure_count BIGINT NOT NULL DEFAULT 0,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    last_delivery_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, id);
