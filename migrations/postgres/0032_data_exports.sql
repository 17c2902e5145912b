-- Exports of one object type's objects, made by the `data.export` job into the file store
-- (`exports/<tenant>/<id>.<format>`) and kept until `expires_at`. `query` is what the export
-- reads, fixed when it was asked for: the condition (the caller's filters and row policies),
-- its values, and the properties the caller may not read.
CREATE TABLE data_exports (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_type_id TEXT NOT NULL REFERENCES object_types (id) ON DELETE CASCADE,
    format TEXT NOT NULL,
    status TEXT NOT NULL,
    record_count BIGINT NOT NULL,
    exported BIGINT NOT NULL,
    query TEXT NOT NULL,
    storage_key TEXT,
    size_bytes BIGINT,
    error TEXT,
    created_by TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    expires_at TEXT
);
CREATE INDEX data_exports_tenant ON data_exports (tenant_id, id);
