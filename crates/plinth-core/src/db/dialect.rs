//! Every difference between the two databases, in one place: row locks and `SKIP LOCKED`,
//! byte-order collation, null ordering, notifications between nodes, unique violations, and
//! reading a query plan.

use sqlx::AnyConnection;

use super::Backend;

/// Locks the row `id` of `table` until the transaction ends, on PostgreSQL: `exclusive` against
/// other changers (`FOR UPDATE`), else shared (`FOR SHARE`). SQLite's writers are one at a time
/// already, so there it does nothing. `table` is one of the project's own table names.
pub async fn lock_row(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
    id: &str,
    exclusive: bool,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        let mode = if exclusive { "UPDATE" } else { "SHARE" };
        sqlx::query(&format!("SELECT id FROM {table} WHERE id = $1 FOR {mode}")).bind(id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// When `error` is a unique-constraint violation: the violated index's name, if the database
/// says it (PostgreSQL's constraint; SQLite's `... failed: index 'name'`).
pub fn unique_violation(error: &sqlx::Error) -> Option<Option<String>> {
    let sqlx::Error::Database(db) = error else { return None };
    if !db.is_unique_violation() {
        return None;
    }
    let named = db.constraint().map(str::to_owned).or_else(|| {
        let message = db.message();
        let start = message.find("index '")? + "index '".len();
        let end = message[start..].find('\'')?;
        Some(message[start..start + end].to_owned())
    });
    Some(named)
}

/// True when `error` is a unique-constraint violation (both backends).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

/// Holds a lock named `key` until the transaction ends, so that transactions deciding on the
/// same thing (a tenant's spend) take turns: PostgreSQL's transaction-level advisory lock.
/// SQLite's writers take turns already.
pub async fn lock_key(conn: &mut AnyConnection, backend: Backend, key: &str) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS locked")
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Takes a lock named `key` for as long as the connection's session lasts, if no other session
/// or transaction holds it (`lock_key`): for work that runs outside a transaction, such as a
/// concurrent index build. It never waits: a statement waiting for a lock is a transaction, and a
/// concurrent index build waits for every transaction older than its own, so a build waiting
/// in line would deadlock with the one holding the lock. True on SQLite, whose writers take
/// turns already.
pub async fn try_lock_key_for_session(
    conn: &mut AnyConnection,
    backend: Backend,
    key: &str,
) -> Result<bool, sqlx::Error> {
    if backend == Backend::Sqlite {
        return Ok(true);
    }
    let (taken,): (bool,) =
        sqlx::query_as("SELECT pg_try_advisory_lock(hashtextextended($1, 0))").bind(key).fetch_one(&mut *conn).await?;
    Ok(taken)
}

/// Whether the index `name` exists but is not valid: what a concurrent build cut short leaves
/// on PostgreSQL (it takes writes but serves no read, and `IF NOT EXISTS` would keep it).
/// SQLite builds in a transaction: never.
pub async fn is_invalid_index(conn: &mut AnyConnection, backend: Backend, name: &str) -> Result<bool, sqlx::Error> {
    if backend == Backend::Sqlite {
        return Ok(false);
    }
    let invalid: Option<(bool,)> = sqlx::query_as(
        "SELECT NOT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid \
         WHERE c.relname = $1 AND c.relnamespace = CAST(current_schema() AS regnamespace)",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(invalid == Some((true,)))
}

/// What saturated, when `error` says the database could not take the work now rather than that
/// the work is wrong: no pooled connection free in time, a statement past its timeout
/// (PostgreSQL's `57014`), a lock not had in time (`55P03`), a deadlock or serialization
/// failure (`40P01`, `40001`), or SQLite busy (`5`).
pub fn saturation(error: &sqlx::Error) -> Option<&'static str> {
    saturation_of(error)
}

/// True when the database refused text it cannot hold: PostgreSQL's `22021` (a NUL character,
/// or bytes not of the encoding). SQLite stores any text.
pub fn is_unstorable_text(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("22021"))
}

fn saturation_of(error: &sqlx::Error) -> Option<&'static str> {
    match error {
        sqlx::Error::PoolTimedOut => Some("no database connection was free in time"),
        sqlx::Error::PoolClosed => Some("the database is shutting down"),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("57014") => Some("a database statement ran past its timeout"),
            Some("55P03") => Some("a database lock was not free in time"),
            Some("40P01" | "40001") => Some("the database broke a conflict between writes"),
            Some("5" | "261" | "517") => Some("the database was busy"),
            _ => None,
        },
        _ => None,
    }
}

/// The suffix that makes a claiming `SELECT` skip rows other transactions hold: PostgreSQL's
/// `FOR UPDATE [OF alias] SKIP LOCKED`. SQLite's one writer at a time makes it needless.
pub fn skip_locked(backend: Backend, of: Option<&str>) -> String {
    match (backend, of) {
        (Backend::Postgres, Some(alias)) => format!(" FOR UPDATE OF {alias} SKIP LOCKED"),
        (Backend::Postgres, None) => " FOR UPDATE SKIP LOCKED".into(),
        (Backend::Sqlite, _) => String::new(),
    }
}

/// What makes text compare by bytes on both databases, whatever PostgreSQL's default collation.
pub fn byte_order(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " COLLATE \"C\"",
        Backend::Sqlite => "",
    }
}

/// How absent values sort smallest, after an `ORDER BY` term (SQLite already sorts them first).
pub fn nulls_smallest(backend: Backend, descending: bool) -> &'static str {
    match (backend, descending) {
        (Backend::Postgres, false) => " NULLS FIRST",
        (Backend::Postgres, true) => " NULLS LAST",
        (Backend::Sqlite, _) => "",
    }
}

/// Sends `text` on `channel` to every node listening, when the transaction commits (PostgreSQL's
/// `pg_notify`); SQLite has one node, so there it does nothing.
pub async fn notify(conn: &mut AnyConnection, backend: Backend, channel: &str, text: &str) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT 1 FROM (SELECT pg_notify($1, $2)) AS sent")
            .bind(channel)
            .bind(text)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The plan the database would take for `sql`, one line per step.
pub async fn explain(
    conn: &mut AnyConnection,
    backend: Backend,
    sql: &str,
    arguments: sqlx::any::AnyArguments<'_>,
) -> Result<Vec<String>, sqlx::Error> {
    match backend {
        Backend::Sqlite => {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as_with(&format!("EXPLAIN QUERY PLAN {sql}"), arguments).fetch_all(&mut *conn).await?;
            Ok(rows.into_iter().map(|(_, _, _, detail)| detail).collect())
        }
        Backend::Postgres => {
            // A small table is cheaper to scan: ask for the plan the indexes allow.
            sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await?;
            let rows: Result<Vec<(String,)>, _> =
                sqlx::query_as_with(&format!("EXPLAIN {sql}"), arguments).fetch_all(&mut *conn).await;
            sqlx::query("RESET enable_seqscan").execute(&mut *conn).await?;
            Ok(rows?.into_iter().map(|(line,)| line).collect())
        }
    }
}
