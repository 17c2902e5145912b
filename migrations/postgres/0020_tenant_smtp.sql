-- A tenant's own SMTP server for its users' emails (URL with credentials), sealed.
ALTER TABLE auth_configs ADD COLUMN smtp_url TEXT;
