-- The end users who made at least one request, per tenant and UTC day: what analytics counts
-- as active users. Written in batches by the usage recorder; a deleted user's days go with it.
CREATE TABLE active_users (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (tenant_id, day, user_id)
);
CREATE INDEX active_users_user ON active_users (user_id);
