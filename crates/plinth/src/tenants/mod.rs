//! Tenants (seed 001's workspaces): created and managed by the platform admin.
//! `/v1/tenants` and its alias `/v1/workspaces`; `GET /v1/usage` for a tenant's own counts.

pub mod model;
pub mod store;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use serde_json::{json, Value};

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::db::{is_unique_violation, Db};
use crate::deletion::{self, DeleteParams, Target, Verdict};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, ListParams, Page, Path, Query};
use crate::id::{self, prefix};
use crate::keys::{self, model::NewKey};
use crate::scopes::required::{TENANTS_READ, USAGE_READ};
use crate::secrets;
use crate::time;
use model::{validate_name, validate_slug, CreateTenant, Tenant, TenantCreated, TenantSettings, UpdateTenant};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant, update_tenant, delete_tenant))
        .routes(routes!(get_usage))
}

/// Attempts at a free generated slug before giving up.
const SLUG_ATTEMPTS: usize = 5;

/// Creates a tenant and its first API key (every scope) in one transaction.
pub async fn create(db: &Db, body: CreateTenant, who: &Who) -> ApiResult<TenantCreated> {
    let mut errors = FieldErrors::default();
    let name = validate_name("name", &body.name, &mut errors);
    if let Some(slug) = &body.slug {
        validate_slug(slug, &mut errors);
    }
    let mut settings = TenantSettings::default();
    if let Some(patch) = body.settings {
        patch.apply(&mut settings, &mut errors);
    }
    errors.finish()?;

    let now = time::now();
    let mut tenant = Tenant {
        id: id::new_id(prefix::TENANT),
        slug: body.slug.clone().unwrap_or_else(|| model::slugify(&name)),
        name,
        tier: body.tier.unwrap_or_default(),
        settings,
        created_at: now,
        updated_at: now,
    };
    for attempt in 0..SLUG_ATTEMPTS {
        let mut tx = db.begin_write().await?;
        match store::insert(&mut *tx, &tenant).await {
            Ok(()) => {
                let tenant_id = TenantId::trusted(tenant.id.clone());
                let (key, secret) = keys::issue(&mut *tx, &tenant_id, &NewKey::first("Default key")).await?;
                crate::authz::roles::create_built_ins(&mut tx, &tenant_id).await?;
                let entry = Entry {
                    action: "tenant.created",
                    resource_type: "tenant",
                    resource_id: &tenant.id,
                    changes: json!({ "name": tenant.name, "slug": tenant.slug, "tier": tenant.tier }),
                };
                audit::record(&mut *tx, who, Some(&tenant_id), entry).await?;
                audit::record(&mut *tx, who, Some(&tenant_id), keys::created_entry(&key)).await?;
                tx.commit().await?;
                return Ok(TenantCreated { tenant, api_key: secret, api_key_id: key.id });
            }
            Err(error) if is_unique_violation(&error) => {
                if body.slug.is_some() {
                    return Err(ApiError::conflict(format!("the slug `{}` is taken", tenant.slug)));
                }
                let base = model::slugify(&tenant.name);
                tenant.slug = format!("{base}-{}", secrets::random_alphanumeric(4).to_lowercase());
                tracing::debug!(attempt, "generated slug taken, trying another");
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::conflict("could not find a free slug; give one explicitly"))
}

/// List tenants
///
/// Platform admin only. Newest first.
#[utoipa::path(get, path = "/v1/tenants", tag = "Tenants", security(("bearer" = [])),
    params(crate::http::list::ListQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<Tenant>>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody)))]
async fn list_tenants(auth: Auth, State(app): State<App>, params: ListParams) -> ApiResult<Data<Page<Value>>> {
    auth.require_admin()?;
    let page = store::list(&app.db, &params).await?;
    Ok(Data(params.project(&store::LIST, page)?))
}

/// Create a tenant
///
/// Platform admin only. Returns the tenant and its first API key (every scope) as
/// `data.api_key`, shown only now.
#[utoipa::path(post, path = "/v1/tenants", tag = "Tenants", security(("bearer" = [])),
    request_body = CreateTenant,
    responses((status = 201, body = crate::http::response::Envelope<TenantCreated>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "Slug taken"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_tenant(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<CreateTenant>,
) -> ApiResult<Created<TenantCreated>> {
    auth.require_admin()?;
    Ok(Created(create(&app.db, body, &Who::from(&auth)).await?))
}

/// The tenant `tenant_id` as this credential may see it: any for the platform admin, only its
/// own for a tenant credential (another tenant is 404).
async fn visible_tenant(auth: &Auth, app: &App, tenant_id: &str) -> ApiResult<Tenant> {
    if !auth.is_admin() {
        auth.require(TENANTS_READ)?;
        if auth.tenant()?.as_str() != tenant_id {
            return Err(ApiError::not_found("tenant"));
        }
    }
    store::get(app.db.pool(), tenant_id).await?.ok_or_else(|| ApiError::not_found("tenant"))
}

/// Get a tenant
///
/// The platform admin sees any tenant; a tenant credential with `tenants:read` sees its own.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}", tag = "Tenants", security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "The tenant id (`tn_...`)")),
    responses((status = 200, body = crate::http::response::Envelope<Tenant>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_tenant(auth: Auth, State(app): State<App>, Path(tenant_id): Path<String>) -> ApiResult<Data<Tenant>> {
    Ok(Data(visible_tenant(&auth, &app, &tenant_id).await?))
}

/// Update a tenant
///
/// Platform admin only. `settings` is merged field by field.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}", tag = "Tenants", security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "The tenant id")),
    request_body = UpdateTenant,
    responses((status = 200, body = crate::http::response::Envelope<Tenant>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "Slug taken"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_tenant(
    auth: Auth,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    Json(body): Json<UpdateTenant>,
) -> ApiResult<Data<Tenant>> {
    auth.require_admin()?;
    let mut tenant = store::get(app.db.pool(), &tenant_id).await?.ok_or_else(|| ApiError::not_found("tenant"))?;
    let mut errors = FieldErrors::default();
    if let Some(name) = &body.name {
        tenant.name = validate_name("name", name, &mut errors);
    }
    if let Some(slug) = body.slug {
        validate_slug(&slug, &mut errors);
        tenant.slug = slug;
    }
    if let Some(tier) = body.tier {
        tenant.tier = tier;
    }
    if let Some(patch) = body.settings {
        patch.apply(&mut tenant.settings, &mut errors);
    }
    errors.finish()?;
    tenant.updated_at = time::now();
    let mut tx = app.db.begin_write().await?;
    match store::update(&mut *tx, &tenant).await {
        Ok(()) => {}
        Err(error) if is_unique_violation(&error) => {
            return Err(ApiError::conflict(format!("the slug `{}` is taken", tenant.slug)))
        }
        Err(error) => return Err(error.into()),
    }
    let entry = Entry {
        action: "tenant.updated",
        resource_type: "tenant",
        resource_id: &tenant.id,
        changes: json!({ "name": tenant.name, "slug": tenant.slug, "tier": tenant.tier, "settings": tenant.settings }),
    };
    audit::record(&mut *tx, &Who::from(&auth), Some(&TenantId::trusted(tenant.id.clone())), entry).await?;
    // The tier sets the rate limit of every credential of the tenant.
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(tenant))
}

/// Delete a tenant
///
/// Platform admin only. A tenant with keys answers 409 `DEPENDENCY_EXISTS` with the counts and
/// a `confirm_token`; `?force=true&confirm_token=...` then deletes the tenant with its keys,
/// tokens and data in one transaction.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}", tag = "Tenants", security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "The tenant id"), DeleteParams),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "`DEPENDENCY_EXISTS`, with `dependencies` and `confirm_token`"),
              (status = 422, body = crate::http::error::ErrorBody, description = "Invalid `confirm_token`")))]
async fn delete_tenant(
    auth: Auth,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Data<Deleted>> {
    auth.require_admin()?;
    let target = Target { scope: "platform", resource_type: "tenant", resource_id: &tenant_id };
    let mut tx = app.db.begin_write().await?;
    if store::get(&mut *tx, &tenant_id).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    let tenant = TenantId::trusted(tenant_id.clone());
    let dependencies = store::dependants(&mut tx, &tenant_id).await?;
    if let Verdict::Refuse(dependencies) = deletion::check(&mut tx, target, dependencies, &params).await? {
        tx.rollback().await?;
        return Err(deletion::refuse(app.db.pool(), target, dependencies).await);
    }
    crate::objects::properties::drop_tenant_indexes(&mut tx, &tenant).await?;
    store::delete(&mut *tx, &tenant_id).await?;
    let entry =
        Entry { action: "tenant.deleted", resource_type: "tenant", resource_id: &tenant_id, changes: json!({}) };
    audit::record_platform(&mut *tx, &Who::from(&auth), entry).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Deleted::new(tenant_id))
}

/// A tenant's usage so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub tenant_id: String,
    pub tier: model::Tier,
    /// API keys that have not been revoked.
    pub api_keys: i64,
    /// Authenticated requests so far today (UTC).
    pub requests_today: i64,
    /// The UTC day `requests_today` counts.
    pub day: String,
    /// Bytes the tenant's live files hold (every version, uploads under way; not the trash):
    /// what its `storage` entitlement counts.
    pub used_storage_bytes: i64,
}

/// Get tenant usage
///
/// The calling tenant's counts so far: API keys and requests today.
#[utoipa::path(get, path = "/v1/usage", tag = "Tenants", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<Usage>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody)))]
async fn get_usage(auth: Auth, State(app): State<App>) -> ApiResult<Data<Usage>> {
    auth.require(USAGE_READ)?;
    let tenant = auth.tenant()?;
    let pool = app.db.pool();
    let record = store::get(pool, tenant.as_str()).await?.ok_or_else(|| ApiError::not_found("tenant"))?;
    let day = time::today();
    let requests_today = app.usage.requests(pool, tenant, &day).await?;
    let mut conn = pool.acquire().await?;
    let used_storage_bytes =
        crate::entitlements::used_now(&mut conn, tenant, crate::entitlements::Entitlement::Storage).await?;
    Ok(Data(Usage {
        used_storage_bytes,
        tenant_id: record.id,
        tier: record.tier,
        api_keys: keys::store::count(pool, tenant).await?,
        requests_today,
        day,
    }))
}
