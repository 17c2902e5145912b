-- A property's `index_status` now speaks of its unique index too: a unique property whose index
-- was made with the change that asked for it (before this) has it ready.
UPDATE object_properties SET index_status = 'ready' WHERE is_unique <> 0 AND index_status = 'none';
