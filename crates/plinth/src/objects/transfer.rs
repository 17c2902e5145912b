//! Import (seed 002, `POST /v1/data/import`): up to 10,000 rows of CSV, a JSON file or an
//! inline JSON body into one object type, columns mapped to properties, each row validated with
//! the type's rules; all or nothing (default) or skipping invalid rows with a report per row;
//! upsert by a unique property; `dry_run` checks everything and writes nothing. One transaction.
//! With `async`, the import runs as a `data.import` job (`imports`) and reports its progress.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{cond_sql, leaf};
use super::sql::Binds;
use super::store::{apply_update, insert, WriteError};
use super::types::{DataType, Op};
use super::validate::{check_references, validate_new, Problems};
use super::{Object, ObjectRow, Schema, COLUMNS};
use crate::app::App;
use crate::audit::Who;
use crate::auth::Auth;
use crate::authz::{ObjectAction, ObjectGuard};
use crate::entitlements;
use crate::http::{ApiError, ApiResult, Data, ErrorCode};

/// Most rows one import takes.
pub const IMPORT_ROWS_MAX: usize = 10_000;
/// Most row errors an answer lists.
const ERRORS_LISTED_MAX: usize = 100;
/// Longest form field (mapping, options).
const FORM_FIELD_MAX_BYTES: usize = 64 * 1024;

use super::imports::{self, progress, start, ImportJob, PROGRESS_EVERY};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(import_data))
        .merge(imports::routes())
        .layer(axum::extract::DefaultBodyLimit::max(crate::limits::DATA_IMPORT_MAX_BYTES))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

/// What happens to invalid rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One invalid row refuses the import: 422 with every failing row, nothing written.
    #[default]
    AllOrNothing,
    /// Invalid rows are left out and reported; the others are written.
    SkipInvalid,
}

/// An import as a JSON body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The type's id or name.
    pub object_type_id: String,
    /// `json` (default): `data` is an array of objects; `csv`: `data` is the CSV text, its first
    /// line the column names.
    #[serde(default)]
    pub format: Format,
    /// The rows: at most 10,000.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Column name to property name; `null` leaves a column out. Columns not named here are
    /// read as the property of the same name, or left out (and listed in `ignored_columns`).
    #[schema(value_type = Option<Object>)]
    pub mapping: Option<Map<String, Value>>,
    #[serde(default)]
    pub mode: Mode,
    /// Check every row and write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// A unique property: a row whose value matches a live object updates it instead.
    pub upsert_by: Option<String>,
    /// Run as a job: 202 at once with the import's id; `GET /v1/data/import/{import_id}` tells
    /// its progress, then its outcome.
    #[serde(default, rename = "async")]
    #[schema(rename = "async")]
    pub run_async: bool,
}

/// An import as a multipart form: the rows in the `file` part (`.csv` or `.json`), the rest as
/// text fields (`mapping` as JSON).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImportForm {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    object_type_id: String,
    /// `json` or `csv`; default from the file's name or type.
    format: Option<Format>,
    /// JSON text: column name to property name.
    mapping: Option<String>,
    mode: Option<Mode>,
    dry_run: Option<bool>,
    upsert_by: Option<String>,
    /// `true`: run as a job (202).
    #[schema(rename = "async")]
    run_async: Option<bool>,
}

/// One row that was not imported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RowError {
    /// The row's index, from 0 (a CSV's first data line is 0).
    pub row: usize,
    pub message: String,
    #[schema(value_type = Option<Object>)]
    pub details: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportResult {
    /// Objects created (or, in a dry run, that would be).
    pub imported: usize,
    /// Objects updated through `upsert_by`.
    pub updated: usize,
    /// Rows left out as invalid (`skip_invalid`).
    pub skipped: usize,
    /// Rows read.
    pub total: usize,
    pub dry_run: bool,
    /// The first 100 failing rows.
    pub errors: Vec<RowError>,
    /// Columns that are no property of the type, left out.
    pub ignored_columns: Vec<String>,
}

/// What an import asked for, from either kind of body.
pub(super) struct Asked {
    pub object_type_id: String,
    pub format: Format,
    pub data: Sent,
    pub mapping: Option<Map<String, Value>>,
    pub mode: Mode,
    pub dry_run: bool,
    pub upsert_by: Option<String>,
    pub run_async: bool,
}

/// The rows as sent.
pub(super) enum Sent {
    Json(Value),
    Bytes(Vec<u8>),
}

async fn read_request(app: &App, request: Request) -> ApiResult<Asked> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let crate::http::Json(body) = crate::http::Json::<ImportRequest>::from_request(request, app).await?;
        return Ok(Asked {
            object_type_id: body.object_type_id,
            format: body.format,
            data: Sent::Json(body.data),
            mapping: body.mapping,
            mode: body.mode,
            dry_run: body.dry_run,
            upsert_by: body.upsert_by,
            run_async: body.run_async,
        });
    }
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send a JSON body, or the rows as the `file` part of multipart/form-data",
        ));
    }
    let unreadable = |e: String| ApiError::bad_request(format!("the form cannot be read: {e}"));
    let mut multipart = Multipart::from_request(request, app).await.map_err(|e| unreadable(e.body_text()))?;
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut file: Option<(Vec<u8>, Option<String>, Option<String>)> = None;
    while let Some(field) = multipart.next_field().await.map_err(|e| unreadable(e.to_string()))? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let filename = field.file_name().map(str::to_owned);
            let part_type = field.content_type().map(str::to_owned);
            let bytes = field.bytes().await.map_err(|e| unreadable(e.to_string()))?;
            file = Some((bytes.to_vec(), filename, part_type));
            continue;
        }
        let bytes = field.bytes().await.map_err(|e| unreadable(e.to_string()))?;
        if bytes.len() > FORM_FIELD_MAX_BYTES {
            return Err(ApiError::invalid(&name, format!("a form field is at most {FORM_FIELD_MAX_BYTES} bytes")));
        }
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::invalid(&name, "must be UTF-8 text"))?;
        if !text.is_empty() && text != "null" {
            fields.insert(name, text);
        }
    }
    let (bytes, filename, part_type) =
        file.ok_or_else(|| ApiError::invalid("file", "is required: the rows to import"))?;
    let object_type_id =
        fields.remove("object_type_id").ok_or_else(|| ApiError::invalid("object_type_id", "is required"))?;
    let format = match fields.remove("format").as_deref() {
        Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        Some(_) => return Err(ApiError::invalid("format", "is `json` or `csv`")),
        None => {
            let named_csv = filename.as_deref().is_some_and(|f| f.to_ascii_lowercase().ends_with(".csv"));
            let typed_csv = part_type.as_deref().is_some_and(|t| t.contains("csv"));
            if named_csv || typed_csv {
                Format::Csv
            } else {
                Format::Json
            }
        }
    };
    let mapping = match fields.remove("mapping") {
        Some(text) => Some(
            serde_json::from_str::<Map<String, Value>>(&text)
                .map_err(|_| ApiError::invalid("mapping", "must be a JSON object"))?,
        ),
        None => None,
    };
    let mode = match fields.remove("mode").as_deref() {
        None | Some("all_or_nothing") => Mode::AllOrNothing,
        Some("skip_invalid") => Mode::SkipInvalid,
        Some(_) => return Err(ApiError::invalid("mode", "is `all_or_nothing` or `skip_invalid`")),
    };
    let flag = |fields: &mut BTreeMap<String, String>, name: &str| match fields.remove(name).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::invalid(name, "is `true` or `false`")),
    };
    let dry_run = flag(&mut fields, "dry_run")?;
    let run_async = flag(&mut fields, "async")?;
    // Other fields are left alone, as a form's extra parts usually are.
    let upsert_by = fields.remove("upsert_by");
    let data = match format {
        Format::Json => Sent::Json(
            serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid("file", format!("is not JSON: {e}")))?,
        ),
        Format::Csv => Sent::Bytes(bytes),
    };
    Ok(Asked { object_type_id, format, data, mapping, mode, dry_run, upsert_by, run_async })
}

/// A CSV cell as the property's type reads it: numbers, booleans and JSON from their text.
fn cell(data_type: DataType, text: &str) -> Value {
    let parsed = |t: &str| serde_json::from_str::<Value>(t).ok();
    match data_type {
        DataType::Integer => text.trim().parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(text.into())),
        DataType::Number | DataType::Percent => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(text.into()), Value::Number),
        DataType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => Value::String(text.into()),
        },
        DataType::Json | DataType::Currency => parsed(text).unwrap_or_else(|| Value::String(text.into())),
        DataType::MultiEnum => parsed(text).filter(Value::is_array).unwrap_or_else(|| {
            Value::Array(text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(|s| json!(s)).collect())
        }),
        _ => Value::String(text.into()),
    }
}

/// The rows as column name to value, in order.
pub(super) fn rows_of(schema: &Schema, asked: &Asked) -> ApiResult<Vec<Map<String, Value>>> {
    let rows = match (&asked.format, &asked.data) {
        (Format::Json, Sent::Json(Value::Array(items))) => {
            if items.len() > IMPORT_ROWS_MAX {
                return Err(ApiError::invalid("data", format!("at most {IMPORT_ROWS_MAX} rows")));
            }
            items
                .iter()
                .enumerate()
                .map(|(index, item)| match item {
                    Value::Object(row) => Ok(row.clone()),
                    _ => Err(ApiError::invalid("data", format!("row {index} is not a JSON object"))),
                })
                .collect::<ApiResult<Vec<_>>>()?
        }
        (Format::Json, _) => return Err(ApiError::invalid("data", "is an array of JSON objects")),
        (Format::Csv, data) => {
            let bytes: &[u8] = match data {
                Sent::Bytes(bytes) => bytes,
                Sent::Json(Value::String(text)) => text.as_bytes(),
                Sent::Json(_) => return Err(ApiError::invalid("data", "is the CSV text")),
            };
            let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
            let headers: Vec<String> = reader
                .headers()
                .map_err(|e| ApiError::invalid("data", format!("the CSV header cannot be read: {e}")))?
                .iter()
                .map(|h| h.trim().to_owned())
                .collect();
            let mut rows = Vec::new();
            for (index, record) in reader.records().enumerate() {
                if index >= IMPORT_ROWS_MAX {
                    return Err(ApiError::invalid("data", format!("at most {IMPORT_ROWS_MAX} rows")));
                }
                let record =
                    record.map_err(|e| ApiError::invalid("data", format!("CSV row {index} cannot be read: {e}")))?;
                let mut row = Map::new();
                for (header, text) in headers.iter().zip(record.iter()) {
                    if text.is_empty() {
                        continue;
                    }
                    let property = target(asked.mapping.as_ref(), header).and_then(|name| schema.property(&name));
                    let value = match property {
                        Some(property) => cell(property.data_type, text),
                        None => Value::String(text.to_owned()),
                    };
                    row.insert(header.clone(), value);
                }
                rows.push(row);
            }
            rows
        }
    };
    Ok(rows)
}

/// The property a column goes to: the mapping's, else its own name; `None` when mapped to null.
fn target(mapping: Option<&Map<String, Value>>, column: &str) -> Option<String> {
    match mapping.and_then(|m| m.get(column)) {
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => None,
        None => Some(column.to_owned()),
    }
}

/// Import data
///
/// Up to 10,000 rows into one type, as a JSON body (`data`: an array of objects, or CSV text
/// with `format: csv`) or a multipart form (`file`). Each row is validated like a create; with
/// `upsert_by`, a row whose value of that unique property matches a live object updates it.
/// `all_or_nothing` (default) answers 422 with the failing rows and writes nothing;
/// `skip_invalid` writes the valid rows and reports the others. `dry_run` writes nothing.
/// Needs writing the type's objects.
#[utoipa::path(post, path = "/v1/data/import", tag = "Import and export", security(("bearer" = [])),
    request_body(content(
        (ImportRequest = "application/json"),
        (ImportForm = "multipart/form-data"))),
    responses((status = 200, body = crate::http::response::Envelope<ImportResult>),
              (status = 202, body = crate::http::response::Envelope<ImportJob>, description = "`async`: the import, queued"),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "A unique value is taken"),
              (status = 415, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn import_data(auth: Auth, State(app): State<App>, request: Request) -> ApiResult<Response> {
    let asked = read_request(&app, request).await?;
    if asked.run_async {
        return start(&app, &auth, asked).await;
    }
    Ok(Data(run(&app, &auth, &asked, None).await?).into_response())
}

/// What an import may do: the type, the guard of its inserts and of its upserts' updates.
pub(super) async fn prepare(
    tx: &mut crate::db::WriteTx,
    app: &App,
    auth: &Auth,
    asked: &Asked,
) -> ApiResult<(Schema, ObjectGuard, Option<ObjectGuard>)> {
    let tenant = auth.tenant()?;
    let schema = Schema::load_for_write(tx, app, tenant, &asked.object_type_id).await?;
    let guard = ObjectGuard::load(tx, auth, &schema, ObjectAction::Insert).await?;
    guard.require_any(&schema, ObjectAction::Insert)?;
    let update_guard = match &asked.upsert_by {
        Some(name) => {
            let property = schema.property(name).ok_or_else(|| {
                ApiError::invalid("upsert_by", format!("`{}` has no property `{name}`", schema.object_type.name))
            })?;
            if !property.is_unique {
                return Err(ApiError::invalid(
                    "upsert_by",
                    format!("`{name}` is not unique: upsert by a unique property"),
                ));
            }
            Some(ObjectGuard::load(tx, auth, &schema, ObjectAction::Update).await?)
        }
        None => None,
    };
    if let Some(mapping) = &asked.mapping {
        for (column, property) in mapping {
            match property {
                Value::String(name) if schema.property(name).is_none() => {
                    return Err(ApiError::invalid(
                        "mapping",
                        format!("`{column}` maps to `{name}`, which is no property of the type"),
                    ));
                }
                Value::String(_) | Value::Null => {}
                _ => return Err(ApiError::invalid("mapping", format!("`{column}` maps to a property name or null"))),
            }
        }
    }
    Ok((schema, guard, update_guard))
}

/// Imports in one transaction. With `job`, the import of that id: its progress is told every
/// `PROGRESS_EVERY` rows, and its outcome is recorded in the same transaction as its rows.
pub(super) async fn run(app: &App, auth: &Auth, asked: &Asked, job: Option<&str>) -> ApiResult<ImportResult> {
    let tenant = auth.tenant()?.clone();
    let who = Who::from(auth);
    let backend = app.db.backend();
    let mut tx = app.db.begin_write().await?;
    if let Some(import_id) = job {
        imports::claim(&mut tx, import_id).await?;
    }
    let (schema, guard, update_guard) = prepare(&mut tx, app, auth, asked).await?;
    let raw_rows = rows_of(&schema, asked)?;
    let total = raw_rows.len();
    let mut ignored = std::collections::BTreeSet::new();
    let mut failed: Vec<(usize, ApiError)> = Vec::new();
    let mut ready: Vec<(usize, Map<String, Value>)> = Vec::new();
    for (index, raw) in raw_rows.into_iter().enumerate() {
        let mut properties = Map::new();
        for (column, value) in raw {
            match target(asked.mapping.as_ref(), &column) {
                Some(name) if schema.property(&name).is_some() => {
                    properties.insert(name, value);
                }
                _ => {
                    ignored.insert(column);
                }
            }
        }
        if let Err(error) = guard.check_writable(properties.keys()) {
            tx.rollback().await?;
            return Err(error);
        }
        ready.push((index, properties));
    }
    let (mut imported, mut updated) = (0, 0);
    for (index, properties) in ready {
        if let Some(import_id) = job {
            if index % PROGRESS_EVERY == 0 {
                progress::tell(app, import_id, index).await;
            }
        }
        // An upsert's match, if any.
        let existing = match &asked.upsert_by {
            Some(name) => match properties.get(name) {
                Some(value) => find_by(&mut tx, backend, &schema, name, value.clone(), &guard).await?,
                None => None,
            },
            None => None,
        };
        let outcome = match existing {
            Some(object) => {
                let update_guard = update_guard.as_ref().unwrap_or(&guard);
                if update_guard.is_restricted()
                    && !update_guard.admits(&mut tx, backend, &schema, ObjectAction::Update, &object.id).await?
                {
                    Err(ApiError::forbidden("your policies let you see this object but not update it"))
                } else {
                    match apply_update(&mut tx, &tenant, &schema, object, &properties, None, &who).await {
                        Ok(object) => {
                            update_guard
                                .check_written(&mut tx, backend, &schema, ObjectAction::Update, &object.id)
                                .await?;
                            updated += 1;
                            Ok(())
                        }
                        Err(WriteError::Invalid(problems)) => Err(problems.into_error()),
                        Err(error) => {
                            tx.rollback().await?;
                            return Err(at_row(guard.redact_error(error.into()), index));
                        }
                    }
                }
            }
            None => match validate_new(&schema, &properties) {
                Err(problems) => Err(problems.into_error()),
                Ok(values) => {
                    let mut problems = Problems::default();
                    let names: Vec<&String> = values.keys().collect();
                    check_references(&mut tx, &tenant, &schema, &values, &names, &mut problems).await?;
                    if !problems.is_empty() {
                        Err(problems.into_error())
                    } else {
                        entitlements::consume(&mut tx, app, &tenant, entitlements::Entitlement::Objects, 1).await?;
                        match insert(&mut tx, &schema, values, &who).await {
                            Ok(object) => {
                                guard
                                    .check_written(&mut tx, backend, &schema, ObjectAction::Insert, &object.id)
                                    .await?;
                                imported += 1;
                                Ok(())
                            }
                            Err(error) => {
                                // A unique index refused it: the transaction is spent.
                                tx.rollback().await?;
                                return Err(at_row(guard.redact_error(error.into()), index));
                            }
                        }
                    }
                }
            },
        };
        if let Err(error) = outcome {
            failed.push((index, error));
        }
    }
    let errors: Vec<RowError> = failed
        .iter()
        .take(ERRORS_LISTED_MAX)
        .map(|(row, error)| RowError { row: *row, message: error.message.clone(), details: error.details.clone() })
        .collect();
    if !failed.is_empty() && asked.mode == Mode::AllOrNothing {
        tx.rollback().await?;
        let mut error =
            ApiError::invalid("data", format!("{} of {total} rows are not valid: nothing was imported", failed.len()));
        error.extra.insert("errors".into(), serde_json::to_value(&errors)?);
        return Err(error);
    }
    let result = ImportResult {
        imported,
        updated,
        skipped: failed.len(),
        total,
        dry_run: asked.dry_run,
        errors,
        ignored_columns: ignored.into_iter().collect(),
    };
    if asked.dry_run {
        tx.rollback().await?;
    } else {
        if let Some(import_id) = job {
            imports::finish(&mut tx, import_id, Ok(&result)).await?;
        }
        tx.commit().await?;
    }
    Ok(result)
}

fn at_row(mut error: ApiError, row: usize) -> ApiError {
    error.extra.insert("row".into(), json!(row));
    error
}

/// The live object of `schema` whose `name` is `value`, as the caller may see it.
async fn find_by(
    tx: &mut crate::db::WriteTx,
    backend: crate::db::Backend,
    schema: &Schema,
    name: &str,
    value: Value,
    guard: &ObjectGuard,
) -> ApiResult<Option<Object>> {
    let Ok(cond) = leaf(schema, name, Op::Eq, value) else { return Ok(None) };
    let mut binds = Binds::new(backend);
    let mut conditions = vec![
        format!("object_type_id = {}", super::sql::literal(&schema.object_type.id)),
        "deleted_at IS NULL".to_owned(),
        cond_sql(backend, &cond, &mut binds),
    ];
    if let Some(rows) = guard.rows(schema, ObjectAction::Select) {
        conditions.push(cond_sql(backend, &rows, &mut binds));
    }
    let row: Option<ObjectRow> = sqlx::query_as_with(
        &format!("SELECT {COLUMNS} FROM objects WHERE {} LIMIT 1", conditions.join(" AND ")),
        binds.arguments()?,
    )
    .fetch_optional(&mut **tx)
    .await?;
    row.map(Object::try_from).transpose()
}
