-- Admin-set metadata of end users: what row policies read as $auth.metadata. Users write their
-- own user_metadata; this one only the tenant's admin API writes.
ALTER TABLE users ADD COLUMN app_metadata TEXT NOT NULL DEFAULT '{}';
