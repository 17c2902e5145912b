//! Customer public keys (seed 000's `POST/GET /v1/keys`, moved to `/v1/keys/public` because
//! seed 002 owns `/v1/keys`). A tenant uploads an RSA (2,048 bits or more) or EC P-256 public key;
//! a JWT it signs with the private half (RS256/ES256, `sub` = tenant id, `exp` at most one hour
//! ahead) is then accepted as a bearer credential.

pub mod pem;

use chrono::{DateTime, Utc};
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use serde_json::{json, Value};

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Actor, Auth, TenantId};
use crate::db::is_unique_violation;
use crate::http::error::FieldErrors;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, ListParams, Page, Path};
use crate::id::{self, prefix};
use crate::keys::model::validate_scopes;
use crate::limits::{PUBLIC_KEYS_MAX, TENANT_JWT_MAX_LIFETIME_SECS};
use crate::ratelimit::RateLimit;
use crate::scopes::required::{PUBLIC_KEYS_DELETE, PUBLIC_KEYS_READ, PUBLIC_KEYS_WRITE};
use crate::tenants::model::{validate_name, Tier};
use crate::time;

/// An uploaded public key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PublicKey {
    #[schema(example = "pubkey_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: String,
    pub label: String,
    /// `RS256` or `ES256`: what tokens signed with the private half must use.
    pub algorithm: String,
    pub key_bits: i64,
    /// Hex SHA-256 of the DER-encoded key.
    pub fingerprint: String,
    pub pem: String,
    /// Scopes granted to tokens signed with this key.
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct PublicKeyRow {
    id: String,
    tenant_id: String,
    label: String,
    algorithm: String,
    key_bits: i64,
    fingerprint: String,
    pem: String,
    scopes: String,
    created_at: String,
}

const COLUMNS: &str = "id, tenant_id, label, algorithm, key_bits, fingerprint, pem, scopes, created_at";

impl TryFrom<PublicKeyRow> for PublicKey {
    type Error = ApiError;

    fn try_from(row: PublicKeyRow) -> ApiResult<PublicKey> {
        Ok(PublicKey {
            scopes: serde_json::from_str(&row.scopes)?,
            created_at: time::from_db(&row.created_at)?,
            id: row.id,
            tenant_id: row.tenant_id,
            label: row.label,
            algorithm: row.algorithm,
            key_bits: row.key_bits,
            fingerprint: row.fingerprint,
            pem: row.pem,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadPublicKey {
    /// A PEM public key: `-----BEGIN PUBLIC KEY-----` (RSA or EC P-256) or
    /// `-----BEGIN RSA PUBLIC KEY-----`.
    pub pem: String,
    pub label: Option<String>,
    /// Scopes granted to tokens signed with this key; default `["*"]`, never wider than the uploader's.
    pub scopes: Option<Vec<String>>,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_public_keys, upload_public_key))
        .routes(routes!(get_public_key, delete_public_key))
}

async fn fetch(app: &App, tenant: &TenantId, id: &str) -> ApiResult<PublicKey> {
    let row: Option<PublicKeyRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM public_keys WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant.as_str())
            .fetch_optional(app.db.pool())
            .await?;
    row.map(PublicKey::try_from).transpose()?.ok_or_else(|| ApiError::not_found("public key"))
}

async fn count(app: &App, tenant: &TenantId) -> ApiResult<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM public_keys WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(app.db.pool())
        .await?;
    Ok(n)
}

/// Upload a public key
///
/// RSA keys need at least 2,048 bits; EC keys must be on P-256. At most 10 per tenant.
#[utoipa::path(post, path = "/v1/keys/public", tag = "Public keys", security(("bearer" = [])),
    request_body = UploadPublicKey,
    responses((status = 201, body = crate::http::response::Envelope<PublicKey>),
              (status = 409, body = crate::http::error::ErrorBody, description = "Already uploaded"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn upload_public_key(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<UploadPublicKey>,
) -> ApiResult<Created<PublicKey>> {
    auth.require(PUBLIC_KEYS_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    let label = validate_name("label", body.label.as_deref().unwrap_or("Public key"), &mut errors);
    let scopes = validate_scopes("scopes", &body.scopes.unwrap_or_else(|| vec!["*".into()]), &auth, &mut errors);
    let parsed = pem::parse(&body.pem).map_err(|problem| errors.add("pem", problem)).ok();
    errors.finish()?;
    let Some(parsed) = parsed else { return Err(ApiError::invalid("pem", "unreadable")) };
    if count(&app, tenant).await? >= PUBLIC_KEYS_MAX {
        return Err(ApiError::invalid("pem", format!("a tenant may hold at most {PUBLIC_KEYS_MAX} public keys")));
    }
    let key = PublicKey {
        id: id::new_id(prefix::PUBLIC_KEY),
        tenant_id: tenant.as_str().to_string(),
        label,
        algorithm: parsed.algorithm.to_string(),
        key_bits: parsed.bits as i64,
        fingerprint: parsed.fingerprint,
        pem: body.pem.trim().to_string(),
        scopes,
        created_at: time::now(),
    };
    let mut tx = app.db.begin_write().await?;
    let inserted =
        sqlx::query(&format!("INSERT INTO public_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(&key.id)
            .bind(&key.tenant_id)
            .bind(&key.label)
            .bind(&key.algorithm)
            .bind(key.key_bits)
            .bind(&key.fingerprint)
            .bind(&key.pem)
            .bind(serde_json::to_string(&key.scopes)?)
            .bind(time::to_db(&key.created_at))
            .execute(&mut *tx)
            .await;
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => {
            return Err(ApiError::conflict("this public key is already uploaded"))
        }
        Err(error) => return Err(error.into()),
    }
    let entry = Entry {
        action: "public_key.created",
        resource_type: "public_key",
        resource_id: &key.id,
        changes: json!({ "label": key.label, "algorithm": key.algorithm, "fingerprint": key.fingerprint, "scopes": key.scopes }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Created(key))
}

/// List public keys
#[utoipa::path(get, path = "/v1/keys/public", tag = "Public keys", security(("bearer" = [])),
    params(crate::http::list::ListQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<PublicKey>>)))]
async fn list_public_keys(auth: Auth, State(app): State<App>, params: ListParams) -> ApiResult<Data<Page<Value>>> {
    auth.require(PUBLIC_KEYS_READ)?;
    let filter = Filter::new().eq("tenant_id", auth.tenant()?.as_str());
    let page: Page<PublicKeyRow> = list::fetch(&app.db, &LIST, filter, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(PublicKey::try_from)?)?))
}

/// How public key lists are stored and what they offer.
const LIST: ListSpec = ListSpec {
    table: "public_keys",
    columns: COLUMNS,
    sortable: &[SortField { name: "label", column: "label" }, SortField { name: "created_at", column: "created_at" }],
    fields: &["id", "tenant_id", "label", "algorithm", "key_bits", "fingerprint", "pem", "scopes", "created_at"],
    updated_at: false,
};

/// Get a public key
#[utoipa::path(get, path = "/v1/keys/public/{public_key_id}", tag = "Public keys", security(("bearer" = [])),
    params(("public_key_id" = String, Path, description = "The public key id (`pubkey_...`)")),
    responses((status = 200, body = crate::http::response::Envelope<PublicKey>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_public_key(auth: Auth, State(app): State<App>, Path(id): Path<String>) -> ApiResult<Data<PublicKey>> {
    auth.require(PUBLIC_KEYS_READ)?;
    Ok(Data(fetch(&app, auth.tenant()?, &id).await?))
}

/// Delete a public key
///
/// Tokens signed with its private half stop working at once.
#[utoipa::path(delete, path = "/v1/keys/public/{public_key_id}", tag = "Public keys", security(("bearer" = [])),
    params(("public_key_id" = String, Path, description = "The public key id")),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_public_key(auth: Auth, State(app): State<App>, Path(id): Path<String>) -> ApiResult<Data<Deleted>> {
    auth.require(PUBLIC_KEYS_DELETE)?;
    let mut tx = app.db.begin_write().await?;
    let done = sqlx::query("DELETE FROM public_keys WHERE id = $1 AND tenant_id = $2")
        .bind(&id)
        .bind(auth.tenant()?.as_str())
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("public key"));
    }
    let entry =
        Entry { action: "public_key.deleted", resource_type: "public_key", resource_id: &id, changes: json!({}) };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Deleted::new(id))
}

#[derive(Debug, Deserialize)]
struct UnverifiedSubject {
    sub: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TenantClaims {
    exp: i64,
}

fn unverified_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<UnverifiedSubject>(&bytes).ok()?.sub
}

/// Verifies a JWT the tenant signed with one of its uploaded keys.
pub async fn authenticate(app: &App, token: &str, alg: Algorithm, kid: Option<&str>, ip: IpAddr) -> ApiResult<Auth> {
    let unauthorized = || ApiError::unauthorized("invalid tenant-signed token");
    let tenant_id = unverified_subject(token).ok_or_else(unauthorized)?;
    let algorithm = match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => return Err(unauthorized()),
    };
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT p.id, p.pem, p.scopes, t.tier, g.ip_allowlist FROM public_keys p \
         JOIN tenants t ON t.id = p.tenant_id LEFT JOIN governance g ON g.tenant_id = p.tenant_id \
         WHERE p.tenant_id = $1 AND p.algorithm = $2",
    )
    .bind(&tenant_id)
    .bind(algorithm)
    .fetch_all(app.db.pool())
    .await?;
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.sub = Some(tenant_id.clone());
    validation.leeway = 30;
    for (key_id, pem, scopes, tier, tenant_allowlist) in rows.iter().filter(|(id, ..)| kid.is_none_or(|kid| kid == id))
    {
        let decoding = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
            _ => DecodingKey::from_ec_pem(pem.as_bytes()),
        };
        let Ok(decoding) = decoding else { continue };
        match jsonwebtoken::decode::<TenantClaims>(token, &decoding, &validation) {
            Ok(data) => {
                if data.claims.exp > time::now().timestamp() + TENANT_JWT_MAX_LIFETIME_SECS + validation.leeway as i64 {
                    return Err(ApiError::unauthorized("a tenant-signed token's `exp` may be at most one hour ahead"));
                }
                let scopes: Vec<String> = serde_json::from_str(scopes)?;
                if !crate::auth::allowed_by_tenant(
                    &crate::auth::parse_stored_allowlist(tenant_allowlist.as_deref()),
                    ip,
                ) {
                    return Err(ApiError::unauthorized("this tenant does not accept requests from your address"));
                }
                let actor = Actor::TenantJwt { public_key_id: key_id.clone() };
                let tier = Tier::parse(tier).unwrap_or_default();
                let rate = RateLimit::for_credential(format!("pubkey:{key_id}"), tier, None);
                return Ok(Auth::new(actor, Some(TenantId::trusted(tenant_id)), Arc::from(scopes), ip).with_rate(rate));
            }
            Err(error) if matches!(error.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                return Err(ApiError::unauthorized("this token has expired"));
            }
            Err(_) => continue,
        }
    }
    Err(unauthorized())
}
