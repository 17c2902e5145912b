//! Entitlements (seed 001): feature limits per plan tier, overridable per tenant by the platform
//! admin, and usage counted against them. `consume` checks and records in one statement, so two
//! requests racing for the last unit cannot both get it.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::{Any, AnyConnection, Executor};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Data, ErrorCode, Json, Path, Query};
use crate::scopes::required::{ENTITLEMENTS_READ, ENTITLEMENTS_WRITE};
use crate::tenants::model::Tier;
use crate::time;
use crate::{id, tenants};

/// How a feature's usage accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Counted per calendar month (UTC), reset on the first.
    Monthly,
    /// A running total (things that exist).
    Total,
}

/// A metered feature.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    pub name: &'static str,
    pub period: Period,
    pub unit: Option<&'static str>,
    /// Limits for free, starter, pro, agency, enterprise; `None` is unlimited.
    pub limits: [Option<i64>; 5],
}

const GIB: i64 = 1024 * 1024 * 1024;

/// The features and their plan limits.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "api_calls",
        period: Period::Monthly,
        unit: None,
        limits: [Some(10_000), Some(100_000), Some(1_000_000), Some(5_000_000), None],
    },
    Feature {
        name: "objects",
        period: Period::Total,
        unit: None,
        limits: [Some(1_000), Some(10_000), Some(100_000), Some(1_000_000), None],
    },
    Feature {
        name: "storage",
        period: Period::Total,
        unit: Some("bytes"),
        limits: [Some(GIB / 10), Some(GIB), Some(10 * GIB), Some(100 * GIB), None],
    },
    Feature {
        name: "webhooks",
        period: Period::Total,
        unit: None,
        limits: [Some(2), Some(10), Some(50), Some(200), None],
    },
    Feature {
        name: "ai_tokens",
        period: Period::Monthly,
        unit: Some("tokens"),
        limits: [Some(100_000), Some(1_000_000), Some(10_000_000), Some(50_000_000), None],
    },
];

/// The limits of every plan: the defaults above, with a plans file's values over them.
#[derive(Debug, Clone)]
pub struct Plans {
    limits: BTreeMap<(usize, &'static str), Option<i64>>,
}

impl Plans {
    pub fn defaults() -> Plans {
        let mut limits = BTreeMap::new();
        for feature in FEATURES {
            for (tier, limit) in feature.limits.iter().enumerate() {
                limits.insert((tier, feature.name), *limit);
            }
        }
        Plans { limits }
    }

    /// Reads a JSON plans file, `{"free": {"api_calls": 5000, "webhooks": "unlimited"}, ...}`,
    /// over the defaults. A limit is a whole number, `"unlimited"` or `null` (unlimited).
    pub fn from_json(text: &str) -> Result<Plans, String> {
        let mut plans = Plans::defaults();
        let tiers: Map<String, Value> = serde_json::from_str(text).map_err(|e| format!("plans file: {e}"))?;
        for (tier_name, features) in tiers {
            let tier = Tier::parse(&tier_name).ok_or_else(|| format!("plans file: unknown tier `{tier_name}`"))?;
            let Value::Object(features) = features else {
                return Err(format!("plans file: `{tier_name}` must map features to limits"));
            };
            for (name, value) in features {
                let feature = FEATURES
                    .iter()
                    .find(|f| f.name == name)
                    .ok_or_else(|| format!("plans file: unknown feature `{name}` in `{tier_name}`"))?;
                let limit = match &value {
                    Value::Null => None,
                    Value::String(s) if s == "unlimited" => None,
                    Value::Number(n) if n.as_i64().is_some_and(|n| n >= 0) => n.as_i64(),
                    _ => {
                        return Err(format!("plans file: `{tier_name}.{name}` must be a whole number or \"unlimited\""))
                    }
                };
                plans.limits.insert((tier_index(tier), feature.name), limit);
            }
        }
        Ok(plans)
    }

    pub fn limit(&self, tier: Tier, feature: &Feature) -> Option<i64> {
        self.limits.get(&(tier_index(tier), feature.name)).copied().flatten()
    }
}

/// The metered features, by name in code: `FEATURES` holds their limits, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    ApiCalls,
    Objects,
    Storage,
    Webhooks,
    AiTokens,
}

impl Entitlement {
    pub fn feature(self) -> &'static Feature {
        &FEATURES[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.feature().name
    }

    pub const ALL: [Entitlement; 5] = [
        Entitlement::ApiCalls,
        Entitlement::Objects,
        Entitlement::Storage,
        Entitlement::Webhooks,
        Entitlement::AiTokens,
    ];

    /// The entitlement a client names: 422 for an unknown one.
    pub fn parse(name: &str) -> ApiResult<Entitlement> {
        let feature = feature(name)?;
        Entitlement::ALL
            .into_iter()
            .find(|e| e.name() == feature.name)
            .ok_or_else(|| ApiError::invalid("feature", "unknown"))
    }
}

fn feature(name: &str) -> ApiResult<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name).ok_or_else(|| {
        let names: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        ApiError::invalid("feature", format!("unknown feature `{name}`; features: {}", names.join(", ")))
    })
}

fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Free => 0,
        Tier::Starter => 1,
        Tier::Pro => 2,
        Tier::Agency => 3,
        Tier::Enterprise => 4,
    }
}

/// The counter period of `feature` now: `2026-11` or `total`.
fn period_key(feature: &Feature) -> String {
    match feature.period {
        Period::Monthly => chrono::Utc::now().format("%Y-%m").to_string(),
        Period::Total => "total".into(),
    }
}

/// When a monthly feature resets: the first of next month.
fn reset_at(feature: &Feature) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{Datelike, TimeZone};
    if feature.period != Period::Monthly {
        return None;
    }
    let now = chrono::Utc::now();
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    chrono::Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single()
}

/// The limit of `feature` for the tenant: its override, else its tier's.
async fn limit_of(
    conn: &mut AnyConnection,
    plans: &Plans,
    tenant: &TenantId,
    tier: Tier,
    feature: &Feature,
) -> ApiResult<Option<i64>> {
    let row: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT limit_value FROM entitlement_overrides WHERE tenant_id = $1 AND feature = $2")
            .bind(tenant.as_str())
            .bind(feature.name)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row {
        Some((limit,)) => limit,
        None => plans.limit(tier, feature),
    })
}

async fn used<'e, E: Executor<'e, Database = Any>>(db: E, tenant: &TenantId, feature: &Feature) -> ApiResult<i64> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT count FROM usage_counters WHERE tenant_id = $1 AND metric = $2 AND period = $3")
            .bind(tenant.as_str())
            .bind(feature.name)
            .bind(period_key(feature))
            .fetch_optional(db)
            .await?;
    Ok(row.map_or(0, |(n,)| n))
}

async fn tier_of(conn: &mut AnyConnection, tenant: &TenantId) -> ApiResult<Tier> {
    let record =
        tenants::store::get(&mut *conn, tenant.as_str()).await?.ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(record.tier)
}

/// The answer when a limit is reached.
pub fn limit_reached(app: &App, feature: &Feature, used: i64, limit: i64) -> ApiError {
    let mut error = ApiError::new(
        ErrorCode::FeatureLimitReached,
        format!("the limit for `{}` is reached: used {used} of {limit}", feature.name),
    );
    error.extra.insert("feature".into(), json!(feature.name));
    error.extra.insert("upgrade_url".into(), json!(app.config.upgrade_url));
    error
}

/// The tiers in the order of `TIER_LIMIT_PARAMETERS`.
const TIERS: [Tier; 5] = [Tier::Free, Tier::Starter, Tier::Pro, Tier::Agency, Tier::Enterprise];

/// The tenant's limit of `$2` in SQL: its override (`NULL` there is no limit, `$5`), else its
/// plan's by tier (`$6` to `$10`, in the order of `TIERS`).
const CEILING: &str = "COALESCE(\
    (SELECT COALESCE(limit_value, $5) FROM entitlement_overrides WHERE tenant_id = $1 AND feature = $2), \
    (SELECT CASE tier WHEN 'free' THEN $6 WHEN 'starter' THEN $7 WHEN 'pro' THEN $8 WHEN 'agency' THEN $9 \
     WHEN 'enterprise' THEN $10 END FROM tenants WHERE id = $1))";

/// Checks and records `quantity` of `feature` for the tenant in one statement (the limit read
/// in it too), inside the caller's transaction: 403 `FEATURE_LIMIT_REACHED` when it would pass
/// the limit, and nothing is recorded then. Returns the usage after recording.
pub async fn consume(
    conn: &mut AnyConnection,
    app: &App,
    tenant: &TenantId,
    entitlement: Entitlement,
    quantity: i64,
) -> ApiResult<i64> {
    let feature = entitlement.feature();
    let sql = format!(
        "INSERT INTO usage_counters (tenant_id, metric, period, count) SELECT $1, $2, $3, $4 WHERE $4 <= {CEILING} \
         ON CONFLICT (tenant_id, metric, period) DO UPDATE SET count = usage_counters.count + excluded.count \
         WHERE usage_counters.count + excluded.count <= {CEILING} RETURNING count"
    );
    let mut query = sqlx::query_as::<_, (i64,)>(&sql)
        .bind(tenant.as_str())
        .bind(feature.name)
        .bind(period_key(feature))
        .bind(quantity)
        .bind(i64::MAX);
    for tier in TIERS {
        // With no limit, a ceiling no count reaches.
        query = query.bind(app.plans.limit(tier, feature).unwrap_or(i64::MAX));
    }
    match query.fetch_optional(&mut *conn).await? {
        Some((count,)) => Ok(count),
        None => {
            let tier = tier_of(conn, tenant).await?;
            let ceiling = limit_of(conn, &app.plans, tenant, tier, feature).await?.unwrap_or(i64::MAX);
            let used = used(&mut *conn, tenant, feature).await?;
            Err(limit_reached(app, feature, used, ceiling))
        }
    }
}

/// The tenant's limit of `entitlement`: its override, else its plan's; `None` for no limit.
pub async fn limit(
    conn: &mut AnyConnection,
    app: &App,
    tenant: &TenantId,
    entitlement: Entitlement,
) -> ApiResult<Option<i64>> {
    let tier = tier_of(conn, tenant).await?;
    limit_of(conn, &app.plans, tenant, tier, entitlement.feature()).await
}

/// Refuses (403 `FEATURE_LIMIT_REACHED`) when the tenant has used all of `name` this period.
pub async fn ensure_room(
    conn: &mut AnyConnection,
    app: &App,
    tenant: &TenantId,
    entitlement: Entitlement,
) -> ApiResult<()> {
    let feature = entitlement.feature();
    let tier = tier_of(conn, tenant).await?;
    let Some(limit) = limit_of(conn, &app.plans, tenant, tier, feature).await? else { return Ok(()) };
    let used = used(&mut *conn, tenant, feature).await?;
    if used >= limit {
        return Err(limit_reached(app, feature, used, limit));
    }
    Ok(())
}

/// Counts `quantity` of `name` that was spent already (tokens an answer used), past the limit
/// if need be: the next call is refused, not this one.
pub async fn add(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    entitlement: Entitlement,
    quantity: i64,
) -> ApiResult<()> {
    let feature = entitlement.feature();
    if quantity <= 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO usage_counters (tenant_id, metric, period, count) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, metric, period) DO UPDATE SET count = usage_counters.count + excluded.count",
    )
    .bind(tenant.as_str())
    .bind(feature.name)
    .bind(period_key(feature))
    .bind(quantity)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `add` for a batch that counts what many calls used, once written: nothing when the tenant is
/// gone meanwhile.
pub async fn add_if_tenant(
    conn: &mut AnyConnection,
    tenant: &str,
    entitlement: Entitlement,
    quantity: i64,
) -> Result<(), sqlx::Error> {
    let feature = entitlement.feature();
    count_if_tenant(conn, tenant, feature.name, &period_key(feature), quantity).await
}

/// Adds `quantity` to the tenant's counter of `metric` in `period`, in a batch written after the
/// fact: nothing when the tenant is gone meanwhile.
pub async fn count_if_tenant(
    conn: &mut AnyConnection,
    tenant: &str,
    metric: &str,
    period: &str,
    quantity: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO usage_counters (tenant_id, metric, period, count) \
         SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1) \
         ON CONFLICT (tenant_id, metric, period) DO UPDATE SET count = usage_counters.count + excluded.count",
    )
    .bind(tenant)
    .bind(metric)
    .bind(period)
    .bind(quantity)
    .execute(conn)
    .await?;
    Ok(())
}

/// The tenant's recorded use of `entitlement` this period.
pub async fn used_now(conn: &mut AnyConnection, tenant: &TenantId, entitlement: Entitlement) -> ApiResult<i64> {
    used(conn, tenant, entitlement.feature()).await
}

/// Moves a counted feature by `delta` either way (a reservation settled for what was used).
pub async fn adjust(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    entitlement: Entitlement,
    delta: i64,
) -> ApiResult<()> {
    if delta >= 0 {
        add(conn, tenant, entitlement, delta).await
    } else {
        release(conn, tenant, entitlement, -delta).await
    }
}

/// Gives back `quantity` of a counted feature (objects purged, say), in the caller's transaction.
pub async fn release(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    entitlement: Entitlement,
    quantity: i64,
) -> ApiResult<()> {
    let feature = entitlement.feature();
    if quantity <= 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE usage_counters SET count = CASE WHEN count > $4 THEN count - $4 ELSE 0 END \
         WHERE tenant_id = $1 AND metric = $2 AND period = $3",
    )
    .bind(tenant.as_str())
    .bind(feature.name)
    .bind(period_key(feature))
    .bind(quantity)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The written `api_calls` of `tenant` this month and its limit (override, else plan).
pub async fn api_calls_quota(app: &App, tenant: &TenantId) -> ApiResult<(i64, Option<i64>)> {
    let feature = Entitlement::ApiCalls.feature();
    let mut conn = app.db.pool().acquire().await?;
    let tier = tier_of(&mut conn, tenant).await?;
    let limit = limit_of(&mut conn, &app.plans, tenant, tier, feature).await?;
    Ok((used(&mut *conn, tenant, feature).await?, limit))
}

/// Middleware: counts each request of a tenant as an API call, and refuses it with 403
/// `FEATURE_LIMIT_REACHED` once the month's `api_calls` are used up. Counts are kept in memory
/// and written in batches; the platform admin is counted but never refused.
pub async fn meter_api_calls(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(auth) = request.extensions().get::<Auth>().cloned() else {
        return next.run(request).await;
    };
    let Ok(tenant) = auth.tenant() else {
        return next.run(request).await;
    };
    if !auth.is_admin() {
        match app.usage.allows_api_call(&app, tenant).await {
            Ok(Ok(())) => {}
            Ok(Err((used, limit))) => {
                let feature = Entitlement::ApiCalls.feature();
                return limit_reached(&app, feature, used, limit).into_response();
            }
            // Fail open: metering must not take the API down.
            Err(error) => tracing::warn!(message = %error.message, "api_calls quota unavailable; request let through"),
        }
    }
    let user_id = match &auth.actor {
        crate::auth::Actor::User { user_id, .. } => Some(user_id.as_str()),
        _ => None,
    };
    app.usage.record_request(tenant, auth.actor.key_id(), user_id);
    next.run(request).await
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(check_entitlement))
        .routes(routes!(record_usage))
        .routes(routes!(entitlement_summary))
        .routes(routes!(get_tenant_entitlements, override_tenant_entitlements))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckQuery {
    /// The feature: `api_calls`, `objects`, `storage`, `webhooks` or `ai_tokens`.
    #[param(pattern = "^(api_calls|objects|storage|webhooks|ai_tokens)$")]
    pub feature: String,
    /// How much the caller is about to use (default 1).
    #[param(minimum = 1, maximum = 1_000_000_000_000i64)]
    pub quantity: Option<i64>,
}

/// Whether a feature can be used.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub allowed: bool,
    pub feature: String,
    pub current_usage: i64,
    /// `null` is unlimited.
    pub limit: Option<i64>,
    /// `null` is unlimited.
    pub available: Option<i64>,
    /// `LIMIT_EXCEEDED` when not allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_url: Option<String>,
}

fn positive_quantity(quantity: Option<i64>) -> ApiResult<i64> {
    let quantity = quantity.unwrap_or(1);
    if !(1..=1_000_000_000_000).contains(&quantity) {
        return Err(ApiError::invalid("quantity", "must be between 1 and 1000000000000"));
    }
    Ok(quantity)
}

/// Check feature access
#[utoipa::path(get, path = "/v1/entitlements/check", tag = "Entitlements", security(("bearer" = [])),
    params(CheckQuery),
    responses((status = 200, body = crate::http::response::Envelope<CheckResult>)))]
async fn check_entitlement(
    auth: Auth,
    State(app): State<App>,
    Query(query): Query<CheckQuery>,
) -> ApiResult<Data<CheckResult>> {
    auth.require(ENTITLEMENTS_READ)?;
    let tenant = auth.tenant()?;
    let feature = feature(&query.feature)?;
    let quantity = positive_quantity(query.quantity)?;
    // AI calls answered a moment ago count.
    app.ai_meter.flush(&app.db).await?;
    let mut conn = app.db.pool().acquire().await?;
    let tier = tier_of(&mut conn, tenant).await?;
    let limit = limit_of(&mut conn, &app.plans, tenant, tier, feature).await?;
    let current = used(&mut *conn, tenant, feature).await? + pending(&app, tenant, feature);
    let allowed = limit.is_none_or(|limit| current + quantity <= limit);
    let mut result = CheckResult {
        allowed,
        feature: feature.name.into(),
        current_usage: current,
        limit,
        available: limit.map(|limit| (limit - current).max(0)),
        reason: None,
        message: None,
        upgrade_url: None,
    };
    if !allowed {
        result.reason = Some("LIMIT_EXCEEDED".into());
        result.message =
            Some(format!("the limit for `{}` is reached: used {current} of {}", feature.name, limit.unwrap_or(0)));
        result.upgrade_url = app.config.upgrade_url.clone();
    }
    Ok(Data(result))
}

/// Requests counted in memory and not yet written, for `api_calls`.
fn pending(app: &App, tenant: &TenantId, feature: &Feature) -> i64 {
    if feature.name == "api_calls" {
        app.usage.pending_api_calls(tenant, &period_key(feature))
    } else {
        0
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordUsage {
    #[schema(pattern = "^(api_calls|objects|storage|webhooks|ai_tokens)$")]
    pub feature: String,
    /// Default 1.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub quantity: Option<i64>,
    /// Free-form context kept with the record (at most 4 KiB).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRecorded {
    pub recorded: bool,
    pub feature: String,
    pub current_usage: i64,
    pub limit: Option<i64>,
}

/// Record usage
///
/// Checks and records in one step: past the limit it answers 403 `FEATURE_LIMIT_REACHED` (with
/// `feature` and `upgrade_url`) and records nothing.
#[utoipa::path(post, path = "/v1/entitlements/usage", tag = "Entitlements", security(("bearer" = [])),
    request_body = RecordUsage,
    responses((status = 200, body = crate::http::response::Envelope<UsageRecorded>),
              (status = 403, body = crate::http::error::ErrorBody, description = "`FEATURE_LIMIT_REACHED`")))]
async fn record_usage(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<RecordUsage>,
) -> ApiResult<Data<UsageRecorded>> {
    auth.require(ENTITLEMENTS_WRITE)?;
    let tenant = auth.tenant()?;
    let quantity = positive_quantity(body.quantity)?;
    let metadata = Value::Object(body.metadata.unwrap_or_default());
    if metadata.to_string().len() > 4096 {
        return Err(ApiError::invalid("metadata", "must be at most 4096 bytes as JSON"));
    }
    let mut tx = app.db.begin_write().await?;
    let entitlement = Entitlement::parse(&body.feature)?;
    let current = consume(&mut tx, &app, tenant, entitlement, quantity).await?;
    let limit = limit(&mut tx, &app, tenant, entitlement).await?;
    sqlx::query(
        "INSERT INTO usage_events (id, tenant_id, feature, quantity, metadata, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id::new_id(id::prefix::USAGE_EVENT))
    .bind(tenant.as_str())
    .bind(&body.feature)
    .bind(quantity)
    .bind(crate::audit::redact(metadata).to_string())
    .bind(time::to_db(&time::now()))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Data(UsageRecorded { recorded: true, feature: body.feature, current_usage: current, limit }))
}

/// One feature in the summary.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureUsage {
    pub used: i64,
    pub limit: Option<i64>,
    pub available: Option<i64>,
    /// Used as a percentage of the limit, two decimals; `null` when unlimited.
    pub percentage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    pub tenant_id: String,
    pub tier: Tier,
    pub entitlements: BTreeMap<String, FeatureUsage>,
}

async fn summary(app: &App, tenant: &TenantId) -> ApiResult<Summary> {
    // AI calls answered a moment ago count.
    app.ai_meter.flush(&app.db).await?;
    let mut conn = app.db.pool().acquire().await?;
    let tier = tier_of(&mut conn, tenant).await?;
    let mut entitlements = BTreeMap::new();
    for feature in FEATURES {
        let limit = limit_of(&mut conn, &app.plans, tenant, tier, feature).await?;
        let used = used(&mut *conn, tenant, feature).await? + pending(app, tenant, feature);
        entitlements.insert(
            feature.name.to_string(),
            FeatureUsage {
                used,
                limit,
                available: limit.map(|l| (l - used).max(0)),
                percentage: limit
                    .map(|l| if l == 0 { 100.0 } else { (used as f64 * 10_000.0 / l as f64).round() / 100.0 }),
                reset_at: reset_at(feature),
                unit: feature.unit.map(str::to_owned),
            },
        );
    }
    Ok(Summary { tenant_id: tenant.as_str().to_owned(), tier, entitlements })
}

/// Get the usage summary
#[utoipa::path(get, path = "/v1/entitlements/summary", tag = "Entitlements", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<Summary>)))]
async fn entitlement_summary(auth: Auth, State(app): State<App>) -> ApiResult<Data<Summary>> {
    auth.require(ENTITLEMENTS_READ)?;
    Ok(Data(summary(&app, auth.tenant()?).await?))
}

/// Get a tenant's entitlements
///
/// Platform admin only: the summary of any tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/entitlements", tag = "Entitlements", security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "The tenant id")),
    responses((status = 200, body = crate::http::response::Envelope<Summary>)))]
async fn get_tenant_entitlements(
    auth: Auth,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
) -> ApiResult<Data<Summary>> {
    auth.require_admin()?;
    if !tenants::store::exists(app.db.pool(), &tenant_id).await? {
        return Err(ApiError::not_found("tenant"));
    }
    Ok(Data(summary(&app, &TenantId::trusted(tenant_id)).await?))
}

/// Limits to set for a tenant: a number sets it, `"unlimited"` lifts it, `null` returns to the plan.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideEntitlements {
    #[schema(value_type = Object)]
    pub limits: Map<String, Value>,
}

/// Override a tenant's limits
///
/// Platform admin only.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/entitlements", tag = "Entitlements", security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "The tenant id")),
    request_body = OverrideEntitlements,
    responses((status = 200, body = crate::http::response::Envelope<Summary>)))]
async fn override_tenant_entitlements(
    auth: Auth,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    Json(body): Json<OverrideEntitlements>,
) -> ApiResult<Data<Summary>> {
    auth.require_admin()?;
    let mut errors = FieldErrors::default();
    let mut changes: Vec<(&'static str, Option<Option<i64>>)> = Vec::new();
    for (name, value) in &body.limits {
        let field = format!("limits.{name}");
        let Ok(feature) = feature(name) else {
            errors.add(&field, "unknown feature");
            continue;
        };
        let change = match value {
            Value::Null => None,
            Value::String(s) if s == "unlimited" => Some(None),
            Value::Number(n) if n.as_i64().is_some_and(|n| n >= 0) => Some(n.as_i64()),
            _ => {
                errors.add(&field, "must be a whole number of at least 0, \"unlimited\" or null");
                continue;
            }
        };
        changes.push((feature.name, change));
    }
    errors.finish()?;
    let mut tx = app.db.begin_write().await?;
    if tenants::store::get(&mut *tx, &tenant_id).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    for (feature, change) in &changes {
        match change {
            None => {
                sqlx::query("DELETE FROM entitlement_overrides WHERE tenant_id = $1 AND feature = $2")
                    .bind(&tenant_id)
                    .bind(*feature)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(limit) => {
                sqlx::query(
                    "INSERT INTO entitlement_overrides (tenant_id, feature, limit_value, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, feature) DO UPDATE SET limit_value = excluded.limit_value, \
                     updated_at = excluded.updated_at",
                )
                .bind(&tenant_id)
                .bind(*feature)
                .bind(*limit)
                .bind(time::to_db(&time::now()))
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    let entry = Entry {
        action: "entitlements.overridden",
        resource_type: "tenant",
        resource_id: &tenant_id,
        changes: Value::Object(body.limits.clone()),
    };
    audit::record(&mut *tx, &Who::from(&auth), Some(&TenantId::trusted(tenant_id.clone())), entry).await?;
    tx.commit().await?;
    app.usage.forget_quotas();
    app.ai_meter.forget(None);
    Ok(Data(summary(&app, &TenantId::trusted(tenant_id)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plans_file_overrides_the_defaults() {
        let plans =
            Plans::from_json(r#"{"free": {"api_calls": 5, "webhooks": "unlimited"}, "pro": {"objects": null}}"#)
                .unwrap();
        let api_calls = &FEATURES[0];
        assert_eq!(plans.limit(Tier::Free, api_calls), Some(5));
        assert_eq!(plans.limit(Tier::Starter, api_calls), Some(100_000));
        assert_eq!(plans.limit(Tier::Free, feature("webhooks").unwrap()), None);
        for entitlement in Entitlement::ALL {
            assert_eq!(Entitlement::parse(entitlement.name()).unwrap(), entitlement, "FEATURES in the enum's order");
        }
        assert_eq!(plans.limit(Tier::Pro, feature("objects").unwrap()), None);
        assert!(Plans::from_json(r#"{"gold": {}}"#).is_err());
        assert!(Plans::from_json(r#"{"free": {"unicorns": 1}}"#).is_err());
        assert!(Plans::from_json(r#"{"free": {"objects": -1}}"#).is_err());
        assert!(Plans::from_json("not json").is_err());
    }
}
