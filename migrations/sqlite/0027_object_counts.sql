-- How many live and trashed objects each type holds, kept by the database itself in the
-- transaction of every write: an unfiltered list's `total` is read here instead of counted.
CREATE TABLE object_counts (
    object_type_id TEXT PRIMARY KEY,
    live BIGINT NOT NULL,
    trashed BIGINT NOT NULL
);
INSERT INTO object_counts (object_type_id, live, trashed)
SELECT object_type_id, SUM(deleted_at IS NULL), SUM(deleted_at IS NOT NULL) FROM objects GROUP BY object_type_id;

CREATE TRIGGER object_counts_insert AFTER INSERT ON objects BEGIN
    INSERT INTO object_counts (object_type_id, live, trashed)
    VALUES (new.object_type_id, new.deleted_at IS NULL, new.deleted_at IS NOT NULL)
    ON CONFLICT (object_type_id) DO UPDATE SET live = live + excluded.live, trashed = trashed + excluded.trashed;
END;
CREATE TRIGGER object_counts_delete AFTER DELETE ON objects BEGIN
    UPDATE object_counts SET live = live - (old.deleted_at IS NULL), trashed = trashed - (old.deleted_at IS NOT NULL)
    WHERE object_type_id = old.object_type_id;
END;
CREATE TRIGGER object_counts_trash AFTER UPDATE OF deleted_at ON objects
WHEN (old.deleted_at IS NULL) <> (new.deleted_at IS NULL) BEGIN
    UPDATE object_counts SET live = live + (new.deleted_at IS NULL) - (old.deleted_at IS NULL),
        trashed = trashed + (new.deleted_at IS NOT NULL) - (old.deleted_at IS NOT NULL)
    WHERE object_type_id = new.object_type_id;
END;
CREATE TRIGGER object_counts_type_deleted AFTER DELETE ON object_types BEGIN
    DELETE FROM object_counts WHERE object_type_id = old.id;
END;
