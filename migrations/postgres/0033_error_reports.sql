-- Errors reported by browsers and apps, grouped by fingerprint (the message without its
-- numbers and ids, the source, the first frame of the stack): one row per group, with its count,
-- when it was first and last seen, and the last occurrence's details.
CREATE TABLE error_groups (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    message TEXT NOT NULL,
    level TEXT NOT NULL,
    source TEXT,
    path TEXT,
    stack TEXT,
    metadata TEXT,
    count BIGINT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT COLLATE "C" NOT NULL,
    last_reported_by TEXT
);
CREATE UNIQUE INDEX error_groups_fingerprint ON error_groups (tenant_id, fingerprint);
CREATE INDEX error_groups_last_seen ON error_groups (tenant_id, last_seen, id);
