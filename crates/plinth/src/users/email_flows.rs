//! What goes by email: verifying an address (sent at sign-up and on an email change), resetting
//! a password, and signing in by magic link. Tokens are single use and expire (`codes`); the
//! email is queued in the same transaction (`messages`). Asking for a reset or a link answers
//! the same whether or not the address belongs to a user.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::{self, NewUser};
use super::auth_routes::{self, throttle, Message};
use super::codes::{self, Purpose};
use super::config::{AuthConfig, Template};
use super::mfa::SignedIn;
use super::sessions;
use super::{config, passwords, UserRow};
use crate::app::App;
use crate::audit::{self, Entry};
use crate::auth::{Auth, ClientIp};
use crate::db::WriteTx;
use crate::events::{self, Event};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Data, Json, Query};
use crate::id::TenantId;
use crate::time;

/// Requests for emails one address may make to one tenant per minute.
const EMAILS_PER_IP_PER_MINUTE: u64 = 10;
/// Emails one account may be sent: a burst of 5, then one a minute.
const EMAILS_PER_ACCOUNT_BURST: u64 = 5;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(verify_link, verify_email))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(magic_link))
        .routes(routes!(magic_link_verify))
}

fn default_template(purpose: Purpose) -> Template {
    // Only the three emailed purposes reach here; codes by SMS and MFA tickets are not mailed.
    let (subject, body) = match purpose {
        Purpose::VerifyEmail | Purpose::Otp | Purpose::MfaTicket => (
            "Confirm your email for {{brand_name}}",
            "Confirm that {{email}} is your address by opening this link:\n\n{{link}}\n\nIf you did not sign up, ignore this email.",
        ),
        Purpose::ResetPassword => (
            "Reset your password for {{brand_name}}",
            "Someone asked to reset the password of {{email}}. To choose a new one, open this link within an hour:\n\n\
             {{link}}\n\nOr enter this token: {{token}}\n\nIf it was not you, ignore this email: your password stays.",
        ),
        Purpose::MagicLink => (
            "Your sign-in link for {{brand_name}}",
            "Open this link within 15 minutes to sign in as {{email}}:\n\n{{link}}\n\nOr enter this token: {{token}}\n\n\
             If you did not ask to sign in, ignore this email.",
        ),
    };
    Template { subject: subject.into(), body: body.into() }
}

/// The link a token travels in: the verify route itself for addresses, else the app's page
/// (`redirect_to`, the tenant's `site_url`, or this server) with `?token=&type=`.
fn link(base: &str, purpose: Purpose, token: &str, redirect_to: Option<&str>, config: &AuthConfig) -> String {
    let kind = match purpose {
        Purpose::VerifyEmail | Purpose::Otp | Purpose::MfaTicket => {
            return format!("{base}/v1/auth/verify?token={token}&type=signup")
        }
        Purpose::ResetPassword => "recovery",
        Purpose::MagicLink => "magiclink",
    };
    let target =
        redirect_to.map(str::to_string).or_else(|| config.site_url.clone()).unwrap_or_else(|| base.to_string());
    let separator = if target.contains('?') { '&' } else { '?' };
    format!("{target}{separator}token={token}&type={kind}")
}

/// Queues the email carrying `token` for `purpose` to `to`; without `deliver`, does the same
/// work and queues nothing (an address that gets no email costs what one that does).
#[allow(clippy::too_many_arguments)]
async fn send(
    deliver: bool,
    app: &App,
    tx: &mut WriteTx,
    tenant: &TenantId,
    config: &AuthConfig,
    base: &str,
    purpose: Purpose,
    to: &str,
    token: &str,
    redirect_to: Option<&str>,
) -> ApiResult<()> {
    let chosen = match purpose {
        Purpose::VerifyEmail | Purpose::Otp | Purpose::MfaTicket => config.email_templates.verify_email.clone(),
        Purpose::ResetPassword => config.email_templates.reset_password.clone(),
        Purpose::MagicLink => config.email_templates.magic_link.clone(),
    };
    let template = chosen.unwrap_or_else(|| default_template(purpose));
    let brand = config.brand(tx, tenant).await?;
    let link = link(base, purpose, token, redirect_to, config);
    let fill = |text: &str| {
        text.replace("{{link}}", &link)
            .replace("{{token}}", token)
            .replace("{{email}}", to)
            .replace("{{brand_name}}", &brand)
    };
    if deliver {
        crate::messages::queue_email(app, tx, tenant, to, &fill(&template.subject), &fill(&template.body)).await?;
    } else {
        crate::messages::decoy(app, tx, tenant, &fill(&template.body)).await?;
    }
    Ok(())
}

/// Issues a verification token for `user`'s address and queues its email.
pub async fn send_verification(
    app: &App,
    tx: &mut WriteTx,
    user: &UserRow,
    redirect_to: Option<&str>,
) -> ApiResult<()> {
    let Some(email) = &user.email else { return Ok(()) };
    let config = config::load(tx, &user.tenant_id).await?;
    let token = codes::issue(tx, &user.tenant_id, Some(&user.id), Purpose::VerifyEmail, email, redirect_to).await?;
    let base = app.public_url.clone();
    send(true, app, tx, &user.tenant_id, &config, &base, Purpose::VerifyEmail, email, &token, redirect_to).await
}

/// Tells the owner of `user`'s address that someone tried to sign up with it, with a link to
/// choose a new password (a reset token, an hour as every reset).
pub async fn send_account_exists(app: &App, tx: &mut WriteTx, user: &UserRow) -> ApiResult<()> {
    let Some(email) = &user.email else { return Ok(()) };
    let config = config::load(tx, &user.tenant_id).await?;
    let token = codes::issue(tx, &user.tenant_id, Some(&user.id), Purpose::ResetPassword, email, None).await?;
    let base = app.public_url.clone();
    let brand = config.brand(tx, &user.tenant_id).await?;
    let link = link(&base, Purpose::ResetPassword, &token, None, &config);
    let subject = format!("You already have an account at {brand}");
    let body = format!(
        "Someone tried to sign up at {brand} with {email}, which already has an account. If it was you, sign in \
         with your password, or choose a new one with this link within an hour:\n\n{link}\n\nOr enter this \
         token: {token}\n\nIf it was not you, ignore this email: nothing changed."
    );
    crate::messages::queue_email(app, tx, &user.tenant_id, email, &subject, &body).await?;
    Ok(())
}

/// The answer to a verification.
#[derive(Debug, Serialize, ToSchema)]
pub struct Verified {
    pub verified: bool,
    pub user_id: String,
    pub email: String,
}

/// Verifies the address of the token's user; where to send them next.
async fn verify_token(
    app: &App,
    ip: ClientIp,
    token: &str,
    kind: Option<&str>,
) -> ApiResult<(Verified, Option<String>)> {
    if kind.is_some_and(|k| !matches!(k, "signup" | "email" | "email_change")) {
        return Err(ApiError::invalid("type", "must be `signup`, `email` or `email_change`"));
    }
    let mut tx = app.db.begin_write().await?;
    let code = codes::redeem(&mut tx, None, Purpose::VerifyEmail, token).await?;
    let (Some(user_id), Some(email)) = (code.user_id.clone(), code.target.clone()) else {
        return Err(ApiError::bad_request("this link or token is invalid, used or expired: ask for a new one"));
    };
    let now = time::to_db(&time::now());
    // Only the address the token was sent to: an address changed since stays unverified.
    let done = sqlx::query(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1), updated_at = $1 \
         WHERE id = $2 AND tenant_id = $3 AND email = $4",
    )
    .bind(&now)
    .bind(&user_id)
    .bind(&code.tenant_id)
    .bind(&email)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::bad_request("this link is for an address the account no longer has"));
    }
    let data = json!({ "user_id": user_id, "email": email, "email_verified": true });
    events::record(
        &mut tx,
        &code.tenant_id,
        Event { kind: "user.updated", resource_type: "user", resource_id: &user_id, data },
    )
    .await?;
    let who = auth_routes::who_at(&code.tenant_id, Some(&user_id), ip);
    let entry =
        Entry { action: "user.email_verified", resource_type: "user", resource_id: &user_id, changes: json!({}) };
    audit::record(&mut *tx, &who, None, entry).await?;
    let config = config::load(&mut tx, &code.tenant_id).await?;
    tx.commit().await?;
    let next = code.redirect_to.or(config.site_url);
    Ok((Verified { verified: true, user_id, email }, next))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// The token from the email.
    pub token: String,
    /// `signup` (or `email`, `email_change`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Verify email (GET)
///
/// The link in a verification email: marks the address verified, then redirects (302) to the
/// `redirect_to` given at sign-up or the tenant's `site_url` with `?verified=true`, or answers
/// `{verified: true}`.
#[utoipa::path(get, path = "/v1/auth/verify", tag = "Authentication",
    params(VerifyQuery),
    responses((status = 200, body = crate::http::response::Envelope<Verified>),
              (status = 302, description = "Verified: on to the app"),
              (status = 400, body = crate::http::error::ErrorBody, description = "Invalid, used or expired")))]
async fn verify_link(State(app): State<App>, ip: ClientIp, Query(query): Query<VerifyQuery>) -> ApiResult<Response> {
    let (verified, next) = verify_token(&app, ip, &query.token, query.kind.as_deref()).await?;
    Ok(match next {
        Some(url) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            (StatusCode::FOUND, [(header::LOCATION, format!("{url}{separator}verified=true"))]).into_response()
        }
        None => Data(verified).into_response(),
    })
}

/// A verification token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub token: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^(signup|email|email_change)$")]
    pub kind: Option<String>,
}

/// Verify email
///
/// Marks the address of the token's user verified. The token works once.
#[utoipa::path(post, path = "/v1/auth/verify", tag = "Authentication",
    request_body = VerifyBody,
    responses((status = 200, body = crate::http::response::Envelope<Verified>),
              (status = 400, body = crate::http::error::ErrorBody, description = "Invalid, used or expired")))]
pub async fn verify_email(
    State(app): State<App>,
    ip: ClientIp,
    Json(body): Json<VerifyBody>,
) -> ApiResult<Data<Verified>> {
    Ok(Data(verify_token(&app, ip, &body.token, body.kind.as_deref()).await?.0))
}

/// An address to send a link to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    #[schema(value_type = crate::http::shapes::Email)]
    pub email: String,
    /// Where the emailed link leads (must be in the tenant's redirect allowlist).
    pub redirect_to: Option<String>,
    pub tenant_id: Option<String>,
    pub turnstile_token: Option<String>,
}

const SENT: &str = "if the address belongs to an account, an email is on its way";

/// Checks and throttles a request for an email: (tenant, normalised email, config).
async fn email_request(
    app: &App,
    auth: Option<&Auth>,
    headers: &HeaderMap,
    ip: ClientIp,
    body: &EmailRequest,
    what: &str,
) -> ApiResult<(TenantId, String, AuthConfig)> {
    let tenant = super::tenant_of(app, auth, headers, body.tenant_id.as_deref()).await?;
    let email = super::normalise_email(&body.email).map_err(|e| ApiError::invalid("email", e))?;
    let mut conn = app.db.pool().acquire().await?;
    let config = config::load(&mut conn, &tenant).await?;
    drop(conn);
    config.check_redirect(body.redirect_to.as_deref())?;
    super::turnstile::check(app, &tenant, body.turnstile_token.as_deref(), ip).await?;
    throttle(app, format!("{what}-ip:{tenant}:{}", ip.0), EMAILS_PER_IP_PER_MINUTE, EMAILS_PER_IP_PER_MINUTE).await?;
    throttle(app, format!("{what}-account:{tenant}:{email}"), 1, EMAILS_PER_ACCOUNT_BURST).await?;
    Ok((tenant, email, config))
}

/// Request password reset
///
/// Emails a reset link (an hour, single use) to the address when it belongs to a user who has
/// a password; the answer is the same either way.
#[utoipa::path(post, path = "/v1/auth/forgot-password", tag = "Authentication",
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant's id or slug")),
    request_body = EmailRequest,
    responses((status = 200, body = crate::http::response::Envelope<Message>),
              (status = 422, body = crate::http::error::ErrorBody, description = "Not an address, or `redirect_to` not allowed"),
              (status = 429, body = crate::http::error::ErrorBody)))]
pub async fn forgot_password(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<EmailRequest>,
) -> ApiResult<Data<Message>> {
    email_link(&app, auth.ok(), ip, &headers, &body, Purpose::ResetPassword).await
}

/// Emails a reset or magic link to the address when it may have one, and answers the same either
/// way, after the same work: a code (for nobody when the address gets no email), the email
/// rendered and sealed, an audit record, one commit; only the queueing differs.
async fn email_link(
    app: &App,
    auth: Option<Auth>,
    ip: ClientIp,
    headers: &HeaderMap,
    body: &EmailRequest,
    purpose: Purpose,
) -> ApiResult<Data<Message>> {
    let (kind, action) = match purpose {
        Purpose::MagicLink => ("magic", "user.magic_link_requested"),
        _ => ("reset", "user.password_reset_requested"),
    };
    let (tenant, email, config) = email_request(app, auth.as_ref(), headers, ip, body, kind).await?;
    if purpose == Purpose::MagicLink && !config.methods.magic_link {
        return Err(ApiError::forbidden("magic-link sign-in is off for this tenant"));
    }
    let mut tx = app.db.begin_write().await?;
    let user = super::find_by_email(&mut tx, &tenant, &email).await?;
    // A reset goes to users; a magic link also to a new address when anyone may sign up.
    let deliver = match &user {
        Some(user) => !user.is_banned(),
        None => purpose == Purpose::MagicLink && config.signup == "open",
    };
    let user_id = user.as_ref().filter(|u| !u.is_banned()).map(|u| u.id.clone());
    let redirect = body.redirect_to.as_deref();
    let token = codes::issue(&mut tx, &tenant, user_id.as_deref(), purpose, &email, redirect).await?;
    let base = app.public_url.clone();
    send(deliver, app, &mut tx, &tenant, &config, &base, purpose, &email, &token, redirect).await?;
    let who = auth_routes::who_at(&tenant, user_id.as_deref(), ip);
    let entry = Entry {
        action,
        resource_type: "user",
        resource_id: user_id.as_deref().unwrap_or("unknown"),
        changes: json!({}),
    };
    audit::record(&mut *tx, &who, None, entry).await?;
    tx.commit().await?;
    Ok(Data(Message { message: SENT.into() }))
}

/// A new password, with the token from the reset email.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    pub token: String,
    #[schema(value_type = crate::http::shapes::Password)]
    pub password: String,
}

/// Whether the password changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordReset {
    pub password_reset: bool,
}

/// Reset password
///
/// Sets a new password (the tenant's policy applies) with the token from the reset email, ends
/// every session of the user, and counts the address as verified.
#[utoipa::path(post, path = "/v1/auth/reset-password", tag = "Authentication",
    request_body = ResetPassword,
    responses((status = 200, body = crate::http::response::Envelope<PasswordReset>),
              (status = 400, body = crate::http::error::ErrorBody, description = "Invalid, used or expired token"),
              (status = 422, body = crate::http::error::ErrorBody, description = "The password is too weak")))]
pub async fn reset_password(
    State(app): State<App>,
    ip: ClientIp,
    Json(body): Json<ResetPassword>,
) -> ApiResult<Data<PasswordReset>> {
    throttle(&app, format!("reset-token-ip:{}", ip.0), 30, 30).await?;
    let mut tx = app.db.begin_write().await?;
    let code = codes::redeem(&mut tx, None, Purpose::ResetPassword, &body.token).await?;
    let user_id = code.user_id.clone().ok_or_else(|| ApiError::bad_request("this token is invalid"))?;
    let mut errors = FieldErrors::default();
    admin::policy_check(&mut tx, &code.tenant_id, &body.password, &mut errors).await?;
    errors.finish()?;
    let hash = passwords::hash(body.password).await?;
    let now = time::to_db(&time::now());
    let updated = sqlx::query(
        "UPDATE users SET password_hash = $1, email_verified_at = COALESCE(email_verified_at, $2), updated_at = $2 \
         WHERE id = $3 AND tenant_id = $4 AND email = $5 AND banned_at IS NULL",
    )
    .bind(&hash)
    .bind(&now)
    .bind(&user_id)
    .bind(&code.tenant_id)
    .bind(&code.target)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(ApiError::bad_request("this link is for an address the account no longer has"));
    }
    let ended = sessions::end_all(&mut tx, &code.tenant_id, &user_id, None, "password_reset").await?;
    let data = json!({ "user_id": user_id, "sessions_ended": ended });
    events::record(
        &mut tx,
        &code.tenant_id,
        Event { kind: "user.updated", resource_type: "user", resource_id: &user_id, data },
    )
    .await?;
    let who = auth_routes::who_at(&code.tenant_id, Some(&user_id), ip);
    let entry = Entry {
        action: "user.password_reset",
        resource_type: "user",
        resource_id: &user_id,
        changes: json!({ "sessions_ended": ended }),
    };
    audit::record(&mut *tx, &who, None, entry).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(PasswordReset { password_reset: true }))
}

/// Send magic link
///
/// Emails a sign-in link (15 minutes, single use) when magic links are on. An address with no
/// user gets one too when sign-up is open (using it creates the user); the answer is the same
/// either way.
#[utoipa::path(post, path = "/v1/auth/magic-link", tag = "Authentication",
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant's id or slug")),
    request_body = EmailRequest,
    responses((status = 200, body = crate::http::response::Envelope<Message>),
              (status = 403, body = crate::http::error::ErrorBody, description = "Magic links are off"),
              (status = 429, body = crate::http::error::ErrorBody)))]
pub async fn magic_link(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<EmailRequest>,
) -> ApiResult<Data<Message>> {
    email_link(&app, auth.ok(), ip, &headers, &body, Purpose::MagicLink).await
}

/// A magic-link token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MagicToken {
    pub token: String,
}

/// Verify magic link
///
/// Trades the token from a magic-link email for a session (the address counts as verified; an
/// address with no user yet becomes one).
#[utoipa::path(post, path = "/v1/auth/magic-link/verify", tag = "Authentication",
    request_body = MagicToken,
    responses((status = 200, body = crate::http::response::Envelope<SignedIn>, description = "Tokens, or an MFA challenge"),
              (status = 400, body = crate::http::error::ErrorBody, description = "Invalid, used or expired"),
              (status = 403, body = crate::http::error::ErrorBody, description = "Banned")))]
pub async fn magic_link_verify(
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<MagicToken>,
) -> ApiResult<Data<SignedIn>> {
    throttle(&app, format!("magic-token-ip:{}", ip.0), 30, 30).await?;
    let mut tx = app.db.begin_write().await?;
    let code = codes::redeem(&mut tx, None, Purpose::MagicLink, &body.token).await?;
    let tenant = code.tenant_id.clone();
    let email = code.target.clone().unwrap_or_default();
    let now = time::to_db(&time::now());
    // The tenant's settings when the link is used, not when it was sent.
    let settings = config::load(&mut tx, &tenant).await?;
    if !settings.methods.magic_link {
        return Err(ApiError::forbidden("magic-link sign-in is off for this tenant"));
    }
    let gone = || ApiError::bad_request("this link is for an address the account no longer has");
    let user = match &code.user_id {
        Some(id) => Some(
            super::find(&mut tx, &tenant, id).await?.filter(|u| u.email.as_deref() == Some(&email)).ok_or_else(gone)?,
        ),
        None => match super::find_by_email(&mut tx, &tenant, &email).await? {
            Some(user) => Some(user),
            None if settings.signup != "open" => {
                return Err(ApiError::forbidden("sign-up is by invitation for this tenant"))
            }
            None => {
                let fields = NewUser {
                    email: Some(email.clone()),
                    role: "authenticated".into(),
                    email_verified: true,
                    user_metadata: json!({}),
                    ..NewUser::default()
                };
                Some(admin::insert(&mut tx, &tenant, fields).await?)
            }
        },
    };
    let mut user = user.ok_or_else(|| ApiError::bad_request("this link is for an account that no longer exists"))?;
    if user.is_banned() {
        return Err(ApiError::forbidden("this user is banned"));
    }
    super::claim(&mut tx, &mut user).await?;
    if user.email.as_deref() == Some(email.as_str()) && user.email_verified_at.is_none() {
        sqlx::query("UPDATE users SET email_verified_at = $1 WHERE id = $2")
            .bind(&now)
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        user.email_verified_at = Some(now.clone());
    }
    let device = auth_routes::device_of(ip, &headers);
    let signed = auth_routes::sign_in(&app, &mut tx, &user, &device, "magic_link").await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(signed))
}
