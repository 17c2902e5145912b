-- A tenant's policies; a tenant without a row has the defaults.
CREATE TABLE governance (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    audit_retention_days BIGINT NOT NULL,
    session_duration_secs BIGINT NOT NULL,
    password_min_length BIGINT NOT NULL,
    ip_allowlist TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
