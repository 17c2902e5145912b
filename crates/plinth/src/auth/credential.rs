//! Turning a bearer credential into an `Auth`.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use jsonwebtoken::Algorithm;

use super::{Actor, Auth, TenantId};
use crate::app::App;
use crate::audit::RefusedCredential;
use crate::http::{ApiError, ApiResult};
use crate::ratelimit::RateLimit;
use crate::tenants::model::Tier;
use crate::time::{self, Timestamp};
use crate::{keys, public_keys, secrets, tokens};

/// What authenticating with an API key (directly or through a token) needs of the key.
#[derive(Debug, Clone)]
pub struct KeyCredential {
    pub key_id: String,
    pub tenant_id: TenantId,
    pub scopes: Arc<[String]>,
    pub ip_allowlist: Vec<IpNet>,
    pub expires_at: Option<Timestamp>,
    /// The key's tier, else its tenant's: it sets the rate limit.
    pub tier: Tier,
    /// Requests per minute overriding the tier.
    pub rate_limit: Option<i64>,
    /// The tenant's own allowlist (governance), for every credential of the tenant.
    pub tenant_ip_allowlist: Vec<IpNet>,
}

impl KeyCredential {
    /// The bucket requests made with this key, or tokens issued from it, draw from.
    pub fn rate(&self) -> RateLimit {
        RateLimit::for_credential(format!("key:{}", self.key_id), self.tier, self.rate_limit)
    }

    /// Refuses an expired key and a client outside the key's IP allowlist.
    pub fn check(&self, ip: IpAddr) -> ApiResult<()> {
        if self.expires_at.is_some_and(|at| at <= time::now()) {
            return Err(ApiError::unauthorized("this API key has expired"));
        }
        if !self.ip_allowlist.is_empty() && !self.ip_allowlist.iter().any(|net| net.contains(&ip)) {
            return Err(ApiError::unauthorized("this API key does not accept requests from your address"));
        }
        if !allowed_by_tenant(&self.tenant_ip_allowlist, ip) {
            return Err(ApiError::unauthorized("this tenant does not accept requests from your address"));
        }
        Ok(())
    }
}

/// True when the tenant-wide allowlist (empty: anywhere) admits `ip`.
pub fn allowed_by_tenant(allowlist: &[IpNet], ip: IpAddr) -> bool {
    allowlist.is_empty() || allowlist.iter().any(|net| net.contains(&ip))
}

/// Reads a stored allowlist (JSON array of CIDRs); absent means anywhere.
pub fn parse_stored_allowlist(json: Option<&str>) -> Vec<IpNet> {
    json.and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
        .map(|list| list.iter().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// A refused credential: the answer, and who it was when the server recognised it.
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    pub known: Option<Box<RefusedCredential>>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal { error, known: None }
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(error: sqlx::Error) -> Self {
        Refusal { error: error.into(), known: None }
    }
}

impl KeyCredential {
    /// `check`, naming the key when it refuses.
    pub fn admit(&self, ip: IpAddr, actor_type: &'static str) -> Result<(), Refusal> {
        self.check(ip).map_err(|error| Refusal {
            known: Some(Box::new(RefusedCredential {
                tenant_id: self.tenant_id.clone(),
                actor_type,
                actor_id: self.key_id.clone(),
                reason: error.message.clone(),
            })),
            error,
        })
    }
}

/// Identifies the caller behind `credential`, arriving from `ip`.
pub async fn authenticate(app: &App, credential: &str, ip: IpAddr) -> Result<Auth, Refusal> {
    let hash = secrets::sha256_hex(credential);
    if secrets::constant_time_eq(hash.as_bytes(), app.admin_key_hash.as_bytes()) {
        return Ok(Auth::new(Actor::Admin, None, Arc::from(vec!["*".to_string()]), ip));
    }
    if keys::is_key_format(credential) {
        let key = api_key(app, hash).await?.ok_or_else(|| ApiError::unauthorized("invalid or revoked API key"))?;
        key.admit(ip, "api_key")?;
        let actor = Actor::ApiKey { key_id: key.key_id.clone() };
        let tenant = Some(TenantId::trusted(key.tenant_id.clone()));
        return Ok(Auth::new(actor, tenant, key.scopes.clone(), ip).with_rate(key.rate()));
    }
    if credential.bytes().filter(|&b| b == b'.').count() == 2 {
        let header =
            jsonwebtoken::decode_header(credential).map_err(|_| ApiError::unauthorized("malformed bearer token"))?;
        return match header.alg {
            Algorithm::HS256 if header.kid.as_deref() == Some(crate::users::sessions::KID) => {
                crate::users::sessions::authenticate(app, credential, ip).await
            }
            Algorithm::HS256 => tokens::authenticate(app, credential, ip).await,
            Algorithm::RS256 | Algorithm::ES256 => {
                Ok(public_keys::authenticate(app, credential, header.alg, header.kid.as_deref(), ip).await?)
            }
            _ => Err(ApiError::unauthorized("unsupported token algorithm: use HS256 tokens, RS256 or ES256").into()),
        };
    }
    Err(ApiError::unauthorized("unrecognised credential").into())
}

/// The live key whose secret hashes to `hash`, from the cache or the database.
pub async fn api_key(app: &App, hash: String) -> ApiResult<Option<Arc<KeyCredential>>> {
    if let Some(key) = app.credentials.get(&hash) {
        return Ok(Some(key));
    }
    let generation = app.credentials.generation();
    let Some(key) = keys::store::find_credential(app.db.pool(), &hash).await? else { return Ok(None) };
    let key = Arc::new(key);
    app.credentials.insert(hash, key.clone(), generation);
    Ok(Some(key))
}

/// The live key behind the live token `jti`, from the cache or the database.
pub async fn token_key(app: &App, jti: &str) -> ApiResult<Option<Arc<KeyCredential>>> {
    let cache_key = format!("jti:{jti}");
    if let Some(key) = app.credentials.get(&cache_key) {
        return Ok(Some(key));
    }
    let generation = app.credentials.generation();
    let Some(key) = keys::store::find_token_credential(app.db.pool(), jti).await? else { return Ok(None) };
    let key = Arc::new(key);
    app.credentials.insert(cache_key, key.clone(), generation);
    Ok(Some(key))
}
