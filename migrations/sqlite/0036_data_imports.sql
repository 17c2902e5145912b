-- Imports run as a `data.import` job (`async: true`): what was asked, the rows as sent (in the
-- file store at `input_key` until the import ends), on whose standing it runs (the credential,
-- checked again when it runs), where it stands, and its outcome (`result` when done, `error`
-- when refused or failed).
CREATE TABLE data_imports (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_type_id TEXT NOT NULL REFERENCES object_types (id) ON DELETE CASCADE,
    format TEXT NOT NULL,
    mode TEXT NOT NULL,
    dry_run BIGINT NOT NULL,
    upsert_by TEXT,
    mapping TEXT,
    standing TEXT NOT NULL,
    input_key TEXT,
    status TEXT NOT NULL,
    total BIGINT NOT NULL,
    processed BIGINT NOT NULL,
    result TEXT,
    error TEXT,
    created_by TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX data_imports_tenant ON data_imports (tenant_id, id);
