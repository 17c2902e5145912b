//! Who is calling: the `Auth` extractor turns a bearer credential (platform admin key, API key,
//! access token or tenant-signed JWT) into an actor, a tenant and scopes.

pub mod cache;
mod client_ip;
mod credential;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

pub use client_ip::client_ip;
pub use credential::{api_key, authenticate, token_key, KeyCredential};

use crate::app::App;
use crate::http::{ApiError, ApiResult, ErrorCode};
use crate::scopes::Required;
use crate::tenants::store as tenant_store;

/// The tenant a request acts on. Built only from an authenticated credential (or, for the
/// platform admin, from a tenant that exists), never from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantId(String);

impl TenantId {
    /// Wraps an id that came from the database or a verified credential.
    pub(crate) fn trusted(id: impl Into<String>) -> Self {
        TenantId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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
}

impl Actor {
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
}

impl Auth {
    pub(crate) fn new(actor: Actor, tenant: Option<TenantId>, scopes: Arc<[String]>, client_ip: IpAddr) -> Self {
        Auth { actor, tenant, scopes, client_ip }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.actor, Actor::Admin)
    }

    /// Fails with 403 `INSUFFICIENT_SCOPE`, naming the scope, unless the credential holds it.
    /// The platform admin holds every scope.
    pub fn require(&self, scope: Required) -> ApiResult<()> {
        if self.is_admin() || scope.satisfied_by_any(&self.scopes) {
            Ok(())
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
        Ok(ClientIp(client_ip(parts, &app.config.trusted_proxies)))
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(parts: &Parts) -> ApiResult<&str> {
    let header = parts
        .headers
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

fn tenant_header(parts: &Parts) -> Option<&str> {
    ["x-tenant-id", "x-workspace-id"]
        .iter()
        .find_map(|name| parts.headers.get(*name))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<App> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts.extensions.get::<Auth>() {
            return Ok(auth.clone());
        }
        let ip = client_ip(parts, &app.config.trusted_proxies);
        let credential = bearer(parts)?;
        let mut auth = authenticate(app, credential, ip).await?;
        if auth.is_admin() {
            if let Some(tenant) = tenant_header(parts) {
                let exists = tenant_store::exists(app.db.pool(), tenant).await?;
                if !exists {
                    return Err(ApiError::not_found("tenant"));
                }
                auth.tenant = Some(TenantId::trusted(tenant));
            }
        }
        if let Some(tenant) = &auth.tenant {
            app.usage.record_request(tenant.as_str(), auth.actor.key_id());
        }
        parts.extensions.insert(auth.clone());
        Ok(auth)
    }
}
