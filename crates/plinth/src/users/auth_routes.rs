//! The end-user side (seed 002's Authentication and Sessions): sign up, log in, refresh, log
//! out, anonymous sessions, the signed-in user, and their sessions. The tenant is the
//! credential's, or the one `X-Tenant-ID` or `tenant_id` names (id or slug). Login is throttled
//! per address and per account on top of the rate limiter; every sign-in, failure and session
//! end is audited and emitted as an event.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::{self, NewUser, UpdateUser};
use super::mfa::SignedIn;
use super::sessions::{self, Device, Refreshed, Tokens};
use super::{config, passwords, User, UserRow};
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Actor, Auth, ClientIp};
use crate::db::WriteTx;
use crate::events::{self, Event};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Created, Data, Json, OptionalJson, Path};
use crate::id::TenantId;
use crate::ratelimit::RateLimit;

/// Attempts one address may make at signing in to one tenant per minute.
const LOGIN_PER_IP_PER_MINUTE: u64 = 30;
/// Failed-or-not attempts at one account: a burst of 10, then one a minute.
const LOGIN_PER_ACCOUNT_BURST: u64 = 10;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(anonymous))
        .routes(routes!(current_user, update_current_user))
        .routes(routes!(list_sessions, end_other_sessions))
        .routes(routes!(end_session))
}

/// Who is signing in, for audit records.
pub fn who(tenant: &TenantId, user: Option<&str>, device: &Device) -> Who {
    Who {
        actor_type: "user",
        actor_id: user.map(str::to_string),
        tenant: Some(tenant.clone()),
        ip: Some(device.ip.to_string()),
        user_agent: device.user_agent.clone(),
    }
}

/// Who acted, for an end-user request that carries no credential: the user when known, and the
/// client's address.
pub fn who_at(tenant: &TenantId, user: Option<&str>, ip: ClientIp) -> Who {
    who(tenant, user, &Device { ip: ip.0, user_agent: None })
}

pub fn device_of(ip: ClientIp, headers: &HeaderMap) -> Device {
    Device { ip: ip.0, user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_string) }
}

/// Draws one attempt from `bucket`; 429 when it is empty.
pub async fn throttle(app: &App, bucket: String, per_minute: u64, capacity: u64) -> ApiResult<()> {
    let limit = RateLimit { bucket, per_minute, capacity };
    match app.limiter.take(&limit).await {
        Ok(decision) if !decision.allowed => Err(decision.refusal()),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "the attempt throttle is unavailable; attempt let through");
            Ok(())
        }
    }
}

/// The signed-in user behind a request: (user, session). 403 for any other credential.
pub fn signed_in(auth: &Auth) -> ApiResult<(String, String)> {
    match &auth.actor {
        Actor::User { user_id, session_id, .. } => Ok((user_id.clone(), session_id.clone())),
        _ => Err(ApiError::forbidden("this route needs a signed-in user's access token")),
    }
}

/// A sign-up.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    #[schema(value_type = crate::http::shapes::Email)]
    pub email: String,
    #[schema(value_type = crate::http::shapes::Password)]
    pub password: String,
    #[schema(value_type = Option<crate::http::shapes::Phone>)]
    pub phone: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub user_metadata: Option<Value>,
    /// The tenant (id or slug), when no `X-Tenant-ID` header names it.
    pub tenant_id: Option<String>,
    /// Where the verification link leads once used (must be in the redirect allowlist).
    pub redirect_to: Option<String>,
    pub turnstile_token: Option<String>,
}

/// What a sign-up answers: the same for a new address and a taken one, so that it tells no one
/// which addresses have accounts.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedUp {
    pub user: User,
    /// An email went to the address: a verification link for a new account; for an address that
    /// has one already, a note to its owner with a link to choose a new password.
    pub confirmation_sent: bool,
}

/// Sign up
///
/// A new user with an email and password (the tenant's policy: minimum length, at most 1,024,
/// not a common password). The answer is the same whether or not the address already has an
/// account (its owner is emailed instead), so no session is opened here: sign in with
/// `POST /v1/auth/login`, or follow the emailed link. 403 when the tenant's sign-up is
/// invite-only or passwords are off.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "Authentication",
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant's id or slug")),
    request_body = Signup,
    responses((status = 201, body = crate::http::response::Envelope<SignedUp>),
              (status = 403, body = crate::http::error::ErrorBody, description = "Sign-up is closed"),
              (status = 409, body = crate::http::error::ErrorBody, description = "The phone number is taken"),
              (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn signup(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<Signup>,
) -> ApiResult<Created<SignedUp>> {
    let tenant = super::tenant_of(&app, auth.as_ref().ok(), &headers, body.tenant_id.as_deref()).await?;
    let device = device_of(ip, &headers);
    throttle(&app, format!("signup:{tenant}:{}", device.ip), LOGIN_PER_IP_PER_MINUTE, LOGIN_PER_IP_PER_MINUTE).await?;
    let mut conn = app.db.pool().acquire().await?;
    let settings = config::load(&mut conn, &tenant).await?;
    if !settings.methods.password {
        return Err(ApiError::forbidden("password sign-up is off for this tenant"));
    }
    if settings.signup != "open" {
        return Err(ApiError::forbidden("sign-up is by invitation for this tenant"));
    }
    settings.check_redirect(body.redirect_to.as_deref())?;
    super::turnstile::check(&app, &tenant, body.turnstile_token.as_deref(), ip).await?;
    let mut errors = FieldErrors::default();
    let email = super::normalise_email(&body.email).map_err(|e| errors.add("email", e)).ok();
    let phone = body.phone.as_deref().map(super::normalise_phone).transpose().unwrap_or_else(|e| {
        errors.add("phone", e);
        None
    });
    let metadata = body.user_metadata.clone().unwrap_or_else(|| json!({}));
    if let Err(e) = super::check_metadata(&metadata) {
        errors.add("user_metadata", e);
    }
    admin::policy_check(&mut conn, &tenant, &body.password, &mut errors).await?;
    drop(conn);
    errors.finish()?;
    // Hashed either way: a taken address costs what a new one does.
    let password_hash = Some(passwords::hash(body.password).await?);
    let mut tx = app.db.begin_write().await?;
    let owner = match &email {
        Some(email) => super::find_by_email(&mut tx, &tenant, email).await?,
        None => None,
    };
    if let Some(owner) = owner {
        super::email_flows::send_account_exists(&app, &mut tx, &owner).await?;
        let who = who(&tenant, None, &device);
        let entry = Entry {
            action: "user.signup_for_existing",
            resource_type: "user",
            resource_id: &owner.id,
            changes: json!({}),
        };
        audit::record(&mut *tx, &who, None, entry).await?;
        tx.commit().await?;
        let now = crate::time::now();
        let user = User {
            id: crate::id::new_id(crate::id::prefix::USER),
            email,
            phone,
            role: crate::authz::AUTHENTICATED.into(),
            is_anonymous: false,
            email_verified: false,
            phone_verified: false,
            banned: false,
            ban_reason: None,
            user_metadata: metadata,
            app_metadata: json!({}),
            created_at: now,
            updated_at: now,
            last_sign_in_at: None,
        };
        return Ok(Created(SignedUp { user, confirmation_sent: true }));
    }
    let fields = NewUser {
        email,
        phone,
        password_hash,
        role: crate::authz::AUTHENTICATED.into(),
        user_metadata: metadata,
        ..NewUser::default()
    };
    let user = admin::insert(&mut tx, &tenant, fields).await?;
    super::email_flows::send_verification(&app, &mut tx, &user, body.redirect_to.as_deref()).await?;
    let who = who(&tenant, Some(&user.id), &device);
    let entry = Entry { action: "user.signed_up", resource_type: "user", resource_id: &user.id, changes: json!({}) };
    audit::record(&mut *tx, &who, None, entry).await?;
    tx.commit().await?;
    Ok(Created(SignedUp { user: User::try_from(user)?, confirmation_sent: true }))
}

pub async fn signed_in_event(
    tx: &mut crate::db::WriteTx,
    tenant: &TenantId,
    tokens: &Tokens,
    method: &str,
) -> ApiResult<()> {
    let data = json!({ "user_id": tokens.user.id, "session_id": tokens.session_id, "method": method });
    let event = Event { kind: "user.signed_in", resource_type: "user", resource_id: &tokens.user.id, data };
    events::record(tx, tenant, event).await?;
    Ok(())
}

/// A login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: String,
    pub tenant_id: Option<String>,
    pub turnstile_token: Option<String>,
}

/// Log in
///
/// Email and password. A wrong password and an unknown email get the same 401 after the same
/// work; attempts are throttled per address and per account (429 with `retry_after`).
#[utoipa::path(post, path = "/v1/auth/login", tag = "Authentication",
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant's id or slug")),
    request_body = Login,
    responses((status = 200, body = crate::http::response::Envelope<SignedIn>, description = "Tokens, or an MFA challenge (`mfa_required`, `mfa_ticket`, `factors`)"),
              (status = 401, body = crate::http::error::ErrorBody, description = "Wrong email or password"),
              (status = 403, body = crate::http::error::ErrorBody, description = "Banned, or passwords are off"),
              (status = 429, body = crate::http::error::ErrorBody, description = "Too many attempts")))]
pub async fn login(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<Login>,
) -> ApiResult<Data<SignedIn>> {
    let tenant = super::tenant_of(&app, auth.as_ref().ok(), &headers, body.tenant_id.as_deref()).await?;
    let device = device_of(ip, &headers);
    let email = body.email.trim().to_lowercase();
    if email.is_empty()
        || email.len() > 254
        || body.password.is_empty()
        || body.password.len() > 4 * passwords::MAX_CHARS
    {
        return Err(ApiError::unauthorized("invalid email or password"));
    }
    throttle(&app, format!("login-ip:{tenant}:{}", device.ip), LOGIN_PER_IP_PER_MINUTE, LOGIN_PER_IP_PER_MINUTE)
        .await?;
    throttle(&app, format!("login-account:{tenant}:{email}"), 1, LOGIN_PER_ACCOUNT_BURST).await?;
    let mut conn = app.db.pool().acquire().await?;
    let settings = config::load(&mut conn, &tenant).await?;
    if !settings.methods.password {
        return Err(ApiError::forbidden("password sign-in is off for this tenant"));
    }
    super::turnstile::check(&app, &tenant, body.turnstile_token.as_deref(), ip).await?;
    let user = super::find_by_email(&mut conn, &tenant, &email).await?;
    drop(conn);
    let matches = passwords::verify(body.password, user.as_ref().and_then(|u| u.password_hash.clone())).await?;
    let user = match (user, matches) {
        (Some(user), true) => user,
        (user, _) => {
            let mut tx = app.db.begin_write().await?;
            let user_id = user.as_ref().map(|u| u.id.clone());
            let who = who(&tenant, user_id.as_deref(), &device);
            let entry = Entry {
                action: "user.sign_in_failed",
                resource_type: "user",
                resource_id: user_id.as_deref().unwrap_or("unknown"),
                changes: json!({ "method": "password" }),
            };
            audit::record(&mut *tx, &who, None, entry).await?;
            // An event either way (the same work for known and unknown addresses; the address
            // itself is never in it).
            let reason = if user_id.is_some() { "wrong_password" } else { "unknown_user" };
            let data = json!({ "user_id": user_id, "method": "password", "reason": reason });
            let resource_id = user_id.as_deref().unwrap_or("unknown");
            let event = Event { kind: "user.sign_in_failed", resource_type: "user", resource_id, data };
            events::record(&mut tx, &tenant, event).await?;
            tx.commit().await?;
            return Err(ApiError::unauthorized("invalid email or password"));
        }
    };
    if user.is_banned() {
        return Err(ApiError::forbidden("this user is banned"));
    }
    let mut tx = app.db.begin_write().await?;
    let signed = sign_in(&app, &mut tx, &user, &device, "password").await?;
    tx.commit().await?;
    Ok(Data(signed))
}

/// Finishes a first-factor sign-in of `user` in `tx` (not committed): the MFA challenge when
/// they have a second factor, else a session. Audited, with `user.signed_in`.
pub async fn sign_in(
    app: &App,
    tx: &mut WriteTx,
    user: &UserRow,
    device: &Device,
    method: &str,
) -> ApiResult<SignedIn> {
    if let Some(challenge) = super::mfa::gate(tx, user).await? {
        let entry = Entry {
            action: "user.mfa_challenged",
            resource_type: "user",
            resource_id: &user.id,
            changes: json!({ "method": method }),
        };
        audit::record(&mut **tx, &who(&user.tenant_id, Some(&user.id), device), None, entry).await?;
        return Ok(SignedIn::Mfa(challenge));
    }
    Ok(SignedIn::Tokens(Box::new(open_session(app, tx, user, device, method, "aal1").await?)))
}

/// Opens a session for a sign-in that is complete: audited, with `user.signed_in`.
pub async fn open_session(
    app: &App,
    tx: &mut WriteTx,
    user: &UserRow,
    device: &Device,
    method: &str,
    aal: &str,
) -> ApiResult<Tokens> {
    let tokens = sessions::open(app, tx, user, device, aal).await?;
    let entry = Entry {
        action: "user.signed_in",
        resource_type: "user",
        resource_id: &user.id,
        changes: json!({ "method": method, "session_id": tokens.session_id }),
    };
    audit::record(&mut **tx, &who(&user.tenant_id, Some(&user.id), device), None, entry).await?;
    signed_in_event(tx, &user.tenant_id, &tokens, method).await?;
    Ok(tokens)
}

/// A refresh token to trade or to end.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshToken {
    pub refresh_token: String,
}

/// Refresh tokens
///
/// Trades a refresh token for a new access token and refresh token. Each refresh token works
/// once: presenting one that was already used ends its whole session (401), as a stolen token
/// would be.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "Authentication",
    request_body = RefreshToken,
    responses((status = 200, body = crate::http::response::Envelope<Tokens>),
              (status = 401, body = crate::http::error::ErrorBody, description = "Unknown, used or ended")))]
async fn refresh(
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<RefreshToken>,
) -> ApiResult<Data<Tokens>> {
    if body.refresh_token.is_empty() || body.refresh_token.len() > 200 {
        return Err(ApiError::unauthorized("invalid refresh token: sign in again"));
    }
    let device = device_of(ip, &headers);
    throttle(&app, format!("refresh-ip:{}", device.ip), 120, 120).await?;
    let mut tx = app.db.begin_write().await?;
    match sessions::refresh(&app, &mut tx, &body.refresh_token).await? {
        Refreshed::Tokens(tokens) => {
            tx.commit().await?;
            Ok(Data(*tokens))
        }
        Refreshed::Reused { tenant, user, session } => {
            let data = json!({ "user_id": user, "session_id": session, "reason": "refresh_token_reused" });
            let event = Event { kind: "user.session_ended", resource_type: "user", resource_id: &user, data };
            events::record(&mut tx, &tenant, event).await?;
            let entry = Entry {
                action: "user.session_ended",
                resource_type: "session",
                resource_id: &session,
                changes: json!({ "reason": "refresh_token_reused" }),
            };
            audit::record(&mut *tx, &who(&tenant, Some(&user), &device), None, entry).await?;
            let _changed = app.credentials_changing();
            tx.commit().await?;
            Err(ApiError::unauthorized("this refresh token was already used: the session has ended, sign in again"))
        }
    }
}

/// Ends a session, audited, with `user.session_ended`; false when it had already ended.
async fn end_one(app: &App, tenant: &TenantId, user: &str, session: &str, reason: &str, who: &Who) -> ApiResult<bool> {
    let mut tx = app.db.begin_write().await?;
    let ended = sessions::end(&mut tx, tenant, session, reason).await?;
    if ended {
        let data = json!({ "user_id": user, "session_id": session, "reason": reason });
        let event = Event { kind: "user.session_ended", resource_type: "user", resource_id: user, data };
        events::record(&mut tx, tenant, event).await?;
        let entry = Entry {
            action: "user.session_ended",
            resource_type: "session",
            resource_id: session,
            changes: json!({ "reason": reason }),
        };
        audit::record(&mut *tx, who, Some(tenant), entry).await?;
    }
    // Streams opened with the session's tokens check them again now.
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(ended)
}

/// A plain answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: String,
}

/// Log out
///
/// Ends the session of the `refresh_token` given, or of the access token used: its refresh
/// token stops working and its access tokens are refused from the next request on.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "Authentication",
    request_body(content = Option<RefreshToken>),
    responses((status = 200, body = crate::http::response::Envelope<Message>),
              (status = 401, body = crate::http::error::ErrorBody)))]
async fn logout(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<RefreshToken>,
) -> ApiResult<Data<Message>> {
    let device = device_of(ip, &headers);
    let (tenant, user, session) = match (&body, auth.as_ref().ok().map(signed_in)) {
        (Some(body), _) => {
            let found: Option<(TenantId, String, String)> = sqlx::query_as(
                "SELECT s.tenant_id, s.user_id, s.id FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id \
                 WHERE r.token_hash = $1",
            )
            .bind(crate::secrets::sha256_hex(&body.refresh_token))
            .fetch_optional(app.db.pool())
            .await?;
            found.ok_or_else(|| ApiError::unauthorized("invalid refresh token"))?
        }
        (None, Some(Ok((user, session)))) => {
            let tenant = auth
                .as_ref()
                .ok()
                .and_then(|a| a.tenant().ok())
                .cloned()
                .ok_or_else(|| ApiError::unauthorized("give the `refresh_token` to end"))?;
            (tenant, user, session)
        }
        (None, _) => {
            return Err(auth.err().unwrap_or_else(|| ApiError::unauthorized("give the `refresh_token` to end")))
        }
    };
    end_one(&app, &tenant, &user, &session, "logout", &who(&tenant, Some(&user), &device)).await?;
    Ok(Data(Message { message: "signed out".into() }))
}

/// An anonymous sign-in.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Anonymous {
    pub tenant_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub user_metadata: Option<Value>,
}

/// Create anonymous session
///
/// A user with no email or password, signed in at once (when the tenant turned anonymous
/// sign-in on). Adding an email and password later with `PATCH /v1/auth/user` keeps the user.
#[utoipa::path(post, path = "/v1/auth/anonymous", tag = "Authentication",
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant's id or slug")),
    request_body(content = Option<Anonymous>),
    responses((status = 201, body = crate::http::response::Envelope<Tokens>),
              (status = 403, body = crate::http::error::ErrorBody, description = "Anonymous sign-in is off")))]
async fn anonymous(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<Anonymous>,
) -> ApiResult<Created<Tokens>> {
    let body = body.unwrap_or_default();
    let tenant = super::tenant_of(&app, auth.as_ref().ok(), &headers, body.tenant_id.as_deref()).await?;
    let device = device_of(ip, &headers);
    throttle(&app, format!("signup:{tenant}:{}", device.ip), LOGIN_PER_IP_PER_MINUTE, LOGIN_PER_IP_PER_MINUTE).await?;
    let mut conn = app.db.pool().acquire().await?;
    if !config::load(&mut conn, &tenant).await?.methods.anonymous {
        return Err(ApiError::forbidden("anonymous sign-in is off for this tenant"));
    }
    drop(conn);
    let metadata = body.user_metadata.unwrap_or_else(|| json!({}));
    super::check_metadata(&metadata).map_err(|e| ApiError::invalid("user_metadata", e))?;
    let mut tx = app.db.begin_write().await?;
    let fields =
        NewUser { role: "authenticated".into(), anonymous: true, user_metadata: metadata, ..NewUser::default() };
    let user = admin::insert(&mut tx, &tenant, fields).await?;
    let tokens = sessions::open(&app, &mut tx, &user, &device, "aal1").await?;
    signed_in_event(&mut tx, &tenant, &tokens, "anonymous").await?;
    tx.commit().await?;
    Ok(Created(tokens))
}

/// Get current user
///
/// The signed-in user (an access token from sign-in).
#[utoipa::path(get, path = "/v1/auth/user", tag = "Authentication", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<User>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody, description = "Not a user's access token")))]
async fn current_user(auth: Auth, State(app): State<App>) -> ApiResult<Data<User>> {
    let (user, _) = signed_in(&auth)?;
    let mut conn = app.db.pool().acquire().await?;
    let row = super::find(&mut conn, auth.tenant()?, &user).await?.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Data(User::try_from(row)?))
}

/// Changes a user makes to themselves.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSelf {
    #[schema(value_type = Option<crate::http::shapes::Email>)]
    pub email: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::Phone>)]
    pub phone: Option<String>,
    /// A new password: the user's other sessions end.
    #[schema(value_type = Option<crate::http::shapes::Password>)]
    pub password: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub user_metadata: Option<Value>,
}

/// Update current user
///
/// Email, phone, password or metadata of the signed-in user. A new email or phone is unverified
/// again; a new password ends the user's other sessions.
#[utoipa::path(patch, path = "/v1/auth/user", tag = "Authentication", security(("bearer" = [])),
    request_body = UpdateSelf,
    responses((status = 200, body = crate::http::response::Envelope<User>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_current_user(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<UpdateSelf>,
) -> ApiResult<Data<User>> {
    let (user, session) = signed_in(&auth)?;
    let tenant = auth.tenant()?.clone();
    if body.email.is_some() || body.phone.is_some() || body.password.is_some() {
        let mut conn = app.db.pool().acquire().await?;
        super::mfa::require_second_factor(&mut conn, &user, &session).await?;
    }
    let change = UpdateUser {
        email: body.email.map(Some),
        phone: body.phone.map(Some),
        password: body.password,
        user_metadata: body.user_metadata,
        ..UpdateUser::default()
    };
    let checked = admin::check_change(&app, &tenant, change).await?;
    // One transaction: the change, the new address's verification email, and the end of
    // anonymity for a user who now has an email and a password.
    let mut tx = app.db.begin_write().await?;
    let before = super::find(&mut tx, &tenant, &user).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let (mut shown, mut row) =
        admin::apply_change(&app, &mut tx, &tenant, &user, checked, &Who::from(&auth), Some(&session)).await?;
    if row.email.is_some() && row.email != before.email {
        super::email_flows::send_verification(&app, &mut tx, &row, None).await?;
    }
    if row.anonymous != 0 && row.email.is_some() && row.password_hash.is_some() {
        sqlx::query("UPDATE users SET anonymous = 0 WHERE id = $1").bind(&user).execute(&mut *tx).await?;
        row.anonymous = 0;
        shown.is_anonymous = false;
    }
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(shown))
}

/// A session of the signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    #[schema(example = "sess_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub user_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// `aal1`, or `aal2` after a second factor.
    pub aal: String,
    /// The session the request was made with.
    pub current: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_active_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

type SessionRow = (String, String, Option<String>, Option<String>, String, String, String, String);

/// List active sessions
///
/// The signed-in user's live sessions, newest first, with device and address.
#[utoipa::path(get, path = "/v1/auth/sessions", tag = "Sessions", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<Vec<SessionInfo>>),
              (status = 401, body = crate::http::error::ErrorBody)))]
async fn list_sessions(auth: Auth, State(app): State<App>) -> ApiResult<Data<Vec<SessionInfo>>> {
    let (user, current) = signed_in(&auth)?;
    let rows: Vec<SessionRow> = sqlx::query_as(
        "SELECT id, user_id, ip, user_agent, aal, created_at, last_active_at, expires_at FROM auth_sessions \
         WHERE user_id = $1 AND tenant_id = $2 AND ended_at IS NULL AND expires_at > $3 \
         ORDER BY created_at DESC, id DESC LIMIT 100",
    )
    .bind(&user)
    .bind(auth.tenant()?)
    .bind(crate::time::to_db(&crate::time::now()))
    .fetch_all(app.db.pool())
    .await?;
    let sessions = rows
        .into_iter()
        .map(|(id, user_id, ip, user_agent, aal, created, active, expires)| {
            Ok(SessionInfo {
                current: id == current,
                id,
                user_id,
                ip,
                user_agent,
                aal,
                created_at: crate::time::from_db(&created)?,
                last_active_at: crate::time::from_db(&active)?,
                expires_at: crate::time::from_db(&expires)?,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Data(sessions))
}

/// How many sessions ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// Revoke all sessions
///
/// Ends every session of the signed-in user but the one making the request.
#[utoipa::path(delete, path = "/v1/auth/sessions", tag = "Sessions", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<Revoked>),
              (status = 401, body = crate::http::error::ErrorBody)))]
async fn end_other_sessions(auth: Auth, State(app): State<App>) -> ApiResult<Data<Revoked>> {
    let (user, current) = signed_in(&auth)?;
    let tenant = auth.tenant()?.clone();
    let mut tx = app.db.begin_write().await?;
    let revoked = sessions::end_all(&mut tx, &tenant, &user, Some(&current), "revoked").await?;
    if revoked > 0 {
        let data = json!({ "user_id": user, "revoked": revoked, "reason": "revoked" });
        let event = Event { kind: "user.session_ended", resource_type: "user", resource_id: &user, data };
        events::record(&mut tx, &tenant, event).await?;
        let entry = Entry {
            action: "user.sessions_ended",
            resource_type: "user",
            resource_id: &user,
            changes: json!({ "revoked": revoked }),
        };
        audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    }
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(Revoked { revoked }))
}

/// Whether a session ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionRevoked {
    pub revoked: bool,
}

/// Revoke session
///
/// Ends one of the signed-in user's sessions; another user's session is 404.
#[utoipa::path(delete, path = "/v1/auth/sessions/{session_id}", tag = "Sessions", security(("bearer" = [])),
    params(("session_id" = String, Path, description = "The session's id")),
    responses((status = 200, body = crate::http::response::Envelope<SessionRevoked>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn end_session(
    auth: Auth,
    State(app): State<App>,
    Path(session_id): Path<String>,
) -> ApiResult<Data<SessionRevoked>> {
    let (user, _) = signed_in(&auth)?;
    let tenant = auth.tenant()?.clone();
    let owned: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM auth_sessions WHERE id = $1 AND user_id = $2 AND tenant_id = $3 AND ended_at IS NULL",
    )
    .bind(&session_id)
    .bind(&user)
    .bind(&tenant)
    .fetch_optional(app.db.pool())
    .await?;
    if owned.is_none() {
        return Err(ApiError::not_found("session"));
    }
    let ended = end_one(&app, &tenant, &user, &session_id, "revoked", &Who::from(&auth)).await?;
    Ok(Data(SessionRevoked { revoked: ended }))
}
