-- The audit log. Records of a tenant go with it; platform records (tenant_id null) stay.
CREATE TABLE audit_logs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    actor_type TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    ip_address TEXT,
    user_agent TEXT,
    request_id TEXT,
    changes TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX audit_logs_tenant ON audit_logs (tenant_id, id);
CREATE INDEX audit_logs_created ON audit_logs (created_at);
