-- Images uploaded for vision providers: the bytes live in the file store under
-- `ai-uploads/<tenant>/<id>`; a row says what they are and when they stop being served.
CREATE TABLE ai_uploads (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    content_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX ai_uploads_expiry ON ai_uploads (expires_at);
