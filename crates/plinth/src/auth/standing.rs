//! The standing of a request, kept for work that runs later on its behalf (a job): who acted.
//! Resuming it authenticates that credential again, as a new request would: a key revoked or
//! expired, a token revoked or past its expiry, a public key removed, a session ended or a user
//! banned meanwhile stops the work, and the scopes, roles and row policies are the ones the
//! credential holds when it runs, not when the work was asked for.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Actor, Auth};
use crate::app::App;
use crate::http::{ApiError, ApiResult};
use crate::id::TenantId;
use crate::time;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Standing {
    Admin,
    /// An API key, or a token issued from one (`jti`).
    Key {
        key_id: String,
        jti: Option<String>,
    },
    /// A JWT signed with an uploaded public key.
    TenantJwt {
        public_key_id: String,
    },
    /// An end user's session.
    User {
        user_id: String,
        session_id: String,
    },
}

impl Standing {
    /// What `auth` stands on.
    pub fn of(auth: &Auth) -> Standing {
        match &auth.actor {
            Actor::Admin => Standing::Admin,
            Actor::ApiKey { key_id } => Standing::Key { key_id: key_id.clone(), jti: None },
            Actor::Token { key_id, jti } => Standing::Key { key_id: key_id.clone(), jti: Some(jti.clone()) },
            Actor::TenantJwt { public_key_id } => Standing::TenantJwt { public_key_id: public_key_id.clone() },
            Actor::User { user_id, session_id, .. } => {
                Standing::User { user_id: user_id.clone(), session_id: session_id.clone() }
            }
        }
    }

    /// The authority to act on `tenant` now, if the credential still holds: 401 when it does not.
    pub async fn resume(&self, app: &App, tenant: &TenantId) -> ApiResult<Auth> {
        let nowhere = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let tenant_of = Some(tenant.clone());
        match self {
            Standing::Admin => Ok(Auth::new(Actor::Admin, tenant_of, Arc::from(vec!["*".to_string()]), nowhere)),
            Standing::Key { key_id, jti: None } => {
                let key = crate::keys::store::get(app.db.pool(), tenant, key_id).await?;
                let key = key
                    .filter(|key| key.expires_at.is_none_or(|at| at > time::now()))
                    .ok_or_else(|| ApiError::unauthorized("the API key behind this work was revoked or expired"))?;
                let actor = Actor::ApiKey { key_id: key_id.clone() };
                Ok(Auth::new(actor, tenant_of, Arc::from(key.scopes), nowhere))
            }
            Standing::Key { key_id, jti: Some(jti) } => {
                let expires: Option<(String,)> =
                    sqlx::query_as("SELECT expires_at FROM issued_tokens WHERE jti = $1 AND tenant_id = $2")
                        .bind(jti)
                        .bind(tenant.as_str())
                        .fetch_optional(app.db.pool())
                        .await?;
                let unexpired = match expires {
                    Some((at,)) => time::from_db(&at)? > time::now(),
                    None => false,
                };
                let key = crate::keys::store::find_token_credential(app.db.pool(), jti).await?;
                let key = key
                    .filter(|key| unexpired && key.key_id == *key_id && key.tenant_id == *tenant)
                    .filter(|key| key.expires_at.is_none_or(|at| at > time::now()))
                    .ok_or_else(|| ApiError::unauthorized("the token behind this work was revoked or expired"))?;
                let actor = Actor::Token { key_id: key_id.clone(), jti: jti.clone() };
                Ok(Auth::new(actor, tenant_of, key.scopes.clone(), nowhere))
            }
            Standing::TenantJwt { public_key_id } => {
                let found: Option<(String,)> =
                    sqlx::query_as("SELECT scopes FROM public_keys WHERE id = $1 AND tenant_id = $2")
                        .bind(public_key_id)
                        .bind(tenant.as_str())
                        .fetch_optional(app.db.pool())
                        .await?;
                let (scopes,) =
                    found.ok_or_else(|| ApiError::unauthorized("the public key behind this work was removed"))?;
                let scopes: Vec<String> = serde_json::from_str(&scopes)?;
                let actor = Actor::TenantJwt { public_key_id: public_key_id.clone() };
                Ok(Auth::new(actor, tenant_of, Arc::from(scopes), nowhere))
            }
            Standing::User { user_id, session_id } => {
                crate::users::sessions::resume(app, tenant, user_id, session_id, nowhere)
                    .await
                    .map_err(|refusal| refusal.error)
            }
        }
    }
}
