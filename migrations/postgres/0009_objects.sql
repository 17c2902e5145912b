-- The typed data store: properties of object types, objects, their versions, and the event
-- outbox. Indexes on property values are made per property, at run time, by the properties module.
CREATE TABLE object_properties (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_type_id TEXT NOT NULL REFERENCES object_types (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    data_type TEXT NOT NULL,
    is_indexed BIGINT NOT NULL,
    is_sortable BIGINT NOT NULL,
    is_unique BIGINT NOT NULL,
    is_required BIGINT NOT NULL,
    default_value TEXT,
    enum_values TEXT,
    reference_type_id TEXT REFERENCES object_types (id),
    description TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX object_properties_name ON object_properties (object_type_id, name);
CREATE INDEX object_properties_reference ON object_properties (reference_type_id);

-- Byte order (`C`) on the columns lists sort and page by, as on SQLite.
CREATE TABLE objects (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_type_id TEXT NOT NULL REFERENCES object_types (id) ON DELETE CASCADE,
    properties TEXT NOT NULL,
    search_text TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_by TEXT,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    deleted_at TEXT
);
CREATE INDEX objects_live ON objects (object_type_id, id) WHERE deleted_at IS NULL;
CREATE INDEX objects_live_created ON objects (object_type_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX objects_live_updated ON objects (object_type_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX objects_trash ON objects (object_type_id, id) WHERE deleted_at IS NOT NULL;

CREATE INDEX objects_search ON objects USING gin (to_tsvector('simple', search_text));

-- Every version of every object: what it held, what changed, who changed it.
CREATE TABLE object_versions (
    object_id TEXT NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    action TEXT NOT NULL,
    properties TEXT NOT NULL,
    changed TEXT NOT NULL,
    actor_type TEXT NOT NULL,
    actor_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (object_id, version)
);

-- The outbox: events written with the change that caused them, for webhooks and realtime.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX events_tenant ON events (tenant_id, id);
