-- Files: one row per file, its bytes in the file store under `files/<tenant>/<file>/<version>`
-- (each version kept), variants cached beside them under `.../<version>-variants/`.
-- `status` is `pending` until the bytes are in and checked, then `ready`. `stored_bytes` is
-- what the file counts against the tenant's `storage`: every version, and a pending upload's
-- reservation.
CREATE TABLE files (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    filename TEXT COLLATE "C" NOT NULL,
    mime_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    access TEXT NOT NULL,
    folder TEXT COLLATE "C" NOT NULL,
    meta TEXT NOT NULL,
    object_type_id TEXT,
    object_id TEXT,
    width BIGINT,
    height BIGINT,
    uploaded_by TEXT,
    uploaded_by_type TEXT NOT NULL,
    stored_bytes BIGINT NOT NULL,
    -- Where the current version's bytes are.
    storage_key TEXT NOT NULL,
    -- A pending upload: the size and checksum it was announced with, until when its slot is open.
    expected_sha256 TEXT,
    upload_expires_at TEXT,
    -- Kept only until then (images uploaded for vision providers).
    expires_at TEXT,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    deleted_at TEXT COLLATE "C"
);
CREATE INDEX files_live ON files (tenant_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX files_trash ON files (tenant_id, deleted_at, id) WHERE deleted_at IS NOT NULL;
CREATE INDEX files_folder ON files (tenant_id, folder);
CREATE INDEX files_object ON files (object_id) WHERE object_id IS NOT NULL;
CREATE INDEX files_pending ON files (status, created_at) WHERE status = 'pending';
CREATE INDEX files_expiring ON files (expires_at) WHERE expires_at IS NOT NULL;

-- Every version of a file's bytes, the current one too, each under its own storage key. A version
-- is `pending` from its reservation until its bytes are written (`received`, for a presigned
-- slot) and checked (`ready`).
CREATE TABLE file_versions (
    file_id TEXT COLLATE "C" NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    filename TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT,
    status TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    width BIGINT,
    height BIGINT,
    created_by TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (file_id, version)
);
CREATE INDEX file_versions_pending ON file_versions (status, created_at) WHERE status <> 'ready';

-- Images uploaded for vision providers are files now: what the old uploads counted against
-- `storage` is given back (their bytes are removed by the file sweeper).
UPDATE usage_counters SET count = GREATEST(0, count - COALESCE(
    (SELECT SUM(a.size_bytes) FROM ai_uploads a WHERE a.tenant_id = usage_counters.tenant_id), 0))
WHERE metric = 'storage' AND period = 'total';
DROP TABLE ai_uploads;
