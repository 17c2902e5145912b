-- Every AI call: who made it, where it went, what it used and cost (nano-dollars, so that sums
-- stay exact integers), how long it took and how it ended.
CREATE TABLE ai_usage (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_id TEXT,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    operation TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nano_usd BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    status BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX ai_usage_tenant ON ai_usage (tenant_id, created_at);

-- A tenant's monthly AI budget in US dollars (a decimal string), unset for none.
ALTER TABLE ai_settings ADD COLUMN ai_budget_usd TEXT;
