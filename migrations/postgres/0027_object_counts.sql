-- How many live and trashed objects each type holds, kept by the database itself in the
-- transaction of every write: an unfiltered list's `total` is read here instead of counted.
-- (A type's creates already take turns on the tenant's `objects` usage counter, so this row
-- adds no wait of its own.)
CREATE TABLE object_counts (
    object_type_id TEXT COLLATE "C" PRIMARY KEY,
    live BIGINT NOT NULL,
    trashed BIGINT NOT NULL
);
INSERT INTO object_counts (object_type_id, live, trashed)
SELECT object_type_id, COUNT(*) FILTER (WHERE deleted_at IS NULL), COUNT(*) FILTER (WHERE deleted_at IS NOT NULL)
FROM objects GROUP BY object_type_id;

CREATE FUNCTION object_counts_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO object_counts (object_type_id, live, trashed)
        VALUES (NEW.object_type_id, CASE WHEN NEW.deleted_at IS NULL THEN 1 ELSE 0 END,
                CASE WHEN NEW.deleted_at IS NULL THEN 0 ELSE 1 END)
        ON CONFLICT (object_type_id) DO UPDATE
        SET live = object_counts.live + excluded.live, trashed = object_counts.trashed + excluded.trashed;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE object_counts
        SET live = live - CASE WHEN OLD.deleted_at IS NULL THEN 1 ELSE 0 END,
            trashed = trashed - CASE WHEN OLD.deleted_at IS NULL THEN 0 ELSE 1 END
        WHERE object_type_id = OLD.object_type_id;
    ELSIF (OLD.deleted_at IS NULL) <> (NEW.deleted_at IS NULL) THEN
        UPDATE object_counts
        SET live = live + CASE WHEN NEW.deleted_at IS NULL THEN 1 ELSE -1 END,
            trashed = trashed + CASE WHEN NEW.deleted_at IS NULL THEN -1 ELSE 1 END
        WHERE object_type_id = NEW.object_type_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER object_counts_insert AFTER INSERT ON objects FOR EACH ROW EXECUTE FUNCTION object_counts_change();
CREATE TRIGGER object_counts_delete AFTER DELETE ON objects FOR EACH ROW EXECUTE FUNCTION object_counts_change();
CREATE TRIGGER object_counts_trash AFTER UPDATE OF deleted_at ON objects FOR EACH ROW EXECUTE FUNCTION object_counts_change();

CREATE FUNCTION object_counts_type_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM object_counts WHERE object_type_id = OLD.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER object_counts_type_deleted AFTER DELETE ON object_types FOR EACH ROW EXECUTE FUNCTION object_counts_type_deleted();
