-- The headers an idempotent answer is replayed with (content type, location, the provider that
-- answered ...), as a JSON array of [name, value] pairs.
ALTER TABLE idempotency_keys ADD COLUMN response_headers TEXT;
