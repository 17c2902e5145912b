-- Tenant-signed JWTs: a public key may demand an audience and an issuer, and a token that
-- carries a `jti` is accepted once within its lifetime (its id is kept until it expires).
ALTER TABLE public_keys ADD COLUMN audience TEXT;
ALTER TABLE public_keys ADD COLUMN issuer TEXT;

CREATE TABLE tenant_jwt_uses (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    jti TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, jti)
);
CREATE INDEX tenant_jwt_uses_expiry ON tenant_jwt_uses (expires_at);
