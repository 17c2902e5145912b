//! Delivery logs and the hands-on side of delivery: every delivery with its attempts (seed 001's
//! `/v1/webhooks/{id}/deliveries`, seed 002's `/v1/webhook-deliveries`), manual retries, a
//! synchronous test send, and replays of past events or given payloads.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::delivery::{self, default_max_attempts, TEST_EVENT};
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::db::WriteTx;
use crate::http::error::FieldErrors;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Created, Data, ErrorCode, Json, ListParams, Page, Path, Query};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::scopes::required::{WEBHOOKS_READ, WEBHOOKS_WRITE};
use crate::{events, time};

/// The states of a delivery.
pub const STATUSES: &[&str] = &["pending", "retrying", "success", "failed"];
/// Largest payload a replay may send, serialised.
const REPLAY_MAX_BYTES: usize = 256 * 1024;
/// Most attempts shown with one delivery.
const ATTEMPTS_SHOWN: i64 = 100;

/// One delivery of an event to an endpoint. Its `id` is the `webhook-id` header it is sent with,
/// the same on every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    #[schema(example = "msg_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: String,
    pub webhook_id: String,
    /// The event delivered (none for a replayed payload).
    pub event_id: Option<String>,
    pub event_type: String,
    /// `pending`, `retrying`, `success` or `failed` (out of attempts: in the dead-letter queue).
    pub status: String,
    /// Attempts made so far.
    pub attempt: i64,
    pub max_attempts: i64,
    /// The receiver's status code at the last attempt.
    pub response_code: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_retry_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The body sent (on a single delivery).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// Every attempt, oldest first (on a single delivery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<Attempt>>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    pub attempt: i64,
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    /// The start of the receiver's answer (1024 characters at most).
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

type AttemptRow = (i64, Option<i64>, i64, Option<String>, Option<String>, String);

#[derive(Debug, FromRow)]
struct DeliveryRow {
    id: String,
    tenant_id: TenantId,
    webhook_id: String,
    event_id: Option<String>,
    event_type: String,
    status: String,
    attempt: i64,
    max_attempts: Option<i64>,
    response_code: Option<i64>,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
    delivered_at: Option<String>,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, tenant_id, webhook_id, event_id, event_type, status, attempt, max_attempts, response_code, \
     last_error, next_attempt_at, delivered_at, created_at, updated_at";

pub(crate) const LIST: ListSpec = ListSpec {
    table: "webhook_deliveries",
    columns: COLUMNS,
    sortable: &[SortField { name: "created_at", column: "created_at" }],
    fields: &[
        "id",
        "tenant_id",
        "webhook_id",
        "event_id",
        "event_type",
        "status",
        "attempt",
        "max_attempts",
        "response_code",
        "last_error",
        "next_retry_at",
        "delivered_at",
        "created_at",
        "updated_at",
    ],
    updated_at: true,
};

impl DeliveryRow {
    fn into_delivery(self, default_max: i64) -> ApiResult<Delivery> {
        Ok(Delivery {
            next_retry_at: self.next_attempt_at.as_deref().map(time::from_db).transpose()?,
            delivered_at: self.delivered_at.as_deref().map(time::from_db).transpose()?,
            created_at: time::from_db(&self.created_at)?,
            updated_at: time::from_db(&self.updated_at)?,
            max_attempts: self.max_attempts.unwrap_or(default_max),
            id: self.id,
            tenant_id: self.tenant_id.into(),
            webhook_id: self.webhook_id,
            event_id: self.event_id,
            event_type: self.event_type,
            status: self.status,
            attempt: self.attempt,
            response_code: self.response_code,
            last_error: self.last_error,
            payload: None,
            attempts: None,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryFilter {
    /// `pending`, `retrying`, `success` or `failed`.
    #[param(pattern = "^(pending|retrying|success|failed)$")]
    pub status: Option<String>,
    /// Only deliveries of this event type.
    pub event_type: Option<String>,
    /// Only deliveries to this endpoint (on `/v1/webhook-deliveries`).
    pub webhook_id: Option<String>,
}

/// A delivery queued again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    pub retried: bool,
    pub id: String,
    /// `pending`: due now.
    pub status: String,
    /// Attempts made so far.
    pub attempt: i64,
}

/// What a test send came to.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    pub success: bool,
    /// The receiver's status code, when it answered.
    pub status_code: Option<u16>,
    pub response_time_ms: i64,
    /// The start of the receiver's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The logged delivery.
    pub delivery_id: String,
    pub event_id: String,
}

/// What to replay: a past event, or a payload of your own.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// The id of a past event of this tenant (`evt_...`).
    pub event: Option<String>,
    /// A JSON object to send as the body, instead of an event.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// The event type logged for a `payload` (defaults to its `type`, else `webhook.replay`).
    #[schema(value_type = Option<crate::http::shapes::EventType>)]
    pub event_type: Option<String>,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_webhook_deliveries))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(retry_delivery))
        .routes(routes!(retry_webhook_delivery))
        .routes(routes!(test_webhook))
        .routes(routes!(replay))
}

async fn page(
    app: &App,
    tenant: &TenantId,
    webhook_id: Option<String>,
    filter: DeliveryFilter,
    params: &ListParams,
) -> ApiResult<Page<Value>> {
    let mut errors = FieldErrors::default();
    if filter.status.as_deref().is_some_and(|s| !STATUSES.contains(&s)) {
        errors.add("status", "must be `pending`, `retrying`, `success` or `failed`");
    }
    errors.finish()?;
    let filter = Filter::new()
        .eq("tenant_id", tenant.as_str())
        .eq_opt("webhook_id", webhook_id.or(filter.webhook_id))
        .eq_opt("status", filter.status)
        .eq_opt("event_type", filter.event_type);
    let page: Page<DeliveryRow> = list::fetch(&app.db, &LIST, filter, params).await?;
    let default_max = default_max_attempts(app);
    params.project(&LIST, page.try_map(|row| row.into_delivery(default_max))?)
}

/// List an endpoint's deliveries
///
/// Newest first, filtered by `status` (`pending`, `retrying`, `success`, `failed`).
#[utoipa::path(get, path = "/v1/webhooks/{webhook_id}/deliveries", tag = "Webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id"),
           crate::http::list::ListQuery, DeliveryFilter),
    responses((status = 200, body = crate::http::response::Envelope<Page<Delivery>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn list_webhook_deliveries(
    auth: Auth,
    State(app): State<App>,
    Path(webhook_id): Path<String>,
    params: ListParams,
    Query(filter): Query<DeliveryFilter>,
) -> ApiResult<Data<Page<Value>>> {
    auth.require(WEBHOOKS_READ)?;
    let tenant = auth.tenant()?;
    let mut conn = app.db.pool().acquire().await?;
    let webhook = super::find(&mut conn, tenant, &webhook_id).await?;
    drop(conn);
    Ok(Data(page(&app, tenant, Some(webhook.id), filter, &params).await?))
}

/// List webhook deliveries
///
/// Every delivery of the tenant, newest first, filtered by `webhook_id`, `status`, `event_type`.
#[utoipa::path(get, path = "/v1/webhook-deliveries", tag = "Webhook Deliveries", security(("bearer" = [])),
    params(crate::http::list::ListQuery, DeliveryFilter),
    responses((status = 200, body = crate::http::response::Envelope<Page<Delivery>>)))]
async fn list_deliveries(
    auth: Auth,
    State(app): State<App>,
    params: ListParams,
    Query(filter): Query<DeliveryFilter>,
) -> ApiResult<Data<Page<Value>>> {
    auth.require(WEBHOOKS_READ)?;
    Ok(Data(page(&app, auth.tenant()?, None, filter, &params).await?))
}

async fn find(conn: &mut sqlx::AnyConnection, app: &App, tenant: &TenantId, delivery_id: &str) -> ApiResult<Delivery> {
    let row: Option<DeliveryRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1 AND tenant_id = $2"))
            .bind(delivery_id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    row.ok_or_else(|| ApiError::not_found("webhook delivery"))?.into_delivery(default_max_attempts(app))
}

/// Get a webhook delivery
///
/// The delivery with the body sent and every attempt: status code, duration, the start of the
/// answer, the error.
#[utoipa::path(get, path = "/v1/webhook-deliveries/{delivery_id}", tag = "Webhook Deliveries",
    security(("bearer" = [])),
    params(("delivery_id" = String, Path, description = "The delivery's id")),
    responses((status = 200, body = crate::http::response::Envelope<Delivery>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_delivery(
    auth: Auth,
    State(app): State<App>,
    Path(delivery_id): Path<String>,
) -> ApiResult<Data<Delivery>> {
    auth.require(WEBHOOKS_READ)?;
    let tenant = auth.tenant()?;
    let mut conn = app.db.pool().acquire().await?;
    let mut delivery = find(&mut conn, &app, tenant, &delivery_id).await?;
    let (payload,): (String,) = sqlx::query_as("SELECT payload FROM webhook_deliveries WHERE id = $1")
        .bind(&delivery.id)
        .fetch_one(&mut *conn)
        .await?;
    let attempts: Vec<AttemptRow> = sqlx::query_as(&format!(
        "SELECT attempt, status_code, duration_ms, response_body, error, created_at FROM webhook_attempts \
         WHERE delivery_id = $1 AND tenant_id = $2 ORDER BY attempt DESC, created_at DESC LIMIT {ATTEMPTS_SHOWN}"
    ))
    .bind(&delivery.id)
    .bind(tenant.as_str())
    .fetch_all(&mut *conn)
    .await?;
    delivery.payload = Some(serde_json::from_str(&payload).unwrap_or(Value::String(payload)));
    let attempts = attempts
        .into_iter()
        .rev()
        .map(|(attempt, status_code, duration_ms, response_body, error, at)| {
            Ok(Attempt { attempt, status_code, duration_ms, response_body, error, created_at: time::from_db(&at)? })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    delivery.attempts = Some(attempts);
    Ok(Data(delivery))
}

/// Queues a delivery for another attempt now; out of the dead-letter queue if it was there. A
/// delivery that ran out of attempts gets one more.
pub async fn requeue(tx: &mut WriteTx, tenant: &TenantId, delivery_id: &str) -> ApiResult<Retried> {
    let row: Option<(String, i64, Option<i64>)> =
        sqlx::query_as("SELECT status, attempt, max_attempts FROM webhook_deliveries WHERE id = $1 AND tenant_id = $2")
            .bind(delivery_id)
            .bind(tenant)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((status, attempt, max_attempts)) = row else { return Err(ApiError::not_found("webhook delivery")) };
    let busy = || ApiError::conflict("the delivery is being sent right now: see its outcome, then retry");
    // No claim takes its job while this decides.
    crate::jobs::lock_reference(tx, delivery::KIND, delivery_id).await.map_err(ApiError::internal)?;
    if crate::jobs::is_running(tx, delivery::KIND, delivery_id).await.map_err(ApiError::internal)? {
        return Err(busy());
    }
    if status == "success" {
        return Err(ApiError::new(
            ErrorCode::CannotRetry,
            "the delivery succeeded already: replay its event to send it again",
        ));
    }
    let max_attempts = if status == "failed" { Some(attempt + 1) } else { max_attempts };
    let now = time::to_db(&time::now());
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, max_attempts = $2, updated_at = $1          WHERE id = $3 AND tenant_id = $4",
    )
    .bind(&now)
    .bind(max_attempts)
    .bind(delivery_id)
    .bind(tenant)
    .execute(&mut **tx)
    .await?;
    crate::jobs::forget(tx, delivery::KIND, delivery_id).await.map_err(ApiError::internal)?;
    delivery::enqueue(tx, tenant, delivery_id, attempt, max_attempts).await?;
    crate::dlq::remove_for(tx, tenant, delivery_id).await?;
    Ok(Retried { retried: true, id: delivery_id.to_string(), status: "pending".into(), attempt })
}

async fn retry(app: &App, auth: &Auth, webhook_id: Option<&str>, delivery_id: &str) -> ApiResult<Retried> {
    auth.require(WEBHOOKS_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let delivery = find(&mut tx, app, tenant, delivery_id).await?;
    if webhook_id.is_some_and(|w| w != delivery.webhook_id) {
        return Err(ApiError::not_found("webhook delivery"));
    }
    let retried = requeue(&mut tx, tenant, &delivery.id).await?;
    let entry = Entry {
        action: "webhook_delivery.retried",
        resource_type: "webhook_delivery",
        resource_id: &delivery.id,
        changes: json!({ "webhook_id": delivery.webhook_id, "attempt": delivery.attempt }),
    };
    audit::record(&mut *tx, &Who::from(auth), None, entry).await?;
    tx.commit().await?;
    Ok(retried)
}

/// Retry a webhook delivery
///
/// Sends it again now (a delivery that ran out of attempts gets one more, and leaves the
/// dead-letter queue). 400 `CANNOT_RETRY` when it succeeded already.
#[utoipa::path(post, path = "/v1/webhook-deliveries/{delivery_id}/retry", tag = "Webhook Deliveries",
    security(("bearer" = [])),
    params(("delivery_id" = String, Path, description = "The delivery's id")),
    responses((status = 200, body = crate::http::response::Envelope<Retried>),
              (status = 400, body = crate::http::error::ErrorBody, description = "`CANNOT_RETRY`"),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn retry_delivery(
    auth: Auth,
    State(app): State<App>,
    Path(delivery_id): Path<String>,
) -> ApiResult<Data<Retried>> {
    Ok(Data(retry(&app, &auth, None, &delivery_id).await?))
}

/// Retry an endpoint's delivery
///
/// Seed 001's path for `POST /v1/webhook-deliveries/{delivery_id}/retry`.
#[utoipa::path(post, path = "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", tag = "Webhooks",
    security(("bearer" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id"),
           ("delivery_id" = String, Path, description = "The delivery's id")),
    responses((status = 200, body = crate::http::response::Envelope<Retried>),
              (status = 400, body = crate::http::error::ErrorBody, description = "`CANNOT_RETRY`"),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn retry_webhook_delivery(
    auth: Auth,
    State(app): State<App>,
    Path((webhook_id, delivery_id)): Path<(String, String)>,
) -> ApiResult<Data<Retried>> {
    Ok(Data(retry(&app, &auth, Some(&webhook_id), &delivery_id).await?))
}

/// Test a webhook
///
/// Sends a `webhook.test` event to the endpoint now and answers with what the receiver did:
/// `success`, `status_code`, `response_time_ms`, `response_body` (truncated) or `error`. The
/// send is logged as a delivery; it is not retried and does not count towards the endpoint's
/// failures.
#[utoipa::path(post, path = "/v1/webhooks/{webhook_id}/test", tag = "Webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id")),
    responses((status = 200, body = crate::http::response::Envelope<TestResult>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn test_webhook(
    auth: Auth,
    State(app): State<App>,
    Path(webhook_id): Path<String>,
) -> ApiResult<Data<TestResult>> {
    auth.require(WEBHOOKS_WRITE)?;
    let tenant = auth.tenant()?;
    let mut conn = app.db.pool().acquire().await?;
    let webhook = super::find(&mut conn, tenant, &webhook_id).await?;
    drop(conn);
    let secrets = super::signing_secrets(&app, tenant, &webhook.id).await?;
    let event_id = id::new_id(prefix::EVENT);
    let now = time::now();
    let data = json!({ "webhook_id": webhook.id, "message": "A test event: this endpoint is wired up." });
    let body = events::payload(&event_id, TEST_EVENT, tenant, &now, data).to_string();
    let delivery_id = id::new_id(prefix::DELIVERY);
    let outcome = delivery::send(&app, &webhook.url, &secrets, &delivery_id, &body).await;
    let at = time::to_db(&time::now());
    let mut tx = app.db.begin_write().await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type, payload, status, attempt, \
         max_attempts, response_code, last_error, delivered_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 1, $8, $9, $10, $11, $11)",
    )
    .bind(&delivery_id)
    .bind(tenant.as_str())
    .bind(&webhook.id)
    .bind(&event_id)
    .bind(TEST_EVENT)
    .bind(&body)
    .bind(if outcome.success { "success" } else { "failed" })
    .bind(outcome.status_code.map(i64::from))
    .bind(&outcome.error)
    .bind(outcome.success.then(|| at.clone()))
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    delivery::record_attempt(&mut tx, tenant, &delivery_id, 1, &outcome).await?;
    tx.commit().await?;
    Ok(Data(TestResult {
        success: outcome.success,
        status_code: outcome.status_code,
        response_time_ms: outcome.duration_ms,
        response_body: outcome.response_body,
        error: outcome.error,
        delivery_id,
        event_id,
    }))
}

/// Replay to a webhook
///
/// Queues a new delivery (a new `webhook-id`) of a past event (`event`) or of a JSON object of
/// your own (`payload`), sent and retried like any other while the endpoint is active.
#[utoipa::path(post, path = "/v1/webhooks/{webhook_id}/replay", tag = "Webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id")),
    request_body = Replay,
    responses((status = 201, body = crate::http::response::Envelope<Delivery>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn replay(
    auth: Auth,
    State(app): State<App>,
    Path(webhook_id): Path<String>,
    Json(body): Json<Replay>,
) -> ApiResult<Created<Delivery>> {
    auth.require(WEBHOOKS_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    match (&body.event, &body.payload) {
        (Some(_), Some(_)) => errors.add("payload", "give `event` or `payload`, not both"),
        (None, None) => errors.add("event", "give the `event` id to replay, or a `payload`"),
        (None, Some(payload)) => {
            if !payload.is_object() {
                errors.add("payload", "must be a JSON object");
            } else if serde_json::to_vec(payload).map(|v| v.len()).unwrap_or(usize::MAX) > REPLAY_MAX_BYTES {
                errors.add("payload", format!("must be at most {REPLAY_MAX_BYTES} bytes of JSON"));
            }
        }
        (Some(_), None) => {}
    }
    let event_type = body
        .event_type
        .clone()
        .or_else(|| body.payload.as_ref().and_then(|p| p["type"].as_str()).map(str::to_string))
        .unwrap_or_else(|| "webhook.replay".into());
    let named = body.payload.is_some() || body.event_type.is_some();
    if named && (event_type.contains('*') || !super::is_event_pattern(&event_type)) {
        errors.add("event_type", "must be dotted lowercase words, such as `order.paid`");
    }
    errors.finish()?;
    let mut tx = app.db.begin_write().await?;
    let webhook = super::find(&mut tx, tenant, &webhook_id).await?;
    let (event_id, kind, payload) = match (&body.event, body.payload) {
        (Some(event_id), _) => {
            let row: Option<(String, String, String, String)> =
                sqlx::query_as("SELECT id, type, data, created_at FROM events WHERE id = $1 AND tenant_id = $2")
                    .bind(event_id)
                    .bind(tenant.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((id, kind, data, created_at)) = row else { return Err(ApiError::not_found("event")) };
            let payload =
                events::payload(&id, &kind, tenant, &time::from_db(&created_at)?, serde_json::from_str(&data)?);
            (Some(id), kind, payload.to_string())
        }
        (None, Some(payload)) => (None, event_type, payload.to_string()),
        (None, None) => unreachable!("checked above"),
    };
    let delivery_id = delivery::queue(&mut tx, tenant, &webhook.id, event_id.as_deref(), &kind, &payload, None).await?;
    let entry = Entry {
        action: "webhook.replayed",
        resource_type: "webhook",
        resource_id: &webhook.id,
        changes: json!({ "delivery_id": delivery_id, "event_id": event_id, "event_type": kind }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let delivery = find(&mut tx, &app, tenant, &delivery_id).await?;
    tx.commit().await?;
    Ok(Created(delivery))
}
