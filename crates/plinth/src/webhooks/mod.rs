//! Outbound webhook endpoints (seed 001 and 002): where a tenant's events are delivered, which
//! events, and the signing secret (`whsec_...`, shown once, stored encrypted under the tenant's
//! data key). Delivery, its logs and the test and replay sends live in `delivery` and `log`.

pub mod delivery;
pub mod log;

use std::net::IpAddr;

use axum::extract::State;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::deletion::{self, DeleteParams, Dependency, Target, Verdict};
use crate::entitlements;
use crate::http::error::FieldErrors;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, ListParams, Page, Path, Query};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::keyring;
use crate::object_types::is_identifier;
use crate::outbound::is_private;
use crate::scopes::required::{WEBHOOKS_DELETE, WEBHOOKS_READ, WEBHOOKS_WRITE};
use crate::time;

/// Most event patterns or object types on one endpoint.
const PATTERNS_MAX: usize = 50;
/// Longest endpoint URL.
const URL_MAX: usize = 2048;
/// How long the previous secret still signs after a rotation.
const ROTATION_OVERLAP_HOURS: i64 = 24;
/// What the stored secrets are sealed as.
const SECRET_KIND: &str = "webhook";

/// A webhook endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Webhook {
    #[schema(example = "wh_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    /// Event names and patterns: `object.created`, `object.*`, `*`.
    pub events: Vec<String>,
    /// Only events of these object types (names); empty for all.
    pub object_types: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    pub is_active: bool,
    pub description: Option<String>,
    pub success_count: i64,
    pub failure_count: i64,
    pub consecutive_failures: i64,
    pub last_delivery_at: Option<DateTime<Utc>>,
    /// Until when deliveries are also signed with the secret before the last rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct WebhookRow {
    id: String,
    tenant_id: TenantId,
    url: String,
    events: String,
    object_types: String,
    status: String,
    description: Option<String>,
    success_count: i64,
    failure_count: i64,
    consecutive_failures: i64,
    last_delivery_at: Option<String>,
    previous_secret_until: Option<String>,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, tenant_id, url, events, object_types, status, description, success_count, failure_count, \
     consecutive_failures, last_delivery_at, previous_secret_until, created_at, updated_at";

impl TryFrom<WebhookRow> for Webhook {
    type Error = ApiError;

    fn try_from(row: WebhookRow) -> ApiResult<Webhook> {
        let now = time::now();
        let previous = row.previous_secret_until.as_deref().map(time::from_db).transpose()?.filter(|at| *at > now);
        Ok(Webhook {
            events: serde_json::from_str(&row.events)?,
            object_types: serde_json::from_str(&row.object_types)?,
            is_active: row.status == "active",
            last_delivery_at: row.last_delivery_at.as_deref().map(time::from_db).transpose()?,
            previous_secret_expires_at: previous,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            id: row.id,
            tenant_id: row.tenant_id.into(),
            url: row.url,
            status: row.status,
            description: row.description,
            success_count: row.success_count,
            failure_count: row.failure_count,
            consecutive_failures: row.consecutive_failures,
        })
    }
}

pub(crate) const LIST: ListSpec = ListSpec {
    table: "webhooks",
    columns: COLUMNS,
    sortable: &[SortField { name: "created_at", column: "created_at" }, SortField { name: "url", column: "url" }],
    fields: &[
        "id",
        "tenant_id",
        "url",
        "events",
        "object_types",
        "status",
        "is_active",
        "description",
        "success_count",
        "failure_count",
        "consecutive_failures",
        "last_delivery_at",
        "previous_secret_expires_at",
        "created_at",
        "updated_at",
    ],
    updated_at: true,
};

/// Whether an endpoint receives deliveries.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    Active,
    Disabled,
}

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// HTTPS (plain HTTP and private addresses only with `PLINTH_OUTBOUND_ALLOW_PRIVATE=true`).
    #[schema(value_type = crate::http::shapes::WebhookUrl)]
    pub url: String,
    /// 1 to 50 event names or patterns.
    #[schema(value_type = Vec<crate::http::shapes::EventPattern>, min_items = 1, max_items = 50)]
    pub events: Vec<String>,
    #[schema(value_type = Option<Vec<crate::http::shapes::Identifier>>, max_items = 50)]
    pub object_types: Option<Vec<String>>,
    /// `active` (default) or `disabled`.
    #[schema(value_type = Option<Activity>)]
    pub status: Option<String>,
    /// Seed 001's spelling of `status`.
    pub is_active: Option<bool>,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// Your own signing secret, `whsec_` and base64 of 24 to 64 bytes; generated when absent.
    #[schema(value_type = Option<crate::http::shapes::WebhookSecret>)]
    pub secret: Option<String>,
}

/// Changes: absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[schema(value_type = Option<crate::http::shapes::WebhookUrl>)]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<crate::http::shapes::EventPattern>>, min_items = 1, max_items = 50)]
    pub events: Option<Vec<String>>,
    #[schema(value_type = Option<Vec<crate::http::shapes::Identifier>>, max_items = 50)]
    pub object_types: Option<Vec<String>>,
    #[schema(value_type = Option<Activity>)]
    pub status: Option<String>,
    pub is_active: Option<bool>,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
}

/// A created endpoint, with its secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub secret: String,
}

/// A rotated secret: shown this once. The previous one still signs until `previous_secret_expires_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretRotated {
    pub secret: String,
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// Checks an endpoint URL: HTTPS, no credentials, no private or loopback host written out
/// (names are checked again after DNS resolution when delivering).
pub fn check_url(text: &str, allow_private: bool) -> Result<String, String> {
    if text.len() > URL_MAX {
        return Err(format!("must be at most {URL_MAX} characters"));
    }
    let url = url::Url::parse(text).map_err(|_| "must be an absolute URL")?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err("must be an https:// URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if allow_private {
        return Ok(url.to_string());
    }
    match url.host() {
        Some(url::Host::Ipv4(v4)) if is_private(IpAddr::V4(v4)) => Err("must not point at a private address".into()),
        Some(url::Host::Ipv6(v6)) if is_private(IpAddr::V6(v6)) => Err("must not point at a private address".into()),
        Some(url::Host::Domain(name)) if name == "localhost" || name.ends_with(".localhost") => {
            Err("must not point at a private address".into())
        }
        Some(_) => Ok(url.to_string()),
        None => Err("must name a host".into()),
    }
}

/// True for `*`, `<name>.*`, or a dotted event name of lowercase words.
pub fn is_event_pattern(pattern: &str) -> bool {
    pattern.len() <= 100 && crate::names::is_event_pattern_of_any_length(pattern)
}

/// Checks the subscribed patterns; users' events (`user.*`, matched by `*` too) carry addresses
/// and metadata, so subscribing to them needs `users:read`.
fn check_events(auth: &Auth, events: &[String], errors: &mut FieldErrors) -> Vec<String> {
    if auth.require(crate::scopes::required::USERS_READ).is_err()
        && events.iter().any(|e| delivery::matches(std::slice::from_ref(e), "user.created"))
    {
        errors.add("events", "users' events (`user.*`, and `*`) need the `users:read` scope: name the events you need");
    }
    if events.is_empty() || events.len() > PATTERNS_MAX {
        errors.add("events", format!("must name 1 to {PATTERNS_MAX} events or patterns"));
    }
    let mut out: Vec<String> = Vec::new();
    for event in events {
        if !is_event_pattern(event) {
            errors.add(
                "events",
                format!("`{event}` is not an event name or pattern (`object.created`, `object.*`, `*`)"),
            );
        } else if !out.contains(event) {
            out.push(event.clone());
        }
    }
    out
}

fn check_object_types(types: &[String], errors: &mut FieldErrors) {
    if types.len() > PATTERNS_MAX {
        errors.add("object_types", format!("at most {PATTERNS_MAX}"));
    }
    for name in types {
        if !is_identifier(name) {
            errors.add("object_types", format!("`{name}` is not an object type name"));
        }
    }
}

fn check_status(status: Option<&str>, is_active: Option<bool>, errors: &mut FieldErrors) -> Option<String> {
    match (status, is_active) {
        (Some("active"), None | Some(true)) | (None, Some(true)) => Some("active".into()),
        (Some("disabled"), None | Some(false)) | (None, Some(false)) => Some("disabled".into()),
        (None, None) => None,
        (Some(other), _) if other != "active" && other != "disabled" => {
            errors.add("status", "must be `active` or `disabled`");
            None
        }
        _ => {
            errors.add("is_active", "contradicts `status`");
            None
        }
    }
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

fn check_secret(secret: &str) -> Result<(), String> {
    let decoded = secret.strip_prefix("whsec_").and_then(|b64| STANDARD.decode(b64).ok());
    match decoded {
        Some(bytes) if (24..=64).contains(&bytes.len()) => Ok(()),
        _ => Err("must be `whsec_` and the base64 of 24 to 64 bytes".into()),
    }
}

async fn find(conn: &mut sqlx::AnyConnection, tenant: &TenantId, webhook_id: &str) -> ApiResult<Webhook> {
    let row: Option<WebhookRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1 AND tenant_id = $2"))
            .bind(webhook_id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(Webhook::try_from).transpose()?.ok_or_else(|| ApiError::not_found("webhook"))
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .merge(log::routes())
}

/// List webhooks
#[utoipa::path(get, path = "/v1/webhooks", tag = "Webhooks", security(("bearer" = [])),
    params(crate::http::list::ListQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<Webhook>>)))]
async fn list_webhooks(auth: Auth, State(app): State<App>, params: ListParams) -> ApiResult<Data<Page<Value>>> {
    auth.require(WEBHOOKS_READ)?;
    let filter = Filter::new().eq("tenant_id", auth.tenant()?.as_str());
    let page: Page<WebhookRow> = list::fetch(&app.db, &LIST, filter, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(Webhook::try_from)?)?))
}

/// Create a webhook
///
/// Returns the signing secret (`whsec_...`) this once; it is stored encrypted. Counts against
/// the `webhooks` entitlement.
#[utoipa::path(post, path = "/v1/webhooks", tag = "Webhooks", security(("bearer" = [])),
    request_body = CreateWebhook,
    responses((status = 201, body = crate::http::response::Envelope<WebhookCreated>),
              (status = 403, body = crate::http::error::ErrorBody, description = "`FEATURE_LIMIT_REACHED`"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_webhook(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<CreateWebhook>,
) -> ApiResult<Created<WebhookCreated>> {
    auth.require(WEBHOOKS_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    let url = check_url(&body.url, app.config.outbound_allow_private).unwrap_or_else(|problem| {
        errors.add("url", problem);
        String::new()
    });
    let events = check_events(&auth, &body.events, &mut errors);
    let object_types = body.object_types.unwrap_or_default();
    check_object_types(&object_types, &mut errors);
    let status = check_status(body.status.as_deref(), body.is_active, &mut errors).unwrap_or_else(|| "active".into());
    if let Some(secret) = &body.secret {
        if let Err(problem) = check_secret(secret) {
            errors.add("secret", problem);
        }
    }
    if body.description.as_ref().is_some_and(|d| d.chars().count() > 1000) {
        errors.add("description", "must be at most 1000 characters");
    }
    errors.finish()?;
    let secret = body.secret.unwrap_or_else(new_secret);
    let id = id::new_id(prefix::WEBHOOK);
    let now = time::to_db(&time::now());
    let mut tx = app.db.begin_write().await?;
    entitlements::consume(&mut tx, &app, tenant, crate::entitlements::Entitlement::Webhooks, 1).await?;
    let sealed = keyring::seal(&mut tx, &app.wrap_key, tenant, SECRET_KIND, &id, &secret).await?;
    sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, events, object_types, status, description, secret, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(&id)
    .bind(tenant.as_str())
    .bind(&url)
    .bind(json!(events).to_string())
    .bind(json!(object_types).to_string())
    .bind(&status)
    .bind(&body.description)
    .bind(&sealed)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    let entry = Entry {
        action: "webhook.created",
        resource_type: "webhook",
        resource_id: &id,
        changes: json!({ "url": url, "events": events, "object_types": object_types, "status": status }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let webhook = find(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    Ok(Created(WebhookCreated { webhook, secret }))
}

/// Get a webhook
#[utoipa::path(get, path = "/v1/webhooks/{webhook_id}", tag = "Webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id")),
    responses((status = 200, body = crate::http::response::Envelope<Webhook>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_webhook(auth: Auth, State(app): State<App>, Path(webhook_id): Path<String>) -> ApiResult<Data<Webhook>> {
    auth.require(WEBHOOKS_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(Data(find(&mut conn, auth.tenant()?, &webhook_id).await?))
}

/// Update a webhook
///
/// Change the URL, events, object types, status (`active`/`disabled`, or `is_active`) or
/// description. Re-enabling an endpoint resets its consecutive failures.
#[utoipa::path(patch, path = "/v1/webhooks/{webhook_id}", tag = "Webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id")),
    request_body = UpdateWebhook,
    responses((status = 200, body = crate::http::response::Envelope<Webhook>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_webhook(
    auth: Auth,
    State(app): State<App>,
    Path(webhook_id): Path<String>,
    Json(body): Json<UpdateWebhook>,
) -> ApiResult<Data<Webhook>> {
    auth.require(WEBHOOKS_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    let url = body.url.as_deref().map(|url| {
        check_url(url, app.config.outbound_allow_private).unwrap_or_else(|problem| {
            errors.add("url", problem);
            String::new()
        })
    });
    let events = body.events.as_deref().map(|events| check_events(&auth, events, &mut errors));
    if let Some(types) = &body.object_types {
        check_object_types(types, &mut errors);
    }
    let status = check_status(body.status.as_deref(), body.is_active, &mut errors);
    if body.description.as_ref().is_some_and(|d| d.chars().count() > 1000) {
        errors.add("description", "must be at most 1000 characters");
    }
    errors.finish()?;
    let mut tx = app.db.begin_write().await?;
    let current = find(&mut tx, tenant, &webhook_id).await?;
    let enabling = status.as_deref() == Some("active") && current.status != "active";
    sqlx::query(
        "UPDATE webhooks SET url = COALESCE($1, url), events = COALESCE($2, events), \
         object_types = COALESCE($3, object_types), status = COALESCE($4, status), \
         description = COALESCE($5, description), \
         consecutive_failures = CASE WHEN $6 = 1 THEN 0 ELSE consecutive_failures END, updated_at = $7 \
         WHERE id = $8 AND tenant_id = $9",
    )
    .bind(&url)
    .bind(events.as_ref().map(|e| json!(e).to_string()))
    .bind(body.object_types.as_ref().map(|t| json!(t).to_string()))
    .bind(&status)
    .bind(&body.description)
    .bind(i64::from(enabling))
    .bind(time::to_db(&time::now()))
    .bind(&current.id)
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await?;
    let entry = Entry {
        action: "webhook.updated",
        resource_type: "webhook",
        resource_id: &current.id,
        changes: json!({ "url": url, "events": events, "object_types": body.object_types, "status": status }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    if enabling {
        delivery::resume(&mut tx, tenant, &current.id).await?;
    }
    let webhook = find(&mut tx, tenant, &current.id).await?;
    tx.commit().await?;
    Ok(Data(webhook))
}

/// Delete a webhook
///
/// Deletes the endpoint with its delivery log. While deliveries are still on their way
/// (`pending` or `retrying`) it answers 409 `DEPENDENCY_EXISTS` with a `confirm_token`;
/// `?force=true&confirm_token=...` then deletes them too.
#[utoipa::path(delete, path = "/v1/webhooks/{webhook_id}", tag = "Webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id"), DeleteParams),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "`DEPENDENCY_EXISTS`")))]
async fn delete_webhook(
    auth: Auth,
    State(app): State<App>,
    Path(webhook_id): Path<String>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Data<Deleted>> {
    auth.require(WEBHOOKS_DELETE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let webhook = find(&mut tx, tenant, &webhook_id).await?;
    let (pending,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status IN ('pending', 'retrying')",
    )
    .bind(&webhook.id)
    .fetch_one(&mut *tx)
    .await?;
    let target = Target { scope: tenant.as_str(), resource_type: "webhook", resource_id: &webhook.id };
    let dependencies =
        vec![Dependency { kind: "webhook_deliveries", count: pending, label: "deliveries not yet delivered" }];
    if let Verdict::Refuse(dependencies) = deletion::check(&mut tx, target, dependencies, &params).await? {
        tx.rollback().await?;
        return Err(deletion::refuse(app.db.pool(), target, dependencies).await);
    }
    sqlx::query(
        "DELETE FROM dlq_messages WHERE tenant_id = $1 AND reference_id IN \
         (SELECT id FROM webhook_deliveries WHERE webhook_id = $2)",
    )
    .bind(tenant.as_str())
    .bind(&webhook.id)
    .execute(&mut *tx)
    .await?;
    // Their jobs go with them (a running one finds its delivery gone and writes nothing).
    sqlx::query(
        "DELETE FROM jobs WHERE kind = $1 AND status <> 'running' AND reference IN \
         (SELECT id FROM webhook_deliveries WHERE webhook_id = $2)",
    )
    .bind(delivery::KIND)
    .bind(&webhook.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2")
        .bind(&webhook.id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    entitlements::release(&mut tx, tenant, crate::entitlements::Entitlement::Webhooks, 1).await?;
    let entry = Entry {
        action: "webhook.deleted",
        resource_type: "webhook",
        resource_id: &webhook.id,
        changes: json!({ "url": webhook.url, "undelivered": pending }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Deleted::new(webhook.id))
}

/// Rotate a webhook's secret
///
/// Returns the new secret this once. For 24 hours deliveries carry signatures with both the new
/// and the previous secret, so a receiver can switch without losing any.
#[utoipa::path(post, path = "/v1/webhooks/{webhook_id}/rotate-secret", tag = "Webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id")),
    responses((status = 200, body = crate::http::response::Envelope<SecretRotated>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn rotate_secret(
    auth: Auth,
    State(app): State<App>,
    Path(webhook_id): Path<String>,
) -> ApiResult<Data<SecretRotated>> {
    auth.require(WEBHOOKS_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let webhook = find(&mut tx, tenant, &webhook_id).await?;
    let secret = new_secret();
    let sealed = keyring::seal(&mut tx, &app.wrap_key, tenant, SECRET_KIND, &webhook.id, &secret).await?;
    let until = time::now() + chrono::Duration::hours(ROTATION_OVERLAP_HOURS);
    sqlx::query(
        "UPDATE webhooks SET previous_secret = secret, previous_secret_until = $1, secret = $2, updated_at = $3 \
         WHERE id = $4 AND tenant_id = $5",
    )
    .bind(time::to_db(&until))
    .bind(&sealed)
    .bind(time::to_db(&time::now()))
    .bind(&webhook.id)
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await?;
    let entry = Entry {
        action: "webhook.secret_rotated",
        resource_type: "webhook",
        resource_id: &webhook.id,
        changes: json!({ "previous_secret_expires_at": until }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Data(SecretRotated { secret, previous_secret_expires_at: until }))
}

/// The signing secrets of an endpoint: the current one, and the previous one while it overlaps.
pub async fn signing_secrets(app: &App, tenant: &TenantId, webhook_id: &str) -> ApiResult<Vec<String>> {
    let mut conn = app.db.pool().acquire().await?;
    let row: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT secret, previous_secret, previous_secret_until FROM webhooks WHERE id = $1 AND tenant_id = $2",
    )
    .bind(webhook_id)
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((secret, previous, until)) = row else { return Err(ApiError::not_found("webhook")) };
    let mut secrets = vec![keyring::open(&mut conn, &app.wrap_key, tenant, SECRET_KIND, webhook_id, &secret).await?];
    let overlapping = until.as_deref().map(time::from_db).transpose()?.is_some_and(|at| at > time::now());
    if let (Some(previous), true) = (previous, overlapping) {
        secrets.push(keyring::open(&mut conn, &app.wrap_key, tenant, SECRET_KIND, webhook_id, &previous).await?);
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_public_https() {
        assert!(check_url("https://hooks.example.com/in", false).is_ok());
        for bad in [
            "http://hooks.example.com/in",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://169.254.169.254/latest",
            "https://[::1]/x",
            "https://[::ffff:192.168.0.1]/x",
            "https://localhost/x",
            "https://user:pw@example.com/",
            "ftp://example.com/",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9000/x", true).is_ok());
    }

    #[test]
    fn event_patterns() {
        for good in ["*", "object.*", "object.created", "inbound.my-source.received"] {
            assert!(is_event_pattern(good), "{good}");
        }
        for bad in ["", "Object.created", "object.", "*.created", "object.*.x", "a..b"] {
            assert!(!is_event_pattern(bad), "{bad}");
        }
        assert!(check_secret(&new_secret()).is_ok());
        assert!(check_secret("whsec_c2hvcnQ=").is_err());
    }
}
