//! Reports (seed 002): funnel, leaderboard, pipeline and time series over one object type,
//! computed by the database (`GROUP BY`, conditional counts) over the rows the caller may read,
//! filtered with the search language. A time series groups by the UTC hour (or minute, where
//! the time zone's offset is not whole hours) in the database and folds those groups into the
//! time zone's calendar periods, so that days, weeks and months follow daylight saving on both
//! databases; periods without objects are answered with zeros.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AnyConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::properties::Property;
use super::query::{self, count_leaves, parse_filters, Cond, ObjectQuery};
use super::sql::{self, Binds};
use super::types::{DataType, Kind};
use super::Schema;
use crate::app::App;
use crate::auth::Auth;
use crate::authz::access::readable;
use crate::authz::ObjectAction;
use crate::db::Backend;
use crate::http::{ApiError, ApiResult, Data, Json};

/// Most steps of a funnel.
const STEPS_MAX: usize = 10;
/// Most entries of a leaderboard.
const ENTRIES_MAX: u32 = 100;
/// Most periods of a time series.
const PERIODS_MAX: usize = 1_000;
/// Most stages of a pipeline.
const STAGES_MAX: i64 = 500;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(funnel))
        .routes(routes!(leaderboard))
        .routes(routes!(pipeline))
        .routes(routes!(timeseries))
}

/// How values are combined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    #[default]
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// The type, what the caller may read of it, and the rows a report covers: the caller's
/// policies and `filters`, as the SQL condition over `objects` and its binds.
struct Scope {
    schema: Schema,
    binds: Binds,
    condition: String,
}

async fn scope(
    app: &App,
    conn: &mut AnyConnection,
    auth: &Auth,
    type_ref: &str,
    filters: Option<&Vec<Value>>,
) -> ApiResult<Scope> {
    let (type_access, guard) = readable(app, conn, auth, type_ref, ObjectAction::Select).await?;
    let schema = type_access.schema.clone();
    let visible = guard.readable_schema(&schema);
    let filter = filters_cond(&visible, filters, "filters")?;
    let mut binds = Binds::new(app.db.backend());
    let condition = where_of(app.db.backend(), &schema, filter, guard.rows(&schema, ObjectAction::Select), &mut binds);
    Ok(Scope { schema: visible, binds, condition })
}

/// `filters` in the search language over `schema`, all of which must hold.
fn filters_cond(schema: &Schema, filters: Option<&Vec<Value>>, field: &str) -> ApiResult<Option<Cond>> {
    let Some(filters) = filters.filter(|f| !f.is_empty()) else { return Ok(None) };
    let cond = parse_filters(schema, Value::Array(filters.clone()), 0).map_err(|p| ApiError::invalid(field, p))?;
    if count_leaves(&cond, 0).map_err(|p| ApiError::invalid(field, p))? > query::CONDITIONS_MAX {
        return Err(ApiError::invalid(field, format!("at most {} conditions", query::CONDITIONS_MAX)));
    }
    Ok(Some(cond))
}

/// The condition of the type's live objects meeting `filter` and `rows`.
fn where_of(backend: Backend, schema: &Schema, filter: Option<Cond>, rows: Option<Cond>, binds: &mut Binds) -> String {
    let q = ObjectQuery::matching(filter, rows);
    query::build(backend, true, &schema.object_type.id, &q, None, None, binds).0
}

/// A number out of the database as a float on both backends.
fn real(backend: Backend, expr: &str) -> String {
    match backend {
        Backend::Sqlite => format!("CAST({expr} AS REAL)"),
        Backend::Postgres => format!("CAST({expr} AS double precision)"),
    }
}

/// A value out of the database as text on both backends.
fn text(expr: &str) -> String {
    format!("CAST({expr} AS TEXT)")
}

/// A numeric property to aggregate, or 422.
fn value_property<'a>(
    schema: &'a Schema,
    name: Option<&str>,
    aggregation: Aggregation,
) -> ApiResult<Option<&'a Property>> {
    let Some(name) = name else {
        if aggregation != Aggregation::Count {
            return Err(ApiError::invalid("value_property", "is required for an aggregation other than `count`"));
        }
        return Ok(None);
    };
    let property = schema.property(name).ok_or_else(|| {
        ApiError::invalid("value_property", format!("`{}` has no property `{name}`", schema.object_type.name))
    })?;
    if property.data_type.kind() != Kind::Numeric {
        return Err(ApiError::invalid(
            "value_property",
            format!("`{name}` is not a number: aggregate a numeric property"),
        ));
    }
    Ok(Some(property))
}

/// The aggregate of `property` as a float (or the count).
fn aggregate_sql(backend: Backend, aggregation: Aggregation, property: Option<&Property>) -> String {
    let Some(property) = property else { return real(backend, "COUNT(*)") };
    let expr = sql::value_expr(backend, &property.name, property.data_type);
    let function = match aggregation {
        Aggregation::Count => return real(backend, &format!("COUNT({expr})")),
        Aggregation::Sum => "SUM",
        Aggregation::Avg => "AVG",
        Aggregation::Min => "MIN",
        Aggregation::Max => "MAX",
    };
    real(backend, &format!("{function}({expr})"))
}

/// A group's key as the property's JSON value.
fn key_value(data_type: DataType, text: Option<String>) -> Value {
    let Some(text) = text else { return Value::Null };
    match data_type {
        DataType::Boolean => Value::Bool(text == "1" || text == "true"),
        DataType::Integer => text.parse::<i64>().map(Value::from).unwrap_or(Value::String(text)),
        DataType::Number | DataType::Percent => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::String(text)),
        _ => Value::String(text),
    }
}

/// The property or system field a report groups by: its key expression and type.
fn group_field(backend: Backend, schema: &Schema, name: &str, field: &str) -> ApiResult<(String, DataType)> {
    if name == "created_by" {
        return Ok(("created_by".into(), DataType::String));
    }
    let property = schema
        .property(name)
        .ok_or_else(|| ApiError::invalid(field, format!("`{}` has no property `{name}`", schema.object_type.name)))?;
    if !property.data_type.indexable() || property.data_type == DataType::Currency {
        return Err(ApiError::invalid(
            field,
            format!("cannot group by `{name}` ({}): group by a scalar property", property.data_type.as_str()),
        ));
    }
    Ok((sql::value_expr(backend, &property.name, property.data_type), property.data_type))
}

fn rate(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0
    }
}

// ---- Funnel ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunnelStep {
    /// 1 to 100 characters.
    pub name: String,
    /// Conditions an object meets to reach this step (beside every earlier step's).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub filters: Vec<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunnelRequest {
    /// The type's id or name.
    pub object_type_id: String,
    /// 1 to 10 steps; an object reaches a step when it meets that step's filters and every
    /// earlier step's.
    #[schema(min_items = 1, max_items = 10)]
    pub steps: Vec<FunnelStep>,
    /// Conditions every object counted meets.
    #[schema(value_type = Option<Vec<Object>>)]
    pub filters: Option<Vec<Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelStepResult {
    pub name: String,
    pub count: i64,
    /// Of the previous step's count (1 for the first step).
    pub conversion_rate: f64,
    /// Of the first step's count.
    pub overall_rate: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelReport {
    pub steps: Vec<FunnelStepResult>,
}

/// Funnel report
///
/// How many objects reach each step, one conditional count per step in one query.
#[utoipa::path(post, path = "/v1/reports/funnel", tag = "Reports", security(("bearer" = [])),
    request_body = FunnelRequest,
    responses((status = 200, body = crate::http::response::Envelope<FunnelReport>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn funnel(auth: Auth, State(app): State<App>, Json(body): Json<FunnelRequest>) -> ApiResult<Data<FunnelReport>> {
    if body.steps.is_empty() || body.steps.len() > STEPS_MAX {
        return Err(ApiError::invalid("steps", format!("a funnel has 1 to {STEPS_MAX} steps")));
    }
    let backend = app.db.backend();
    let mut conn = app.db.pool().acquire().await?;
    let mut scope = scope(&app, &mut conn, &auth, &body.object_type_id, body.filters.as_ref()).await?;
    let mut reached = Vec::new();
    let mut columns = Vec::new();
    for (index, step) in body.steps.iter().enumerate() {
        let length = step.name.chars().count();
        if length == 0 || length > 100 {
            return Err(ApiError::invalid(&format!("steps[{index}].name"), "must be 1 to 100 characters"));
        }
        let field = format!("steps[{index}].filters");
        if let Some(cond) = filters_cond(&scope.schema, Some(&step.filters), &field)? {
            reached.push(query::cond_sql(backend, &cond, &mut scope.binds));
        }
        let all = if reached.is_empty() { "1 = 1".to_owned() } else { reached.join(" AND ") };
        columns.push(format!("COALESCE(SUM(CASE WHEN {all} THEN 1 ELSE 0 END), 0)"));
    }
    let sql = format!("SELECT {} FROM objects WHERE {}", columns.join(", "), scope.condition);
    let row = sqlx::query_with(&sql, scope.binds.arguments()?).fetch_one(&mut *conn).await?;
    let mut steps = Vec::with_capacity(body.steps.len());
    let mut first = 0;
    let mut previous = 0;
    for (index, step) in body.steps.into_iter().enumerate() {
        let count: i64 = sqlx::Row::try_get(&row, index)?;
        if index == 0 {
            first = count;
            previous = count;
        }
        steps.push(FunnelStepResult {
            name: step.name,
            count,
            conversion_rate: if index == 0 { 1.0 } else { rate(count, previous) },
            overall_rate: rate(count, first),
        });
        previous = count;
    }
    Ok(Data(FunnelReport { steps }))
}

// ---- Leaderboard ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardRequest {
    /// The type's id or name.
    pub object_type_id: String,
    /// A scalar property (or `created_by`) whose values are ranked.
    pub group_by: String,
    #[serde(default)]
    pub aggregation: Aggregation,
    /// The numeric property `sum`, `avg`, `min` and `max` combine.
    pub value_property: Option<String>,
    /// 1 to 100 entries, default 10.
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub filters: Option<Vec<Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderboardEntry {
    /// 1 for the highest value.
    pub rank: usize,
    /// The `group_by` value (`null` for objects without one).
    #[schema(value_type = Object)]
    pub key: Value,
    /// The aggregate (the count for `count`).
    pub value: Option<f64>,
    /// How many objects have this key.
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderboardReport {
    pub entries: Vec<LeaderboardEntry>,
}

/// Leaderboard report
///
/// The `group_by` values ranked by their aggregate, highest first (ties by key).
#[utoipa::path(post, path = "/v1/reports/leaderboard", tag = "Reports", security(("bearer" = [])),
    request_body = LeaderboardRequest,
    responses((status = 200, body = crate::http::response::Envelope<LeaderboardReport>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn leaderboard(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<LeaderboardRequest>,
) -> ApiResult<Data<LeaderboardReport>> {
    let limit = body.limit.unwrap_or(10);
    if !(1..=ENTRIES_MAX).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("must be between 1 and {ENTRIES_MAX}")));
    }
    let backend = app.db.backend();
    let mut conn = app.db.pool().acquire().await?;
    let scope = scope(&app, &mut conn, &auth, &body.object_type_id, body.filters.as_ref()).await?;
    let (key, key_type) = group_field(backend, &scope.schema, &body.group_by, "group_by")?;
    let property = value_property(&scope.schema, body.value_property.as_deref(), body.aggregation)?;
    let value = aggregate_sql(backend, body.aggregation, property);
    // Absent aggregates (all values missing) rank last on both databases.
    let sql = format!(
        "SELECT {} AS k, COUNT(*) AS n, {value} AS v FROM objects WHERE {} GROUP BY {key} \
         ORDER BY CASE WHEN {value} IS NULL THEN 1 ELSE 0 END, {value} DESC, k LIMIT {limit}",
        text(&key),
        scope.condition
    );
    let rows: Vec<(Option<String>, i64, Option<f64>)> =
        sqlx::query_as_with(&sql, scope.binds.arguments()?).fetch_all(&mut *conn).await?;
    let entries = rows
        .into_iter()
        .enumerate()
        .map(|(index, (k, count, value))| LeaderboardEntry {
            rank: index + 1,
            key: key_value(key_type, k),
            value,
            count,
        })
        .collect();
    Ok(Data(LeaderboardReport { entries }))
}

// ---- Pipeline ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineRequest {
    /// The type's id or name.
    pub object_type_id: String,
    /// The property whose values are the stages; an `enum` lists every stage in its order.
    pub stage_property: String,
    /// A numeric property summed per stage.
    pub value_property: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub filters: Option<Vec<Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineStage {
    /// The stage's value (`null` for objects without one).
    #[schema(value_type = Object)]
    pub stage: Value,
    pub count: i64,
    /// The sum of `value_property` in the stage.
    pub value: Option<f64>,
    /// The stage's share of all objects counted.
    pub percentage: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineReport {
    pub stages: Vec<PipelineStage>,
    pub total: i64,
}

/// Pipeline report
///
/// How many objects (and how much value) stand at each stage. An `enum` stage property lists
/// each of its values in order, with zeros where no object stands.
#[utoipa::path(post, path = "/v1/reports/pipeline", tag = "Reports", security(("bearer" = [])),
    request_body = PipelineRequest,
    responses((status = 200, body = crate::http::response::Envelope<PipelineReport>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn pipeline(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<PipelineRequest>,
) -> ApiResult<Data<PipelineReport>> {
    let backend = app.db.backend();
    let mut conn = app.db.pool().acquire().await?;
    let scope = scope(&app, &mut conn, &auth, &body.object_type_id, body.filters.as_ref()).await?;
    let (key, key_type) = group_field(backend, &scope.schema, &body.stage_property, "stage_property")?;
    let property = value_property(&scope.schema, body.value_property.as_deref(), Aggregation::Count)?;
    let value = match property {
        Some(property) => aggregate_sql(backend, Aggregation::Sum, Some(property)),
        None => "NULL".to_owned(),
    };
    let sql = format!(
        "SELECT {} AS k, COUNT(*) AS n, {value} AS v FROM objects WHERE {} GROUP BY {key} ORDER BY k LIMIT {}",
        text(&key),
        scope.condition,
        STAGES_MAX + 1
    );
    let rows: Vec<(Option<String>, i64, Option<f64>)> =
        sqlx::query_as_with(&sql, scope.binds.arguments()?).fetch_all(&mut *conn).await?;
    if rows.len() as i64 > STAGES_MAX {
        return Err(ApiError::invalid("stage_property", format!("has more than {STAGES_MAX} values: not a stage")));
    }
    let total: i64 = rows.iter().map(|(_, n, _)| n).sum();
    let mut found: BTreeMap<Option<String>, (i64, Option<f64>)> =
        rows.into_iter().map(|(k, n, v)| (k, (n, v))).collect();
    let mut stages = Vec::new();
    let enum_values: Vec<String> =
        scope.schema.property(&body.stage_property).map(|p| p.enum_values().to_vec()).unwrap_or_default();
    for stage in enum_values {
        let (count, value) = found.remove(&Some(stage.clone())).unwrap_or((0, property.map(|_| 0.0)));
        stages.push(PipelineStage { stage: Value::String(stage), count, value, percentage: rate(count, total) });
    }
    for (stage, (count, value)) in found {
        stages.push(PipelineStage { stage: key_value(key_type, stage), count, value, percentage: rate(count, total) });
    }
    Ok(Data(PipelineReport { stages, total }))
}

// ---- Time series ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeseriesRequest {
    /// The type's id or name.
    pub object_type_id: String,
    /// A `date` or `datetime` property, or `created_at` / `updated_at` (default `created_at`).
    pub date_property: Option<String>,
    pub interval: Interval,
    #[serde(default)]
    pub aggregation: Aggregation,
    pub value_property: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub filters: Option<Vec<Value>>,
    /// The first period holds this moment (RFC 3339, or a date); default: 30 intervals before
    /// `end_date`.
    pub start_date: Option<String>,
    /// Up to this moment, excluded (RFC 3339, or a date); default now.
    pub end_date: Option<String>,
    /// The IANA time zone periods follow, such as `Europe/Paris`; default the tenant's.
    pub timezone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// The period's first moment, in the report's time zone.
    pub period_start: String,
    pub period_end: String,
    pub count: i64,
    /// The aggregate (the count for `count`; `null` where no value was found).
    pub value: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimeseriesReport {
    pub interval: Interval,
    pub timezone: String,
    pub series: Vec<SeriesPoint>,
}

/// A moment given as RFC 3339 or as a date (its midnight in `tz`).
fn moment(text: &str, tz: chrono_tz::Tz, field: &str) -> ApiResult<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(field, "must be an RFC 3339 date-time or a date `YYYY-MM-DD`"))?;
    local(tz, date.and_hms_opt(0, 0, 0).unwrap_or_default()).ok_or_else(|| ApiError::invalid(field, "is not a time"))
}

/// A local time in `tz` as UTC: the earlier of two in a fold, the first moment after a gap.
fn local(tz: chrono_tz::Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut naive = naive;
    for _ in 0..4 {
        if let Some(at) = tz.from_local_datetime(&naive).earliest() {
            return Some(at.with_timezone(&Utc));
        }
        naive += Duration::minutes(30);
    }
    None
}

/// The start of the period of `interval` holding `at` in `tz`, as a local time.
fn period_start(interval: Interval, at: DateTime<Utc>, tz: chrono_tz::Tz) -> NaiveDateTime {
    let local = at.with_timezone(&tz).naive_local();
    let date = local.date();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default();
    match interval {
        Interval::Hour => date.and_hms_opt(local.hour(), 0, 0).unwrap_or_default(),
        Interval::Day => midnight(date),
        Interval::Week => midnight(date - Duration::days(i64::from(date.weekday().num_days_from_monday()))),
        Interval::Month => midnight(date.with_day(1).unwrap_or(date)),
        Interval::Year => midnight(NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date)),
    }
}

fn next_period(interval: Interval, start: NaiveDateTime) -> NaiveDateTime {
    match interval {
        Interval::Hour => start + Duration::hours(1),
        Interval::Day => start + Duration::days(1),
        Interval::Week => start + Duration::days(7),
        Interval::Month => start.checked_add_months(chrono::Months::new(1)).unwrap_or(start),
        Interval::Year => start.checked_add_months(chrono::Months::new(12)).unwrap_or(start),
    }
}

/// Time series report
///
/// The aggregate per period, in the time zone's calendar; periods without objects are zeros.
/// At most 1,000 periods.
#[utoipa::path(post, path = "/v1/reports/timeseries", tag = "Reports", security(("bearer" = [])),
    request_body = TimeseriesRequest,
    responses((status = 200, body = crate::http::response::Envelope<TimeseriesReport>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn timeseries(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<TimeseriesRequest>,
) -> ApiResult<Data<TimeseriesReport>> {
    let backend = app.db.backend();
    let tenant = auth.tenant()?;
    let timezone = match &body.timezone {
        Some(zone) => zone.clone(),
        None => crate::tenants::store::get(app.db.pool(), tenant.as_str())
            .await?
            .map(|t| t.settings.timezone)
            .unwrap_or_else(|| "UTC".into()),
    };
    let tz: chrono_tz::Tz = timezone
        .parse()
        .map_err(|_| ApiError::invalid("timezone", "must be an IANA time zone, such as `Europe/Paris`"))?;
    let mut conn = app.db.pool().acquire().await?;
    let mut scope = scope(&app, &mut conn, &auth, &body.object_type_id, body.filters.as_ref()).await?;
    let name = body.date_property.as_deref().unwrap_or("created_at");
    let (column, data_type) = match name {
        "created_at" | "updated_at" => (name.to_owned(), DataType::Datetime),
        _ => {
            let property = scope.schema.property(name).ok_or_else(|| {
                ApiError::invalid(
                    "date_property",
                    format!("`{}` has no property `{name}`", scope.schema.object_type.name),
                )
            })?;
            if !matches!(property.data_type, DataType::Date | DataType::Datetime) {
                return Err(ApiError::invalid("date_property", format!("`{name}` is not a date or date-time")));
            }
            (sql::value_expr(backend, &property.name, property.data_type), property.data_type)
        }
    };
    if data_type == DataType::Date && body.interval == Interval::Hour {
        return Err(ApiError::invalid("interval", "a `date` property has no hours: use `day` or longer"));
    }
    let value = value_property(&scope.schema, body.value_property.as_deref(), body.aggregation)?;
    let end = match &body.end_date {
        Some(text) => moment(text, tz, "end_date")?,
        None => crate::time::now(),
    };
    // Periods as local times, then as UTC moments.
    let mut periods: Vec<NaiveDateTime> = Vec::new();
    let first = match &body.start_date {
        Some(text) => period_start(body.interval, moment(text, tz, "start_date")?, tz),
        None => {
            let mut start = period_start(body.interval, end, tz);
            for _ in 0..29 {
                let earlier = match body.interval {
                    Interval::Hour => start - Duration::hours(1),
                    Interval::Day => start - Duration::days(1),
                    Interval::Week => start - Duration::days(7),
                    Interval::Month => start.checked_sub_months(chrono::Months::new(1)).unwrap_or(start),
                    Interval::Year => start.checked_sub_months(chrono::Months::new(12)).unwrap_or(start),
                };
                start = earlier;
            }
            start
        }
    };
    // Every period that starts before `end`.
    let mut at = first;
    while local(tz, at).is_some_and(|start| start < end) {
        if periods.len() >= PERIODS_MAX {
            return Err(ApiError::invalid("start_date", format!("the range holds more than {PERIODS_MAX} periods")));
        }
        periods.push(at);
        at = next_period(body.interval, at);
    }
    if periods.is_empty() {
        return Err(ApiError::invalid("start_date", "must be before `end_date`"));
    }
    let bounds: Vec<DateTime<Utc>> = periods
        .iter()
        .chain(std::iter::once(&at))
        .map(|p| local(tz, *p).ok_or_else(|| ApiError::invalid("timezone", "a period starts at no time in this zone")))
        .collect::<ApiResult<_>>()?;

    // Group in the database by what the periods are made of, then fold.
    let (width, low, high) = if data_type == DataType::Date {
        let low = periods[0].date().format("%Y-%m-%d").to_string();
        let high = at.date().format("%Y-%m-%d").to_string();
        (10, low, high)
    } else {
        let whole_hours = bounds.iter().all(|b| b.minute() == 0);
        let format = |at: &DateTime<Utc>| {
            if column == "created_at" || column == "updated_at" {
                crate::time::to_db(at)
            } else {
                at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            }
        };
        let high = bounds[bounds.len() - 1].min(end);
        (if whole_hours { 13 } else { 16 }, format(&bounds[0]), format(&high))
    };
    let low = scope.binds.text(low);
    let high = scope.binds.text(high);
    let group = format!("substr({column}, 1, {width})");
    let aggregate = |function: &str| match value {
        Some(property) => {
            real(backend, &format!("{function}({})", sql::value_expr(backend, &property.name, property.data_type)))
        }
        None => "NULL".to_owned(),
    };
    let sql = format!(
        "SELECT {group} AS g, COUNT(*) AS n, {}, {}, {}, {} FROM objects \
         WHERE {} AND {column} >= {low} AND {column} < {high} GROUP BY {group}",
        aggregate("SUM"),
        aggregate("COUNT"),
        aggregate("MIN"),
        aggregate("MAX"),
        scope.condition
    );
    type Group = (String, i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>);
    let rows: Vec<Group> = sqlx::query_as_with(&sql, scope.binds.arguments()?).fetch_all(&mut *conn).await?;
    #[derive(Default, Clone)]
    struct Fold {
        count: i64,
        sum: f64,
        values: f64,
        min: Option<f64>,
        max: Option<f64>,
    }
    let mut folds = vec![Fold::default(); periods.len()];
    for (key, count, sum, values, min, max) in rows {
        let index = if data_type == DataType::Date {
            let Ok(date) = NaiveDate::parse_from_str(&key, "%Y-%m-%d") else { continue };
            periods.partition_point(|p| p.date() <= date).checked_sub(1)
        } else {
            let padded = if width == 13 { format!("{key}:00:00Z") } else { format!("{key}:00Z") };
            let Ok(at) = DateTime::parse_from_rfc3339(&padded) else { continue };
            let at = at.with_timezone(&Utc);
            bounds[..periods.len()].partition_point(|b| *b <= at).checked_sub(1)
        };
        let Some(fold) = index.and_then(|i| folds.get_mut(i)) else { continue };
        fold.count += count;
        fold.sum += sum.unwrap_or(0.0);
        fold.values += values.unwrap_or(0.0);
        fold.min = match (fold.min, min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        fold.max = match (fold.max, max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let show = |at: &DateTime<Utc>| at.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let series = folds
        .into_iter()
        .enumerate()
        .map(|(i, fold)| {
            let value = match (body.aggregation, value) {
                (Aggregation::Count, None) => Some(fold.count as f64),
                (Aggregation::Count, Some(_)) => Some(fold.values),
                (Aggregation::Sum, _) => Some(fold.sum),
                (Aggregation::Avg, _) => (fold.values > 0.0).then(|| fold.sum / fold.values),
                (Aggregation::Min, _) => fold.min,
                (Aggregation::Max, _) => fold.max,
            };
            SeriesPoint { period_start: show(&bounds[i]), period_end: show(&bounds[i + 1]), count: fold.count, value }
        })
        .collect();
    Ok(Data(TimeseriesReport { interval: body.interval, timezone, series }))
}
