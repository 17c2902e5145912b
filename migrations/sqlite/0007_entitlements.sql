-- Per-tenant limits set by the platform admin (limit_value null: unlimited), and recorded usage.
CREATE TABLE entitlement_overrides (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    feature TEXT NOT NULL,
    limit_value BIGINT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, feature)
);

CREATE TABLE usage_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    feature TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX usage_events_tenant ON usage_events (tenant_id, id);
