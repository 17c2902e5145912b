//! A multi-tenant sign-in portal (seed 002's Portal Auth): the same flows as `/v1/auth/*`, with
//! the tenant chosen by `tenant_id` in the body; which tenants an address belongs to
//! (`portal-identify`, `POST /v1/tenants/lookup`); and a user's own data export.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth_routes::{self, signed_in, throttle, Login, Message, Signup};
use super::email_flows::{self, EmailRequest, MagicToken, PasswordReset, ResetPassword, Verified, VerifyBody};
use super::mfa::SignedIn;
use super::otp::{self, OtpSend, OtpVerify};
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, ClientIp};
use crate::http::{ApiError, ApiResult, Created, Data, ErrorCode, Json};
use crate::time;

/// Lookups one address may make per minute.
const LOOKUPS_PER_MINUTE: u64 = 10;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(portal_signup))
        .routes(routes!(portal_login))
        .routes(routes!(portal_forgot_password))
        .routes(routes!(portal_reset_password))
        .routes(routes!(portal_magic_link))
        .routes(routes!(portal_magic_link_verify))
        .routes(routes!(portal_otp_send))
        .routes(routes!(portal_otp_verify))
        .routes(routes!(portal_verify_email))
        .routes(routes!(portal_identify))
        .routes(routes!(tenants_lookup))
        .routes(routes!(export))
}

fn needs_tenant(tenant: &Option<String>) -> ApiResult<()> {
    match tenant {
        Some(t) if crate::names::has_text(t) => Ok(()),
        _ => Err(ApiError::invalid("tenant_id", "the portal needs the tenant: `tenant_id` in the body")),
    }
}

/// Portal signup
///
/// `POST /v1/auth/signup` with the tenant as `tenant_id` in the body.
#[utoipa::path(post, path = "/v1/auth/portal-signup", tag = "Portal Auth", request_body = Signup,
    responses((status = 201, body = crate::http::response::Envelope<auth_routes::SignedUp>),
              (status = 403, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody)))]
async fn portal_signup(
    app: State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Json<Signup>,
) -> ApiResult<Created<auth_routes::SignedUp>> {
    needs_tenant(&body.0.tenant_id)?;
    auth_routes::signup(Err(ApiError::unauthorized("portal")), app, ip, portal_headers(&headers), body).await
}

/// Portal login
///
/// `POST /v1/auth/login` with the tenant as `tenant_id` in the body.
#[utoipa::path(post, path = "/v1/auth/portal-login", tag = "Portal Auth", request_body = Login,
    responses((status = 200, body = crate::http::response::Envelope<SignedIn>),
              (status = 401, body = crate::http::error::ErrorBody), (status = 429, body = crate::http::error::ErrorBody)))]
async fn portal_login(
    app: State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Json<Login>,
) -> ApiResult<Data<SignedIn>> {
    needs_tenant(&body.0.tenant_id)?;
    auth_routes::login(Err(ApiError::unauthorized("portal")), app, ip, portal_headers(&headers), body).await
}

/// Portal password reset request
///
/// `POST /v1/auth/forgot-password` with the tenant as `tenant_id` in the body.
#[utoipa::path(post, path = "/v1/auth/portal-forgot-password", tag = "Portal Auth", request_body = EmailRequest,
    responses((status = 200, body = crate::http::response::Envelope<Message>), (status = 429, body = crate::http::error::ErrorBody)))]
async fn portal_forgot_password(
    app: State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Json<EmailRequest>,
) -> ApiResult<Data<Message>> {
    needs_tenant(&body.0.tenant_id)?;
    email_flows::forgot_password(Err(ApiError::unauthorized("portal")), app, ip, portal_headers(&headers), body).await
}

/// Portal password reset
///
/// `POST /v1/auth/reset-password`.
#[utoipa::path(post, path = "/v1/auth/portal-reset-password", tag = "Portal Auth", request_body = ResetPassword,
    responses((status = 200, body = crate::http::response::Envelope<PasswordReset>), (status = 400, body = crate::http::error::ErrorBody)))]
async fn portal_reset_password(
    app: State<App>,
    ip: ClientIp,
    body: Json<ResetPassword>,
) -> ApiResult<Data<PasswordReset>> {
    email_flows::reset_password(app, ip, body).await
}

/// Portal send magic link
///
/// `POST /v1/auth/magic-link` with the tenant as `tenant_id` in the body.
#[utoipa::path(post, path = "/v1/auth/portal-magic-link", tag = "Portal Auth", request_body = EmailRequest,
    responses((status = 200, body = crate::http::response::Envelope<Message>), (status = 403, body = crate::http::error::ErrorBody)))]
async fn portal_magic_link(
    app: State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Json<EmailRequest>,
) -> ApiResult<Data<Message>> {
    needs_tenant(&body.0.tenant_id)?;
    email_flows::magic_link(Err(ApiError::unauthorized("portal")), app, ip, portal_headers(&headers), body).await
}

/// Portal verify magic link
///
/// `POST /v1/auth/magic-link/verify`.
#[utoipa::path(post, path = "/v1/auth/portal-magic-link-verify", tag = "Portal Auth", request_body = MagicToken,
    responses((status = 200, body = crate::http::response::Envelope<SignedIn>), (status = 400, body = crate::http::error::ErrorBody)))]
async fn portal_magic_link_verify(
    app: State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Json<MagicToken>,
) -> ApiResult<Data<SignedIn>> {
    email_flows::magic_link_verify(app, ip, headers, body).await
}

/// Portal send OTP
///
/// `POST /v1/auth/otp/send` with the tenant as `tenant_id` in the body.
#[utoipa::path(post, path = "/v1/auth/portal-otp-send", tag = "Portal Auth", request_body = OtpSend,
    responses((status = 200, body = crate::http::response::Envelope<Message>), (status = 403, body = crate::http::error::ErrorBody)))]
async fn portal_otp_send(
    app: State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Json<OtpSend>,
) -> ApiResult<Data<Message>> {
    needs_tenant(&body.0.tenant_id)?;
    otp::otp_send(Err(ApiError::unauthorized("portal")), app, ip, portal_headers(&headers), body).await
}

/// Portal verify OTP
///
/// `POST /v1/auth/otp/verify` with the tenant as `tenant_id` in the body.
#[utoipa::path(post, path = "/v1/auth/portal-otp-verify", tag = "Portal Auth", request_body = OtpVerify,
    responses((status = 200, body = crate::http::response::Envelope<SignedIn>), (status = 401, body = crate::http::error::ErrorBody)))]
async fn portal_otp_verify(
    app: State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Json<OtpVerify>,
) -> ApiResult<Data<SignedIn>> {
    needs_tenant(&body.0.tenant_id)?;
    otp::otp_verify(Err(ApiError::unauthorized("portal")), app, ip, portal_headers(&headers), body).await
}

/// Portal verify email
///
/// `POST /v1/auth/verify`.
#[utoipa::path(post, path = "/v1/auth/portal-verify-email", tag = "Portal Auth", request_body = VerifyBody,
    responses((status = 200, body = crate::http::response::Envelope<Verified>), (status = 400, body = crate::http::error::ErrorBody)))]
async fn portal_verify_email(app: State<App>, ip: ClientIp, body: Json<VerifyBody>) -> ApiResult<Data<Verified>> {
    email_flows::verify_email(app, ip, body).await
}

/// The headers a portal flow may use: the device's, never a tenant header.
fn portal_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in [axum::http::header::USER_AGENT, axum::http::header::HOST] {
        if let Some(value) = headers.get(&name) {
            kept.insert(name, value.clone());
        }
    }
    kept
}

/// An address to look up.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    #[schema(value_type = crate::http::shapes::Email)]
    pub email: String,
}

/// The tenants of an address: (id, name, brand name).
async fn tenants_of(app: &App, ip: ClientIp, email: &str) -> ApiResult<Vec<(String, String, Option<String>)>> {
    throttle(app, format!("lookup-ip:{}", ip.0), LOOKUPS_PER_MINUTE, LOOKUPS_PER_MINUTE).await?;
    let email = super::normalise_email(email).map_err(|e| ApiError::invalid("email", e))?;
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT t.id, t.name, c.config FROM users u JOIN tenants t ON t.id = u.tenant_id \
         LEFT JOIN auth_configs c ON c.tenant_id = t.id WHERE u.email = $1 AND u.banned_at IS NULL \
         ORDER BY t.name, t.id LIMIT 50",
    )
    .bind(&email)
    .fetch_all(app.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, config)| {
            let brand = config
                .and_then(|c| serde_json::from_str::<Value>(&c).ok())
                .and_then(|c| c["branding"]["brand_name"].as_str().map(str::to_string));
            (id, name, brand)
        })
        .collect())
}

/// A tenant an address belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalTenant {
    pub id: String,
    pub name: String,
}

/// Who an address is, for the portal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Identified {
    /// The tenant to sign in to when there is one (the first, by name).
    pub tenant_id: Option<String>,
    pub multiple_tenants: bool,
    pub tenants: Vec<PortalTenant>,
}

/// Identify tenant by email
///
/// Which tenants the address has an account with, so the portal can ask for the right one.
/// Throttled per client address.
#[utoipa::path(post, path = "/v1/auth/portal-identify", tag = "Portal Auth", request_body = Lookup,
    responses((status = 200, body = crate::http::response::Envelope<Identified>), (status = 429, body = crate::http::error::ErrorBody)))]
async fn portal_identify(
    State(app): State<App>,
    ip: ClientIp,
    Json(body): Json<Lookup>,
) -> ApiResult<Data<Identified>> {
    let found = tenants_of(&app, ip, &body.email).await?;
    let tenants: Vec<PortalTenant> = found.into_iter().map(|(id, name, _)| PortalTenant { id, name }).collect();
    Ok(Data(Identified {
        tenant_id: tenants.first().map(|t| t.id.clone()),
        multiple_tenants: tenants.len() > 1,
        tenants,
    }))
}

/// A tenant found by address.
#[derive(Debug, Serialize, ToSchema)]
pub struct FoundTenant {
    pub tenant_id: String,
    /// The tenant's brand name, else its name.
    pub brand_name: String,
}

/// Lookup tenants by email
///
/// The tenants the address has an account with. Throttled per client address.
#[utoipa::path(post, path = "/v1/tenants/lookup", tag = "Tenants", request_body = Lookup,
    responses((status = 200, body = crate::http::response::Envelope<Vec<FoundTenant>>), (status = 429, body = crate::http::error::ErrorBody)))]
async fn tenants_lookup(
    State(app): State<App>,
    ip: ClientIp,
    Json(body): Json<Lookup>,
) -> ApiResult<Data<Vec<FoundTenant>>> {
    let found = tenants_of(&app, ip, &body.email).await?;
    Ok(Data(
        found
            .into_iter()
            .map(|(id, name, brand)| FoundTenant { tenant_id: id, brand_name: brand.unwrap_or(name) })
            .collect(),
    ))
}

/// (id, ip, user agent, created, last active, ended, why).
type SessionRow = (String, Option<String>, Option<String>, String, String, Option<String>, Option<String>);
/// (id, kind, name, created, verified).
type FactorRow = (String, String, Option<String>, String, Option<String>);

/// Export user data
///
/// Everything the platform holds about the signed-in user, as JSON: profile, sessions, second
/// factors (never their secrets), the objects they created and their audit trail. Once an hour.
#[utoipa::path(get, path = "/v1/auth/me/export", tag = "Authentication", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<Object>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 429, body = crate::http::error::ErrorBody, description = "Exported within the hour")))]
async fn export(auth: Auth, State(app): State<App>) -> ApiResult<Data<Value>> {
    let (user_id, _) = signed_in(&auth)?;
    let tenant = auth.tenant()?.clone();
    let hour_ago = time::to_db(&(time::now() - chrono::Duration::hours(1)));
    let (recent,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_logs WHERE tenant_id = $1 AND actor_id = $2 AND action = 'user.data_exported' \
         AND created_at > $3",
    )
    .bind(&tenant)
    .bind(&user_id)
    .bind(&hour_ago)
    .fetch_one(app.db.pool())
    .await?;
    if recent > 0 {
        let mut error = ApiError::new(ErrorCode::RateLimited, "a data export is allowed once an hour");
        error.extra.insert("retry_after".into(), json!(3600));
        return Err(error);
    }
    let mut conn = app.db.pool().acquire().await?;
    let user = super::find(&mut conn, &tenant, &user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let profile = super::User::try_from(user)?;
    let sessions: Vec<SessionRow> = sqlx::query_as(
        "SELECT id, ip, user_agent, created_at, last_active_at, ended_at, end_reason FROM auth_sessions \
         WHERE user_id = $1 ORDER BY created_at",
    )
    .bind(&user_id)
    .fetch_all(&mut *conn)
    .await?;
    let factors: Vec<FactorRow> = sqlx::query_as(
        "SELECT id, kind, friendly_name, created_at, verified_at FROM mfa_factors WHERE user_id = $1 ORDER BY created_at",
    )
    .bind(&user_id)
    .fetch_all(&mut *conn)
    .await?;
    let objects =
        crate::authz::access::objects_written_by(&mut conn, app.db.backend(), &auth, &user_id, 10_000).await?;
    let trail: Vec<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT action, resource_id, ip_address, created_at FROM audit_logs WHERE tenant_id = $1 AND actor_id = $2 \
         ORDER BY created_at LIMIT 10000",
    )
    .bind(&tenant)
    .bind(&user_id)
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    let now = time::now();
    let export = json!({
        "_meta": { "user_id": user_id, "tenant_id": tenant, "export_type": "user_data_export", "exported_at": now },
        "user": profile,
        "sessions": sessions.into_iter().map(|(id, ip, ua, created, active, ended, reason)| json!({
            "id": id, "ip": ip, "user_agent": ua, "created_at": created, "last_active_at": active,
            "ended_at": ended, "end_reason": reason,
        })).collect::<Vec<_>>(),
        "mfa_factors": factors.into_iter().map(|(id, kind, name, created, verified)| json!({
            "id": id, "type": kind, "friendly_name": name, "created_at": created, "verified_at": verified,
        })).collect::<Vec<_>>(),
        "objects": objects,
        "audit_logs": trail.into_iter().map(|(action, resource, ip, at)| json!({
            "action": action, "resource_id": resource, "ip": ip, "created_at": at,
        })).collect::<Vec<_>>(),
    });
    let mut tx = app.db.begin_write().await?;
    let entry =
        Entry { action: "user.data_exported", resource_type: "user", resource_id: &user_id, changes: json!({}) };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Data(export))
}
