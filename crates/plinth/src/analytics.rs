//! Analytics (seed 002, `GET /v1/analytics` and `GET /v1/analytics/engine`): a tenant's use of
//! the platform by UTC day, read from where each fact is already kept, never from a second copy:
//! API calls from the usage counters, objects written and tracked events from the outbox
//! (`events`, ranged by its time-ordered ids), active users from `active_users` (end users seen
//! making a request, written by the usage recorder), deliveries from `webhook_deliveries` (as
//! long as their retention keeps them), AI requests, tokens and spend from `ai_usage`, storage
//! from `files` and `file_versions`. Every count is one `GROUP BY` in the database.
//!
//! Reading needs `analytics:read`, an admin resource: a data key's `read` does not cover it.
//! What this node still holds in memory (usage, AI meter) is written before a read, so that a
//! request's own effects are counted.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use chrono::{Datelike, Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ai::usage::dollars;
use crate::app::App;
use crate::auth::Auth;
use crate::db::Backend;
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Data, Query};
use crate::id::{self, prefix, TenantId};
use crate::scopes::required::ANALYTICS_READ;

/// The longest period one answer covers.
const MAX_DAYS: i64 = 366;
const DEFAULT_DAYS: i64 = 30;
/// The most values of a dimension one answer lists (the largest ones).
const MAX_GROUPS: usize = 50;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(overview)).routes(routes!(engine))
}

/// What can be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AnalyticsMetric)]
pub enum Metric {
    /// Authenticated requests.
    ApiCalls,
    /// Objects created, updated, deleted or restored.
    ObjectsWritten,
    /// Distinct end users who made a request.
    ActiveUsers,
    /// Webhook deliveries created (kept for the deliveries' retention).
    Deliveries,
    /// AI gateway calls.
    AiRequests,
    /// AI tokens, input and output.
    AiTokens,
    /// AI spend in US dollars.
    AiSpendUsd,
    /// Bytes of file versions uploaded.
    StorageAddedBytes,
    /// Events of the outbox: the platform's and tracked (custom) ones.
    Events,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::ApiCalls => "api_calls",
            Metric::ObjectsWritten => "objects_written",
            Metric::ActiveUsers => "active_users",
            Metric::Deliveries => "deliveries",
            Metric::AiRequests => "ai_requests",
            Metric::AiTokens => "ai_tokens",
            Metric::AiSpendUsd => "ai_spend_usd",
            Metric::StorageAddedBytes => "storage_added_bytes",
            Metric::Events => "events",
        }
    }

    /// The dimensions it can be grouped and filtered by.
    fn dimensions(self) -> &'static [&'static str] {
        match self {
            Metric::ObjectsWritten => &["object_type", "action"],
            Metric::Deliveries => &["status", "event_type", "webhook_id"],
            Metric::AiRequests | Metric::AiTokens | Metric::AiSpendUsd => &["model", "provider", "operation"],
            Metric::Events => &["event_type"],
            Metric::ApiCalls | Metric::ActiveUsers | Metric::StorageAddedBytes => &[],
        }
    }

    /// Stored values are whole numbers; spend is kept in billionths of a dollar and answered as
    /// a decimal string of dollars.
    fn value(self, stored: i64) -> MetricValue {
        match self {
            Metric::AiSpendUsd => MetricValue::Usd(dollars(stored)),
            _ => MetricValue::Count(stored),
        }
    }
}

/// A figure: a count, or for `ai_spend_usd` dollars as a decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = AnalyticsValue)]
pub enum MetricValue {
    Count(i64),
    #[schema(example = "0.25")]
    Usd(String),
}

/// Which UTC days an answer covers, first and last included.
#[derive(Debug, Clone, Copy)]
struct Span {
    from: NaiveDate,
    to: NaiveDate,
}

impl Span {
    fn days(self) -> impl Iterator<Item = NaiveDate> {
        self.from.iter_days().take_while(move |day| *day <= self.to)
    }

    /// `from` at midnight and the midnight after `to`, as stored timestamps compare.
    fn bounds(self) -> (String, String) {
        (format!("{}T00:00:00", self.from), format!("{}T00:00:00", self.to.succ_opt().unwrap_or(self.to)))
    }

    fn millis(day: NaiveDate) -> u64 {
        day.and_hms_opt(0, 0, 0).map_or(0, |at| at.and_utc().timestamp_millis().max(0) as u64)
    }
}

/// The period asked for: `period` (`Nd`, 1 to 366 days ending today, or `today`) or `from` and
/// `to` dates.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// `7d`, `30d` (the default), `90d`, any `Nd` up to `366d`, or `today`: the days ending
    /// today (UTC).
    #[param(pattern = "^(today|[1-9]d|[1-9][0-9]d|[12][0-9][0-9]d|3[0-5][0-9]d|36[0-6]d)$")]
    pub period: Option<String>,
    /// The first day (`YYYY-MM-DD`, UTC), with `to`, instead of `period`.
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<String>,
    /// The last day (`YYYY-MM-DD`, UTC), included.
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<String>,
}

impl PeriodQuery {
    fn span(&self, errors: &mut FieldErrors) -> Option<Span> {
        let today = crate::time::now().date_naive();
        if self.from.is_some() || self.to.is_some() {
            if self.period.is_some() {
                errors.add("period", "give either `period` or `from` and `to`, not both");
                return None;
            }
            let parse = |field: &str, value: &Option<String>, errors: &mut FieldErrors| match value {
                None => {
                    errors.add(field, "is required with the other end of the period");
                    None
                }
                Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .filter(|date| (1970..=9999).contains(&date.year()) && text.len() == 10)
                    .or_else(|| {
                        errors.add(field, "must be a date, `YYYY-MM-DD`, from 1970 to 9999");
                        None
                    }),
            };
            let (from, to) = (parse("from", &self.from, errors)?, parse("to", &self.to, errors)?);
            if from > to {
                errors.add("from", "must not be after `to`");
                return None;
            }
            if (to - from).num_days() >= MAX_DAYS {
                errors.add("to", format!("the period may cover at most {MAX_DAYS} days"));
                return None;
            }
            return Some(Span { from, to });
        }
        let days = match self.period.as_deref() {
            None => DEFAULT_DAYS,
            Some("today") => 1,
            Some(text) => match text.strip_suffix('d').and_then(|n| n.parse::<i64>().ok()) {
                Some(n) if (1..=MAX_DAYS).contains(&n) && !text.starts_with('0') => n,
                _ => {
                    errors.add("period", format!("must be `today` or `Nd` with N from 1 to {MAX_DAYS}, such as `30d`"));
                    return None;
                }
            },
        };
        Some(Span { from: today - Duration::days(days - 1), to: today })
    }
}

/// A tenant's use, by day and in total.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AnalyticsOverview)]
pub struct Overview {
    /// The first day covered (UTC).
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    /// The last day covered (UTC), included.
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    /// Days are UTC days.
    #[schema(example = "UTC")]
    pub timezone: &'static str,
    pub totals: Totals,
    /// One entry per day, oldest first; days without activity are zeros.
    pub days: Vec<Day>,
}

/// The period's totals.
#[derive(Debug, Default, Serialize, ToSchema)]
#[schema(as = AnalyticsTotals)]
pub struct Totals {
    pub api_calls: i64,
    pub objects_written: i64,
    /// Distinct end users over the whole period (not the sum of the days).
    pub active_users: i64,
    pub deliveries: i64,
    /// Deliveries that gave up after their last attempt.
    pub deliveries_failed: i64,
    pub ai_requests: i64,
    pub ai_tokens: i64,
    /// US dollars, a decimal string.
    #[schema(example = "2.25")]
    pub ai_spend_usd: String,
    /// Bytes of file versions uploaded in the period.
    pub storage_added_bytes: i64,
    pub events: i64,
    /// Bytes the tenant's files hold now (every kept version and variant).
    pub storage_bytes: i64,
    /// Files the tenant has now, outside the trash.
    pub files: i64,
}

/// One day's figures.
#[derive(Debug, Default, Serialize, ToSchema)]
#[schema(as = AnalyticsDay)]
pub struct Day {
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    pub api_calls: i64,
    pub objects_written: i64,
    pub active_users: i64,
    pub deliveries: i64,
    pub deliveries_failed: i64,
    pub ai_requests: i64,
    pub ai_tokens: i64,
    /// US dollars, a decimal string.
    #[schema(example = "0.25")]
    pub ai_spend_usd: String,
    pub storage_added_bytes: i64,
    pub events: i64,
}

/// Get tenant analytics
///
/// The tenant's API calls, objects written, active end users, webhook deliveries, AI requests,
/// tokens and spend, storage and events, per UTC day over `period` (default `30d`), with totals.
/// Needs `analytics:read`.
#[utoipa::path(get, path = "/v1/analytics", tag = "Analytics", security(("bearer" = [])),
    params(PeriodQuery),
    responses((status = 200, body = crate::http::response::Envelope<Overview>),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn overview(auth: Auth, State(app): State<App>, Query(query): Query<PeriodQuery>) -> ApiResult<Data<Overview>> {
    auth.require(ANALYTICS_READ)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    let span = query.span(&mut errors);
    errors.finish()?;
    let span = span.ok_or_else(|| ApiError::invalid("period", "is not valid"))?;
    write_pending(&app).await;
    let reader = Reader { app: &app, tenant, span };
    let mut days: BTreeMap<NaiveDate, Day> =
        span.days().map(|date| (date, Day { date, ai_spend_usd: dollars(0), ..Day::default() })).collect();
    let mut totals = Totals::default();
    // Summed in billionths, so that the total is not the sum of rounded days.
    let mut spend_nanos = 0i64;
    for metric in [
        Metric::ApiCalls,
        Metric::ObjectsWritten,
        Metric::ActiveUsers,
        Metric::Deliveries,
        Metric::AiRequests,
        Metric::AiTokens,
        Metric::AiSpendUsd,
        Metric::StorageAddedBytes,
        Metric::Events,
    ] {
        for (day, _, stored) in reader.by_day(metric, None, &[]).await? {
            let Some(entry) = days.get_mut(&day) else { continue };
            let slot = match metric {
                Metric::ApiCalls => &mut entry.api_calls,
                Metric::ObjectsWritten => &mut entry.objects_written,
                Metric::ActiveUsers => &mut entry.active_users,
                Metric::Deliveries => &mut entry.deliveries,
                Metric::AiRequests => &mut entry.ai_requests,
                Metric::AiTokens => &mut entry.ai_tokens,
                Metric::AiSpendUsd => {
                    entry.ai_spend_usd = dollars(stored);
                    spend_nanos += stored;
                    continue;
                }
                Metric::StorageAddedBytes => &mut entry.storage_added_bytes,
                Metric::Events => &mut entry.events,
            };
            *slot = stored;
        }
    }
    let failed = [("status".to_string(), "failed".to_string())];
    for (day, _, stored) in reader.by_day(Metric::Deliveries, None, &failed).await? {
        if let Some(entry) = days.get_mut(&day) {
            entry.deliveries_failed = stored;
        }
    }
    for day in days.values() {
        totals.api_calls += day.api_calls;
        totals.objects_written += day.objects_written;
        totals.deliveries += day.deliveries;
        totals.deliveries_failed += day.deliveries_failed;
        totals.ai_requests += day.ai_requests;
        totals.ai_tokens += day.ai_tokens;
        totals.storage_added_bytes += day.storage_added_bytes;
        totals.events += day.events;
    }
    totals.ai_spend_usd = dollars(spend_nanos);
    totals.active_users = reader.distinct_users(span.from, span.to).await?;
    let (storage_bytes, files): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(stored_bytes), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN deleted_at IS NULL AND status = 'ready' THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM files WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(app.db.pool())
    .await?;
    totals.storage_bytes = storage_bytes;
    totals.files = files;
    Ok(Data(Overview { from: span.from, to: span.to, timezone: "UTC", totals, days: days.into_values().collect() }))
}

/// How an engine query buckets time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Day,
    Week,
    Month,
    /// The whole period as one bucket.
    Total,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Day => "day",
            Bucket::Week => "week",
            Bucket::Month => "month",
            Bucket::Total => "total",
        }
    }

    /// The first day of the bucket holding `day`, within `span`.
    fn start(self, day: NaiveDate, span: Span) -> NaiveDate {
        let start = match self {
            Bucket::Day => day,
            Bucket::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            Bucket::Month => day.with_day(1).unwrap_or(day),
            Bucket::Total => span.from,
        };
        start.max(span.from)
    }

    /// The label of the bucket starting at `start`.
    fn label(self, start: NaiveDate) -> String {
        match self {
            Bucket::Month => start.format("%Y-%m").to_string(),
            _ => start.to_string(),
        }
    }
}

/// An engine query: one metric, grouped by time and at most one dimension, filtered.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EngineQuery {
    /// `api_calls`, `objects_written`, `active_users`, `deliveries`, `ai_requests`,
    /// `ai_tokens`, `ai_spend_usd`, `storage_added_bytes` or `events`.
    #[param(value_type = Metric)]
    pub metric: String,
    /// Comma-separated: one of `day` (the default), `week` (from Monday), `month` or `total`,
    /// and at most one of the metric's dimensions: `object_type`, `action` (objects written);
    /// `status`, `event_type`, `webhook_id` (deliveries); `model`, `provider`, `operation` (AI);
    /// `event_type` (events).
    #[param(max_length = 100)]
    pub group_by: Option<String>,
    /// `7d`, `30d` (the default), ... up to `366d`, or `today`.
    #[param(pattern = "^(today|[1-9]d|[1-9][0-9]d|[12][0-9][0-9]d|3[0-5][0-9]d|36[0-6]d)$")]
    pub period: Option<String>,
    /// The first day (`YYYY-MM-DD`), with `to`, instead of `period`.
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<String>,
    /// The last day (`YYYY-MM-DD`), included.
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<String>,
    /// Only this object type's writes (`objects_written`).
    #[param(max_length = 200)]
    pub object_type: Option<String>,
    /// Only this action: `created`, `updated`, `deleted` or `restored` (`objects_written`).
    #[param(max_length = 20)]
    pub action: Option<String>,
    /// Only this event type (`events`, `deliveries`); `checkout.*` matches a prefix.
    #[param(max_length = 200)]
    pub event_type: Option<String>,
    /// Only deliveries with this status: `pending`, `retrying`, `success` or `failed`.
    #[param(max_length = 20)]
    pub status: Option<String>,
    /// Only this endpoint's deliveries.
    #[param(max_length = 100)]
    pub webhook_id: Option<String>,
    /// Only this model's AI calls.
    #[param(max_length = 200)]
    pub model: Option<String>,
    /// Only this provider's AI calls.
    #[param(max_length = 100)]
    pub provider: Option<String>,
    /// Only this kind of AI call (`chat`, `embeddings`, ...).
    #[param(max_length = 50)]
    pub operation: Option<String>,
}

/// An engine answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AnalyticsEngineResult)]
pub struct EngineResult {
    pub metric: Metric,
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    #[schema(example = "UTC")]
    pub timezone: &'static str,
    /// The time bucket, then the dimension if any.
    pub group_by: Vec<String>,
    /// The filters applied.
    #[schema(value_type = Object)]
    pub filters: BTreeMap<String, String>,
    /// Over the whole period (`active_users`: distinct users over it); `ai_spend_usd` in dollars
    /// as a decimal string.
    pub total: MetricValue,
    /// One row per bucket (and dimension value), oldest first; empty buckets are zeros.
    pub rows: Vec<EngineRow>,
    /// True when the dimension had more than 50 values: the largest 50 are listed.
    pub truncated: bool,
}

/// One bucket of an engine answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AnalyticsEngineRow)]
pub struct EngineRow {
    /// The bucket: its first day (`YYYY-MM-DD`), the month (`YYYY-MM`), or `total`.
    pub bucket: String,
    /// The dimension's name, when grouped by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
    /// The dimension's value (null when the row had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Option<String>>,
    /// A count; `ai_spend_usd` in dollars as a decimal string.
    pub value: MetricValue,
}

/// Analytics engine query
///
/// One metric over a period, bucketed by `day`, `week`, `month` or `total` and grouped by at
/// most one dimension, filtered by the metric's dimensions. Events are the outbox's: the
/// platform's and those tracked with `POST /v1/events`. Needs `analytics:read`.
#[utoipa::path(get, path = "/v1/analytics/engine", tag = "Analytics", security(("bearer" = [])),
    params(EngineQuery),
    responses((status = 200, body = crate::http::response::Envelope<EngineResult>),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn engine(auth: Auth, State(app): State<App>, Query(query): Query<EngineQuery>) -> ApiResult<Data<EngineResult>> {
    auth.require(ANALYTICS_READ)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    let metric = serde_json::from_value::<Metric>(serde_json::Value::String(query.metric.clone())).ok();
    if metric.is_none() {
        errors.add(
            "metric",
            "must be one of `api_calls`, `objects_written`, `active_users`, `deliveries`, `ai_requests`, \
             `ai_tokens`, `ai_spend_usd`, `storage_added_bytes`, `events`",
        );
    }
    let period = PeriodQuery { period: query.period.clone(), from: query.from.clone(), to: query.to.clone() };
    let span = period.span(&mut errors);
    let mut bucket = None;
    let mut dimension: Option<&'static str> = None;
    let mut filters = BTreeMap::new();
    if let Some(metric) = metric {
        for part in query.group_by.as_deref().unwrap_or("day").split(',').map(str::trim) {
            let time = match part {
                "day" => Some(Bucket::Day),
                "week" => Some(Bucket::Week),
                "month" => Some(Bucket::Month),
                "total" => Some(Bucket::Total),
                _ => None,
            };
            if let Some(time) = time {
                if bucket.replace(time).is_some() {
                    errors.add("group_by", "may name one time bucket: `day`, `week`, `month` or `total`");
                }
            } else if let Some(found) = metric.dimensions().iter().find(|d| **d == part) {
                if dimension.replace(found).is_some() {
                    errors.add("group_by", "may name one dimension");
                }
            } else {
                errors.add("group_by", group_by_problem(metric, part));
            }
        }
        let given = [
            ("object_type", &query.object_type),
            ("action", &query.action),
            ("event_type", &query.event_type),
            ("status", &query.status),
            ("webhook_id", &query.webhook_id),
            ("model", &query.model),
            ("provider", &query.provider),
            ("operation", &query.operation),
        ];
        for (name, value) in given {
            let Some(value) = value else { continue };
            if !metric.dimensions().contains(&name) {
                errors.add(name, format!("is not a filter of `{}`", metric.name()));
            } else if value.is_empty() {
                errors.add(name, "must not be empty");
            } else {
                filters.insert(name.to_string(), value.clone());
            }
        }
    }
    errors.finish()?;
    let (Some(metric), Some(span)) = (metric, span) else {
        return Err(ApiError::invalid("metric", "is not valid"));
    };
    let bucket = bucket.unwrap_or(Bucket::Day);
    write_pending(&app).await;
    let reader = Reader { app: &app, tenant, span };
    let filter_list: Vec<(String, String)> = filters.iter().map(|(k, v)| (k.clone(), v.clone())).collect();

    // Each (bucket, key) -> stored value.
    let mut cells: BTreeMap<(NaiveDate, Option<String>), i64> = BTreeMap::new();
    if metric == Metric::ActiveUsers && bucket != Bucket::Day {
        // Distinct users of a week are not the sum of its days' distinct users.
        let mut start = span.from;
        while start <= span.to {
            let mut end = start;
            while end < span.to && bucket.start(end + Duration::days(1), span) == start {
                end += Duration::days(1);
            }
            cells.insert((start, None), reader.distinct_users(start, end).await?);
            start = end + Duration::days(1);
        }
    } else {
        for (day, key, stored) in reader.by_day(metric, dimension, &filter_list).await? {
            *cells.entry((bucket.start(day, span), key)).or_insert(0) += stored;
        }
    }
    let total_stored = if metric == Metric::ActiveUsers {
        reader.distinct_users(span.from, span.to).await?
    } else {
        cells.values().sum()
    };

    // The dimension's largest values, and every bucket of the period for each.
    let mut per_key: HashMap<Option<String>, i64> = HashMap::new();
    for ((_, key), stored) in &cells {
        *per_key.entry(key.clone()).or_insert(0) += stored;
    }
    let mut keys: Vec<(Option<String>, i64)> = per_key.into_iter().collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let truncated = keys.len() > MAX_GROUPS;
    keys.truncate(MAX_GROUPS);
    let mut keys: Vec<Option<String>> = keys.into_iter().map(|(key, _)| key).collect();
    keys.sort();
    if dimension.is_none() {
        keys = vec![None];
    }
    let mut starts: Vec<NaiveDate> = span.days().map(|day| bucket.start(day, span)).collect();
    starts.dedup();
    let mut rows = Vec::with_capacity(starts.len() * keys.len().max(1));
    for start in starts {
        for key in &keys {
            let stored = cells.get(&(start, key.clone())).copied().unwrap_or(0);
            rows.push(EngineRow {
                bucket: if bucket == Bucket::Total { "total".into() } else { bucket.label(start) },
                dimension: dimension.map(str::to_string),
                key: dimension.map(|_| key.clone()),
                value: metric.value(stored),
            });
        }
    }
    let mut group_by = vec![bucket.name().to_string()];
    group_by.extend(dimension.map(str::to_string));
    Ok(Data(EngineResult {
        metric,
        from: span.from,
        to: span.to,
        timezone: "UTC",
        group_by,
        filters,
        total: metric.value(total_stored),
        rows,
        truncated,
    }))
}

fn group_by_problem(metric: Metric, part: &str) -> String {
    let dimensions = metric.dimensions();
    if dimensions.is_empty() {
        format!(
            "`{part}` is not a grouping of `{}`: it groups by `day`, `week`, `month` or `total` only",
            metric.name()
        )
    } else {
        format!(
            "`{part}` is not a grouping of `{}`: `day`, `week`, `month`, `total`, or one of `{}`",
            metric.name(),
            dimensions.join("`, `")
        )
    }
}

/// What this node holds in memory goes to the database first, so that a read counts it.
async fn write_pending(app: &App) {
    if let Err(error) = app.usage.flush(&app.db).await {
        tracing::warn!(%error, "writing usage before an analytics read failed; counts may lag");
    }
    if let Err(error) = app.ai_meter.flush(&app.db).await {
        tracing::warn!(%error, "writing AI usage before an analytics read failed; counts may lag");
    }
}

/// Reads one tenant's metrics over a span.
struct Reader<'a> {
    app: &'a App,
    tenant: &'a TenantId,
    span: Span,
}

/// How one metric is read: the rows it counts, its day, its value, and its dimensions.
struct Source {
    from: &'static str,
    day: &'static str,
    value: &'static str,
    /// Conditions past the tenant's (`$1`); `$2` and `$3` are the span's ends.
    span: &'static str,
    /// Extra fixed conditions.
    only: &'static str,
}

impl Reader<'_> {
    fn source(&self, metric: Metric) -> Source {
        match metric {
            Metric::ApiCalls => Source {
                from: "usage_counters",
                day: "period",
                value: "CAST(SUM(count) AS BIGINT)",
                span: "period >= $2 AND period < $3",
                only: " AND metric = 'requests'",
            },
            Metric::ObjectsWritten => Source {
                from: "events",
                day: "substr(created_at, 1, 10)",
                value: "COUNT(*)",
                span: "id >= $2 AND id < $3",
                only: " AND type IN ('object.created', 'object.updated', 'object.deleted', 'object.restored')",
            },
            Metric::Events => Source {
                from: "events",
                day: "substr(created_at, 1, 10)",
                value: "COUNT(*)",
                span: "id >= $2 AND id < $3",
                only: "",
            },
            Metric::ActiveUsers => Source {
                from: "active_users",
                day: "day",
                value: "COUNT(DISTINCT user_id)",
                span: "day >= $2 AND day < $3",
                only: "",
            },
            Metric::Deliveries => Source {
                from: "webhook_deliveries",
                day: "substr(created_at, 1, 10)",
                value: "COUNT(*)",
                span: "created_at >= $2 AND created_at < $3",
                only: "",
            },
            Metric::AiRequests | Metric::AiTokens | Metric::AiSpendUsd => Source {
                from: "ai_usage",
                day: "substr(created_at, 1, 10)",
                value: match metric {
                    Metric::AiRequests => "COUNT(*)",
                    Metric::AiTokens => "CAST(SUM(input_tokens + output_tokens) AS BIGINT)",
                    _ => "CAST(SUM(cost_nano_usd) AS BIGINT)",
                },
                span: "created_at >= $2 AND created_at < $3",
                only: "",
            },
            Metric::StorageAddedBytes => Source {
                from: "file_versions v JOIN files f ON f.id = v.file_id",
                day: "substr(v.created_at, 1, 10)",
                value: "CAST(SUM(v.size_bytes) AS BIGINT)",
                span: "v.created_at >= $2 AND v.created_at < $3",
                only: " AND v.status = 'ready'",
            },
        }
    }

    /// The expression of `dimension` over `metric`'s rows.
    fn dimension(&self, metric: Metric, dimension: &str) -> String {
        match (metric, dimension) {
            (Metric::ObjectsWritten, "action") => "substr(type, 8)".into(),
            (Metric::ObjectsWritten, "object_type") => match self.app.db.backend() {
                Backend::Sqlite => "json_extract(data, '$.object_type')".into(),
                Backend::Postgres => "(data::jsonb ->> 'object_type')".into(),
            },
            (Metric::Events, "event_type") => "type".into(),
            (_, other) => other.to_string(),
        }
    }

    /// The span's ends as `metric`'s rows compare: days, timestamps or event ids.
    fn ends(&self, metric: Metric) -> (String, String) {
        let after = self.span.to.succ_opt().unwrap_or(self.span.to);
        match metric {
            Metric::ApiCalls | Metric::ActiveUsers => (self.span.from.to_string(), after.to_string()),
            Metric::ObjectsWritten | Metric::Events => (
                id::lower_bound(prefix::EVENT, Span::millis(self.span.from)),
                id::lower_bound(prefix::EVENT, Span::millis(after)),
            ),
            _ => self.span.bounds(),
        }
    }

    /// `metric` per day (and per `dimension` value), filtered: `(day, key, stored value)`.
    async fn by_day(
        &self,
        metric: Metric,
        dimension: Option<&str>,
        filters: &[(String, String)],
    ) -> ApiResult<Vec<(NaiveDate, Option<String>, i64)>> {
        let source = self.source(metric);
        let tenant_column = if metric == Metric::StorageAddedBytes { "f.tenant_id" } else { "tenant_id" };
        let mut sql = format!("WHERE {tenant_column} = $1 AND {}{}", source.span, source.only);
        let mut binds: Vec<String> = Vec::new();
        for (name, value) in filters {
            let column = self.dimension(metric, name);
            let n = binds.len() + 4;
            match value.strip_suffix('*').filter(|_| name == "event_type") {
                Some(head) => {
                    // A prefix, compared as its leading characters so that `%` and `_` mean
                    // nothing and no collation is involved.
                    let len = head.chars().count();
                    sql.push_str(&format!(" AND substr({column}, 1, {len}) = ${n}"));
                    binds.push(head.to_string());
                }
                None => {
                    sql.push_str(&format!(" AND {column} = ${n}"));
                    binds.push(value.clone());
                }
            }
        }
        let key = dimension.map_or_else(|| "NULL".to_string(), |d| self.dimension(metric, d));
        let statement = format!(
            "SELECT {day} AS day, CAST({key} AS TEXT) AS k, {value} AS v FROM {from} {sql} GROUP BY 1, 2",
            day = source.day,
            value = source.value,
            from = source.from,
        );
        let (start, end) = self.ends(metric);
        let mut query = sqlx::query_as::<_, (String, Option<String>, Option<i64>)>(&statement)
            .bind(self.tenant.as_str())
            .bind(start)
            .bind(end);
        for bind in binds {
            query = query.bind(bind);
        }
        let rows = query.fetch_all(self.app.db.pool()).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(day, key, value)| {
                let day = NaiveDate::parse_from_str(day.get(..10)?, "%Y-%m-%d").ok()?;
                Some((day, key, value.unwrap_or(0)))
            })
            .collect())
    }

    /// Distinct end users active from `from` to `to`, both included.
    async fn distinct_users(&self, from: NaiveDate, to: NaiveDate) -> ApiResult<i64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(DISTINCT user_id) FROM active_users WHERE tenant_id = $1 AND day >= $2 AND day <= $3",
        )
        .bind(self.tenant.as_str())
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_one(self.app.db.pool())
        .await?;
        Ok(n)
    }
}
