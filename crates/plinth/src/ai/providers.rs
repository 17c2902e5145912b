//! Named AI provider instances (seed 002's `/v1/ai-providers`): a `provider_type` (`openai`,
//! `anthropic`, `openrouter`, or `openai-compatible` for self-hosted servers such as vLLM or
//! Ollama), a key sealed under the tenant's data key and shown only as a hint, and `config_json`:
//! `base_url`, default models and prices. A request routes to one by `<name>/<model>`.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::http::error::FieldErrors;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, ListParams, Page, Path};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::keyring;
use crate::scopes::required::{AI_PROVIDERS_DELETE, AI_PROVIDERS_READ, AI_PROVIDERS_WRITE};
use crate::time;

/// The provider types an instance may have.
pub const TYPES: &[&str] = &["openai", "anthropic", "openrouter", "openai-compatible"];
/// What keys are sealed as.
const KIND: &str = "ai-provider";
/// Largest `config_json`, serialised.
const CONFIG_MAX_BYTES: usize = 16 * 1024;
/// Most instances per tenant.
const INSTANCES_MAX: i64 = 50;

/// A provider instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct AiProvider {
    #[schema(example = "aip_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: String,
    /// Lowercase letters, digits, `-` and `_`; route to it with `<name>/<model>`.
    pub name: String,
    pub provider_type: String,
    /// Where requests go: `config_json.base_url`, else the provider's default.
    pub base_url: Option<String>,
    #[schema(value_type = Object)]
    pub config_json: Value,
    pub has_api_key: bool,
    /// The key, masked (`sk-...a1b2`).
    pub api_key_hint: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct Row {
    id: String,
    tenant_id: TenantId,
    name: String,
    provider_type: String,
    api_key_hint: Option<String>,
    config: String,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, tenant_id, name, provider_type, api_key_hint, config, created_at, updated_at";

impl TryFrom<Row> for AiProvider {
    type Error = ApiError;

    fn try_from(row: Row) -> ApiResult<AiProvider> {
        let config: Value = serde_json::from_str(&row.config)?;
        Ok(AiProvider {
            base_url: config["base_url"].as_str().map(str::to_string),
            has_api_key: row.api_key_hint.is_some(),
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            config_json: config,
            id: row.id,
            tenant_id: row.tenant_id.into(),
            name: row.name,
            provider_type: row.provider_type,
            api_key_hint: row.api_key_hint,
        })
    }
}

pub(crate) const LIST: ListSpec = ListSpec {
    table: "ai_providers",
    columns: COLUMNS,
    sortable: &[SortField { name: "created_at", column: "created_at" }, SortField { name: "name", column: "name" }],
    fields: &[
        "id",
        "tenant_id",
        "name",
        "provider_type",
        "base_url",
        "config_json",
        "has_api_key",
        "api_key_hint",
        "created_at",
        "updated_at",
    ],
    updated_at: true,
};

/// A new instance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    pub name: String,
    /// `openai`, `anthropic`, `openrouter` or `openai-compatible`.
    pub provider_type: String,
    /// Required except for `openai-compatible` servers that take none.
    pub api_key: Option<String>,
    /// Shorthand for `config_json.base_url`; required for `openai-compatible`.
    pub base_url: Option<String>,
    /// `base_url`, `default_models` (`{"chat": ..., "embeddings": ...}`), `prices`
    /// (`{"<model>": {"input_per_mtok": "3.00", "output_per_mtok": "15.00"}}`).
    #[schema(value_type = Option<Object>)]
    pub config_json: Option<Value>,
}

/// Changes: absent fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    pub name: Option<String>,
    pub api_key: Option<String>,
    pub base_url: Option<String>,
    /// Replaces the configuration.
    #[schema(value_type = Option<Object>)]
    pub config_json: Option<Value>,
}

fn is_name(name: &str) -> bool {
    crate::object_types::is_slug(name) && !super::BUILT_IN.contains(&name)
}

fn check_key(key: &str, errors: &mut FieldErrors) {
    if !crate::names::has_text(key) || key.chars().count() > 1024 || key.chars().any(char::is_control) {
        errors.add("api_key", "must be 1 to 1024 characters without control characters");
    }
}

/// The configuration to store: an object, its `base_url` (from the shorthand too) checked
/// against the SSRF guard.
fn check_config(
    config: Option<Value>,
    base_url: Option<&str>,
    allow_private: bool,
    errors: &mut FieldErrors,
) -> Map<String, Value> {
    let mut config = match config {
        None => Map::new(),
        Some(Value::Object(config)) => config,
        Some(_) => {
            errors.add("config_json", "must be a JSON object");
            Map::new()
        }
    };
    if let Some(url) = base_url {
        config.insert("base_url".into(), Value::String(url.to_string()));
    }
    match config.get("base_url") {
        None | Some(Value::Null) => {
            config.remove("base_url");
        }
        Some(Value::String(url)) => match crate::webhooks::check_url(url, allow_private) {
            Ok(url) => {
                config.insert("base_url".into(), Value::String(url.trim_end_matches('/').to_string()));
            }
            Err(problem) => errors.add("base_url", problem),
        },
        Some(_) => errors.add("base_url", "must be a URL"),
    }
    if serde_json::to_vec(&config).map(|v| v.len()).unwrap_or(usize::MAX) > CONFIG_MAX_BYTES {
        errors.add("config_json", format!("must be at most {CONFIG_MAX_BYTES} bytes of JSON"));
    }
    config
}

/// An instance opened: its type, its key and its configuration.
pub type Opened = (String, Option<String>, Value);

/// The instance `name` of the tenant, with its key opened: (type, key, configuration).
pub async fn open(app: &App, tenant: &TenantId, name: &str) -> ApiResult<Option<Opened>> {
    let load = async {
        let mut conn = app.db.pool().acquire().await?;
        read(&mut conn, app, tenant, name).await
    };
    Ok(app.providers_opened.get_or_load(format!("{tenant} {name}"), load).await?.as_ref().clone())
}

async fn read(conn: &mut sqlx::AnyConnection, app: &App, tenant: &TenantId, name: &str) -> ApiResult<Option<Opened>> {
    let row: Option<(String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT id, provider_type, api_key, config FROM ai_providers WHERE tenant_id = $1 AND name = $2",
    )
    .bind(tenant)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, kind, sealed, config)) = row else { return Ok(None) };
    let key = match sealed {
        Some(sealed) => Some(keyring::open(conn, &app.wrap_key, tenant, KIND, &id, &sealed).await?),
        None => None,
    };
    Ok(Some((kind, key, serde_json::from_str(&config)?)))
}

async fn find(conn: &mut sqlx::AnyConnection, tenant: &TenantId, provider_id: &str) -> ApiResult<AiProvider> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM ai_providers WHERE id = $1 AND tenant_id = $2"))
            .bind(provider_id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(AiProvider::try_from).transpose()?.ok_or_else(|| ApiError::not_found("AI provider"))
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_providers, create_provider)).routes(routes!(
        get_provider,
        update_provider,
        delete_provider
    ))
}

/// List AI providers
#[utoipa::path(get, path = "/v1/ai-providers", tag = "AI", security(("bearer" = [])),
    params(crate::http::list::ListQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<AiProvider>>)))]
async fn list_providers(auth: Auth, State(app): State<App>, params: ListParams) -> ApiResult<Data<Page<Value>>> {
    auth.require(AI_PROVIDERS_READ)?;
    let filter = Filter::new().eq("tenant_id", auth.tenant()?.as_str());
    let page: Page<Row> = list::fetch(&app.db, &LIST, filter, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(AiProvider::try_from)?)?))
}

/// Create an AI provider
///
/// A named instance of a provider type; its key is stored encrypted and shown only as a hint.
/// The instance joins the tenant's provider priority list.
#[utoipa::path(post, path = "/v1/ai-providers", tag = "AI", security(("bearer" = [])),
    request_body = CreateProvider,
    responses((status = 201, body = crate::http::response::Envelope<AiProvider>),
              (status = 409, body = crate::http::error::ErrorBody, description = "The name is taken"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_provider(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<CreateProvider>,
) -> ApiResult<Created<AiProvider>> {
    auth.require(AI_PROVIDERS_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    if !is_name(&body.name) {
        errors.add("name", "must be 1 to 50 lowercase letters, digits, `-` or `_`, and not a provider's own slug");
    }
    if !TYPES.contains(&body.provider_type.as_str()) {
        errors.add("provider_type", "must be `openai`, `anthropic`, `openrouter` or `openai-compatible`");
    }
    match &body.api_key {
        Some(key) => check_key(key, &mut errors),
        None if body.provider_type != "openai-compatible" => errors.add("api_key", "is required"),
        None => {}
    }
    let config =
        check_config(body.config_json, body.base_url.as_deref(), app.config.outbound_allow_private, &mut errors);
    if body.provider_type == "openai-compatible" && !config.contains_key("base_url") {
        errors.add("base_url", "is required for `openai-compatible` (such as `http://vllm.internal:8000/v1`)");
    }
    errors.finish()?;
    let id = id::new_id(prefix::AI_PROVIDER);
    let now = time::to_db(&time::now());
    let _changing = app.providers_opened.changing();
    let mut tx = app.db.begin_write().await?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ai_providers WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(&mut *tx)
        .await?;
    if count >= INSTANCES_MAX {
        return Err(ApiError::invalid("name", format!("a tenant has at most {INSTANCES_MAX} AI providers")));
    }
    let sealed = match &body.api_key {
        Some(key) => Some(keyring::seal(&mut tx, &app.wrap_key, tenant, KIND, &id, key).await?),
        None => None,
    };
    let inserted = sqlx::query(
        "INSERT INTO ai_providers (id, tenant_id, name, provider_type, api_key, api_key_hint, config, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(&id)
    .bind(tenant.as_str())
    .bind(&body.name)
    .bind(&body.provider_type)
    .bind(&sealed)
    .bind(body.api_key.as_deref().map(crate::vault::hint))
    .bind(Value::Object(config).to_string())
    .bind(&now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(error) if crate::db::is_unique_violation(&error) => {
            return Err(ApiError::conflict(format!("an AI provider is named `{}` already", body.name)))
        }
        other => other?,
    };
    super::priority::append(&mut tx, tenant, &body.name).await?;
    let entry = Entry {
        action: "ai_provider.created",
        resource_type: "ai_provider",
        resource_id: &id,
        changes: json!({ "name": body.name, "provider_type": body.provider_type }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let provider = find(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    Ok(Created(provider))
}

/// Get an AI provider
#[utoipa::path(get, path = "/v1/ai-providers/{provider_id}", tag = "AI", security(("bearer" = [])),
    params(("provider_id" = String, Path, description = "The provider instance's id")),
    responses((status = 200, body = crate::http::response::Envelope<AiProvider>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_provider(
    auth: Auth,
    State(app): State<App>,
    Path(provider_id): Path<String>,
) -> ApiResult<Data<AiProvider>> {
    auth.require(AI_PROVIDERS_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(Data(find(&mut conn, auth.tenant()?, &provider_id).await?))
}

/// Update an AI provider
///
/// A new `name` (the priority list follows), `api_key`, `base_url`, or `config_json` (replaced).
#[utoipa::path(patch, path = "/v1/ai-providers/{provider_id}", tag = "AI", security(("bearer" = [])),
    params(("provider_id" = String, Path, description = "The provider instance's id")),
    request_body = UpdateProvider,
    responses((status = 200, body = crate::http::response::Envelope<AiProvider>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "The name is taken"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_provider(
    auth: Auth,
    State(app): State<App>,
    Path(provider_id): Path<String>,
    Json(body): Json<UpdateProvider>,
) -> ApiResult<Data<AiProvider>> {
    auth.require(AI_PROVIDERS_WRITE)?;
    let tenant = auth.tenant()?;
    let _changing = app.providers_opened.changing();
    let mut tx = app.db.begin_write().await?;
    let current = find(&mut tx, tenant, &provider_id).await?;
    let mut errors = FieldErrors::default();
    if body.name.as_deref().is_some_and(|name| !is_name(name)) {
        errors.add("name", "must be 1 to 50 lowercase letters, digits, `-` or `_`, and not a provider's own slug");
    }
    if let Some(key) = &body.api_key {
        check_key(key, &mut errors);
    }
    let config = match (&body.config_json, &body.base_url) {
        (None, None) => None,
        (given, base_url) => {
            let start = given.clone().or_else(|| Some(current.config_json.clone()));
            Some(check_config(start, base_url.as_deref(), app.config.outbound_allow_private, &mut errors))
        }
    };
    if current.provider_type == "openai-compatible" && config.as_ref().is_some_and(|c| !c.contains_key("base_url")) {
        errors.add("base_url", "is required for `openai-compatible`");
    }
    errors.finish()?;
    let sealed = match &body.api_key {
        Some(key) => Some(keyring::seal(&mut tx, &app.wrap_key, tenant, KIND, &current.id, key).await?),
        None => None,
    };
    let updated = sqlx::query(
        "UPDATE ai_providers SET name = COALESCE($1, name), api_key = COALESCE($2, api_key), \
         api_key_hint = COALESCE($3, api_key_hint), config = COALESCE($4, config), updated_at = $5 \
         WHERE id = $6 AND tenant_id = $7",
    )
    .bind(&body.name)
    .bind(&sealed)
    .bind(body.api_key.as_deref().map(crate::vault::hint))
    .bind(config.map(|c| Value::Object(c).to_string()))
    .bind(time::to_db(&time::now()))
    .bind(&current.id)
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await;
    match updated {
        Err(error) if crate::db::is_unique_violation(&error) => {
            return Err(ApiError::conflict(format!(
                "an AI provider is named `{}` already",
                body.name.as_deref().unwrap_or_default()
            )))
        }
        other => other?,
    };
    if let Some(name) = body.name.as_ref().filter(|name| **name != current.name) {
        super::priority::rename(&mut tx, tenant, &current.name, name).await?;
    }
    let entry = Entry {
        action: "ai_provider.updated",
        resource_type: "ai_provider",
        resource_id: &current.id,
        changes: json!({ "name": body.name, "api_key_changed": body.api_key.is_some(), "config_changed": body.config_json.is_some() || body.base_url.is_some() }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let provider = find(&mut tx, tenant, &current.id).await?;
    tx.commit().await?;
    Ok(Data(provider))
}

/// Delete an AI provider
///
/// It leaves the provider priority list too.
#[utoipa::path(delete, path = "/v1/ai-providers/{provider_id}", tag = "AI", security(("bearer" = [])),
    params(("provider_id" = String, Path, description = "The provider instance's id")),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_provider(
    auth: Auth,
    State(app): State<App>,
    Path(provider_id): Path<String>,
) -> ApiResult<Data<Deleted>> {
    auth.require(AI_PROVIDERS_DELETE)?;
    let tenant = auth.tenant()?;
    let _changing = app.providers_opened.changing();
    let mut tx = app.db.begin_write().await?;
    let provider = find(&mut tx, tenant, &provider_id).await?;
    sqlx::query("DELETE FROM ai_providers WHERE id = $1 AND tenant_id = $2")
        .bind(&provider.id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    super::priority::remove(&mut tx, tenant, &provider.name).await?;
    let entry = Entry {
        action: "ai_provider.deleted",
        resource_type: "ai_provider",
        resource_id: &provider.id,
        changes: json!({ "name": provider.name }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Deleted::new(provider.id))
}
