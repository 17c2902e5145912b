-- Inbound webhook sources: where a tenant receives signed webhooks from other services. The
-- signing secret (and Meta's verify token) are stored encrypted under the tenant's data key.
CREATE TABLE inbound_sources (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    scheme TEXT NOT NULL,
    secret TEXT NOT NULL,
    verify_token TEXT,
    description TEXT,
    received_count BIGINT NOT NULL DEFAULT 0,
    last_received_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX inbound_sources_name ON inbound_sources (tenant_id, name);
CREATE INDEX inbound_sources_tenant ON inbound_sources (tenant_id, created_at, id);

-- What the sources received, verified. `external_id` is the sender's delivery id, when it
-- gives one, so that a re-sent delivery is stored once.
CREATE TABLE inbound_messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source_id TEXT NOT NULL REFERENCES inbound_sources (id) ON DELETE CASCADE,
    external_id TEXT,
    event_id TEXT NOT NULL,
    content_type TEXT,
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE UNIQUE INDEX inbound_messages_external ON inbound_messages (source_id, external_id);
CREATE INDEX inbound_messages_source ON inbound_messages (tenant_id, source_id, received_at, id);

-- Webhooks to the platform itself (Stripe billing, Meta's app-wide callback), by provider.
CREATE TABLE platform_webhook_events (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    external_id TEXT,
    kind TEXT NOT NULL,
    tenant_id TEXT,
    outcome TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE UNIQUE INDEX platform_webhook_events_external ON platform_webhook_events (provider, external_id);

-- The billing provider's customer of a tenant, learned from its checkout, and the creation time
-- (Unix seconds) of the last billing event applied, so that a late, older event changes nothing.
ALTER TABLE tenants ADD COLUMN billing_customer_id TEXT;
ALTER TABLE tenants ADD COLUMN billing_event_at BIGINT;
CREATE INDEX tenants_billing_customer ON tenants (billing_customer_id);
