//! Imports as jobs (`POST /v1/data/import` with `async: true`): the request checks what it can
//! (the type, the credential's right to insert, the mapping, `upsert_by`, that the rows parse and
//! are at most 10,000), keeps the rows as sent in the file store and queues a `data.import` job
//! with the import's row, in one transaction; it answers 202. The job resumes the request's
//! standing (the key or session must still be live; an end user's roles are the ones held when
//! it runs) and imports exactly as a request would, in one transaction that also records the
//! outcome, so a job run again after a crash finds it done. `GET /v1/data/import/{import_id}`
//! tells where it stands: queued, running with the rows processed so far, done with the same
//! report a synchronous import answers, or failed with the error it would have answered.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::transfer::{prepare, rows_of, run, Asked, Format, ImportResult, Mode, Sent};
use crate::app::App;
use crate::audit::Who;
use crate::auth::standing::Standing;
use crate::auth::Auth;
use crate::authz::access::readable;
use crate::authz::ObjectAction;
use crate::db::{Backend, WriteTx};
use crate::http::{ApiError, ApiResult, Data, ErrorCode, Path};
use crate::id::{self, TenantId};
use crate::jobs::{self, Fate, Job, JobError, NewJob, Performed};
use crate::time;

/// The job kind.
pub const KIND: &str = "data.import";
/// The id prefix of imports.
pub const PREFIX: &str = "imp";
/// Rows between two reports of progress.
pub const PROGRESS_EVERY: usize = 250;
/// How long a finished import's record is kept.
const KEPT: chrono::Duration = chrono::Duration::days(7);

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(get_import))
}

/// An import run as a job, and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportJob {
    #[schema(example = "imp_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub import_id: String,
    pub object_type_id: String,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// Rows sent.
    pub total: i64,
    /// Rows checked and written so far (all of them once done).
    pub processed: i64,
    pub mode: Mode,
    pub dry_run: bool,
    /// Once done: what a synchronous import answers.
    pub result: Option<ImportResult>,
    /// Once failed: the error a synchronous import would have answered (`code`, `message`,
    /// `details`, and for invalid rows `errors`).
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Where to ask for it again.
    pub status_path: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const IMPORT_COLUMNS: &str = "id, tenant_id, object_type_id, format, mode, dry_run, upsert_by, mapping, standing, \
    input_key, status, total, processed, result, error, created_by, created_at, finished_at";

#[derive(Debug, FromRow)]
struct ImportRow {
    id: String,
    tenant_id: String,
    object_type_id: String,
    format: String,
    mode: String,
    dry_run: i64,
    upsert_by: Option<String>,
    mapping: Option<String>,
    standing: String,
    input_key: Option<String>,
    status: String,
    total: i64,
    processed: i64,
    result: Option<String>,
    error: Option<String>,
    created_by: Option<String>,
    created_at: String,
    finished_at: Option<String>,
}

impl ImportRow {
    fn mode(&self) -> Mode {
        if self.mode == "skip_invalid" {
            Mode::SkipInvalid
        } else {
            Mode::AllOrNothing
        }
    }

    fn view(&self) -> ApiResult<ImportJob> {
        let told = if self.status == "running" { progress::of(&self.id).unwrap_or(0) as i64 } else { 0 };
        Ok(ImportJob {
            import_id: self.id.clone(),
            object_type_id: self.object_type_id.clone(),
            status: self.status.clone(),
            total: self.total,
            processed: self.processed.max(told),
            mode: self.mode(),
            dry_run: self.dry_run != 0,
            result: self.result.as_deref().map(serde_json::from_str).transpose()?,
            error: self.error.as_deref().map(serde_json::from_str).transpose()?,
            status_path: format!("/v1/data/import/{}", self.id),
            created_at: time::from_db(&self.created_at)?,
            finished_at: self.finished_at.as_deref().map(time::from_db).transpose()?,
        })
    }
}

/// The progress of imports running on this node. On PostgreSQL it is also written to the
/// import's row, beside the import's transaction, for the other nodes; SQLite has one writer at
/// a time and one node, which answers from here.
pub mod progress {
    use super::*;

    static RUNNING: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);

    fn running() -> std::sync::MutexGuard<'static, HashMap<String, usize>> {
        RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Import `import_id` has processed `rows`.
    pub async fn tell(app: &App, import_id: &str, rows: usize) {
        running().insert(import_id.to_string(), rows);
        if app.db.backend() == Backend::Postgres {
            let told = sqlx::query("UPDATE data_imports SET processed = $1 WHERE id = $2")
                .bind(rows as i64)
                .bind(import_id)
                .execute(app.db.pool())
                .await;
            if let Err(error) = told {
                tracing::debug!(%error, "an import's progress was not written");
            }
        }
    }

    pub fn of(import_id: &str) -> Option<usize> {
        running().get(import_id).copied()
    }

    pub fn forget(import_id: &str) {
        running().remove(import_id);
    }
}

/// Queues `asked` as a job: 202 with the import.
pub(super) async fn start(app: &App, auth: &Auth, asked: Asked) -> ApiResult<Response> {
    let tenant = auth.tenant()?.clone();
    // What a request can check is checked now; the rows themselves when the job runs.
    let mut tx = app.db.begin_write().await?;
    let (schema, _, _) = prepare(&mut tx, app, auth, &asked).await?;
    let total = rows_of(&schema, &asked)?.len();
    tx.rollback().await?;
    let (bytes, extension) = match (&asked.data, asked.format) {
        (Sent::Bytes(bytes), Format::Csv) => (bytes.clone(), "csv"),
        (Sent::Json(Value::String(text)), Format::Csv) => (text.clone().into_bytes(), "csv"),
        (Sent::Json(value), _) => (serde_json::to_vec(value)?, "json"),
        (Sent::Bytes(_), Format::Json) => return Err(ApiError::invalid("file", "is not JSON")),
    };
    let import_id = id::new_id(PREFIX);
    let key = format!("imports/{}/{import_id}.{extension}", tenant.as_str());
    app.files.put(&key, bytes.into()).await?;
    match queue(app, auth, &asked, &schema.object_type.id, &import_id, &key, total, extension).await {
        Ok(view) => Ok(crate::http::Accepted(view).into_response()),
        Err(error) => {
            // Nothing names the rows as sent: they go.
            if let Err(removal) = app.files.delete(&key).await {
                tracing::warn!(message = %removal.message, "an import's rows were not removed; the sweep will");
            }
            Err(error)
        }
    }
}

/// The import's row and its job, in one transaction.
#[allow(clippy::too_many_arguments)]
async fn queue(
    app: &App,
    auth: &Auth,
    asked: &Asked,
    object_type_id: &str,
    import_id: &str,
    key: &str,
    total: usize,
    extension: &str,
) -> ApiResult<ImportJob> {
    let tenant = auth.tenant()?;
    let who = Who::from(auth);
    let mut tx = app.db.begin_write().await?;
    sqlx::query(&format!(
        "INSERT INTO data_imports ({IMPORT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, 0, NULL, NULL, $12, $13, NULL)"
    ))
    .bind(import_id)
    .bind(tenant.as_str())
    .bind(object_type_id)
    .bind(extension)
    .bind(if asked.mode == Mode::SkipInvalid { "skip_invalid" } else { "all_or_nothing" })
    .bind(i64::from(asked.dry_run))
    .bind(asked.upsert_by.as_deref())
    .bind(asked.mapping.as_ref().map(|m| Value::Object(m.clone()).to_string()))
    .bind(serde_json::to_string(&Standing::of(auth))?)
    .bind(key)
    .bind(total as i64)
    .bind(who.actor_id.as_deref().unwrap_or(who.actor_type))
    .bind(time::to_db(&time::now()))
    .execute(&mut *tx)
    .await?;
    jobs::enqueue(&mut tx, NewJob::new(KIND, json!({ "import_id": import_id })).tenant(tenant).reference(import_id))
        .await?;
    let row = find(&mut tx, tenant, import_id).await?;
    tx.commit().await?;
    row.view()
}

async fn find(conn: &mut sqlx::AnyConnection, tenant: &TenantId, import_id: &str) -> ApiResult<ImportRow> {
    let row: Option<ImportRow> =
        sqlx::query_as(&format!("SELECT {IMPORT_COLUMNS} FROM data_imports WHERE id = $1 AND tenant_id = $2"))
            .bind(import_id)
            .bind(tenant.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    row.ok_or_else(|| ApiError::not_found("import"))
}

/// An error as the import's record keeps it: the error object a request would have been answered.
fn error_body(error: &ApiError) -> Value {
    serde_json::to_value(crate::http::error::ErrorDetail::from(error.clone())).unwrap_or(Value::Null)
}

/// The refusal of a second run of an import that has ended.
fn already_ran() -> ApiError {
    let mut error = ApiError::conflict("this import has already run");
    error.extra.insert(ALREADY_RAN.into(), Value::Bool(true));
    error
}

const ALREADY_RAN: &str = "import_already_ran";

/// At the start of a job's run, in its transaction: refuses a second run of an import that has
/// ended. Two runs at once (a lease lost) both get past it; `finish` then lets only the first
/// record its outcome, the second's rows going with its transaction. The row is not locked here:
/// the run writes its progress to it from outside its transaction.
pub(super) async fn claim(tx: &mut WriteTx, import_id: &str) -> ApiResult<()> {
    let status: Option<(String,)> = sqlx::query_as("SELECT status FROM data_imports WHERE id = $1")
        .bind(import_id)
        .fetch_optional(&mut **tx)
        .await?;
    match status {
        Some((status,)) if status == "queued" || status == "running" => Ok(()),
        _ => Err(already_ran()),
    }
}

/// Records the outcome of import `import_id`: done with its report, or failed with its error;
/// refused (`already_ran`) when it has ended already, so that no run records twice.
pub(super) async fn finish(
    tx: &mut WriteTx,
    import_id: &str,
    outcome: Result<&ImportResult, &ApiError>,
) -> ApiResult<()> {
    let (status, result, error, processed) = match outcome {
        Ok(result) => ("done", Some(serde_json::to_string(result)?), None, Some(result.total as i64)),
        Err(error) => ("failed", None, Some(error_body(error).to_string()), None),
    };
    let recorded = sqlx::query(
        "UPDATE data_imports SET status = $1, result = $2, error = $3, processed = COALESCE($4, processed), \
         finished_at = $5 WHERE id = $6 AND status IN ('queued', 'running')",
    )
    .bind(status)
    .bind(result)
    .bind(error)
    .bind(processed)
    .bind(time::to_db(&time::now()))
    .bind(import_id)
    .execute(&mut **tx)
    .await?;
    if recorded.rows_affected() == 0 {
        return Err(already_ran());
    }
    Ok(())
}

/// Get an import
///
/// Where an import started with `async: true` stands: `queued`, `running` (with `processed`
/// rows of `total`), `done` (with `result`, as a synchronous import answers) or `failed` (with
/// `error`, as it would have been answered). Needs inserting the type's objects; an end user
/// sees only their own imports. Kept for 7 days after it ends.
#[utoipa::path(get, path = "/v1/data/import/{import_id}", tag = "Import and export", security(("bearer" = [])),
    params(("import_id" = String, Path, description = "The import's id")),
    responses((status = 200, body = crate::http::response::Envelope<ImportJob>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_import(auth: Auth, State(app): State<App>, Path(import_id): Path<String>) -> ApiResult<Data<ImportJob>> {
    let tenant = auth.tenant()?.clone();
    let mut conn = app.db.pool().acquire().await?;
    let row = find(&mut conn, &tenant, &import_id).await?;
    let (type_access, guard) = readable(&app, &mut conn, &auth, &row.object_type_id, ObjectAction::Insert).await?;
    guard.require_any(&type_access.schema, ObjectAction::Insert)?;
    if auth.access.is_some() && row.created_by != auth.actor.principal().1 {
        return Err(ApiError::not_found("import"));
    }
    Ok(Data(row.view()?))
}

/// The `data.import` kind: runs an import.
pub struct RunImport(pub App);

/// True when `error` says the work could not be done now rather than that it is refused.
fn is_transient(error: &ApiError) -> bool {
    matches!(error.code, ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::Timeout)
}

impl RunImport {
    async fn record(&self, import_id: &str, outcome: Result<&ImportResult, &ApiError>) -> ApiResult<()> {
        let mut tx = self.0.db.begin_write().await?;
        match finish(&mut tx, import_id, outcome).await {
            Ok(()) => tx.commit().await?,
            // Another run recorded it first: its outcome stands.
            Err(error) if error.extra.contains_key(ALREADY_RAN) => tx.rollback().await?,
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Runs import `import_id` unless it has ended; `Err` when it should be tried again.
    async fn import(&self, import_id: &str) -> ApiResult<()> {
        let app = &self.0;
        let row: Option<ImportRow> =
            sqlx::query_as(&format!("SELECT {IMPORT_COLUMNS} FROM data_imports WHERE id = $1"))
                .bind(import_id)
                .fetch_optional(app.db.pool())
                .await?;
        let Some(row) = row else { return Ok(()) };
        if row.status == "done" || row.status == "failed" {
            return Ok(());
        }
        let tenant = TenantId::trusted(row.tenant_id.clone());
        let standing: Standing = serde_json::from_str(&row.standing)?;
        let auth = match standing.resume(app, &tenant).await {
            Ok(auth) => auth,
            Err(error) if !is_transient(&error) => return self.record(import_id, Err(&error)).await,
            Err(error) => return Err(error),
        };
        let bytes = match &row.input_key {
            Some(key) => app.files.get(key).await?,
            None => None,
        };
        let Some(bytes) = bytes else {
            let gone = ApiError::new(ErrorCode::Internal, "the rows sent are no longer stored: send the import again");
            return self.record(import_id, Err(&gone)).await;
        };
        let mut tx = app.db.begin_write().await?;
        sqlx::query("UPDATE data_imports SET status = 'running' WHERE id = $1 AND status = 'queued'")
            .bind(import_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let csv = row.format == "csv";
        let data = if csv { Sent::Bytes(bytes.to_vec()) } else { Sent::Json(serde_json::from_slice(&bytes)?) };
        let asked = Asked {
            object_type_id: row.object_type_id.clone(),
            format: if csv { Format::Csv } else { Format::Json },
            data,
            mapping: row.mapping.as_deref().map(serde_json::from_str).transpose()?,
            mode: row.mode(),
            dry_run: row.dry_run != 0,
            upsert_by: row.upsert_by.clone(),
            run_async: false,
        };
        match run(app, &auth, &asked, Some(import_id)).await {
            // A run that wrote rows recorded its outcome with them.
            Ok(result) if asked.dry_run => self.record(import_id, Ok(&result)).await?,
            Ok(_) => {}
            // Another run of the job ended it (a lease lost meanwhile): nothing more to do.
            Err(error) if error.extra.contains_key(ALREADY_RAN) => return Ok(()),
            Err(error) if is_transient(&error) => return Err(error),
            Err(error) => self.record(import_id, Err(&error)).await?,
        }
        self.clean_up(import_id, row.input_key.as_deref()).await;
        Ok(())
    }

    /// Removes an ended import's rows as sent.
    async fn clean_up(&self, import_id: &str, key: Option<&str>) {
        progress::forget(import_id);
        let Some(key) = key else { return };
        if let Err(error) = self.0.files.delete(key).await {
            tracing::warn!(message = %error.message, "an import's rows were not removed; the sweep will");
            return;
        }
        let cleared = async {
            let mut tx = self.0.db.begin_write().await?;
            sqlx::query("UPDATE data_imports SET input_key = NULL WHERE id = $1")
                .bind(import_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        if let Err(error) = cleared.await {
            tracing::warn!(%error, "an import's stored rows were removed but still named");
        }
    }
}

impl jobs::Kind for RunImport {
    type Outcome = ();

    fn name(&self) -> &'static str {
        KIND
    }

    fn concurrency(&self) -> usize {
        1
    }

    fn max_attempts(&self) -> i64 {
        3
    }

    fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(600)
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<()>> {
        Box::pin(async move {
            let import_id = job.reference.clone().unwrap_or_default();
            match self.import(&import_id).await {
                Ok(()) => Performed::done(()),
                Err(error) => {
                    tracing::warn!(attempt = job.attempt, message = %error.message, "an import could not run");
                    Performed::failed((), error.message)
                }
            }
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
            if let Fate::Dead { error } = fate {
                let import_id = job.reference.clone().unwrap_or_default();
                progress::forget(&import_id);
                tracing::warn!(import_id, %error, "an import failed on its every attempt");
                let body = error_body(&ApiError::new(
                    ErrorCode::Internal,
                    "the import could not run: the rows were not imported, send it again",
                ))
                .to_string();
                sqlx::query(
                    "UPDATE data_imports SET status = 'failed', error = $1, finished_at = $2 \
                     WHERE id = $3 AND status NOT IN ('done', 'failed')",
                )
                .bind(body)
                .bind(time::to_db(&time::now()))
                .bind(&import_id)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        })
    }
}

/// How long rows as sent may lie in the store without an import naming them (one being queued
/// names them a moment after they are stored).
const UNNAMED_GRACE: chrono::Duration = chrono::Duration::hours(1);

/// Removes the rows as sent of ended imports (what a crash left) and those no import names (a
/// tenant or type deleted, a queueing that failed), and imports' records a week after they
/// ended.
pub async fn sweep(app: &App) -> ApiResult<u64> {
    let mut removed = 0;
    let before = time::now() - UNNAMED_GRACE;
    for (path, written) in app.files.list("imports").await? {
        if written > before {
            continue;
        }
        let named: Option<(String,)> = sqlx::query_as("SELECT id FROM data_imports WHERE input_key = $1")
            .bind(&path)
            .fetch_optional(app.db.pool())
            .await?;
        if named.is_none() {
            app.files.delete(&path).await?;
            removed += 1;
        }
    }
    let ended: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, input_key FROM data_imports WHERE status IN ('done', 'failed') AND input_key IS NOT NULL LIMIT 1000",
    )
    .fetch_all(app.db.pool())
    .await?;
    for (import_id, key) in ended {
        app.files.delete(&key).await?;
        let mut tx = app.db.begin_write().await?;
        sqlx::query("UPDATE data_imports SET input_key = NULL WHERE id = $1")
            .bind(&import_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        removed += 1;
    }
    let before = time::to_db(&(time::now() - KEPT));
    let mut tx = app.db.begin_write().await?;
    let gone = sqlx::query(
        "DELETE FROM data_imports WHERE finished_at IS NOT NULL AND finished_at < $1 AND input_key IS NULL",
    )
    .bind(before)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(removed + gone.rows_affected())
}
