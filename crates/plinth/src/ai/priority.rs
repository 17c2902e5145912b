//! The tenant's provider priority list (seed 000): the order in which AI providers are tried
//! when a request names none. Storing credentials for an AI provider appends it.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::BUILT_IN;
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::db::WriteTx;
use crate::http::error::FieldErrors;
use crate::http::{ApiResult, Data, Json};
use crate::id::TenantId;
use crate::scopes::required::{AI_READ, AI_WRITE};
use crate::time;

/// Most entries of the list.
const PRIORITY_MAX: usize = 20;

/// The ordered list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderPriority {
    /// Provider slugs (`anthropic`, `openai`, `openrouter`, `claude-cli`, `openai-cli`) and
    /// names of the tenant's provider instances, first tried first.
    #[schema(max_items = 20)]
    pub providers: Vec<String>,
}

/// The list, with what can answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriorityView {
    pub providers: Vec<String>,
    /// The entries that have credentials (a vault entry, or an instance with a key or base URL).
    pub configured: Vec<String>,
}

/// The tenant's list.
pub async fn get(conn: &mut sqlx::AnyConnection, tenant: &TenantId) -> ApiResult<Vec<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT provider_priority FROM ai_settings WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some((list,)) => serde_json::from_str(&list)?,
        None => Vec::new(),
    })
}

async fn store(tx: &mut WriteTx, tenant: &TenantId, list: &[String]) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO ai_settings (tenant_id, provider_priority, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET provider_priority = excluded.provider_priority, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(json!(list).to_string())
    .bind(time::to_db(&time::now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends `provider` to the tenant's list unless it is there.
pub async fn append(tx: &mut WriteTx, tenant: &TenantId, provider: &str) -> ApiResult<()> {
    let mut list = get(tx, tenant).await?;
    if !list.iter().any(|p| p == provider) && list.len() < PRIORITY_MAX {
        list.push(provider.to_string());
        store(tx, tenant, &list).await?;
    }
    Ok(())
}

/// Renames an instance in the tenant's list, keeping its place.
pub async fn rename(tx: &mut WriteTx, tenant: &TenantId, from: &str, to: &str) -> ApiResult<()> {
    let mut list = get(tx, tenant).await?;
    if let Some(slot) = list.iter_mut().find(|p| *p == from) {
        *slot = to.to_string();
        store(tx, tenant, &list).await?;
    }
    Ok(())
}

/// Takes `provider` out of the tenant's list.
pub async fn remove(tx: &mut WriteTx, tenant: &TenantId, provider: &str) -> ApiResult<()> {
    let mut list = get(tx, tenant).await?;
    if list.iter().any(|p| p == provider) {
        list.retain(|p| p != provider);
        store(tx, tenant, &list).await?;
    }
    Ok(())
}

async fn view(conn: &mut sqlx::AnyConnection, tenant: &TenantId, providers: Vec<String>) -> ApiResult<PriorityView> {
    let services = crate::vault::configured(conn, tenant).await?;
    let instances: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM ai_providers WHERE tenant_id = $1").bind(tenant).fetch_all(&mut *conn).await?;
    let configured = providers
        .iter()
        .filter(|p| services.contains(p) || instances.iter().any(|(name,)| name == *p))
        .cloned()
        .collect();
    Ok(PriorityView { providers, configured })
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(get_priority, put_priority))
}

/// Get the provider priority list
#[utoipa::path(get, path = "/v1/ai/provider-priority", tag = "AI", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<PriorityView>)))]
async fn get_priority(auth: Auth, State(app): State<App>) -> ApiResult<Data<PriorityView>> {
    auth.require(AI_READ)?;
    let tenant = auth.tenant()?;
    let mut conn = app.db.pool().acquire().await?;
    let list = get(&mut conn, tenant).await?;
    Ok(Data(view(&mut conn, tenant, list).await?))
}

/// Set the provider priority list
///
/// The order in which providers are tried when a request names none: provider slugs and the
/// names of the tenant's provider instances, each once, at most 20.
#[utoipa::path(put, path = "/v1/ai/provider-priority", tag = "AI", security(("bearer" = [])),
    request_body = ProviderPriority,
    responses((status = 200, body = crate::http::response::Envelope<PriorityView>),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn put_priority(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<ProviderPriority>,
) -> ApiResult<Data<PriorityView>> {
    auth.require(AI_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let instances: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM ai_providers WHERE tenant_id = $1").bind(tenant).fetch_all(&mut *tx).await?;
    let mut errors = FieldErrors::default();
    if body.providers.len() > PRIORITY_MAX {
        errors.add("providers", format!("at most {PRIORITY_MAX}"));
    }
    for (index, provider) in body.providers.iter().enumerate() {
        let known = BUILT_IN.contains(&provider.as_str()) || instances.iter().any(|(name,)| name == provider);
        if !known {
            errors.add(
                "providers",
                format!(
                    "`{provider}` is neither a provider ({}) nor one of your provider instances",
                    BUILT_IN.join(", ")
                ),
            );
        } else if body.providers[..index].contains(provider) {
            errors.add("providers", format!("`{provider}` appears twice"));
        }
    }
    errors.finish()?;
    store(&mut tx, tenant, &body.providers).await?;
    let entry = Entry {
        action: "ai.provider_priority_set",
        resource_type: "ai_settings",
        resource_id: tenant.as_str(),
        changes: json!({ "providers": body.providers }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let shown = view(&mut tx, tenant, body.providers).await?;
    tx.commit().await?;
    Ok(Data(shown))
}
