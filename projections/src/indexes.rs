//! A rebuild loads its tables without their secondary indexes and builds each once, at the
//! end: one sort per index instead of a random insertion per row, which is most of what a
//! bulk load costs (the way `pg_restore` loads a dump).
//!
//! An index behind a primary key or a unique constraint stays, since the projection's
//! `ON CONFLICT` clauses need it, except for a projection that can load without them
//! ([`ProjectionKind::loads_without_keys`]): its keys are set aside too, and what shares a
//! key is added together before they are built again (`crate::load`).
//!
//! An index or key set aside from a live table is written down in `projection_index_stash`
//! in the same transaction that drops it, and built again (and crossed off) by [`restore`]:
//! at the end of the rebuild, or, if the rebuild died on the way, by the next rebuild or by
//! the live projector when it next leads the projection.

use sqlx::PgConnection;

use crate::load::Suspects;
use crate::model::ProjectionKind;

/// An index, or a key and its index: the index's schema-qualified, quoted name and the
/// statement that creates it.
pub(crate) struct IndexDef {
    pub name: String,
    pub definition: String,
}

/// A primary key or unique constraint: how to build it again, and how to drop it.
pub(crate) struct KeyDef {
    pub index: IndexDef,
    pub drop: String,
}

/// The primary keys and unique constraints of `tables`, as the connection's `search_path`
/// finds them.
pub(crate) async fn keys(
    conn: &mut PgConnection,
    tables: &[&str],
) -> Result<Vec<KeyDef>, sqlx::Error> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT format('%I.%I', n.nspname, c.conname),
                format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s',
                       n.nspname, t.relname, c.conname, pg_get_constraintdef(c.oid)),
                format('ALTER TABLE %I.%I DROP CONSTRAINT %I', n.nspname, t.relname, c.conname)
           FROM pg_constraint c
           JOIN pg_class t ON t.oid = c.conrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
          WHERE c.conrelid = ANY (SELECT to_regclass(x) FROM unnest($1::text[]) AS x)
            AND c.contype IN ('p', 'u')
          ORDER BY 1",
    )
    .bind(tables)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, definition, drop)| KeyDef {
            index: IndexDef { name, definition },
            drop,
        })
        .collect())
}

/// Drop `keys` (statements from the catalog).
pub(crate) async fn drop_keys(conn: &mut PgConnection, keys: &[KeyDef]) -> Result<(), sqlx::Error> {
    for key in keys {
        sqlx::query(&key.drop).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The secondary indexes of `tables`, as the connection's `search_path` finds them.
pub(crate) async fn secondary(
    conn: &mut PgConnection,
    tables: &[&str],
) -> Result<Vec<IndexDef>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT format('%I.%I', n.nspname, i.relname), pg_get_indexdef(x.indexrelid)
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_namespace n ON n.oid = i.relnamespace
          WHERE x.indrelid = ANY (SELECT to_regclass(t) FROM unnest($1::text[]) AS t)
            AND NOT x.indisunique AND NOT x.indisprimary
            AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
          ORDER BY 1",
    )
    .bind(tables)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, definition)| IndexDef { name, definition })
        .collect())
}

/// Drop `indexes` (names from the catalog, quoted by it).
pub(crate) async fn drop_all(
    conn: &mut PgConnection,
    indexes: &[IndexDef],
) -> Result<(), sqlx::Error> {
    for index in indexes {
        sqlx::query(&format!("DROP INDEX {}", index.name))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Build `indexes` (statements from the catalog).
pub(crate) async fn create_all(
    conn: &mut PgConnection,
    indexes: &[IndexDef],
) -> Result<(), sqlx::Error> {
    if indexes.is_empty() {
        return Ok(());
    }
    // Sorts for the builds in memory where they fit (the default is 64 MB).
    sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
        .execute(&mut *conn)
        .await?;
    for index in indexes {
        sqlx::query(&index.definition).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Set aside the secondary indexes of `kind`'s live tables, and its keys if it loads
/// without them, writing them down first; in the caller's transaction.
pub(crate) async fn set_aside(
    conn: &mut PgConnection,
    kind: ProjectionKind,
) -> Result<(), sqlx::Error> {
    let indexes = secondary(conn, kind.tables()).await?;
    let keys = keys(conn, kind.tables_loaded_without_keys()).await?;
    for index in indexes.iter().chain(keys.iter().map(|k| &k.index)) {
        sqlx::query(
            "INSERT INTO projection_index_stash (projection, index_name, definition)
             VALUES ($1, $2, $3)
             ON CONFLICT (projection, index_name) DO NOTHING",
        )
        .bind(kind.name())
        .bind(&index.name)
        .bind(&index.definition)
        .execute(&mut *conn)
        .await?;
    }
    drop_all(conn, &indexes).await?;
    drop_keys(conn, &keys).await
}

/// Build again every index set aside from `kind`'s tables and cross it off, in one
/// transaction. Nothing to do (the usual case): one indexed read.
pub(crate) async fn restore(pool: &sqlx::PgPool, kind: ProjectionKind) -> anyhow::Result<usize> {
    restore_after(pool, kind, Suspects::All).await
}

/// [`restore`], for a rebuild that knows where rows loaded without their keys may share
/// one (`crate::load`).
pub(crate) async fn restore_after(
    pool: &sqlx::PgPool,
    kind: ProjectionKind,
    suspects: Suspects<'_>,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let stashed: Vec<(String, String)> = sqlx::query_as(
        "SELECT index_name, definition FROM projection_index_stash
          WHERE projection = $1 ORDER BY index_name FOR UPDATE",
    )
    .bind(kind.name())
    .fetch_all(&mut *tx)
    .await?;
    if stashed.is_empty() {
        return Ok(0);
    }
    let indexes: Vec<IndexDef> = stashed
        .into_iter()
        .map(|(name, definition)| IndexDef { name, definition })
        .collect();
    // Rows loaded without their keys are made unique first (a key may be built there).
    crate::load::finish(&mut tx, kind, suspects).await?;
    let built = create_missing(&mut tx, indexes).await?;
    sqlx::query("DELETE FROM projection_index_stash WHERE projection = $1")
        .bind(kind.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(built)
}

/// Build those of `indexes` that are not there (built by hand, by `crate::load`, or by a
/// restore whose crossing-off was lost); returns how many were built.
pub(crate) async fn create_missing(
    conn: &mut PgConnection,
    indexes: Vec<IndexDef>,
) -> Result<usize, sqlx::Error> {
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'i' AND format('%I.%I', n.nspname, c.relname) = ANY($1)",
    )
    .bind(indexes.iter().map(|i| i.name.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let missing: Vec<IndexDef> = indexes
        .into_iter()
        .filter(|i| !existing.contains(&i.name))
        .collect();
    create_all(conn, &missing).await?;
    Ok(missing.len())
}
