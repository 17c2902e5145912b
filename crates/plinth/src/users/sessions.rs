//! Sessions and their tokens. Signing in opens a session (device, address, lifetime from
//! governance's `session_duration_secs`) and answers a short-lived HS256 access token naming it
//! (`kid: user`, `role`, `sub`, `tid`, `sid`) and an opaque refresh token, stored hashed. A
//! refresh token is used once: using it issues the next, and presenting a used one again ends
//! the whole session. Every request with an access token checks that its session is live and
//! its user not banned, so ending a session (or banning) holds from the next request on.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{User, UserRow};
use crate::app::App;
use crate::auth::{self, Actor, Auth, TenantId};
use crate::db::WriteTx;
use crate::http::{ApiError, ApiResult};
use crate::id::{self, prefix};
use crate::ratelimit::RateLimit;
use crate::secrets::{self, MasterKey};
use crate::tenants::model::Tier;
use crate::time;

const ISSUER: &str = "plinth";
/// The `kid` of user access tokens, which tells them from API-key tokens.
pub const KID: &str = "user";
/// How often a session's `last_active_at` is written, at most.
const ACTIVITY_EVERY_SECS: i64 = 60;

/// The claims of a user's access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserClaims {
    pub iss: String,
    pub aud: String,
    /// The user.
    pub sub: String,
    /// The tenant.
    pub tid: String,
    /// The session.
    pub sid: String,
    pub role: String,
    /// Every role the user held when the token was issued (inherited ones included). For
    /// clients: requests are checked against the roles held at that moment.
    #[serde(default)]
    pub roles: Vec<String>,
    /// `aal1`, or `aal2` after a second factor.
    pub aal: String,
    pub is_anonymous: bool,
    pub iat: i64,
    pub exp: i64,
}

/// Signing keys for user access tokens, derived from the master key (apart from API-key tokens').
pub struct UserTokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_secs: u64,
}

impl UserTokenKeys {
    pub fn new(master: &MasterKey, ttl_secs: u64) -> Self {
        let secret = master.derive("user-access-token-hs256");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&["authenticated"]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.leeway = 5;
        UserTokenKeys {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            ttl_secs,
        }
    }
}

impl std::fmt::Debug for UserTokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTokenKeys").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

/// A signed-in session's tokens, as seed 002 answers them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    /// The JWT: `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Opaque, single use: trade it at `POST /v1/auth/refresh` for the next pair.
    pub refresh_token: String,
    /// `bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub expires_at: DateTime<Utc>,
    pub session_id: String,
    pub user: User,
}

/// Where a sign-in came from.
#[derive(Debug, Clone)]
pub struct Device {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
}

/// A new refresh token and its stored hash.
fn refresh_token() -> (String, String) {
    let token = format!("rt_{}", secrets::random_alphanumeric(43));
    let hash = secrets::sha256_hex(&token);
    (token, hash)
}

fn access_token(
    app: &App,
    user: &UserRow,
    roles: Vec<String>,
    session: &str,
    aal: &str,
    session_ends: DateTime<Utc>,
) -> ApiResult<(String, DateTime<Utc>)> {
    let now = time::now();
    let expires_at = (now + chrono::Duration::seconds(app.user_tokens.ttl_secs as i64)).min(session_ends);
    let claims = UserClaims {
        iss: ISSUER.into(),
        aud: "authenticated".into(),
        sub: user.id.clone(),
        tid: user.tenant_id.to_string(),
        sid: session.to_string(),
        role: user.role.clone(),
        roles,
        aal: aal.to_string(),
        is_anonymous: user.anonymous != 0,
        iat: now.timestamp(),
        exp: expires_at.timestamp(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(KID.into());
    let token = jsonwebtoken::encode(&header, &claims, &app.user_tokens.encoding).map_err(ApiError::internal)?;
    Ok((token, expires_at))
}

/// Opens a session for `user` in `tx` and answers its first tokens; marks the sign-in.
pub async fn open(app: &App, tx: &mut WriteTx, user: &UserRow, device: &Device, aal: &str) -> ApiResult<Tokens> {
    let policy = crate::governance::load(&mut **tx, &TenantId::trusted(user.tenant_id.clone())).await?;
    let now = time::now();
    let ends = now + chrono::Duration::seconds(policy.session_duration_secs);
    let session = id::new_id(prefix::SESSION);
    sqlx::query(
        "INSERT INTO auth_sessions (id, tenant_id, user_id, ip, user_agent, aal, created_at, last_active_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
    )
    .bind(&session)
    .bind(&user.tenant_id)
    .bind(&user.id)
    .bind(device.ip.to_string())
    .bind(device.user_agent.as_deref().map(|ua| ua.chars().take(512).collect::<String>()))
    .bind(aal)
    .bind(time::to_db(&now))
    .bind(time::to_db(&ends))
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE users SET last_sign_in_at = $1 WHERE id = $2")
        .bind(time::to_db(&now))
        .bind(&user.id)
        .execute(&mut **tx)
        .await?;
    let mut user = user.clone();
    user.last_sign_in_at = Some(time::to_db(&now));
    issue(app, tx, &user, &session, aal, ends).await
}

/// The next token pair of a live session.
async fn issue(
    app: &App,
    tx: &mut WriteTx,
    user: &UserRow,
    session: &str,
    aal: &str,
    ends: DateTime<Utc>,
) -> ApiResult<Tokens> {
    let (refresh, hash) = refresh_token();
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, tenant_id, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&hash)
        .bind(session)
        .bind(&user.tenant_id)
        .bind(time::to_db(&time::now()))
        .execute(&mut **tx)
        .await?;
    let (held, _) = crate::authz::load_user(tx, &user.tenant_id, &user.id, &user.role, serde_json::Value::Null).await?;
    let (access, expires_at) = access_token(app, user, held.role_names(), session, aal, ends)?;
    Ok(Tokens {
        access_token: access,
        refresh_token: refresh,
        token_type: "bearer",
        expires_in: (expires_at - time::now()).num_seconds().max(0),
        expires_at,
        session_id: session.to_string(),
        user: User::try_from(user.clone())?,
    })
}

/// Ends a session (`reason`: `logout`, `revoked`, `refresh_token_reused`, `banned`, ...);
/// false when it had already ended.
pub async fn end(tx: &mut WriteTx, tenant: &TenantId, session: &str, reason: &str) -> ApiResult<bool> {
    let done = sqlx::query(
        "UPDATE auth_sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND tenant_id = $4 AND ended_at IS NULL",
    )
    .bind(time::to_db(&time::now()))
    .bind(reason)
    .bind(session)
    .bind(tenant)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends every live session of `user` but `keep`; how many ended.
pub async fn end_all(
    tx: &mut WriteTx,
    tenant: &TenantId,
    user: &str,
    keep: Option<&str>,
    reason: &str,
) -> ApiResult<u64> {
    let done = sqlx::query(
        "UPDATE auth_sessions SET ended_at = $1, end_reason = $2 \
         WHERE user_id = $3 AND tenant_id = $4 AND ended_at IS NULL AND id <> $5",
    )
    .bind(time::to_db(&time::now()))
    .bind(reason)
    .bind(user)
    .bind(tenant)
    .bind(keep.unwrap_or(""))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// A refresh token with its session: (session, used_at, tenant, user, ended_at, expires_at, aal).
type RefreshRow = (String, Option<String>, TenantId, String, Option<String>, String, String);

/// What trading a refresh token came to.
pub enum Refreshed {
    Tokens(Box<Tokens>),
    /// The token had been used before: its session is now ended.
    Reused {
        tenant: TenantId,
        user: String,
        session: String,
    },
}

/// Trades a refresh token for the next pair, in `tx`. Unknown tokens, ended or expired sessions
/// and banned users are 401; a used token ends its session.
pub async fn refresh(app: &App, tx: &mut WriteTx, token: &str) -> ApiResult<Refreshed> {
    let hash = secrets::sha256_hex(token);
    let invalid = || ApiError::unauthorized("invalid refresh token: sign in again");
    let row: Option<RefreshRow> = sqlx::query_as(
        "SELECT r.session_id, r.used_at, s.tenant_id, s.user_id, s.ended_at, s.expires_at, s.aal \
         FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id WHERE r.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((session, used_at, tenant, user_id, ended_at, expires_at, aal)) = row else { return Err(invalid()) };
    if ended_at.is_some() || time::from_db(&expires_at)? <= time::now() {
        return Err(invalid());
    }
    // Marking the token used is the claim: of two requests racing with it, one wins and the
    // other is a reuse.
    let claimed = sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
        .bind(time::to_db(&time::now()))
        .bind(&hash)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    if used_at.is_some() || !claimed {
        end(tx, &tenant, &session, "refresh_token_reused").await?;
        return Ok(Refreshed::Reused { tenant, user: user_id, session });
    }
    let user = super::find(tx, &tenant, &user_id).await?.ok_or_else(invalid)?;
    if user.is_banned() {
        return Err(ApiError::unauthorized("this user is banned"));
    }
    sqlx::query("UPDATE auth_sessions SET last_active_at = $1 WHERE id = $2")
        .bind(time::to_db(&time::now()))
        .bind(&session)
        .execute(&mut **tx)
        .await?;
    let ends = time::from_db(&expires_at)?;
    Ok(Refreshed::Tokens(Box::new(issue(app, tx, &user, &session, &aal, ends).await?)))
}

/// When this process last wrote each session's `last_active_at`, so that concurrent requests
/// of one session write it at most once a minute between them.
#[derive(Debug, Default)]
pub struct ActivityMarks(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

/// Most sessions remembered; past it the marks start over (at worst one more write each).
const ACTIVITY_MARKS_MAX: usize = 100_000;

impl ActivityMarks {
    /// True (and noted) when `session`'s activity was not written by this process in the last
    /// minute.
    pub fn due(&self, session: &str) -> bool {
        let mut marks = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = std::time::Instant::now();
        let every = std::time::Duration::from_secs(ACTIVITY_EVERY_SECS as u64);
        if marks.get(session).is_some_and(|at| now.duration_since(*at) < every) {
            return false;
        }
        if marks.len() >= ACTIVITY_MARKS_MAX {
            marks.clear();
        }
        marks.insert(session.to_string(), now);
        true
    }
}

/// A session with its user, tenant and governance, and one role the user holds (none: `None`s).
type LiveRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A live session as a request needs it: who, until when, from where, and what they may do.
/// Kept by `App::sessions` (embedded mode) until any change to credentials, users, roles or
/// policies, or its last activity is a minute old.
#[derive(Debug)]
pub struct LiveSession {
    user_id: String,
    tenant_id: TenantId,
    expires_at: DateTime<Utc>,
    allowlist: Vec<ipnet::IpNet>,
    tier: Tier,
    role: String,
    last_active: DateTime<Utc>,
    access: Arc<crate::authz::UserAccess>,
    scopes: Arc<[String]>,
}

/// Which session of which user of which tenant a credential names.
struct Claimed<'a> {
    sub: &'a str,
    tid: &'a str,
    sid: &'a str,
}

/// Reads session `claims.sid` with its user, tenant and governance, and in the same round trip
/// the roles the user holds (as `authz::load_user` reads them): a row per role.
async fn load_live(app: &App, claims: &Claimed<'_>) -> Result<LiveSession, auth::Refusal> {
    let rows: Vec<LiveRow> = sqlx::query_as(
        "WITH RECURSIVE live AS ( \
             SELECT s.user_id, s.ended_at, s.expires_at, u.banned_at, u.role, t.tier, g.ip_allowlist, \
                    s.last_active_at, u.app_metadata \
             FROM auth_sessions s JOIN users u ON u.id = s.user_id JOIN tenants t ON t.id = s.tenant_id \
             LEFT JOIN governance g ON g.tenant_id = s.tenant_id WHERE s.id = $1 AND s.tenant_id = $2 \
         ), held (id) AS ( \
             SELECT ur.role_id FROM user_roles ur JOIN live l ON ur.user_id = l.user_id WHERE ur.tenant_id = $2 \
             UNION SELECT r.id FROM roles r JOIN live l ON r.name = $3 OR r.name = l.role WHERE r.tenant_id = $2 \
             UNION SELECT r.parent_role_id FROM roles r JOIN held h ON r.id = h.id WHERE r.parent_role_id IS NOT NULL \
         ) SELECT l.user_id, l.ended_at, l.expires_at, l.banned_at, l.role, l.tier, l.ip_allowlist, l.last_active_at, \
                  l.app_metadata, g.id, g.name, g.permissions, g.denied_properties \
         FROM live l LEFT JOIN (SELECT r.id, r.name, r.permissions, r.denied_properties FROM roles r \
                                JOIN held h ON h.id = r.id WHERE r.tenant_id = $2) g ON 1 = 1 \
         ORDER BY g.name",
    )
    .bind(claims.sid)
    .bind(claims.tid)
    .bind(crate::authz::AUTHENTICATED)
    .fetch_all(app.db.pool())
    .await?;
    let Some(first) = rows.first() else {
        return Err(ApiError::unauthorized("this session has ended").into());
    };
    let (user, ended_at, expires_at, banned_at, role, tier, allowlist, last_active, metadata, ..) = first.clone();
    let held: Vec<crate::authz::GrantRow> = rows
        .into_iter()
        .filter_map(|row| match (row.9, row.10, row.11, row.12) {
            (Some(id), Some(name), Some(permissions), Some(denied)) => Some((id, name, permissions, denied)),
            _ => None,
        })
        .collect();
    let expires_at = time::from_db(&expires_at).map_err(ApiError::from)?;
    if user != claims.sub || ended_at.is_some() || expires_at <= time::now() {
        return Err(ApiError::unauthorized("this session has ended: sign in again").into());
    }
    if banned_at.is_some() {
        return Err(ApiError::unauthorized("this user is banned").into());
    }
    let now = time::now();
    let mut last_active = time::from_db(&last_active).map_err(ApiError::from)?;
    if (now - last_active).num_seconds() >= ACTIVITY_EVERY_SECS && app.session_activity.due(claims.sid) {
        last_active = now;
        let (db, session) = (app.db.clone(), claims.sid.to_string());
        app.tasks.spawn("session activity", async move {
            // Best effort, through the write queue like every write.
            let Ok(mut tx) = db.begin_write().await else { return };
            let done = sqlx::query("UPDATE auth_sessions SET last_active_at = $1 WHERE id = $2")
                .bind(time::to_db(&now))
                .bind(&session)
                .execute(&mut *tx)
                .await;
            if done.is_ok() {
                let _ = tx.commit().await;
            }
        });
    }
    // Roles are read with the session: one taken away holds from the next request.
    let metadata = serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null);
    let (access, permissions) = crate::authz::access_from(held, &user, &role, metadata)?;
    Ok(LiveSession {
        user_id: user,
        tenant_id: TenantId::trusted(claims.tid.to_string()),
        expires_at,
        allowlist: auth::parse_stored_allowlist(allowlist.as_deref()),
        tier: Tier::parse(&tier).unwrap_or(Tier::Free),
        role,
        last_active,
        access: Arc::new(access),
        scopes: permissions.into(),
    })
}

/// Verifies a user's access token and that its session is live and its user not banned.
pub async fn authenticate(app: &App, token: &str, ip: IpAddr) -> Result<Auth, auth::Refusal> {
    let claims = jsonwebtoken::decode::<UserClaims>(token, &app.user_tokens.decoding, &app.user_tokens.validation)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                ApiError::unauthorized("this access token has expired: refresh it")
            }
            _ => ApiError::unauthorized("invalid token"),
        })?
        .claims;
    let now = time::now();
    let cached = app.sessions.get(&claims.sid).filter(|live| {
        live.user_id == claims.sub
            && live.tenant_id.as_str() == claims.tid
            && live.expires_at > now
            && (now - live.last_active).num_seconds() < ACTIVITY_EVERY_SECS
    });
    let live = match cached {
        Some(live) => live,
        None => {
            let generation = app.sessions.generation();
            let claimed = Claimed { sub: &claims.sub, tid: &claims.tid, sid: &claims.sid };
            let live = Arc::new(load_live(app, &claimed).await?);
            app.sessions.insert(claims.sid.clone(), live.clone(), generation);
            live
        }
    };
    if !auth::allowed_by_tenant(&live.allowlist, ip) {
        return Err(ApiError::unauthorized("this tenant does not accept requests from your address").into());
    }
    let actor = Actor::User { user_id: claims.sub.clone(), session_id: claims.sid, role: live.role.clone() };
    let rate = RateLimit::for_credential(format!("user:{}", claims.sub), live.tier, None);
    let auth = Auth::new(actor, Some(TenantId::trusted(claims.tid)), live.scopes.clone(), ip).with_rate(rate);
    Ok(auth.with_access(live.access.clone()))
}

/// The authority of session `session_id` of `user_id` now, for work started on its behalf: the
/// session must still be live and the user not banned; roles are the ones held now.
pub async fn resume(
    app: &App,
    tenant: &TenantId,
    user_id: &str,
    session_id: &str,
    ip: IpAddr,
) -> Result<Auth, auth::Refusal> {
    let live = load_live(app, &Claimed { sub: user_id, tid: tenant.as_str(), sid: session_id }).await?;
    let actor =
        Actor::User { user_id: user_id.to_string(), session_id: session_id.to_string(), role: live.role.clone() };
    let auth = Auth::new(actor, Some(tenant.clone()), live.scopes.clone(), ip);
    Ok(auth.with_access(live.access.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_is_written_once_a_minute_per_session() {
        let marks = ActivityMarks::default();
        assert!(marks.due("sess_a"));
        assert!(!marks.due("sess_a"), "a second request within the minute writes nothing");
        assert!(marks.due("sess_b"));
    }
}
