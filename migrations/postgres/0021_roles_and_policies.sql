-- Authorization for end users. A role grants permissions (the scope grammar, plus
-- `objects.<type>:<action>`), inherits its parent's grants, and may be denied reading or writing
-- named properties of a type. Every tenant has the built-in `authenticated` and `anon` roles.
CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    permissions TEXT NOT NULL,
    parent_role_id TEXT REFERENCES roles (id),
    denied_properties TEXT NOT NULL,
    built_in BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX roles_name ON roles (tenant_id, name);
CREATE INDEX roles_parent ON roles (parent_role_id);

-- Roles assigned to users (beyond `authenticated`, which every signed-in user holds).
CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_role ON user_roles (role_id);

-- Row-level policies of an object type: per action (`select`, `insert`, `update`, `delete` or
-- `all`) and role (none: every role), a condition in the filter language whose values may name
-- the caller (`$auth.user_id`, ...). Policies of one action are OR'd; none means no access.
CREATE TABLE object_policies (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_type_id TEXT NOT NULL REFERENCES object_types (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    role_id TEXT REFERENCES roles (id),
    condition_json TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX object_policies_type ON object_policies (object_type_id, created_at, id);
CREATE INDEX object_policies_role ON object_policies (role_id);

-- "Each user owns their rows": an owner policy's lists, counts and lookups seek by author.
CREATE INDEX objects_live_author ON objects (object_type_id, created_by, id) WHERE deleted_at IS NULL;
