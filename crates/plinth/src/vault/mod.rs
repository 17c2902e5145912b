//! The credentials vault (seed 000): a tenant's credentials for third-party services, set once
//! with `PUT /v1/credentials/{service}`, checked against the service's fields, stored encrypted
//! under the tenant's data key and never shown again: reads answer masked hints (`sk-...a1b2`).
//! The AI gateway and other integrations read them with `open`.

pub mod services;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::db::WriteTx;
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, ErrorCode, Json, Path};
use crate::id::TenantId;
use crate::keyring;
use crate::scopes::required::{CREDENTIALS_DELETE, CREDENTIALS_READ, CREDENTIALS_WRITE};
use crate::time;
use services::Service;

/// What stored credentials are sealed as.
const KIND: &str = "credentials";
/// Most `custom:` services per tenant.
const CUSTOM_MAX: i64 = 100;

/// A service's credentials as shown: secrets masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Credentials {
    /// `openai`, `anthropic`, ..., or `custom:<name>`.
    #[schema(example = "openai")]
    pub service: String,
    /// Each field: a secret as a masked hint (`sk-...a1b2`), other fields as stored.
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

type Row = (String, String, String, String);

fn shown((service, hints, created_at, updated_at): Row) -> ApiResult<Credentials> {
    let fields = match serde_json::from_str(&hints)? {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    Ok(Credentials {
        service,
        fields,
        created_at: time::from_db(&created_at)?,
        updated_at: time::from_db(&updated_at)?,
    })
}

/// A masked hint of a secret: its first 3 and last 4 characters, or nothing of a short one.
pub fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "****".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}...{tail}")
}

/// Most characters of a per-request provider credential.
pub const OVERRIDE_MAX_CHARS: usize = 1024;

/// Checks a per-request credential (seed 000's hybrid services: the value in the body wins over
/// the vault for that one call and is never stored, logged or sent on in the body).
pub fn check_override(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > OVERRIDE_MAX_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("must be 1 to {OVERRIDE_MAX_CHARS} printable characters without spaces"));
    }
    Ok(())
}

/// The tenant's credentials for `service`, opened, or `None` when none are stored.
pub async fn open(app: &App, tenant: &TenantId, service: &str) -> ApiResult<Option<Map<String, Value>>> {
    let load = async {
        let mut conn = app.db.pool().acquire().await?;
        read(&mut conn, app, tenant, service).await
    };
    Ok(app.vault_opened.get_or_load(format!("{tenant} {service}"), load).await?.as_ref().clone())
}

async fn read(
    conn: &mut sqlx::AnyConnection,
    app: &App,
    tenant: &TenantId,
    service: &str,
) -> ApiResult<Option<Map<String, Value>>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT sealed FROM service_credentials WHERE tenant_id = $1 AND service = $2")
            .bind(tenant)
            .bind(service)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((sealed,)) = row else { return Ok(None) };
    let text = keyring::open(conn, &app.wrap_key, tenant, KIND, service, &sealed).await?;
    match serde_json::from_str(&text)? {
        Value::Object(fields) => Ok(Some(fields)),
        _ => Err(ApiError::internal("stored credentials are not an object")),
    }
}

/// The services the tenant has credentials for.
pub async fn configured(conn: &mut sqlx::AnyConnection, tenant: &TenantId) -> ApiResult<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT service FROM service_credentials WHERE tenant_id = $1 ORDER BY service")
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_credentials)).routes(routes!(
        get_credentials,
        put_credentials,
        delete_credentials
    ))
}

async fn find(conn: &mut sqlx::AnyConnection, tenant: &TenantId, service: &str) -> ApiResult<Option<Credentials>> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT service, hints, created_at, updated_at FROM service_credentials WHERE tenant_id = $1 AND service = $2",
    )
    .bind(tenant)
    .bind(service)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(shown).transpose()
}

/// List stored credentials
///
/// Every service the tenant has credentials for, secrets masked.
#[utoipa::path(get, path = "/v1/credentials", tag = "Credentials", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<Vec<Credentials>>)))]
async fn list_credentials(auth: Auth, State(app): State<App>) -> ApiResult<Data<Vec<Credentials>>> {
    auth.require(CREDENTIALS_READ)?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT service, hints, created_at, updated_at FROM service_credentials WHERE tenant_id = $1 ORDER BY service",
    )
    .bind(auth.tenant()?)
    .fetch_all(app.db.pool())
    .await?;
    Ok(Data(rows.into_iter().map(shown).collect::<ApiResult<_>>()?))
}

/// Get a service's credentials
///
/// Masked: secrets as hints (`sk-...a1b2`), other fields as stored.
#[utoipa::path(get, path = "/v1/credentials/{service}", tag = "Credentials", security(("bearer" = [])),
    params(("service" = String, Path, description = "`openai`, `anthropic`, ..., or `custom:<name>`")),
    responses((status = 200, body = crate::http::response::Envelope<Credentials>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_credentials(
    auth: Auth,
    State(app): State<App>,
    Path(service): Path<String>,
) -> ApiResult<Data<Credentials>> {
    auth.require(CREDENTIALS_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    let found = find(&mut conn, auth.tenant()?, &service).await?;
    Ok(Data(found.ok_or_else(|| ApiError::not_found("credentials"))?))
}

/// Store a service's credentials
///
/// Replaces what is stored for the service. The body holds the service's fields (seed 000's
/// table: `openai` takes `api_key` and optionally `organization`, `dinero` takes `client_id`,
/// `client_secret` and `organization_id`, ...); `custom:<name>` takes any string fields.
/// Unknown or missing fields are 422. Answers the masked view: 201 when new, 200 when replaced.
/// Credentials for an AI provider append it to the tenant's provider priority list.
#[utoipa::path(put, path = "/v1/credentials/{service}", tag = "Credentials", security(("bearer" = [])),
    params(("service" = String, Path, description = "`openai`, `anthropic`, ..., or `custom:<name>`")),
    request_body(content = Object, description = "The service's fields"),
    responses((status = 200, body = crate::http::response::Envelope<Credentials>),
              (status = 201, body = crate::http::response::Envelope<Credentials>),
              (status = 404, body = crate::http::error::ErrorBody, description = "No such service"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn put_credentials(
    auth: Auth,
    State(app): State<App>,
    Path(service): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    auth.require(CREDENTIALS_WRITE)?;
    let tenant = auth.tenant()?;
    let spec = Service::named(&service).ok_or_else(|| {
        let names = services::SERVICES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ");
        ApiError::new(
            ErrorCode::NotFound,
            format!("`{service}` is not a service: use one of {names} or `custom:<name>`"),
        )
    })?;
    let Value::Object(given) = body else {
        return Err(ApiError::invalid("body", "must be a JSON object of the service's fields"));
    };
    let mut errors = FieldErrors::default();
    let (fields, hints) = spec.check(given, &mut errors);
    errors.finish()?;
    let now = time::to_db(&time::now());
    let _changing = app.vault_opened.changing();
    let mut tx = app.db.begin_write().await?;
    let existed = find(&mut tx, tenant, &service).await?.is_some();
    if !existed && spec.is_custom() {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM service_credentials WHERE tenant_id = $1 AND service LIKE 'custom:%'")
                .bind(tenant.as_str())
                .fetch_one(&mut *tx)
                .await?;
        if count >= CUSTOM_MAX {
            return Err(ApiError::invalid("service", format!("a tenant has at most {CUSTOM_MAX} custom services")));
        }
    }
    let sealed =
        keyring::seal(&mut tx, &app.wrap_key, tenant, KIND, &service, &Value::Object(fields).to_string()).await?;
    sqlx::query(
        "INSERT INTO service_credentials (tenant_id, service, sealed, hints, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (tenant_id, service) \
         DO UPDATE SET sealed = excluded.sealed, hints = excluded.hints, updated_at = excluded.updated_at",
    )
    .bind(tenant.as_str())
    .bind(&service)
    .bind(&sealed)
    .bind(Value::Object(hints.clone()).to_string())
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    if spec.is_ai_provider() {
        crate::ai::priority::append(&mut tx, tenant, &service).await?;
    }
    let entry = Entry {
        action: "credentials.stored",
        resource_type: "credentials",
        resource_id: &service,
        changes: json!({ "fields": hints.keys().collect::<Vec<_>>(), "replaced": existed }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let stored = find(&mut tx, tenant, &service).await?.ok_or_else(|| ApiError::internal("stored"))?;
    tx.commit().await?;
    Ok(if existed { Data(stored).into_response() } else { Created(stored).into_response() })
}

/// Delete a service's credentials
#[utoipa::path(delete, path = "/v1/credentials/{service}", tag = "Credentials", security(("bearer" = [])),
    params(("service" = String, Path, description = "`openai`, `anthropic`, ..., or `custom:<name>`")),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_credentials(
    auth: Auth,
    State(app): State<App>,
    Path(service): Path<String>,
) -> ApiResult<Data<Deleted>> {
    auth.require(CREDENTIALS_DELETE)?;
    let tenant = auth.tenant()?;
    let _changing = app.vault_opened.changing();
    let mut tx = app.db.begin_write().await?;
    remove(&mut tx, tenant, &service).await?;
    let entry = Entry {
        action: "credentials.deleted",
        resource_type: "credentials",
        resource_id: &service,
        changes: json!({}),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Deleted::new(service))
}

async fn remove(tx: &mut WriteTx, tenant: &TenantId, service: &str) -> ApiResult<()> {
    let done = sqlx::query("DELETE FROM service_credentials WHERE tenant_id = $1 AND service = $2")
        .bind(tenant)
        .bind(service)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("credentials"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_show_little() {
        assert_eq!(hint("sk-proj-abcdefghijklmnopa1b2"), "sk-...a1b2");
        assert_eq!(hint("short"), "****");
    }
}
