//! The standing of a request, kept for work that runs later on its behalf (a job): who acted and
//! with which scopes. Resuming it checks the credential again, as a new request would: a key
//! revoked, a session ended or a user banned meanwhile stops the work, and an end user's roles and
//! row policies are the ones they hold when it runs.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Actor, Auth};
use crate::app::App;
use crate::http::{ApiError, ApiResult};
use crate::id::TenantId;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Standing {
    Admin,
    /// An API key, or a token issued from one (`jti`), with the scopes the credential held.
    Key {
        key_id: String,
        jti: Option<String>,
        scopes: Vec<String>,
    },
    /// A JWT signed with an uploaded public key, with its scopes.
    TenantJwt {
        public_key_id: String,
        scopes: Vec<String>,
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
        let scopes = auth.scopes().to_vec();
        match &auth.actor {
            Actor::Admin => Standing::Admin,
            Actor::ApiKey { key_id } => Standing::Key { key_id: key_id.clone(), jti: None, scopes },
            Actor::Token { key_id, jti } => Standing::Key { key_id: key_id.clone(), jti: Some(jti.clone()), scopes },
            Actor::TenantJwt { public_key_id } => Standing::TenantJwt { public_key_id: public_key_id.clone(), scopes },
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
            Standing::Key { key_id, jti, scopes } => {
                let key = crate::keys::store::get(app.db.pool(), tenant, key_id).await?;
                let mut live = key.is_some_and(|key| key.expires_at.is_none_or(|at| at > crate::time::now()));
                if let Some(jti) = jti {
                    let token = crate::keys::store::find_token_credential(app.db.pool(), jti).await?;
                    live &= token.is_some_and(|token| token.key_id == *key_id);
                }
                if !live {
                    return Err(ApiError::unauthorized("the API key behind this work was revoked or expired"));
                }
                let actor = match jti {
                    Some(jti) => Actor::Token { key_id: key_id.clone(), jti: jti.clone() },
                    None => Actor::ApiKey { key_id: key_id.clone() },
                };
                Ok(Auth::new(actor, tenant_of, Arc::from(scopes.clone()), nowhere))
            }
            Standing::TenantJwt { public_key_id, scopes } => {
                let found: Option<(String,)> =
                    sqlx::query_as("SELECT id FROM public_keys WHERE id = $1 AND tenant_id = $2")
                        .bind(public_key_id)
                        .bind(tenant.as_str())
                        .fetch_optional(app.db.pool())
                        .await?;
                if found.is_none() {
                    return Err(ApiError::unauthorized("the public key behind this work was removed"));
                }
                let actor = Actor::TenantJwt { public_key_id: public_key_id.clone() };
                Ok(Auth::new(actor, tenant_of, Arc::from(scopes.clone()), nowhere))
            }
            Standing::User { user_id, session_id } => {
                crate::users::sessions::resume(app, tenant, user_id, session_id, nowhere)
                    .await
                    .map_err(|refusal| refusal.error)
            }
        }
    }
}
