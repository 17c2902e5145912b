-- A tenant's end users (seed 002's Users and Authentication). Emails are stored lowercased;
-- phones in E.164. Passwords are Argon2id PHC strings; a user without one signs in by other
-- means (magic link, SMS code) or is anonymous.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email TEXT,
    phone TEXT,
    password_hash TEXT,
    role TEXT NOT NULL,
    anonymous BIGINT NOT NULL DEFAULT 0,
    email_verified_at TEXT,
    phone_verified_at TEXT,
    banned_at TEXT,
    ban_reason TEXT,
    user_metadata TEXT NOT NULL,
    last_sign_in_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (tenant_id, email) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX users_phone ON users (tenant_id, phone) WHERE phone IS NOT NULL;
CREATE INDEX users_tenant ON users (tenant_id, created_at, id);
CREATE INDEX users_email_everywhere ON users (email);

-- A signed-in device: its access tokens name it, its refresh tokens rotate inside it, and
-- ending it (logout, revocation, a reused refresh token, a ban) ends them all.
CREATE TABLE auth_sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ip TEXT,
    user_agent TEXT,
    aal TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_active_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    ended_at TEXT,
    end_reason TEXT
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id, created_at, id);

-- Refresh tokens, hashed. Each is used once: using it marks it and issues the next; using a
-- marked one again ends the session.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    used_at TEXT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- A tenant's auth settings (seed 002's Auth Config): JSON, defaults where absent.
CREATE TABLE auth_configs (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
