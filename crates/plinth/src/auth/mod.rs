//! Who is calling: the `Auth` extractor turns a bearer credential (platform admin key, API key,
//! access token or tenant-signed JWT) into an actor, a tenant and scopes.

pub mod cache;
mod client_ip;
pub mod credential;
pub mod standing;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

pub use client_ip::client_ip;
pub use credential::{
    allowed_by_tenant, api_key, authenticate, parse_stored_allowlist, token_key, KeyCredential, Refusal,
};

use crate::app::App;
use crate::http::{ApiError, ApiResult, ErrorCode};
use crate::ratelimit::RateLimit;
use crate::scopes::Required;
use crate::tenants::store as tenant_store;

pub use crate::id::TenantId;

/// The credential behind a request.
#[derive(Debug, Clone)]
pub enum Actor {
    /// The platform admin key.
    Admin,
    /// An API key, used directly.
    ApiKey { key_id: String },
    /// An access token issued by `POST /v1/token` from an API key.
    Token { key_id: String, jti: String },
    /// A JWT the tenant signed with the private half of an uploaded public key.
    TenantJwt { public_key_id: String },
    /// A signed-in end user's access token.
    User { user_id: String, session_id: String, role: String },
}

impl Actor {
    /// Who acts, as authorship is recorded: a key and the tokens issued from it are one
    /// (`api_key`), then `user`, `tenant_jwt` or `admin`, with the id.
    pub fn principal(&self) -> (&'static str, Option<String>) {
        match self {
            Actor::Admin => ("admin", None),
            Actor::ApiKey { key_id } | Actor::Token { key_id, .. } => ("api_key", Some(key_id.clone())),
            Actor::TenantJwt { public_key_id } => ("tenant_jwt", Some(public_key_id.clone())),
            Actor::User { user_id, .. } => ("user", Some(user_id.clone())),
        }
    }

    /// The API key behind the request, when there is one.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Actor::ApiKey { key_id } | Actor::Token { key_id, .. } => Some(key_id),
            _ => None,
        }
    }
}

/// An authenticated request.
#[derive(Debug, Clone)]
pub struct Auth {
    pub actor: Actor,
    tenant: Option<TenantId>,
    scopes: Arc<[String]>,
    pub client_ip: IpAddr,
    /// The bucket this credential's requests draw from; none for the platform admin.
    pub rate: Option<RateLimit>,
    pub user_agent: Option<String>,
    /// An end user's roles and what they restrict (their permissions are the scopes); none for
    /// keys and the platform admin, which row policies do not bind.
    pub access: Option<Arc<crate::authz::UserAccess>>,
}

impl Auth {
    pub(crate) fn new(actor: Actor, tenant: Option<TenantId>, scopes: Arc<[String]>, client_ip: IpAddr) -> Self {
        Auth { actor, tenant, scopes, client_ip, rate: None, user_agent: None, access: None }
    }

    pub(crate) fn with_access(mut self, access: Arc<crate::authz::UserAccess>) -> Self {
        self.access = Some(access);
        self
    }

    pub(crate) fn with_rate(mut self, rate: RateLimit) -> Self {
        self.rate = Some(rate);
        self
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.actor, Actor::Admin)
    }

    /// Fails with 403 `INSUFFICIENT_SCOPE`, naming the scope, unless the credential holds it.
    /// The platform admin holds every scope.
    pub fn require(&self, scope: Required) -> ApiResult<()> {
        if self.access.is_some() && crate::authz::is_service_resource(scope.resource) {
            Err(ApiError::forbidden(format!(
                "`{}` is for API keys: end users cannot use this route, whatever their roles grant",
                scope.name()
            )))
        } else if self.is_admin() || scope.satisfied_by_any(&self.scopes) {
            Ok(())
        } else if self.access.is_some() {
            Err(ApiError::new(
                ErrorCode::InsufficientScope,
                format!("your roles do not grant the permission `{}`", scope.name()),
            ))
        } else {
            Err(ApiError::new(
                ErrorCode::InsufficientScope,
                format!("this credential lacks the scope `{}`", scope.name()),
            ))
        }
    }

    /// The scopes the credential holds (`*` for the platform admin).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The tenant the request acts on; the platform admin names one with `X-Tenant-ID`.
    pub fn tenant(&self) -> ApiResult<&TenantId> {
        self.tenant.as_ref().ok_or_else(|| {
            ApiError::bad_request("the platform admin credential needs an `X-Tenant-ID` header for this route")
        })
    }

    /// Fails with 403 unless this is the platform admin credential.
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this route needs the platform admin credential"))
        }
    }
}

/// The client's address, for routes that authenticate by other means.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<App> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.headers, &parts.extensions, &app.config.trusted_proxies)))
    }
}

/// The bearer credential of a request.
fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <credential>` header"))?;
    let value = header.to_str().map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let (scheme, credential) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <credential>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(ApiError::unauthorized("the Authorization header must be `Bearer <credential>`"));
    }
    Ok(credential.trim())
}

fn tenant_header(headers: &HeaderMap) -> Option<&str> {
    ["x-tenant-id", "x-workspace-id"]
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Why a request's credential was refused, kept for the handler that needs one.
#[derive(Debug, Clone)]
struct Refused(ApiError);

/// Marks a request whose credential was refused (for rate limiting by address).
#[derive(Debug, Clone, Copy)]
pub struct CredentialRefused;

async fn identify_request(app: &App, credential: &str, ip: IpAddr, tenant: Option<&str>) -> Result<Auth, Refusal> {
    let mut auth = authenticate(app, credential, ip).await?;
    if auth.is_admin() {
        if let Some(tenant) = tenant {
            if !tenant_store::exists(app.db.pool(), tenant).await? {
                return Err(ApiError::not_found("tenant").into());
            }
            auth.tenant = Some(TenantId::trusted(tenant));
        }
    }
    Ok(auth)
}

/// Streaming routes a browser opens without headers (`WebSocket`, `EventSource`).
const QUERY_CREDENTIAL_PATHS: &[&str] = &["/v1/realtime", "/events/stream", "/v1/events/stream"];

/// The credential a request carries: its bearer header, or on a streaming route `?token=`.
pub fn credential_of(request_headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    if let Ok(credential) = bearer(request_headers) {
        return Some(credential.to_string());
    }
    if !QUERY_CREDENTIAL_PATHS.contains(&uri.path()) {
        return None;
    }
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// The `?token=` credential of a streaming route, which cannot carry `Authorization` from a
/// browser.
fn query_credential(request: &Request) -> Option<String> {
    credential_of(&HeaderMap::new(), request.uri())
}

/// Middleware: identifies the caller of every request that carries `Authorization`, before the
/// shared machinery (rate limits) and the handler run. A refused credential is kept, and
/// answered as 401 by any route that needs a caller.
pub async fn identify(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let query_token = if request.headers().contains_key(axum::http::header::AUTHORIZATION) {
        None
    } else {
        query_credential(&request)
    };
    if request.headers().contains_key(axum::http::header::AUTHORIZATION) || query_token.is_some() {
        let ip = client_ip(request.headers(), request.extensions(), &app.config.trusted_proxies);
        let tenant = tenant_header(request.headers()).map(str::to_owned);
        let user_agent = request.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let credential = match query_token {
            Some(token) => Ok(token),
            None => bearer(request.headers()).map(str::to_owned),
        };
        let outcome = match credential {
            Ok(credential) => identify_request(&app, &credential, ip, tenant.as_deref()).await,
            Err(error) => Err(error.into()),
        };
        match outcome {
            Ok(mut auth) => {
                auth.user_agent = user_agent;
                request.extensions_mut().insert(auth);
            }
            Err(Refusal { error, known }) => {
                request.extensions_mut().insert(Refused(error));
                request.extensions_mut().insert(CredentialRefused);
                if let Some(known) = known {
                    request.extensions_mut().insert(*known);
                }
            }
        }
    }
    next.run(request).await
}

impl FromRequestParts<App> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _app: &App) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts.extensions.get::<Auth>() {
            return Ok(auth.clone());
        }
        if let Some(Refused(error)) = parts.extensions.get::<Refused>() {
            return Err(error.clone());
        }
        Err(bearer(&parts.headers).err().unwrap_or_else(|| ApiError::unauthorized("missing credential")))
    }
}
