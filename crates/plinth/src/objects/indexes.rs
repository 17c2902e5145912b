//! A property's indexes, its lookup and sort index and its unique index, built and dropped
//! outside the request that asked for them.
//!
//! The indexes live on the `objects` table that every tenant shares. Built inside a request's
//! transaction, `CREATE INDEX` would hold every tenant's object writes on PostgreSQL (its `SHARE`
//! lock) for as long as it scans the table. So a property change records what it wants
//! (`index_status`: `building`) and queues a `property.index` job in its own transaction; the
//! job makes the indexes match the property's flags as they are when it runs, then records
//! `ready` (or `none`). On PostgreSQL the job builds and drops `CONCURRENTLY`, holding no lock
//! that blocks writes; on SQLite, whose one writer every write waits for anyway, it builds in a
//! write turn of its own, off the request's path. Filters and sorts on a property whose index is
//! still building answer the same, read without it; writes of a unique property whose index is
//! not ready check the value themselves (`store::hold_unique_values`).

use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::{AnyConnection, Executor};
use utoipa::ToSchema;

use super::sql;
use super::types::DataType;
use crate::app::App;
use crate::db::{dialect, Backend, WriteTx};
use crate::http::ApiResult;
use crate::id::TenantId;
use crate::jobs::{self, Fate, Job, JobError, Performed};

/// The job kind.
pub const KIND: &str = "property.index";

/// Where a property's indexes stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IndexStatus {
    /// None of `is_indexed`, `is_sortable` and `is_unique`: no index is wanted.
    None,
    /// Wanted, and being built (or dropped) in the background; filters and sorts work meanwhile,
    /// unindexed, and a unique property's values are checked by each write.
    Building,
    /// Built: filters and sorts on the property read through its index, and its unique index
    /// holds its values.
    Ready,
    /// The build failed on every attempt; changing the flags again tries anew.
    Failed,
}

impl IndexStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexStatus::None => "none",
            IndexStatus::Building => "building",
            IndexStatus::Ready => "ready",
            IndexStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<IndexStatus> {
        [IndexStatus::None, IndexStatus::Building, IndexStatus::Ready, IndexStatus::Failed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// What a change that leaves the property wanting an index (or not) records at once.
    pub fn wanted(index: bool) -> IndexStatus {
        if index {
            IndexStatus::Building
        } else {
            IndexStatus::None
        }
    }
}

/// Queues, in the change's transaction, the job that makes `property_id`'s index match its
/// flags (or drops it once the property is gone). A job still queued for it is replaced.
pub async fn queue(tx: &mut WriteTx, tenant: &TenantId, property_id: &str) -> ApiResult<()> {
    super::properties::queue_job(tx, KIND, tenant, property_id).await
}

/// What a property wants of its indexes now: a lookup and sort index on its values, a unique
/// index; neither once it is gone.
#[derive(PartialEq, Eq)]
struct Wanted {
    target: Option<Target>,
    lookup: bool,
    unique: bool,
}

#[derive(PartialEq, Eq)]
struct Target {
    type_id: String,
    name: String,
    data_type: DataType,
}

async fn wanted(conn: &mut AnyConnection, property_id: &str) -> Result<Wanted, String> {
    let row: Option<(String, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT object_type_id, name, data_type, is_indexed, is_sortable, is_unique FROM object_properties \
         WHERE id = $1",
    )
    .bind(property_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| e.to_string())?;
    let Some((type_id, name, data_type, indexed, sortable, unique)) = row else {
        return Ok(Wanted { target: None, lookup: false, unique: false });
    };
    let data_type = DataType::parse(&data_type).ok_or_else(|| format!("stored data type `{data_type}`"))?;
    Ok(Wanted {
        target: Some(Target { type_id, name, data_type }),
        lookup: indexed != 0 || sortable != 0,
        unique: unique != 0,
    })
}

/// Records what was done, unless the property changed its mind meanwhile (a later job, queued
/// by that change, records its own).
async fn record(conn: &mut AnyConnection, property_id: &str, done: &Wanted) -> Result<(), String> {
    let status = if done.lookup || done.unique { IndexStatus::Ready } else { IndexStatus::None };
    sqlx::query(
        "UPDATE object_properties SET index_status = $1 WHERE id = $2 \
         AND (CASE WHEN is_indexed <> 0 OR is_sortable <> 0 THEN 1 ELSE 0 END) = $3 AND is_unique = $4",
    )
    .bind(status.as_str())
    .bind(property_id)
    .bind(i64::from(done.lookup))
    .bind(i64::from(done.unique))
    .execute(&mut *conn)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

impl Wanted {
    /// The statements that make the property's indexes what it wants: each built or dropped.
    fn statements(&self, backend: Backend, property_id: &str) -> Vec<String> {
        let mut statements = Vec::new();
        match &self.target {
            Some(t) if self.unique => {
                statements.push(sql::create_unique_index(backend, property_id, &t.type_id, &t.name, t.data_type))
            }
            _ => statements.push(sql::drop_index(backend, &sql::unique_index_name(property_id))),
        }
        statements.extend(match &self.target {
            Some(t) if self.lookup => sql::create_index(backend, property_id, &t.type_id, &t.name, t.data_type),
            _ => sql::drop_lookup_index(backend, property_id),
        });
        statements
    }
}

/// SQLite: the change in a write turn of its own, with its status, atomically.
async fn reconcile_sqlite(app: &App, property_id: &str) -> Result<(), String> {
    let mut tx = app.db.begin_write().await.map_err(|e| e.to_string())?;
    let wanted = wanted(&mut tx, property_id).await?;
    execute_all(&mut tx, &wanted.statements(Backend::Sqlite, property_id)).await?;
    record(&mut tx, property_id, &wanted).await?;
    // Cached schemas carry the status, which tells writers whether to check unique values.
    let _changed = app.schemas_changing();
    tx.commit().await.map_err(|e| e.to_string())
}

/// PostgreSQL: `CREATE INDEX CONCURRENTLY` on a connection of its own (no transaction, no
/// statement timeout), one job at a time across nodes (an advisory lock held by that
/// connection, waited for between tries: two concurrent builds on one table deadlock, each
/// waiting for the other's transaction), an invalid index left by a build cut short dropped
/// first.
async fn reconcile_postgres(app: &App, property_id: &str) -> Result<(), String> {
    let mut conn = app.db.pool().acquire().await.map_err(|e| e.to_string())?.detach();
    let done = reconcile_on(&mut conn, property_id).await;
    // Closing the connection ends its session: the lock and the setting go with it.
    let _ = sqlx::Connection::close(conn).await;
    done
}

async fn reconcile_on(conn: &mut AnyConnection, property_id: &str) -> Result<(), String> {
    let pg = Backend::Postgres;
    conn.execute("SET statement_timeout = 0").await.map_err(|e| e.to_string())?;
    while !dialect::try_lock_key_for_session(conn, pg, KIND).await.map_err(|e| e.to_string())? {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for index in [sql::index_name(property_id), sql::unique_index_name(property_id)] {
        if dialect::is_invalid_index(conn, pg, &index).await.map_err(|e| e.to_string())? {
            execute_all(conn, &[sql::drop_index(pg, &index)]).await?;
        }
    }
    let mut done = wanted(conn, property_id).await?;
    execute_all(conn, &done.statements(pg, property_id)).await?;
    // The property deleted or changed while its indexes were built: once more, as it is now.
    let now = wanted(conn, property_id).await?;
    if now != done {
        execute_all(conn, &now.statements(pg, property_id)).await?;
        done = now;
    }
    record(conn, property_id, &done).await
}

async fn execute_all(conn: &mut AnyConnection, statements: &[String]) -> Result<(), String> {
    for statement in statements {
        conn.execute(statement.as_str()).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The `property.index` kind.
pub struct Reconcile(pub App);

impl jobs::Kind for Reconcile {
    type Outcome = ();

    fn name(&self) -> &'static str {
        KIND
    }

    /// Index builds are heavy: two at a time on a node.
    fn concurrency(&self) -> usize {
        2
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<()>> {
        Box::pin(async move {
            let property_id = job.reference.as_deref().unwrap_or_default();
            let result = match self.0.db.backend() {
                Backend::Sqlite => reconcile_sqlite(&self.0, property_id).await,
                Backend::Postgres => reconcile_postgres(&self.0, property_id).await,
            };
            if let Err(error) = &result {
                tracing::warn!(property = %property_id, attempt = job.attempt, %error, "building a property index failed");
            }
            Performed { outcome: (), result }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        job: &'a Job,
        _outcome: Option<&'a ()>,
        fate: &'a Fate,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            if matches!(fate, Fate::Dead { .. }) {
                let property_id = job.reference.as_deref().unwrap_or_default();
                super::properties::record_failed(tx, "index_status", "building", property_id).await?;
            }
            Ok(())
        })
    }
}
