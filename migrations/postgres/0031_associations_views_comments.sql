-- Associations: typed, directed links between two objects of a tenant, with optional metadata.
-- One link per (from, type, to); purging either end removes it.
CREATE TABLE associations (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    association_type TEXT NOT NULL,
    from_type_id TEXT NOT NULL,
    from_id TEXT COLLATE "C" NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    to_type_id TEXT NOT NULL,
    to_id TEXT COLLATE "C" NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    meta TEXT,
    created_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX associations_link ON associations (from_id, association_type, to_id);
CREATE INDEX associations_from ON associations (from_id, id);
CREATE INDEX associations_to ON associations (to_id, id);

-- Saved views: a named filter, sort and columns over one object type.
CREATE TABLE object_views (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_type_id TEXT NOT NULL REFERENCES object_types (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    filters TEXT NOT NULL,
    sort TEXT,
    columns TEXT NOT NULL,
    created_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX object_views_name ON object_views (object_type_id, name);

-- Comments on objects, threaded by `parent_id`. A deleted comment keeps its row (its replies
-- still hang from it) without its body; every earlier body is kept in `comment_edits`.
CREATE TABLE comments (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_type_id TEXT NOT NULL,
    object_id TEXT COLLATE "C" NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    parent_id TEXT COLLATE "C" REFERENCES comments (id) ON DELETE CASCADE,
    body TEXT,
    author_type TEXT NOT NULL,
    author_id TEXT,
    edits BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE INDEX comments_object ON comments (object_id, id);

CREATE TABLE comment_edits (
    comment_id TEXT COLLATE "C" NOT NULL REFERENCES comments (id) ON DELETE CASCADE,
    edit BIGINT NOT NULL,
    body TEXT NOT NULL,
    edited_at TEXT NOT NULL,
    PRIMARY KEY (comment_id, edit)
);
