//! Export (seed 002): `POST /v1/data/export` fixes what an export reads (the type's live
//! objects meeting the caller's filters and row policies, without the properties the caller may
//! not read) and queues a `data.export` job in the same transaction; the job writes JSON or CSV
//! into the file store page by page, reporting progress; `GET /v1/data/export/{id}` answers the
//! progress, then the file, until it expires a day after it was made.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{self, count_leaves, parse_filters, ObjectQuery};
use super::sql::{Bind, Binds};
use super::transfer::Format;
use super::{Object, ObjectRow, COLUMNS};
use crate::app::App;
use crate::auth::Auth;
use crate::authz::access::readable;
use crate::authz::ObjectAction;
use crate::http::{ApiError, ApiResult, Json, Path};
use crate::id::{self, TenantId};
use crate::jobs::{self, Fate, Job, JobError, NewJob, Performed};
use crate::time;

/// Most objects one export holds.
pub const EXPORT_MAX: i64 = 100_000;
/// Objects read per page.
const PAGE: i64 = 1_000;
/// How long a made export is kept.
const KEPT: chrono::Duration = chrono::Duration::hours(24);
/// The job kind.
pub const KIND: &str = "data.export";
/// The id prefix of exports.
pub const PREFIX: &str = "exp";

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(start_export)).routes(routes!(get_export))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The type's id or name.
    pub object_type_id: String,
    /// `json` (default): an array of objects; `csv`: a header line, then one line per object.
    #[serde(default)]
    pub format: Format,
    /// Conditions in the search language; all must hold.
    #[schema(value_type = Option<Vec<Object>>)]
    pub filters: Option<Vec<Value>>,
}

/// An export and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    pub export_id: String,
    pub object_type_id: String,
    pub format: Format,
    /// `pending`, `running`, `done`, `failed` or `expired`.
    pub status: String,
    /// The objects it holds.
    pub record_count: i64,
    /// The objects written so far.
    pub exported: i64,
    /// `GET` it for the progress, then the file.
    pub download_path: String,
    pub size_bytes: Option<i64>,
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, FromRow)]
struct ExportRow {
    id: String,
    tenant_id: String,
    object_type_id: String,
    format: String,
    status: String,
    record_count: i64,
    exported: i64,
    query: String,
    storage_key: Option<String>,
    size_bytes: Option<i64>,
    error: Option<String>,
    created_at: String,
    expires_at: Option<String>,
}

const EXPORT_COLUMNS: &str = "id, tenant_id, object_type_id, format, status, record_count, exported, query, \
                              storage_key, size_bytes, error, created_at, expires_at";

/// What an export reads, fixed when it is asked for.
#[derive(Debug, Serialize, Deserialize)]
struct Reads {
    /// The condition over `objects`, with its values.
    condition: String,
    binds: Vec<Bind>,
    /// Properties left out.
    hidden: Vec<String>,
    /// The properties, in order, for a CSV's columns.
    properties: Vec<String>,
}

fn format_of(text: &str) -> Format {
    if text == "csv" {
        Format::Csv
    } else {
        Format::Json
    }
}

impl ExportRow {
    fn view(&self) -> ApiResult<Export> {
        let expires_at = self.expires_at.as_deref().map(time::from_db).transpose()?;
        let expired = expires_at.is_some_and(|at| at <= time::now());
        Ok(Export {
            export_id: self.id.clone(),
            object_type_id: self.object_type_id.clone(),
            format: format_of(&self.format),
            status: if expired { "expired".into() } else { self.status.clone() },
            record_count: self.record_count,
            exported: self.exported,
            download_path: format!("/v1/data/export/{}", self.id),
            size_bytes: self.size_bytes,
            error: self.error.clone(),
            created_at: time::from_db(&self.created_at)?,
            expires_at,
        })
    }
}

/// Start data export
///
/// Exports the type's live objects (at most 100,000; narrow with `filters`) that the caller may
/// read, without the properties it may not read, as a job: 202 with the export's id.
/// `GET /v1/data/export/{export_id}` tells its progress, then answers the file, for a day.
#[utoipa::path(post, path = "/v1/data/export", tag = "Import and export", security(("bearer" = [])),
    request_body = ExportRequest,
    responses((status = 202, body = crate::http::response::Envelope<Export>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn start_export(auth: Auth, State(app): State<App>, Json(body): Json<ExportRequest>) -> ApiResult<Response> {
    let tenant = auth.tenant()?.clone();
    let backend = app.db.backend();
    let mut conn = app.db.pool().acquire().await?;
    let (type_access, guard) = readable(&app, &mut conn, &auth, &body.object_type_id, ObjectAction::Select).await?;
    let schema = &type_access.schema;
    let visible = guard.readable_schema(schema);
    let filter = match body.filters.filter(|f| !f.is_empty()) {
        Some(filters) => {
            let cond =
                parse_filters(&visible, Value::Array(filters), 0).map_err(|p| ApiError::invalid("filters", p))?;
            if count_leaves(&cond, 0).map_err(|p| ApiError::invalid("filters", p))? > query::CONDITIONS_MAX {
                return Err(ApiError::invalid("filters", format!("at most {} conditions", query::CONDITIONS_MAX)));
            }
            Some(cond)
        }
        None => None,
    };
    let q = ObjectQuery::matching(filter, guard.rows(schema, ObjectAction::Select));
    let mut binds = Binds::new(backend);
    let (condition, _, _) = query::build(backend, true, &schema.object_type.id, &q, None, None, &mut binds);
    let (count,): (i64,) =
        sqlx::query_as_with(&format!("SELECT COUNT(*) FROM objects WHERE {condition}"), binds.arguments()?)
            .fetch_one(&mut *conn)
            .await?;
    drop(conn);
    if count > EXPORT_MAX {
        return Err(ApiError::invalid(
            "filters",
            format!("{count} objects match: an export holds at most {EXPORT_MAX}, narrow it with filters"),
        ));
    }
    let reads = Reads {
        condition,
        binds: binds.values().to_vec(),
        hidden: schema
            .properties
            .iter()
            .filter(|p| visible.property(&p.name).is_none())
            .map(|p| p.name.clone())
            .collect(),
        properties: visible.properties.iter().map(|p| p.name.clone()).collect(),
    };
    let export_id = id::new_id(PREFIX);
    let who = crate::audit::Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    sqlx::query(&format!(
        "INSERT INTO data_exports ({EXPORT_COLUMNS}, created_by) \
         VALUES ($1, $2, $3, $4, 'pending', $5, 0, $6, NULL, NULL, NULL, $7, NULL, $8)"
    ))
    .bind(&export_id)
    .bind(tenant.as_str())
    .bind(&schema.object_type.id)
    .bind(if body.format == Format::Csv { "csv" } else { "json" })
    .bind(count)
    .bind(serde_json::to_string(&reads)?)
    .bind(time::to_db(&time::now()))
    .bind(who.actor_id.as_deref().unwrap_or(who.actor_type))
    .execute(&mut *tx)
    .await?;
    jobs::enqueue(&mut tx, NewJob::new(KIND, json!({ "export_id": export_id })).tenant(&tenant).reference(&export_id))
        .await?;
    let row = find(&mut tx, &tenant, &export_id).await?;
    tx.commit().await?;
    Ok(crate::http::Accepted(row.view()?).into_response())
}

async fn find(conn: &mut sqlx::AnyConnection, tenant: &TenantId, export_id: &str) -> ApiResult<ExportRow> {
    let row: Option<ExportRow> =
        sqlx::query_as(&format!("SELECT {EXPORT_COLUMNS} FROM data_exports WHERE id = $1 AND tenant_id = $2"))
            .bind(export_id)
            .bind(tenant.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    row.ok_or_else(|| ApiError::not_found("export"))
}

/// Download export
///
/// While the export is made: its progress (JSON). Once done: the file itself (`application/json`
/// or `text/csv`, as an attachment). A day after it was made the file is gone (404). Needs
/// reading the type's objects.
#[utoipa::path(get, path = "/v1/data/export/{export_id}", tag = "Import and export", security(("bearer" = [])),
    params(("export_id" = String, Path, description = "The export's id")),
    responses((status = 200, body = crate::http::response::Envelope<Export>,
               description = "The progress, until the export is done; then the file (application/json or text/csv)"),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_export(auth: Auth, State(app): State<App>, Path(export_id): Path<String>) -> ApiResult<Response> {
    let tenant = auth.tenant()?.clone();
    let mut conn = app.db.pool().acquire().await?;
    let row = find(&mut conn, &tenant, &export_id).await?;
    // The caller must still read the type.
    readable(&app, &mut conn, &auth, &row.object_type_id, ObjectAction::Select).await?;
    drop(conn);
    let view = row.view()?;
    if view.status == "expired" {
        return Err(ApiError::not_found("export: it expired a day after it was made; start another"));
    }
    let (true, Some(key)) = (row.status == "done", &row.storage_key) else {
        return Ok(crate::http::Data(view).into_response());
    };
    let bytes = app.files.get(key).await?.ok_or_else(|| ApiError::not_found("export file"))?;
    let (content_type, extension) =
        if row.format == "csv" { ("text/csv; charset=utf-8", "csv") } else { ("application/json", "json") };
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{}.{extension}\"", row.id)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// One object as a CSV line's fields.
fn csv_fields(object: &Object, properties: &[String]) -> Vec<String> {
    let mut fields = vec![
        object.id.clone(),
        time::to_db(&object.created_at),
        time::to_db(&object.updated_at),
        object.created_by.clone().unwrap_or_default(),
        object.version.to_string(),
    ];
    for name in properties {
        fields.push(match object.properties.get(name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        });
    }
    fields
}

/// The `data.export` kind: writes an export's file.
pub struct MakeExport(pub App);

/// What a run made: the file's key and size, and how many objects it holds.
pub struct Made {
    key: String,
    size: i64,
    count: i64,
}

impl MakeExport {
    async fn make(&self, export_id: &str) -> Result<Made, String> {
        let app = &self.0;
        let backend = app.db.backend();
        let row: Option<ExportRow> =
            sqlx::query_as(&format!("SELECT {EXPORT_COLUMNS} FROM data_exports WHERE id = $1"))
                .bind(export_id)
                .fetch_optional(app.db.pool())
                .await
                .map_err(|e| e.to_string())?;
        let row = row.ok_or("the export is gone")?;
        let reads: Reads = serde_json::from_str(&row.query).map_err(|e| e.to_string())?;
        sqlx::query("UPDATE data_exports SET status = 'running', exported = 0 WHERE id = $1")
            .bind(export_id)
            .execute(app.db.pool())
            .await
            .map_err(|e| e.to_string())?;
        let csv = row.format == "csv";
        let mut out: Vec<u8> = Vec::new();
        let mut writer = csv::Writer::from_writer(Vec::new());
        if csv {
            let mut header = vec!["id", "created_at", "updated_at", "created_by", "version"];
            header.extend(reads.properties.iter().map(String::as_str));
            writer.write_record(&header).map_err(|e| e.to_string())?;
        } else {
            out.push(b'[');
        }
        let mut after = String::new();
        let mut count: i64 = 0;
        loop {
            let mut binds = Binds::with_values(backend, reads.binds.clone());
            let cursor = binds.text(after.clone());
            let sql = format!(
                "SELECT {COLUMNS} FROM objects WHERE {} AND id > {cursor} ORDER BY id LIMIT {PAGE}",
                reads.condition
            );
            let rows: Vec<ObjectRow> = sqlx::query_as_with(&sql, binds.arguments().map_err(|e| e.message)?)
                .fetch_all(app.db.pool())
                .await
                .map_err(|e| e.to_string())?;
            let last = rows.len() < PAGE as usize;
            for row in rows {
                let mut object = Object::try_from(row).map_err(|e| e.message)?;
                object.properties.retain(|name, _| !reads.hidden.contains(name));
                after = object.id.clone();
                if count >= EXPORT_MAX {
                    break;
                }
                if csv {
                    writer.write_record(csv_fields(&object, &reads.properties)).map_err(|e| e.to_string())?;
                } else {
                    if count > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut out, &object).map_err(|e| e.to_string())?;
                }
                count += 1;
            }
            sqlx::query("UPDATE data_exports SET exported = $1 WHERE id = $2")
                .bind(count)
                .bind(export_id)
                .execute(app.db.pool())
                .await
                .map_err(|e| e.to_string())?;
            if last || count >= EXPORT_MAX {
                break;
            }
        }
        let bytes = if csv {
            writer.into_inner().map_err(|e| e.to_string())?
        } else {
            out.push(b']');
            out
        };
        let key = format!("exports/{}/{export_id}.{}", row.tenant_id, if csv { "csv" } else { "json" });
        let size = bytes.len() as i64;
        app.files.put(&key, bytes.into()).await.map_err(|e| e.message)?;
        Ok(Made { key, size, count })
    }
}

impl jobs::Kind for MakeExport {
    type Outcome = Made;

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

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<Made>> {
        Box::pin(async move {
            let export_id = job.reference.clone().unwrap_or_default();
            match self.make(&export_id).await {
                Ok(made) => Performed::done(made),
                Err(error) => {
                    tracing::warn!(attempt = job.attempt, %error, "an export failed");
                    Performed::failed(Made { key: String::new(), size: 0, count: 0 }, error)
                }
            }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut crate::db::WriteTx,
        job: &'a Job,
        outcome: Option<&'a Made>,
        fate: &'a Fate,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let export_id = job.reference.clone().unwrap_or_default();
            let now = time::now();
            match (fate, outcome) {
                (Fate::Done, Some(made)) => {
                    sqlx::query(
                        "UPDATE data_exports SET status = 'done', storage_key = $1, size_bytes = $2, exported = $3, \
                         record_count = $3, finished_at = $4, expires_at = $5, error = NULL WHERE id = $6",
                    )
                    .bind(&made.key)
                    .bind(made.size)
                    .bind(made.count)
                    .bind(time::to_db(&now))
                    .bind(time::to_db(&(now + KEPT)))
                    .bind(&export_id)
                    .execute(&mut **tx)
                    .await?;
                }
                (Fate::Dead { error }, _) => {
                    sqlx::query(
                        "UPDATE data_exports SET status = 'failed', error = $1, finished_at = $2 WHERE id = $3",
                    )
                    .bind(error)
                    .bind(time::to_db(&now))
                    .bind(&export_id)
                    .execute(&mut **tx)
                    .await?;
                }
                _ => {}
            }
            Ok(())
        })
    }
}

/// Removes the files of exports past their expiry, and their rows a week later.
pub async fn sweep(app: &App) -> ApiResult<u64> {
    let now = time::to_db(&time::now());
    let expired: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT id, storage_key FROM data_exports WHERE expires_at IS NOT NULL AND expires_at <= $1 \
         AND storage_key IS NOT NULL LIMIT 1000",
    )
    .bind(&now)
    .fetch_all(app.db.pool())
    .await?;
    let mut removed = 0;
    for (id, key) in expired {
        if let Some(key) = key {
            app.files.delete(&key).await?;
        }
        let mut tx = app.db.begin_write().await?;
        sqlx::query("UPDATE data_exports SET storage_key = NULL WHERE id = $1").bind(&id).execute(&mut *tx).await?;
        tx.commit().await?;
        removed += 1;
    }
    Ok(removed)
}
