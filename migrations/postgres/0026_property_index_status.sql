-- Where a property's lookup and sort index stands: built and dropped by the `property.index`
-- job, outside the request that changed the property.
ALTER TABLE object_properties ADD COLUMN index_status TEXT NOT NULL DEFAULT 'ready';
UPDATE object_properties SET index_status = 'none' WHERE is_indexed = 0 AND is_sortable = 0;
