//! Customer public keys (seed 000's `POST/GET /v1/keys`, moved to `/v1/keys/public` because
//! seed 002 owns `/v1/keys`). A tenant uploads an RSA (2,048 bits or more) or EC P-256 public key;
//! a JWT it signs with the private half (RS256/ES256, `sub` = tenant id, `exp` at most one hour
//! ahead) is then accepted as a bearer credential. A key may demand an `aud` and an `iss`; a
//! token that carries a `jti` is accepted once (a replay within its lifetime is refused).

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
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct PublicKeyRow {
    id: String,
    tenant_id: TenantId,
    label: String,
    algorithm: String,
    key_bits: i64,
    fingerprint: String,
    pem: String,
    scopes: String,
    audience: Option<String>,
    issuer: Option<String>,
    created_at: String,
}

const COLUMNS: &str =
    "id, tenant_id, label, algorithm, key_bits, fingerprint, pem, scopes, audience, issuer, created_at";

impl TryFrom<PublicKeyRow> for PublicKey {
    type Error = ApiError;

    fn try_from(row: PublicKeyRow) -> ApiResult<PublicKey> {
        Ok(PublicKey {
            scopes: serde_json::from_str(&row.scopes)?,
            created_at: time::from_db(&row.created_at)?,
            id: row.id,
            tenant_id: row.tenant_id.into(),
            label: row.label,
            algorithm: row.algorithm,
            key_bits: row.key_bits,
            fingerprint: row.fingerprint,
            pem: row.pem,
            audience: row.audience,
            issuer: row.issuer,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadPublicKey {
    /// A PEM public key: `-----BEGIN PUBLIC KEY-----` (RSA or EC P-256) or
    /// `-----BEGIN RSA PUBLIC KEY-----`.
    pub pem: String,
    #[schema(value_type = Option<crate::http::shapes::Label>)]
    pub label: Option<String>,
    /// Scopes granted to tokens signed with this key; default `["*"]`, never wider than the uploader's.
    #[schema(value_type = Option<Vec<crate::http::shapes::Scope>>, min_items = 1, max_items = 64)]
    pub scopes: Option<Vec<String>>,
    /// Demand this `aud` of every token (1 to 255 characters).
    pub audience: Option<String>,
    /// Demand this `iss` of every token (1 to 255 characters).
    pub issuer: Option<String>,
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
    for (field, value) in [("audience", &body.audience), ("issuer", &body.issuer)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty() || v.len() > 255) {
            errors.add(field, "must be 1 to 255 characters");
        }
    }
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
        audience: body.audience.map(|v| v.trim().to_string()),
        issuer: body.issuer.map(|v| v.trim().to_string()),
        created_at: time::now(),
    };
    let mut tx = app.db.begin_write().await?;
    let inserted = sqlx::query(&format!(
        "INSERT INTO public_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&key.id)
    .bind(&key.tenant_id)
    .bind(&key.label)
    .bind(&key.algorithm)
    .bind(key.key_bits)
    .bind(&key.fingerprint)
    .bind(&key.pem)
    .bind(serde_json::to_string(&key.scopes)?)
    .bind(&key.audience)
    .bind(&key.issuer)
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
pub(crate) const LIST: ListSpec = ListSpec {
    table: "public_keys",
    columns: COLUMNS,
    sortable: &[SortField { name: "label", column: "label" }, SortField { name: "created_at", column: "created_at" }],
    fields: &[
        "id",
        "tenant_id",
        "label",
        "algorithm",
        "key_bits",
        "fingerprint",
        "pem",
        "scopes",
        "audience",
        "issuer",
        "created_at",
    ],
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
        .bind(auth.tenant()?)
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
    jti: Option<String>,
}

/// Longest `jti` kept.
const JTI_MAX_CHARS: usize = 255;

/// Accepts a token's `jti` once: its first use is kept until the token expires, and a second is
/// refused.
async fn claim_jti(app: &App, tenant: &TenantId, jti: &str, exp: i64) -> ApiResult<()> {
    if jti.is_empty() || jti.len() > JTI_MAX_CHARS {
        return Err(ApiError::unauthorized("a tenant-signed token's `jti` must be 1 to 255 characters"));
    }
    let expires_at = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(time::now);
    let mut tx = app.db.begin_write().await?;
    let claimed = sqlx::query(
        "INSERT INTO tenant_jwt_uses (tenant_id, jti, expires_at) VALUES ($1, $2, $3)          ON CONFLICT (tenant_id, jti) DO NOTHING",
    )
    .bind(tenant)
    .bind(jti)
    .bind(time::to_db(&expires_at))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if claimed == 0 {
        return Err(ApiError::unauthorized("this token was used already: a token with a `jti` is accepted once"));
    }
    Ok(())
}

/// Upkeep: forgets the ids of tokens that have expired.
pub async fn purge_used_tokens(app: &App) -> Result<(), sqlx::Error> {
    let mut tx = app.db.begin_write().await?;
    sqlx::query("DELETE FROM tenant_jwt_uses WHERE expires_at < $1")
        .bind(time::to_db(&(time::now() - chrono::Duration::minutes(5))))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
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
    type KeyRow = (String, String, String, String, Option<String>, Option<String>, Option<String>);
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT p.id, p.pem, p.scopes, t.tier, g.ip_allowlist, p.audience, p.issuer FROM public_keys p \
         JOIN tenants t ON t.id = p.tenant_id LEFT JOIN governance g ON g.tenant_id = p.tenant_id \
         WHERE p.tenant_id = $1 AND p.algorithm = $2",
    )
    .bind(&tenant_id)
    .bind(algorithm)
    .fetch_all(app.db.pool())
    .await?;
    for (key_id, pem, scopes, tier, tenant_allowlist, audience, issuer) in
        rows.iter().filter(|(id, ..)| kid.is_none_or(|kid| kid == id))
    {
        let mut validation = Validation::new(alg);
        let mut required = vec!["exp", "sub"];
        validation.sub = Some(tenant_id.clone());
        validation.leeway = 30;
        // Without a demanded audience, any `aud` is let through (as before keys could name one).
        validation.validate_aud = false;
        if let Some(audience) = audience {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
            required.push("aud");
        }
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
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
                if let Some(jti) = &data.claims.jti {
                    claim_jti(app, &TenantId::trusted(tenant_id.clone()), jti, data.claims.exp).await?;
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
