//! Access tokens (seed 000): short-lived HS256 JWTs exchanged for an API key at `POST /v1/token`,
//! rotated with `PATCH`, revoked with `DELETE`. Every use checks that neither the token's `jti`
//! nor its API key has been revoked.

use chrono::{DateTime, Utc};
use std::net::IpAddr;

use axum::extract::State;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::http::HeaderMap;
use serde_json::json;
use sqlx::{Any, Executor};

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{self, Actor, Auth, ClientIp, KeyCredential, TenantId};
use crate::http::{ApiError, ApiResult, Created, Data, Json, OptionalJson};
use crate::id::{self, prefix};
use crate::scopes::required::TOKENS_DELETE;
use crate::secrets::{self, MasterKey};
use crate::time;
use crate::{keys, tokens};

const ISSUER: &str = "plinth";

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The API key the token was issued from.
    pub sub: String,
    /// The tenant.
    pub tid: String,
    pub scopes: Vec<String>,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signing keys for access tokens, derived from the master key.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

impl TokenKeys {
    pub fn new(master: &MasterKey, ttl_secs: u64) -> Self {
        let secret = master.derive("access-token-hs256");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        TokenKeys {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            ttl_secs,
        }
    }
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

/// Verifies an access token and the key behind it.
pub async fn authenticate(app: &App, token: &str, ip: IpAddr) -> Result<Auth, auth::Refusal> {
    let claims = jsonwebtoken::decode::<Claims>(token, &app.token_keys.decoding, &app.token_keys.validation)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::unauthorized("this token has expired"),
            _ => ApiError::unauthorized("invalid token"),
        })?
        .claims;
    let key = auth::token_key(app, &claims.jti)
        .await?
        .filter(|key| key.key_id == claims.sub && key.tenant_id.as_str() == claims.tid)
        .ok_or_else(|| ApiError::unauthorized("this token or its API key has been revoked"))?;
    key.admit(ip, "token")?;
    let actor = Actor::Token { key_id: key.key_id.clone(), jti: claims.jti };
    Ok(Auth::new(actor, Some(TenantId::trusted(key.tenant_id.clone())), key.scopes.clone(), ip).with_rate(key.rate()))
}

/// An issued access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenIssued {
    /// The JWT: send it as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    pub expires_at: DateTime<Utc>,
    /// The token's id, for revocation.
    pub jti: String,
}

/// Issues a token for `key` and records its `jti`.
async fn issue<'e, E: Executor<'e, Database = Any>>(db: E, app: &App, key: &KeyCredential) -> ApiResult<TokenIssued> {
    let now = time::now();
    let ttl = app.token_keys.ttl_secs;
    let expires_at = now + chrono::Duration::seconds(ttl as i64);
    let claims = Claims {
        iss: ISSUER.into(),
        sub: key.key_id.clone(),
        tid: key.tenant_id.to_string(),
        scopes: key.scopes.to_vec(),
        jti: id::new_id(prefix::TOKEN),
        iat: now.timestamp(),
        exp: expires_at.timestamp(),
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &app.token_keys.encoding)
        .map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO issued_tokens (jti, tenant_id, key_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&claims.jti)
    .bind(&claims.tid)
    .bind(&claims.sub)
    .bind(time::to_db(&expires_at))
    .bind(time::to_db(&now))
    .execute(db)
    .await?;
    Ok(TokenIssued { token, token_type: "Bearer".into(), expires_in: ttl, expires_at, jti: claims.jti })
}

/// Revokes `jti` of `tenant`; false when there is no such live token.
async fn revoke<'e, E: Executor<'e, Database = Any>>(db: E, tenant: &TenantId, jti: &str) -> ApiResult<bool> {
    let done = sqlx::query(
        "UPDATE issued_tokens SET revoked_at = $1 WHERE jti = $2 AND tenant_id = $3 AND revoked_at IS NULL",
    )
    .bind(time::to_db(&time::now()))
    .bind(jti)
    .bind(tenant.as_str())
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

fn token_entry<'a>(action: &'a str, jti: &'a str, changes: serde_json::Value) -> Entry<'a> {
    Entry { action, resource_type: "token", resource_id: jti, changes }
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(create_token, rotate_token, revoke_token))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// An API key secret (`plk_live_...`).
    pub api_key: String,
}

/// Issue an access token
///
/// Exchanges an API key for a short-lived JWT carrying the key's tenant and scopes. Needs no
/// `Authorization` header.
#[utoipa::path(post, path = "/v1/token", tag = "Tokens",
    request_body = CreateToken,
    responses((status = 201, body = crate::http::response::Envelope<TokenIssued>),
              (status = 401, body = crate::http::error::ErrorBody, description = "Invalid, expired or revoked key")))]
async fn create_token(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<CreateToken>,
) -> ApiResult<Created<TokenIssued>> {
    let api_key = body.api_key.trim();
    if !keys::is_key_format(api_key) {
        return Err(ApiError::unauthorized("`api_key` is not an API key"));
    }
    let key = auth::api_key(&app, secrets::sha256_hex(api_key))
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or revoked API key"))?;
    key.check(ip)?;
    let who = Who {
        actor_type: "api_key",
        actor_id: Some(key.key_id.clone()),
        tenant: Some(key.tenant_id.clone()),
        ip: Some(ip.to_string()),
        user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned),
    };
    let mut tx = app.db.begin_write().await?;
    let issued = issue(&mut *tx, &app, &key).await?;
    let changes = json!({ "expires_at": issued.expires_at });
    audit::record(&mut *tx, &who, None, token_entry("token.issued", &issued.jti, changes)).await?;
    tx.commit().await?;
    Ok(Created(issued))
}

/// The token behind the request, or 400 when the request used another kind of credential.
fn current_token(auth: &Auth) -> ApiResult<(&str, &str)> {
    match &auth.actor {
        Actor::Token { key_id, jti } => Ok((key_id, jti)),
        _ => Err(ApiError::bad_request("this route needs an access token from `POST /v1/token` as the bearer")),
    }
}

/// Rotate an access token
///
/// Revokes the bearer token and issues a fresh one for the same API key.
#[utoipa::path(patch, path = "/v1/token", tag = "Tokens", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<TokenIssued>),
              (status = 400, body = crate::http::error::ErrorBody, description = "The bearer is not an access token"),
              (status = 401, body = crate::http::error::ErrorBody)))]
async fn rotate_token(auth: Auth, State(app): State<App>) -> ApiResult<Data<TokenIssued>> {
    let (key_id, jti) = current_token(&auth)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    if !revoke(&mut *tx, tenant, jti).await? {
        return Err(ApiError::unauthorized("this token has been revoked"));
    }
    let key = KeyCredential {
        key_id: key_id.to_string(),
        tenant_id: tenant.clone(),
        scopes: auth.scopes().into(),
        ip_allowlist: Vec::new(),
        expires_at: None,
        tier: Default::default(),
        rate_limit: None,
        tenant_ip_allowlist: Vec::new(),
    };
    let issued = tokens::issue(&mut *tx, &app, &key).await?;
    let changes = json!({ "replaced_by": issued.jti, "expires_at": issued.expires_at });
    audit::record(&mut *tx, &Who::from(&auth), None, token_entry("token.rotated", jti, changes)).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(issued))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeToken {
    /// Another token of the tenant to revoke (needs `tokens:delete`); default the bearer token.
    pub jti: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenRevoked {
    pub jti: String,
    pub revoked: bool,
}

/// Revoke an access token
///
/// Revokes the bearer token (logout), or the token named by `jti`.
#[utoipa::path(delete, path = "/v1/token", tag = "Tokens", security(("bearer" = [])),
    request_body(content = RevokeToken, description = "Optional"),
    responses((status = 200, body = crate::http::response::Envelope<TokenRevoked>),
              (status = 404, body = crate::http::error::ErrorBody, description = "No such live token")))]
async fn revoke_token(
    auth: Auth,
    State(app): State<App>,
    OptionalJson(body): OptionalJson<RevokeToken>,
) -> ApiResult<Data<TokenRevoked>> {
    let tenant = auth.tenant()?;
    let jti = match body.and_then(|b| b.jti) {
        Some(jti) => {
            auth.require(TOKENS_DELETE)?;
            jti
        }
        None => current_token(&auth)?.1.to_string(),
    };
    let mut tx = app.db.begin_write().await?;
    if !revoke(&mut *tx, tenant, &jti).await? {
        return Err(ApiError::not_found("token"));
    }
    audit::record(&mut *tx, &Who::from(&auth), None, token_entry("token.revoked", &jti, json!({}))).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(TokenRevoked { jti, revoked: true }))
}
