-- Where giving a required property's default to the objects without a value stands: a change
-- fills a few itself and leaves more to the `property.fill` job.
ALTER TABLE object_properties ADD COLUMN fill_status TEXT NOT NULL DEFAULT 'done';
