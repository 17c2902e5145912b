//! A property's lookup and sort index, built and dropped outside the request that asked for it.
//!
//! The index lives on the `objects` table that every tenant shares. Built inside a request's
//! transaction, `CREATE INDEX` would hold every tenant's object writes on PostgreSQL (its `SHARE`
//! lock) for as long as it scans the table. So a property change records what it wants
//! (`index_status`: `building`) and queues a `property.index` job in its own transaction; the
//! job makes the index match the property's flags as they are when it runs, then records
//! `ready` (or `none`). On PostgreSQL the job builds and drops `CONCURRENTLY`, holding no lock
//! that blocks writes; on SQLite, whose one writer every write waits for anyway, it builds in a
//! write turn of its own, off the request's path. Filters and sorts on a property whose index is
//! still building answer the same, read without it.

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
use crate::jobs::{self, Fate, Job, JobError, NewJob, Performed};

/// The job kind.
pub const KIND: &str = "property.index";

/// Where a property's lookup and sort index stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IndexStatus {
    /// Neither `is_indexed` nor `is_sortable`: no index is wanted.
    None,
    /// Wanted, and being built in the background; filters and sorts work meanwhile, unindexed.
    Building,
    /// Built: filters and sorts on the property read through it.
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
    jobs::forget(tx, KIND, property_id).await?;
    jobs::enqueue(tx, NewJob::new(KIND, serde_json::json!({})).tenant(tenant).reference(property_id)).await?;
    Ok(())
}

/// Takes, in a change's transaction on PostgreSQL, the lock a running job of the property holds
/// for its whole run: a unique index made by the change is then never the one a job that read
/// the flags before the change drops. SQLite's one writer orders the two already.
pub async fn hold(tx: &mut WriteTx, property_id: &str) -> ApiResult<()> {
    let backend = tx.backend();
    dialect::lock_key(tx, backend, &lock_key(property_id)).await?;
    Ok(())
}

fn lock_key(property_id: &str) -> String {
    format!("{KIND}:{property_id}")
}

/// What a property wants of its indexes now: a lookup index on its values (`None` when it wants
/// none, or is gone), and whether its unique index stays.
struct Wanted {
    lookup: Option<Lookup>,
    unique: bool,
}

struct Lookup {
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
        return Ok(Wanted { lookup: None, unique: false });
    };
    let lookup = if indexed != 0 || sortable != 0 {
        let data_type = DataType::parse(&data_type).ok_or_else(|| format!("stored data type `{data_type}`"))?;
        Some(Lookup { type_id, name, data_type })
    } else {
        None
    };
    Ok(Wanted { lookup, unique: unique != 0 })
}

/// Records what was done, unless the property changed its mind meanwhile (a later job, queued
/// by that change, records its own).
async fn record(conn: &mut AnyConnection, property_id: &str, built: bool) -> Result<(), String> {
    let status = if built { IndexStatus::Ready } else { IndexStatus::None };
    sqlx::query(
        "UPDATE object_properties SET index_status = $1 WHERE id = $2 \
         AND (CASE WHEN is_indexed <> 0 OR is_sortable <> 0 THEN 1 ELSE 0 END) = $3",
    )
    .bind(status.as_str())
    .bind(property_id)
    .bind(i64::from(built))
    .execute(&mut *conn)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

impl Wanted {
    /// The statements that make the property's indexes what it wants: the unique index dropped
    /// unless it stays, the lookup index built or dropped.
    fn statements(&self, backend: Backend, property_id: &str) -> Vec<String> {
        let mut statements = Vec::new();
        if !self.unique {
            statements.push(sql::drop_index(backend, &sql::unique_index_name(property_id)));
        }
        statements.extend(match &self.lookup {
            Some(w) => sql::create_index(backend, property_id, &w.type_id, &w.name, w.data_type),
            None => sql::drop_lookup_index(backend, property_id),
        });
        statements
    }
}

/// SQLite: the change in a write turn of its own, with its status, atomically.
async fn reconcile_sqlite(app: &App, property_id: &str) -> Result<(), String> {
    let mut tx = app.db.begin_write().await.map_err(|e| e.to_string())?;
    let wanted = wanted(&mut tx, property_id).await?;
    execute_all(&mut tx, &wanted.statements(Backend::Sqlite, property_id)).await?;
    record(&mut tx, property_id, wanted.lookup.is_some()).await?;
    tx.commit().await.map_err(|e| e.to_string())
}

/// PostgreSQL: `CREATE INDEX CONCURRENTLY` on a connection of its own (no transaction, no
/// statement timeout), one job per property at a time across nodes (an advisory lock held by
/// that connection), an invalid index left by a build cut short dropped first.
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
    dialect::lock_key_for_session(conn, pg, &lock_key(property_id)).await.map_err(|e| e.to_string())?;
    if dialect::is_invalid_index(conn, pg, &sql::index_name(property_id)).await.map_err(|e| e.to_string())? {
        execute_all(conn, &sql::drop_lookup_index(pg, property_id)).await?;
    }
    let wanted_then = wanted(conn, property_id).await?;
    execute_all(conn, &wanted_then.statements(pg, property_id)).await?;
    let mut built = wanted_then.lookup.is_some();
    // The property deleted or unflagged while its index was built: the index goes again.
    if built && wanted(conn, property_id).await?.lookup.is_none() {
        execute_all(conn, &sql::drop_lookup_index(pg, property_id)).await?;
        built = false;
    }
    record(conn, property_id, built).await
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
                sqlx::query(
                    "UPDATE object_properties SET index_status = 'failed' WHERE id = $1 AND index_status = 'building'",
                )
                .bind(job.reference.as_deref().unwrap_or_default())
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        })
    }
}
