//! Read-only SQL (seed 002, `POST /v1/sql`): a `SELECT` over the tenant's object types as
//! tables (their system fields and properties as columns), with joins, aggregates, `GROUP BY`,
//! CTEs and window functions, the same on SQLite and PostgreSQL. The rewriter (`rewrite`) lets
//! only such a query through and replaces each type by a subquery over the live objects the
//! caller may read; the query then runs where it cannot write: on SQLite a read-only connection
//! of its own that a deadline interrupts, on PostgreSQL a read-only transaction with a
//! `statement_timeout`. At most 10,000 rows (and 16 MB) come back.

pub mod rewrite;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use axum::extract::State;
use futures_util::TryStreamExt;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sqlx::{Column, Executor, Row, TypeInfo, ValueRef};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::sql::{self as dialect, Bind, Binds};
use super::types::{DataType, Kind};
use super::Schema;
use crate::app::App;
use crate::auth::Auth;
use crate::authz::access::readable;
use crate::authz::ObjectAction;
use crate::db::Backend;
use crate::http::{ApiError, ApiResult, Data, ErrorCode, Json};

/// Most rows answered.
const ROWS_MAX: usize = 10_000;
/// Most bytes of values answered (about).
const BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest a query may run.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a query waits for a turn before it is answered 503.
const QUEUED_MAX: Duration = Duration::from_secs(15);

/// Queries running at once on this node: one per core. A query is a scan that keeps a core busy;
/// more at once only share the cores, so that under a burst every query would reach its time
/// limit instead of most of them finishing. The others wait their turn (their limit starts when
/// they run).
static RUNNING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
});

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(run_sql))
}

/// A query.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One `SELECT` (CTEs, joins, aggregates, window functions) over your object types by name;
    /// at most 10,000 characters. Placeholders `$1`, `$2`, ... take `params`.
    #[schema(min_length = 1, max_length = 10000)]
    pub sql: String,
    /// Values of the placeholders: strings, numbers or booleans; at most 100.
    #[schema(value_type = Option<Vec<Object>>, max_items = 100)]
    pub params: Option<Vec<Value>>,
}

/// What a query answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct SqlResult {
    pub columns: Vec<String>,
    /// Each row's values, in the order of `columns`.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<Value>>,
    pub row_count: usize,
    /// More rows matched than were answered (10,000 rows or 16 MB at most).
    pub truncated: bool,
    pub duration_ms: f64,
}

/// The value of a placeholder.
fn bind_of(index: usize, value: &Value) -> ApiResult<Bind> {
    let refuse = || ApiError::invalid("params", format!("`params[{index}]` must be a string, a number or a boolean"));
    Ok(match value {
        Value::String(text) => Bind::Text(text.clone()),
        Value::Bool(flag) => Bind::Int(i64::from(*flag)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Bind::Int(i),
            None => Bind::Real(n.as_f64().ok_or_else(refuse)?),
        },
        _ => return Err(refuse()),
    })
}

/// A property as a column: its value in a form both databases answer alike.
fn column_expr(backend: Backend, name: &str, data_type: DataType) -> String {
    let value = dialect::value_expr(backend, name, data_type);
    match (backend, data_type.kind()) {
        (Backend::Postgres, Kind::Numeric) if data_type == DataType::Integer => {
            format!("CAST(CAST(properties AS jsonb) ->> '{name}' AS bigint)")
        }
        (Backend::Postgres, Kind::Numeric) => format!("CAST({value} AS double precision)"),
        // Booleans are 1 and 0 on both.
        (Backend::Postgres, Kind::Boolean) => {
            format!("CAST(CAST(CAST(properties AS jsonb) ->> '{name}' AS boolean) AS integer)")
        }
        (Backend::Postgres, Kind::Set | Kind::Opaque) => format!("CAST(CAST(properties AS jsonb) -> '{name}' AS text)"),
        (Backend::Postgres, Kind::Text) => format!("(CAST(properties AS jsonb) ->> '{name}') COLLATE \"C\""),
        (Backend::Sqlite, _) => value,
    }
}

/// The subquery a type stands for: its live objects the caller may read, with the properties it
/// may read.
async fn type_table(
    app: &App,
    conn: &mut sqlx::AnyConnection,
    auth: &Auth,
    name: &str,
    binds: &mut Binds,
) -> ApiResult<String> {
    let backend = app.db.backend();
    let (type_access, guard) = readable(app, conn, auth, name, ObjectAction::Select).await?;
    let schema: Schema = guard.readable_schema(&type_access.schema);
    let mut columns =
        vec!["id".to_owned(), "created_at".into(), "updated_at".into(), "created_by".into(), "version".into()];
    for property in &schema.properties {
        columns.push(format!("{} AS \"{}\"", column_expr(backend, &property.name, property.data_type), property.name));
    }
    let mut conditions = vec![
        format!("object_type_id = {}", dialect::literal(&schema.object_type.id)),
        format!("tenant_id = {}", dialect::literal(&schema.object_type.tenant_id)),
        "deleted_at IS NULL".to_owned(),
    ];
    if let Some(rows) = guard.rows(&type_access.schema, ObjectAction::Select) {
        conditions.push(super::query::cond_sql(backend, &rows, binds));
    }
    Ok(format!("SELECT {} FROM objects WHERE {}", columns.join(", "), conditions.join(" AND ")))
}

/// The answer so far, within its bounds.
#[derive(Default)]
struct Collected {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    bytes: usize,
    truncated: bool,
}

impl Collected {
    /// Adds a row; false once the bounds are reached (the row is then left out).
    fn push(&mut self, row: Vec<Value>) -> bool {
        let size: usize = row.iter().map(|v| if let Value::String(s) = v { s.len() + 2 } else { 8 }).sum();
        if self.rows.len() >= ROWS_MAX || self.bytes + size > BYTES_MAX {
            self.truncated = true;
            return false;
        }
        self.bytes += size;
        self.rows.push(row);
        true
    }
}

/// Why the database refused a query, as the caller's error.
fn refused(error: sqlx::Error) -> ApiError {
    match &error {
        sqlx::Error::Database(db) => {
            let message = db.message();
            if message.contains("interrupted") || message.contains("statement timeout") {
                ApiError::new(ErrorCode::Timeout, format!("the query ran past the {} s limit", TIMEOUT.as_secs()))
            } else {
                ApiError::invalid("sql", format!("the database refused the query: {message}"))
            }
        }
        _ => error.into(),
    }
}

async fn run_sqlite(app: &App, sql: &str, binds: &Binds) -> ApiResult<Collected> {
    let deadline = Instant::now() + TIMEOUT;
    let mut conn = app
        .db
        .read_only_sqlite(deadline)
        .await?
        .ok_or_else(|| ApiError::internal("the SQLite database has no file to read"))?;
    let mut query = sqlx::query(sql);
    for value in binds.values() {
        query = match value {
            Bind::Text(text) => query.bind(text.clone()),
            Bind::Int(n) => query.bind(*n),
            Bind::Real(x) => query.bind(*x),
            Bind::Numeric(text) => query.bind(text.parse::<f64>().unwrap_or(f64::NAN)),
        };
    }
    let mut collected = Collected::default();
    {
        let mut stream = query.fetch(&mut conn);
        while let Some(row) = stream.try_next().await.map_err(refused)? {
            if collected.columns.is_empty() {
                collected.columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
            }
            let mut values = Vec::with_capacity(row.len());
            for index in 0..row.len() {
                let raw = row.try_get_raw(index).map_err(refused)?;
                let value = if raw.is_null() {
                    Value::Null
                } else {
                    match raw.type_info().name() {
                        "INTEGER" => Value::from(row.try_get::<i64, _>(index).map_err(refused)?),
                        "REAL" => serde_json::Number::from_f64(row.try_get::<f64, _>(index).map_err(refused)?)
                            .map_or(Value::Null, Value::Number),
                        "BLOB" => Value::String(format!(
                            "<{} bytes>",
                            row.try_get::<Vec<u8>, _>(index).map_err(refused)?.len()
                        )),
                        _ => Value::String(row.try_get::<String, _>(index).map_err(refused)?),
                    }
                };
                values.push(value);
            }
            if !collected.push(values) {
                break;
            }
        }
    }
    if collected.columns.is_empty() {
        let described = (&mut conn).describe(sql).await.map_err(refused)?;
        collected.columns = described.columns().iter().map(|c| c.name().to_owned()).collect();
    }
    Ok(collected)
}

/// A JSON object's entries in their order (with repeated keys kept): a row of `row_to_json`.
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

async fn run_postgres(app: &App, sql: &str, binds: &Binds) -> ApiResult<Collected> {
    let mut tx = app.db.pool().begin().await?;
    tx.execute("SET TRANSACTION READ ONLY").await?;
    tx.execute(format!("SET LOCAL statement_timeout = {}", TIMEOUT.as_millis()).as_str()).await?;
    let wrapped = format!("SELECT CAST(row_to_json(q) AS text) FROM ({sql}) q");
    let mut collected = Collected::default();
    {
        let mut stream = sqlx::query_as_with::<_, (String,), _>(&wrapped, binds.arguments()?).fetch(&mut *tx);
        while let Some((text,)) = stream.try_next().await.map_err(refused)? {
            let Entries(entries) = serde_json::from_str(&text)?;
            if collected.columns.is_empty() {
                collected.columns = entries.iter().map(|(k, _)| k.clone()).collect();
            }
            if !collected.push(entries.into_iter().map(|(_, v)| v).collect()) {
                break;
            }
        }
    }
    if collected.columns.is_empty() {
        // No rows: one row of nulls beside nothing names the columns.
        let named = format!(
            "SELECT CAST(row_to_json(q) AS text) FROM (SELECT s.* FROM (SELECT 1 AS one) o LEFT JOIN ({sql}) s ON true) q"
        );
        let (text,): (String,) =
            sqlx::query_as_with(&named, binds.arguments()?).fetch_one(&mut *tx).await.map_err(refused)?;
        let Entries(entries) = serde_json::from_str(&text)?;
        collected.columns = entries.into_iter().map(|(k, _)| k).collect();
    }
    tx.rollback().await?;
    Ok(collected)
}

/// Execute SQL query
///
/// Runs one read-only `SELECT` over your object types: each type is a table of its live objects
/// (`id`, `created_at`, `updated_at`, `created_by`, `version` and one column per property;
/// booleans as 1 and 0, dates and times as ISO text, JSON and multi-enum values as JSON text).
/// Joins, aggregates, `GROUP BY`, CTEs and window functions work alike on both databases, with
/// the functions `count sum avg min max coalesce nullif lower upper length abs round trim ltrim
/// rtrim replace substr` and the window functions. Anything else (writes, other tables, other
/// functions, options) is 422 before it runs. An end user's tables hold only the rows and
/// properties their roles and policies let them read. At most 10,000 rows, 5 s.
#[utoipa::path(post, path = "/v1/sql", tag = "SQL", security(("bearer" = [])),
    request_body = SqlRequest,
    responses((status = 200, body = crate::http::response::Envelope<SqlResult>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn run_sql(auth: Auth, State(app): State<App>, Json(body): Json<SqlRequest>) -> ApiResult<Data<SqlResult>> {
    let tenant = auth.tenant()?;
    let backend = app.db.backend();
    let params = body.params.unwrap_or_default();
    if params.len() > rewrite::PARAMS_MAX {
        return Err(ApiError::invalid("params", format!("at most {} values", rewrite::PARAMS_MAX)));
    }
    let mut binds = Binds::new(backend);
    for (index, value) in params.iter().enumerate() {
        binds.push(bind_of(index, value)?);
    }
    let mut conn = app.db.pool().acquire().await?;
    let names: Vec<(String,)> = sqlx::query_as("SELECT name FROM object_types WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_all(&mut *conn)
        .await?;
    let names: BTreeSet<String> = names.into_iter().map(|(n,)| n).collect();
    let checked = rewrite::check(&body.sql, params.len(), &|name| names.contains(name))
        .map_err(|problem| ApiError::invalid("sql", problem))?;
    let mut tables = HashMap::new();
    for name in &checked.types {
        let sql = type_table(&app, &mut conn, &auth, name, &mut binds).await?;
        tables.insert(name.clone(), rewrite::parse_own(&sql).map_err(ApiError::internal)?);
    }
    drop(conn);
    let (sql, _) =
        checked.rewrite(&|name| tables.get(name).cloned()).map_err(|problem| ApiError::invalid("sql", problem))?;
    let _turn = match tokio::time::timeout(QUEUED_MAX, RUNNING.acquire()).await {
        Ok(Ok(turn)) => turn,
        _ => return Err(ApiError::unavailable("every SQL runner of this node is busy: try again shortly", 5)),
    };
    let started = Instant::now();
    let collected = match backend {
        Backend::Sqlite => run_sqlite(&app, &sql, &binds).await?,
        Backend::Postgres => run_postgres(&app, &sql, &binds).await?,
    };
    let duration_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    Ok(Data(SqlResult {
        row_count: collected.rows.len(),
        columns: collected.columns,
        rows: collected.rows,
        truncated: collected.truncated,
        duration_ms,
    }))
}
