-- Secondary indexes a rebuild (`aihub replay`) set aside to load its tables faster, kept
-- here, in the transaction that drops them, until they are built again: at the end of the
-- rebuild, or by the next rebuild or the live projector if the rebuild died on the way
-- (`hub_projections::indexes`).
CREATE TABLE projection_index_stash
(
    projection text NOT NULL,
    -- Schema-qualified and quoted, as the catalog gives it.
    index_name text NOT NULL,
    -- The `CREATE INDEX` statement (`pg_get_indexdef`).
    definition text NOT NULL,
    PRIMARY KEY (projection, index_name)
);
