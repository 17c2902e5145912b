-- A tenant's schema: object types, unique by name in the tenant.
CREATE TABLE object_types (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT,
    additional_properties BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX object_types_name ON object_types (tenant_id, name);
CREATE INDEX object_types_tenant ON object_types (tenant_id, id);
