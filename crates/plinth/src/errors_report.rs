//! Client error reports (seed 002, `POST /v1/errors/report`): errors from browsers and apps,
//! grouped by fingerprint (the message with its numbers and ids blanked, the source, the first
//! frame of the stack), counted, with when each group was first and last seen and the last
//! occurrence's details. Reporting needs `errors:write` (a key's `write`, or a role granting it);
//! reading, `errors:read`. Every request is rate limited like any other.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::auth::Auth;
use crate::http::error::FieldErrors;
use crate::http::{list, ApiError, ApiResult, Created, Data, Json, Page, Path, Query};
use crate::id;
use crate::scopes::required::{ERRORS_READ, ERRORS_WRITE};
use crate::time;

const MESSAGE_MAX: usize = 2_000;
const STACK_MAX: usize = 16 * 1024;
const PATH_MAX: usize = 2_048;
const SOURCE_MAX: usize = 200;
const METADATA_MAX_BYTES: usize = 8 * 1024;
/// The id prefix of error groups.
pub const PREFIX: &str = "err";

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(report_error)).routes(routes!(list_errors)).routes(routes!(get_error))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warning,
    #[default]
    Error,
    Fatal,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }
}

/// An error a client saw.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorReport {
    /// 1 to 2,000 characters.
    #[schema(min_length = 1, max_length = 2000)]
    pub message: String,
    /// At most 16 KB.
    #[schema(max_length = 16384)]
    pub stack: Option<String>,
    /// Where it happened: an app or script name, at most 200 characters.
    #[schema(max_length = 200)]
    pub source: Option<String>,
    #[serde(default)]
    pub level: Level,
    /// The page or route, at most 2,048 characters.
    #[schema(max_length = 2048)]
    pub path: Option<String>,
    /// Any JSON object, at most 8 KB serialised.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Reported {
    /// The group the report joined.
    pub error_id: String,
    pub fingerprint: String,
    /// Reports of the group so far.
    pub count: i64,
}

/// A group of reports of the same error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorGroup {
    #[schema(example = "err_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub fingerprint: String,
    pub message: String,
    pub level: String,
    pub source: Option<String>,
    pub path: Option<String>,
    /// The last report's stack.
    pub stack: Option<String>,
    /// The last report's metadata.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub count: i64,
    pub first_seen: chrono::DateTime<chrono::Utc>,
    pub last_seen: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, FromRow)]
struct GroupRow {
    id: String,
    fingerprint: String,
    message: String,
    level: String,
    source: Option<String>,
    path: Option<String>,
    stack: Option<String>,
    metadata: Option<String>,
    count: i64,
    first_seen: String,
    last_seen: String,
}

const COLUMNS: &str = "id, fingerprint, message, level, source, path, stack, metadata, count, first_seen, last_seen";

impl TryFrom<GroupRow> for ErrorGroup {
    type Error = ApiError;

    fn try_from(row: GroupRow) -> ApiResult<ErrorGroup> {
        Ok(ErrorGroup {
            metadata: row.metadata.as_deref().map(serde_json::from_str).transpose()?,
            first_seen: time::from_db(&row.first_seen)?,
            last_seen: time::from_db(&row.last_seen)?,
            id: row.id,
            fingerprint: row.fingerprint,
            message: row.message,
            level: row.level,
            source: row.source,
            path: row.path,
            stack: row.stack,
            count: row.count,
        })
    }
}

/// The message with what varies between occurrences blanked: runs of digits and hex, quoted
/// values.
fn normalise(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted: Option<char> = None;
    let mut previous_blank = false;
    for c in message.chars() {
        if let Some(q) = quoted {
            if c == q {
                quoted = None;
                out.push(c);
            }
            continue;
        }
        if c == '"' || c == '\'' {
            quoted = Some(c);
            out.push(c);
            out.push('_');
            continue;
        }
        if c.is_ascii_digit() {
            if !previous_blank {
                out.push('#');
            }
            previous_blank = true;
            continue;
        }
        previous_blank = false;
        out.push(c);
    }
    out
}

/// The group a report belongs to: the normalised message, the source and the stack's first
/// frame (without its line and column).
pub fn fingerprint(message: &str, source: Option<&str>, stack: Option<&str>) -> String {
    let frame = stack
        .and_then(|s| s.lines().map(str::trim).find(|l| l.starts_with("at ") || l.contains('@')))
        .map(normalise)
        .unwrap_or_default();
    let mut hash = Sha256::new();
    for part in [normalise(message).as_str(), source.unwrap_or_default(), frame.as_str()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    crate::secrets::hex(&hash.finalize()[..16])
}

fn check(report: &ErrorReport) -> ApiResult<Option<String>> {
    let mut errors = FieldErrors::default();
    let length = report.message.chars().count();
    if length == 0 || length > MESSAGE_MAX {
        errors.add("message", format!("must be 1 to {MESSAGE_MAX} characters"));
    }
    if report.stack.as_ref().is_some_and(|s| s.len() > STACK_MAX) {
        errors.add("stack", "must be at most 16 KB");
    }
    if report.source.as_ref().is_some_and(|s| s.chars().count() > SOURCE_MAX) {
        errors.add("source", format!("must be at most {SOURCE_MAX} characters"));
    }
    if report.path.as_ref().is_some_and(|s| s.chars().count() > PATH_MAX) {
        errors.add("path", format!("must be at most {PATH_MAX} characters"));
    }
    let metadata = match &report.metadata {
        Some(metadata) => {
            let text = serde_json::to_string(metadata)?;
            if text.len() > METADATA_MAX_BYTES {
                errors.add("metadata", "must be at most 8 KB serialised");
            }
            Some(text)
        }
        None => None,
    };
    errors.finish()?;
    Ok(metadata)
}

/// Report client error
///
/// Records an error a browser or app saw, in the group of the same errors: 201 with the group's
/// id and count. Needs `errors:write`.
#[utoipa::path(post, path = "/v1/errors/report", tag = "Errors", security(("bearer" = [])),
    request_body = ErrorReport,
    responses((status = 201, body = crate::http::response::Envelope<Reported>),
              (status = 422, body = crate::http::error::ErrorBody),
              (status = 429, body = crate::http::error::ErrorBody)))]
async fn report_error(
    auth: Auth,
    State(app): State<App>,
    Json(report): Json<ErrorReport>,
) -> ApiResult<Created<Reported>> {
    auth.require(ERRORS_WRITE)?;
    let tenant = auth.tenant()?;
    let metadata = check(&report)?;
    let fingerprint = fingerprint(&report.message, report.source.as_deref(), report.stack.as_deref());
    let who = crate::audit::Who::from(&auth);
    let now = time::to_db(&time::now());
    let mut tx = app.db.begin_write().await?;
    let existing: Option<(String, i64)> =
        sqlx::query_as("SELECT id, count FROM error_groups WHERE tenant_id = $1 AND fingerprint = $2")
            .bind(tenant.as_str())
            .bind(&fingerprint)
            .fetch_optional(&mut *tx)
            .await?;
    let reporter = who.actor_id.as_deref().unwrap_or(who.actor_type).to_owned();
    let (error_id, count) = match existing {
        Some((id, count)) => {
            sqlx::query(
                "UPDATE error_groups SET count = count + 1, last_seen = $1, level = $2, path = $3, stack = $4, \
                 metadata = $5, last_reported_by = $6 WHERE id = $7",
            )
            .bind(&now)
            .bind(report.level.as_str())
            .bind(report.path.as_deref())
            .bind(report.stack.as_deref())
            .bind(metadata.as_deref())
            .bind(&reporter)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            (id, count + 1)
        }
        None => {
            let id = id::new_id(PREFIX);
            sqlx::query(&format!(
                "INSERT INTO error_groups ({COLUMNS}, tenant_id, last_reported_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9, $10, $11)"
            ))
            .bind(&id)
            .bind(&fingerprint)
            .bind(report.message.trim())
            .bind(report.level.as_str())
            .bind(report.source.as_deref())
            .bind(report.path.as_deref())
            .bind(report.stack.as_deref())
            .bind(metadata.as_deref())
            .bind(&now)
            .bind(tenant.as_str())
            .bind(&reporter)
            .execute(&mut *tx)
            .await?;
            (id, 1)
        }
    };
    tx.commit().await?;
    Ok(Created(Reported { error_id, fingerprint, count }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ErrorsQuery {
    /// Only groups of this level.
    #[param(inline)]
    pub level: Option<Level>,
    /// Only groups from this source.
    pub source: Option<String>,
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    level: Option<String>,
    source: Option<String>,
    last_seen: String,
    id: String,
    total: i64,
}

/// List error groups
///
/// The groups of reported errors, the most recently seen first. Needs `errors:read`.
#[utoipa::path(get, path = "/v1/errors", tag = "Errors", security(("bearer" = [])), params(ErrorsQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<ErrorGroup>>)))]
async fn list_errors(
    auth: Auth,
    State(app): State<App>,
    Query(params): Query<ErrorsQuery>,
) -> ApiResult<Data<Page<ErrorGroup>>> {
    auth.require(ERRORS_READ)?;
    let tenant = auth.tenant()?;
    let limit = list::page_limit(params.limit)?;
    let level = params.level.map(|l| l.as_str().to_owned());
    let cursor: Option<Cursor> = params.cursor.as_deref().map(|t| list::open(&app.cursor_key, t)).transpose()?;
    if let Some(cursor) = &cursor {
        if cursor.level != level || cursor.source != params.source {
            return Err(ApiError::bad_request("this cursor belongs to another list: keep the first page's parameters"));
        }
    }
    let filter = "tenant_id = $1 AND ($2 = '' OR level = $2) AND ($3 = '' OR source = $3)";
    let (level_p, source_p) = (level.clone().unwrap_or_default(), params.source.clone().unwrap_or_default());
    let mut conn = app.db.pool().acquire().await?;
    let total = match &cursor {
        Some(cursor) => cursor.total,
        None => {
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM error_groups WHERE {filter}"))
                .bind(tenant.as_str())
                .bind(&level_p)
                .bind(&source_p)
                .fetch_one(&mut *conn)
                .await?;
            n
        }
    };
    let (after_seen, after_id) = match &cursor {
        Some(c) => (c.last_seen.clone(), c.id.clone()),
        None => ("9999".to_owned(), String::new()),
    };
    let rows: Vec<GroupRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM error_groups WHERE {filter} AND (last_seen < $4 OR (last_seen = $4 AND id < $5)) \
         ORDER BY last_seen DESC, id DESC LIMIT $6"
    ))
    .bind(tenant.as_str())
    .bind(&level_p)
    .bind(&source_p)
    .bind(&after_seen)
    .bind(if cursor.is_some() { after_id } else { "~".to_owned() })
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *conn)
    .await?;
    let more = rows.len() > limit as usize;
    let seen: Vec<(String, String)> = rows.iter().map(|r| (r.last_seen.clone(), r.id.clone())).collect();
    let results: Vec<ErrorGroup> =
        rows.into_iter().take(limit as usize).map(ErrorGroup::try_from).collect::<ApiResult<_>>()?;
    let next_cursor = match seen.get(limit as usize - 1) {
        Some((last_seen, id)) if more => Some(list::seal(
            &app.cursor_key,
            &Cursor { level, source: params.source, last_seen: last_seen.clone(), id: id.clone(), total },
        )),
        _ => None,
    };
    Ok(Data(Page { results, next_cursor, total }))
}

/// Get an error group
#[utoipa::path(get, path = "/v1/errors/{error_id}", tag = "Errors", security(("bearer" = [])),
    params(("error_id" = String, Path, description = "The group's id")),
    responses((status = 200, body = crate::http::response::Envelope<ErrorGroup>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_error(auth: Auth, State(app): State<App>, Path(error_id): Path<String>) -> ApiResult<Data<ErrorGroup>> {
    auth.require(ERRORS_READ)?;
    let tenant = auth.tenant()?;
    let row: Option<GroupRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM error_groups WHERE id = $1 AND tenant_id = $2"))
            .bind(&error_id)
            .bind(tenant.as_str())
            .fetch_optional(app.db.pool())
            .await?;
    Ok(Data(row.ok_or_else(|| ApiError::not_found("error"))?.try_into()?))
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn what_varies_between_occurrences_does_not_split_a_group() {
        let a = fingerprint(
            "Cannot read property 'x' of undefined at row 12",
            Some("app"),
            Some("TypeError\n    at render (app.js:10:5)"),
        );
        let b = fingerprint(
            "Cannot read property 'y' of undefined at row 7",
            Some("app"),
            Some("TypeError\n    at render (app.js:11:9)"),
        );
        assert_eq!(a, b);
        assert_ne!(a, fingerprint("Cannot read property 'x' of undefined at row 12", Some("other"), None));
        assert_ne!(a, fingerprint("Network failed", Some("app"), None));
    }
}
