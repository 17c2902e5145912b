-- The credentials vault: one row per (tenant, service). `sealed` is the JSON of the service's
-- fields, encrypted under the tenant's data key with the service as associated data; `hints`
-- holds what may be shown (masked secrets, plain non-secret fields).
CREATE TABLE service_credentials (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    sealed TEXT NOT NULL,
    hints TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, service)
);

-- Named AI provider instances (seed 002): a provider type, its key sealed like the vault's, and
-- its configuration (base URL, default models, prices).
CREATE TABLE ai_providers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    provider_type TEXT NOT NULL,
    api_key TEXT,
    api_key_hint TEXT,
    config TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX ai_providers_name ON ai_providers (tenant_id, name);
CREATE INDEX ai_providers_tenant ON ai_providers (tenant_id, created_at, id);

-- A tenant's AI settings: the ordered provider priority list.
CREATE TABLE ai_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    provider_priority TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
