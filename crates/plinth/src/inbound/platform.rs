//! Webhooks sent to the platform itself rather than to a tenant: Stripe's billing events, which
//! move a tenant between plans, and Meta's app-wide callback (seed 000, step 6). Each is
//! verified with the platform's own secret, kept in `platform_webhook_events` once per sender
//! event id, and answered quickly.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{challenge, verify, Handshake};
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::events::{self, Event};
use crate::http::{ApiError, ApiResult, Data, ErrorCode, Query};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::tenants::model::Tier;
use crate::time;

/// What the sender is told.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlatformReceived {
    pub received: bool,
    /// True when this event id was received before (applied once).
    pub duplicate: bool,
    /// What was done: `applied: ...` or `ignored: ...`.
    pub outcome: String,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(meta_handshake, meta_receive)).routes(routes!(stripe))
}

fn not_configured(what: &str) -> ApiError {
    ApiError::new(ErrorCode::UpstreamUnavailable, format!("{what} is not configured on this server"))
}

/// Keeps a platform webhook once per sender event id; false when it was kept before.
async fn keep(
    conn: &mut sqlx::AnyConnection,
    provider: &str,
    external_id: Option<&str>,
    kind: &str,
    tenant: Option<&TenantId>,
    outcome: &str,
    payload: &str,
) -> ApiResult<bool> {
    let kept = sqlx::query(
        "INSERT INTO platform_webhook_events (id, provider, external_id, kind, tenant_id, outcome, payload, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id::new_id(prefix::PLATFORM_EVENT))
    .bind(provider)
    .bind(external_id)
    .bind(kind)
    .bind(tenant)
    .bind(outcome)
    .bind(payload)
    .bind(time::to_db(&time::now()))
    .execute(&mut *conn)
    .await;
    match kept {
        Ok(_) => Ok(true),
        Err(error) if crate::db::is_unique_violation(&error) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Meta's subscription handshake
///
/// Echoes `hub.challenge` as text when `hub.mode` is `subscribe` and `hub.verify_token` equals
/// `META_WEBHOOK_VERIFY_TOKEN`; 403 otherwise.
#[utoipa::path(get, path = "/v1/webhooks/inbound/meta-ads", tag = "Inbound", params(Handshake),
    responses((status = 200, body = String, content_type = "text/plain", description = "The challenge"),
              (status = 403, body = crate::http::error::ErrorBody)))]
async fn meta_handshake(State(app): State<App>, Query(query): Query<Handshake>) -> ApiResult<Response> {
    challenge(app.config.inbound.meta_verify_token.as_ref().map(|t| t.expose()), &query)
}

/// Receive Meta's webhooks
///
/// Verifies `X-Hub-Signature-256` with `META_APP_SECRET` (401 when it does not verify) and keeps
/// the notification. Attributing its entries to tenants comes with the marketing
/// subscriptions; a tenant can already receive Meta webhooks of its own app through an inbound
/// source of scheme `meta`.
#[utoipa::path(post, path = "/v1/webhooks/inbound/meta-ads", tag = "Inbound",
    request_body(content = Object, description = "Meta's notification, as sent"),
    responses((status = 200, body = crate::http::response::Envelope<PlatformReceived>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 503, body = crate::http::error::ErrorBody, description = "`META_APP_SECRET` is not set")))]
async fn meta_receive(State(app): State<App>, headers: HeaderMap, body: Bytes) -> ApiResult<Data<PlatformReceived>> {
    let secret = app.config.inbound.meta_app_secret.as_ref().ok_or_else(|| not_configured("META_APP_SECRET"))?;
    if let Err(reason) = verify::verify("meta", secret.expose(), &headers, &body, time::now().timestamp()) {
        return Err(ApiError::unauthorized(format!("the webhook signature does not verify: {reason}")));
    }
    let payload: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad_request("the notification is not JSON"))?;
    let kind = payload["object"].as_str().unwrap_or("unknown").to_string();
    let outcome = "kept: not attributed to a tenant".to_string();
    let mut tx = app.db.begin_write().await?;
    keep(&mut tx, "meta-ads", None, &kind, None, &outcome, &payload.to_string()).await?;
    tx.commit().await?;
    Ok(Data(PlatformReceived { received: true, duplicate: false, outcome }))
}

/// The tier a billing object names: `metadata.tier` (or `metadata.plan`), else the lookup key
/// or `metadata.tier` of its first price.
fn tier_of(object: &Value) -> Option<Tier> {
    let named = [
        &object["metadata"]["tier"],
        &object["metadata"]["plan"],
        &object["items"]["data"][0]["price"]["lookup_key"],
        &object["items"]["data"][0]["price"]["metadata"]["tier"],
        &object["plan"]["metadata"]["tier"],
    ];
    named.iter().filter_map(|v| v.as_str()).find_map(Tier::parse)
}

/// A tenant a billing event is about: its id, tier, and the creation time of the last billing
/// event applied to it.
type BillingTenant = (TenantId, String, Option<i64>);

/// The tenant a billing object is about: named in its metadata or as the checkout's
/// `client_reference_id`, else the one tenant whose billing customer it is.
async fn tenant_of(conn: &mut sqlx::AnyConnection, object: &Value) -> ApiResult<Result<BillingTenant, String>> {
    const COLUMNS: &str = "id, tier, billing_event_at";
    let named = [&object["metadata"]["tenant_id"], &object["client_reference_id"]];
    for candidate in named.iter().filter_map(|v| v.as_str()) {
        let found: Option<BillingTenant> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
            .bind(candidate)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(found) = found {
            return Ok(Ok(found));
        }
    }
    let Some(customer) = object["customer"].as_str() else {
        return Ok(Err("ignored: the event names no tenant and no customer".into()));
    };
    let mut found: Vec<BillingTenant> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE billing_customer_id = $1 LIMIT 2"))
            .bind(customer)
            .fetch_all(&mut *conn)
            .await?;
    match found.len() {
        1 => Ok(Ok(found.remove(0))),
        0 => Ok(Err("ignored: no tenant matches the event".into())),
        _ => Ok(Err(format!("ignored: several tenants have the customer {customer}: name the tenant in metadata"))),
    }
}

/// The tier an event asks for, or why it changes nothing.
fn wanted_tier(kind: &str, object: &Value) -> Result<Tier, String> {
    let named = || tier_of(object).ok_or_else(|| "ignored: the event names no tier".to_string());
    match kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            match object["payment_status"].as_str() {
                Some("paid" | "no_payment_required") => named(),
                other => {
                    Err(format!("ignored: the checkout is not paid yet ({})", other.unwrap_or("no payment_status")))
                }
            }
        }
        "customer.subscription.updated" => match object["status"].as_str() {
            Some("active" | "trialing") => named(),
            Some("canceled" | "unpaid" | "incomplete_expired") => Ok(Tier::Free),
            other => {
                Err(format!("ignored: a subscription that is {} keeps the plan", other.unwrap_or("without status")))
            }
        },
        "customer.subscription.deleted" => Ok(Tier::Free),
        other => Err(format!("ignored: `{other}` does not change plans")),
    }
}

/// Receive Stripe's billing webhooks
///
/// Verifies `Stripe-Signature` with `PLINTH_STRIPE_WEBHOOK_SECRET` (401 when it does not, or
/// when its timestamp is more than 5 minutes away) and applies, once per event id and never an
/// event older than the last one applied: a paid `checkout.session.completed` (or
/// `checkout.session.async_payment_succeeded`) moves the tenant in `client_reference_id` or
/// `metadata.tenant_id` to `metadata.tier` and remembers its customer;
/// `customer.subscription.updated` moves the customer's tenant to the subscription's tier while
/// `active` or `trialing`, or to `free` once `canceled` or `unpaid`;
/// `customer.subscription.deleted` moves it to `free`. Other events are kept and ignored.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "Inbound",
    request_body(content = Object, description = "Stripe's event, as sent"),
    responses((status = 200, body = crate::http::response::Envelope<PlatformReceived>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 503, body = crate::http::error::ErrorBody, description = "`PLINTH_STRIPE_WEBHOOK_SECRET` is not set")))]
async fn stripe(State(app): State<App>, headers: HeaderMap, body: Bytes) -> ApiResult<Data<PlatformReceived>> {
    let secret = app
        .config
        .inbound
        .stripe_webhook_secret
        .as_ref()
        .ok_or_else(|| not_configured("PLINTH_STRIPE_WEBHOOK_SECRET"))?;
    if let Err(reason) = verify::stripe(secret.expose(), &headers, &body, time::now().timestamp()) {
        return Err(ApiError::unauthorized(format!("the Stripe signature does not verify: {reason}")));
    }
    let event: Value = serde_json::from_slice(&body).map_err(|_| ApiError::bad_request("the event is not JSON"))?;
    let (Some(event_id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(ApiError::bad_request("the event has no `id` or `type`"));
    };
    let object = &event["data"]["object"];
    let created = event["created"].as_i64();
    let mut tx = app.db.begin_write().await?;
    let tenant = tenant_of(&mut tx, object).await?;
    let tenant_id = tenant.as_ref().ok().map(|(id, _, _)| id.clone());
    let change = match (&tenant, wanted_tier(kind, object)) {
        (Err(ignored), _) => Err(ignored.clone()),
        (_, Err(ignored)) => Err(ignored),
        (Ok((_, _, Some(last))), Ok(_)) if created.is_some_and(|at| at < *last) => {
            Err("ignored: older than the last billing event applied".to_string())
        }
        (Ok((id, previous, _)), Ok(tier)) => Ok((id.clone(), previous.clone(), tier)),
    };
    let outcome = match &change {
        Ok((id, previous, tier)) => format!("applied: {id} moves from {previous} to {}", tier.as_str()),
        Err(ignored) => ignored.clone(),
    };
    if !keep(&mut tx, "stripe", Some(event_id), kind, tenant_id.as_ref(), &outcome, &event.to_string()).await? {
        return Ok(Data(PlatformReceived { received: true, duplicate: true, outcome: "already received".into() }));
    }
    let changing = change.as_ref().ok().map(|_| app.credentials_changing());
    if let Ok((id, previous, tier)) = &change {
        if let (Some(customer), true) = (object["customer"].as_str(), kind.starts_with("checkout.session.")) {
            sqlx::query("UPDATE tenants SET billing_customer_id = $1 WHERE id = $2")
                .bind(customer)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE tenants SET tier = $1, billing_event_at = COALESCE($2, billing_event_at), updated_at = $3 \
             WHERE id = $4",
        )
        .bind(tier.as_str())
        .bind(created)
        .bind(time::to_db(&time::now()))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let who = Who {
            actor_type: "webhook",
            actor_id: Some("stripe".into()),
            tenant: Some(id.clone()),
            ip: None,
            user_agent: None,
        };
        let entry = Entry {
            action: "tenant.plan_changed",
            resource_type: "tenant",
            resource_id: id.as_str(),
            changes: json!({ "tier": tier.as_str(), "previous_tier": previous, "stripe_event": event_id, "stripe_type": kind }),
        };
        audit::record(&mut *tx, &who, Some(id), entry).await?;
        let data = json!({ "tier": tier.as_str(), "previous_tier": previous, "source": "stripe" });
        let event = Event { kind: "tenant.plan_changed", resource_type: "tenant", resource_id: id.as_str(), data };
        events::record(&mut tx, id, event).await?;
    }
    tx.commit().await?;
    drop(changing);
    Ok(Data(PlatformReceived { received: true, duplicate: false, outcome }))
}
