//! API keys: `/v1/keys` (seed 002) and its alias `/v1/api-keys` (seed 001).

pub mod model;
pub mod store;

use axum::extract::State;
use sqlx::{Any, Executor};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use serde_json::{json, Value};

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, ListParams, OptionalJson, Page, Path};
use crate::id::{self, prefix};
use crate::scopes::required::{KEYS_DELETE, KEYS_READ, KEYS_WRITE};
use crate::secrets;
use crate::tenants;
use crate::tenants::model::Tier;
use crate::time;
use model::{ApiKey, CreateKey, KeyCreated, KeyRotated, NewKey, RotateKey, UpdateKey};

const SECRET_CHARS: usize = 43;
const PREFIX_CHARS: usize = 4;

/// True when `credential` has the shape of an API key secret.
pub fn is_key_format(credential: &str) -> bool {
    credential.starts_with("plk_live_") || credential.starts_with("plk_test_")
}

/// Creates a key and returns it with its secret. Only the secret's hash is stored.
pub async fn issue<'e, E: Executor<'e, Database = Any>>(
    db: E,
    tenant: &TenantId,
    key: &NewKey,
) -> ApiResult<(ApiKey, String)> {
    let id = id::new_id(prefix::API_KEY);
    let secret = format!("plk_{}_{}", key.mode.as_str(), secrets::random_alphanumeric(SECRET_CHARS));
    let shown_prefix = &secret[..secret.len() - SECRET_CHARS + PREFIX_CHARS];
    let now = time::now();
    store::insert(db, tenant, &id, key, shown_prefix, &secrets::sha256_hex(&secret), &now).await?;
    let api_key = ApiKey {
        id,
        tenant_id: tenant.as_str().to_string(),
        label: key.label.clone(),
        prefix: shown_prefix.to_string(),
        mode: key.mode,
        scopes: key.scopes.clone(),
        ip_allowlist: key.ip_allowlist.iter().map(ToString::to_string).collect(),
        rate_limit_tier: key.rate_limit_tier,
        rate_limit: key.rate_limit,
        status: model::KeyStatus::Active,
        expires_at: key.expires_at,
        last_used_at: None,
        replaced_by: None,
        created_at: now,
        updated_at: now,
    };
    Ok((api_key, secret))
}

/// The audit entry of a new key.
pub fn created_entry(key: &ApiKey) -> Entry<'_> {
    Entry {
        action: "api_key.created",
        resource_type: "api_key",
        resource_id: &key.id,
        changes: json!({
            "label": key.label,
            "scopes": key.scopes,
            "ip_allowlist": key.ip_allowlist,
            "expires_at": key.expires_at,
            "mode": key.mode,
        }),
    }
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, update_key, revoke_key))
        .routes(routes!(rotate_key))
}

/// Refuses, to anyone but the platform admin, a key tier above the tenant's plan or a per-key
/// rate above the key's tier: the plan, not the tenant, sets how fast its credentials may go.
async fn ensure_within_plan(
    app: &App,
    auth: &Auth,
    tenant: &TenantId,
    tier: Option<Tier>,
    rate_limit: Option<i64>,
) -> ApiResult<()> {
    if auth.is_admin() || (tier.is_none() && rate_limit.is_none()) {
        return Ok(());
    }
    let plan =
        tenants::store::get(app.db.pool(), tenant.as_str()).await?.ok_or_else(|| ApiError::not_found("tenant"))?.tier;
    let mut errors = FieldErrors::default();
    if tier.is_some_and(|tier| tier > plan) {
        errors.add(
            "rate_limit_tier",
            format!("is above the tenant's plan (`{}`); only the platform admin may raise it", plan.as_str()),
        );
    }
    let (tier_rate, _) = crate::ratelimit::tier_plan(tier.unwrap_or(plan).min(plan));
    if rate_limit.is_some_and(|limit| limit > tier_rate as i64) {
        errors.add(
            "rate_limit",
            format!("is above the tier's {tier_rate} requests per minute; only the platform admin may raise it"),
        );
    }
    errors.finish()
}

/// Refuses to change or rotate a key that holds more than the caller: otherwise a narrow key
/// could loosen, or take over by rotation, a wider one.
fn ensure_not_wider(auth: &Auth, key: &ApiKey) -> ApiResult<()> {
    if auth.is_admin() {
        return Ok(());
    }
    match key.scopes.iter().find(|scope| !crate::scopes::covers(auth.scopes(), scope)) {
        Some(scope) => Err(ApiError::forbidden(format!(
            "this key holds `{scope}`, which your credential lacks: only a credential holding all its scopes may change or rotate it"
        ))),
        None => Ok(()),
    }
}

/// Shows the latest use, including uses not yet written to the database.
fn with_recent_use(app: &App, mut key: ApiKey) -> ApiKey {
    if let Some(at) = app.usage.pending_last_used(&key.id) {
        if key.last_used_at.is_none_or(|stored| stored < at) {
            key.last_used_at = Some(at);
        }
    }
    key
}

/// List API keys
///
/// The tenant's keys that have not been revoked, newest first. Secrets are never shown.
#[utoipa::path(get, path = "/v1/keys", tag = "API keys", security(("bearer" = [])),
    params(crate::http::list::ListQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<ApiKey>>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody)))]
async fn list_keys(auth: Auth, State(app): State<App>, params: ListParams) -> ApiResult<Data<Page<Value>>> {
    auth.require(KEYS_READ)?;
    let page = store::list(&app.db, auth.tenant()?, &params).await?;
    let page = page.try_map(|k| Ok::<_, ApiError>(with_recent_use(&app, k)))?;
    Ok(Data(params.project(&store::LIST, page)?))
}

/// Create an API key
///
/// Returns the key and its secret (`token`), shown only now. A key cannot hold a scope its
/// creator lacks.
#[utoipa::path(post, path = "/v1/keys", tag = "API keys", security(("bearer" = [])),
    request_body = CreateKey,
    responses((status = 201, body = crate::http::response::Envelope<KeyCreated>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_key(auth: Auth, State(app): State<App>, Json(body): Json<CreateKey>) -> ApiResult<Created<KeyCreated>> {
    auth.require(KEYS_WRITE)?;
    let tenant = auth.tenant()?;
    let new_key = body.validate(&auth)?;
    ensure_within_plan(&app, &auth, tenant, new_key.rate_limit_tier, new_key.rate_limit).await?;
    let mut tx = app.db.begin_write().await?;
    let (key, token) = issue(&mut *tx, tenant, &new_key).await?;
    audit::record(&mut *tx, &Who::from(&auth), None, created_entry(&key)).await?;
    tx.commit().await?;
    Ok(Created(KeyCreated { key, token }))
}

/// Get an API key
#[utoipa::path(get, path = "/v1/keys/{key_id}", tag = "API keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "The key id (`key_...`)")),
    responses((status = 200, body = crate::http::response::Envelope<ApiKey>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_key(auth: Auth, State(app): State<App>, Path(key_id): Path<String>) -> ApiResult<Data<ApiKey>> {
    auth.require(KEYS_READ)?;
    let key =
        store::get(app.db.pool(), auth.tenant()?, &key_id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(Data(with_recent_use(&app, key)))
}

/// Update an API key
///
/// Changes the label, scopes, IP allowlist, expiry or rate limit. `null` clears an optional field.
#[utoipa::path(patch, path = "/v1/keys/{key_id}", tag = "API keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "The key id")),
    request_body = UpdateKey,
    responses((status = 200, body = crate::http::response::Envelope<ApiKey>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_key(
    auth: Auth,
    State(app): State<App>,
    Path(key_id): Path<String>,
    Json(body): Json<UpdateKey>,
) -> ApiResult<Data<ApiKey>> {
    auth.require(KEYS_WRITE)?;
    let tenant = auth.tenant()?;
    let changes = body.validate(&auth)?;
    let current = store::get(app.db.pool(), tenant, &key_id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
    ensure_not_wider(&auth, &current)?;
    let tier = changes.rate_limit_tier.unwrap_or(current.rate_limit_tier);
    let rate_limit = changes.rate_limit.unwrap_or(current.rate_limit);
    if changes.rate_limit_tier.is_some() || changes.rate_limit.is_some() {
        ensure_within_plan(&app, &auth, tenant, tier, rate_limit).await?;
    }
    let mut tx = app.db.begin_write().await?;
    // Read again under a row lock (PostgreSQL; SQLite's writers are one at a time), so that a
    // rotation or another change committed meanwhile is neither overwritten nor missed.
    crate::db::lock_row(&mut tx, app.db.backend(), "api_keys", &key_id, true).await?;
    let current = store::get(&mut *tx, tenant, &key_id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
    ensure_not_wider(&auth, &current)?;
    if changes.expires_at.is_some() && current.replaced_by.is_some() {
        return Err(ApiError::conflict("a rotated key stops at the end of its grace period; its expiry cannot change"));
    }
    if !store::update(&mut tx, tenant, &key_id, &changes).await? {
        return Err(ApiError::not_found("API key"));
    }
    let entry = Entry {
        action: "api_key.updated",
        resource_type: "api_key",
        resource_id: &key_id,
        changes: json!({
            "label": changes.label,
            "scopes": changes.scopes,
            "ip_allowlist": changes.ip_allowlist.as_ref().map(|nets| nets.iter().map(ToString::to_string).collect::<Vec<_>>()),
            "expires_at": changes.expires_at,
            "rate_limit_tier": changes.rate_limit_tier,
            "rate_limit": changes.rate_limit,
        }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    let key = store::get(app.db.pool(), tenant, &key_id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(Data(with_recent_use(&app, key)))
}

/// Revoke an API key
///
/// The key and every access token issued from it stop working at once.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "API keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "The key id")),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn revoke_key(auth: Auth, State(app): State<App>, Path(key_id): Path<String>) -> ApiResult<Data<Deleted>> {
    auth.require(KEYS_DELETE)?;
    let tenant = auth.tenant()?;
    let key = store::get(app.db.pool(), tenant, &key_id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
    // A key may revoke itself; revoking a wider key would let a narrow one lock its owner out.
    if auth.actor.key_id() != Some(key_id.as_str()) {
        ensure_not_wider(&auth, &key)?;
    }
    let mut tx = app.db.begin_write().await?;
    if !store::revoke(&mut *tx, tenant, &key_id).await? {
        return Err(ApiError::not_found("API key"));
    }
    let entry = Entry { action: "api_key.revoked", resource_type: "api_key", resource_id: &key_id, changes: json!({}) };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Deleted::new(key_id))
}

/// Rotate an API key
///
/// Issues a successor with the same settings (or the given label and scopes). The old key keeps
/// working for `grace_period_hours` (default 24; 0 revokes it now).
#[utoipa::path(post, path = "/v1/keys/{key_id}/rotate", tag = "API keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "The key id")),
    request_body(content = RotateKey, description = "Optional"),
    responses((status = 200, body = crate::http::response::Envelope<KeyRotated>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "Already rotated or expired")))]
async fn rotate_key(
    auth: Auth,
    State(app): State<App>,
    Path(key_id): Path<String>,
    OptionalJson(body): OptionalJson<RotateKey>,
) -> ApiResult<Data<KeyRotated>> {
    auth.require(KEYS_WRITE)?;
    let tenant = auth.tenant()?;
    let rotation = body.unwrap_or_default().validate(&auth)?;
    let pool = app.db.pool();
    let old = store::get(pool, tenant, &key_id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
    // The successor's secret is handed to the caller: it may not be worth more than the caller.
    ensure_not_wider(&auth, &old)?;
    match old.status {
        model::KeyStatus::Rotating => {
            return Err(ApiError::conflict("this key was already rotated; rotate its successor instead"))
        }
        model::KeyStatus::Expired => return Err(ApiError::conflict("this key has expired and cannot be rotated")),
        model::KeyStatus::Active => {}
    }
    let now = time::now();
    let grace_end = now + chrono::Duration::hours(i64::from(rotation.grace_hours));
    let until = old.expires_at.map_or(grace_end, |at| at.min(grace_end));
    let successor = NewKey {
        label: rotation.label.unwrap_or_else(|| old.label.clone()),
        scopes: rotation.scopes.unwrap_or_else(|| old.scopes.clone()),
        ip_allowlist: old.ip_allowlist.iter().filter_map(|n| n.parse().ok()).collect(),
        expires_at: old.expires_at,
        rate_limit_tier: old.rate_limit_tier,
        rate_limit: old.rate_limit,
        mode: old.mode,
    };

    let mut tx = app.db.begin_write().await?;
    let (new_key, token) = issue(&mut *tx, tenant, &successor).await?;
    let revoke_now = rotation.grace_hours == 0;
    if !store::mark_rotated(&mut *tx, tenant, &key_id, &new_key.id, &until, revoke_now).await? {
        return Err(ApiError::conflict("this key was rotated or revoked meanwhile"));
    }
    let entry = Entry {
        action: "api_key.rotated",
        resource_type: "api_key",
        resource_id: &key_id,
        changes: json!({ "replaced_by": new_key.id, "grace_period_ends_at": until }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;

    let old_key = ApiKey {
        status: if revoke_now { model::KeyStatus::Expired } else { model::KeyStatus::Rotating },
        expires_at: Some(until),
        replaced_by: Some(new_key.id.clone()),
        updated_at: now,
        ..old
    };
    Ok(Data(KeyRotated { old_key, new_key, token, grace_period_ends_at: until }))
}
