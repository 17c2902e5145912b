-- Ids and times compare bytewise ("C"), as they are written.
-- Webhook deliveries: one row per (event, endpoint), committed with the event. The row is also
-- the durable job: workers claim due rows with a lease and write the outcome back.
CREATE TABLE webhook_deliveries (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id TEXT,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT,
    next_attempt_at TEXT COLLATE "C",
    lease_until TEXT COLLATE "C",
    lease_token TEXT,
    response_code BIGINT,
    last_error TEXT,
    delivered_at TEXT,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, created_at, id);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at, id);

-- Every attempt of a delivery: what the receiver answered, how long it took.
CREATE TABLE webhook_attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    status_code BIGINT,
    duration_ms BIGINT NOT NULL,
    response_body TEXT,
    error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);

-- The dead-letter queue: background work that ran out of attempts, by kind.
CREATE TABLE dlq_messages (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    reference_id TEXT NOT NULL,
    summary TEXT NOT NULL,
    error TEXT,
    attempts BIGINT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX dlq_messages_tenant ON dlq_messages (tenant_id, created_at, id);
CREATE INDEX dlq_messages_reference ON dlq_messages (reference_id);
