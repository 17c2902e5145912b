-- Approval workflows of object types: ordered stages, each with its approvers (roles, users,
-- keys) and how many approvals it needs. At most one enabled workflow per type.
CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_type_id TEXT NOT NULL REFERENCES object_types (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    stages TEXT NOT NULL,
    lock_in_review BIGINT NOT NULL,
    enabled BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX workflows_name ON workflows (object_type_id, name);

-- One review of one object: where it stands. At most one in review per object.
CREATE TABLE workflow_runs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    object_id TEXT NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    stage BIGINT NOT NULL,
    locks BIGINT NOT NULL,
    reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX workflow_runs_active ON workflow_runs (object_id) WHERE status = 'in_review';
CREATE INDEX workflow_runs_object ON workflow_runs (object_id, id);

-- Every step of every review, in order.
CREATE TABLE workflow_steps (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    stage BIGINT NOT NULL,
    action TEXT NOT NULL,
    actor_type TEXT NOT NULL,
    actor_id TEXT,
    comment TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX workflow_steps_run ON workflow_steps (run_id, id);
