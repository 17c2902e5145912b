//! Signing in with a 6-digit code by SMS (seed 002's `otp/send` and `otp/verify`): codes live 5
//! minutes, are stored as keyed hashes, survive 5 wrong guesses, and work once. Asking answers
//! the same whether or not the number belongs to a user; a number with no user gets a code when
//! sign-up is open, and using it creates the user.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::{self, NewUser};
use super::auth_routes::{self, throttle, Message};
use super::codes::{self, OtpCheck};
use super::config;
use super::mfa::SignedIn;
use crate::app::App;
use crate::audit::{self, Entry};
use crate::auth::{Auth, ClientIp};
use crate::http::{ApiError, ApiResult, Data, Json};
use crate::time;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(otp_send)).routes(routes!(otp_verify))
}

/// A number to text a code to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OtpSend {
    /// E.164, such as `+15551234567`.
    #[schema(value_type = crate::http::shapes::Phone)]
    pub phone: String,
    pub tenant_id: Option<String>,
    pub turnstile_token: Option<String>,
}

/// Send SMS OTP
///
/// Texts a 6-digit code (5 minutes) to the number when codes are on; the answer is the same
/// whether or not the number belongs to a user. Throttled per address and per number.
#[utoipa::path(post, path = "/v1/auth/otp/send", tag = "Authentication",
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant's id or slug")),
    request_body = OtpSend,
    responses((status = 200, body = crate::http::response::Envelope<Message>),
              (status = 403, body = crate::http::error::ErrorBody, description = "Codes by SMS are off"),
              (status = 422, body = crate::http::error::ErrorBody),
              (status = 429, body = crate::http::error::ErrorBody)))]
pub async fn otp_send(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<OtpSend>,
) -> ApiResult<Data<Message>> {
    let tenant = super::tenant_of(&app, auth.as_ref().ok(), &headers, body.tenant_id.as_deref()).await?;
    let phone = super::normalise_phone(&body.phone).map_err(|e| ApiError::invalid("phone", e))?;
    let mut conn = app.db.pool().acquire().await?;
    let settings = config::load(&mut conn, &tenant).await?;
    drop(conn);
    if !settings.methods.otp {
        return Err(ApiError::forbidden("sign-in by SMS code is off for this tenant"));
    }
    super::turnstile::check(&app, &tenant, body.turnstile_token.as_deref(), ip).await?;
    throttle(&app, format!("otp-ip:{tenant}:{}", ip.0), 10, 10).await?;
    throttle(&app, format!("otp-phone:{tenant}:{phone}"), 1, 3).await?;
    let mut tx = app.db.begin_write().await?;
    let user: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT id, banned_at FROM users WHERE tenant_id = $1 AND phone = $2")
            .bind(&tenant)
            .bind(&phone)
            .fetch_optional(&mut *tx)
            .await?;
    let send = match &user {
        Some((_, banned)) => banned.is_none(),
        None => settings.signup == "open",
    };
    {
        // The same work whether or not the text goes: a code nobody can use when it does not.
        let user_id = user.as_ref().map(|(id, _)| id.as_str());
        let code = codes::issue_otp(&mut tx, &app.code_key, &tenant, user_id, &phone).await?;
        let brand = settings.brand(&mut tx, &tenant).await?;
        let text = format!("Your {brand} code is {code}. It expires in 5 minutes. Do not share it.");
        if send {
            crate::messages::queue_sms(&app, &mut tx, &tenant, &phone, &text).await?;
        } else {
            crate::messages::decoy(&app, &mut tx, &tenant, &text).await?;
        }
    }
    let who = auth_routes::who_at(&tenant, user.as_ref().map(|(id, _)| id.as_str()), ip);
    let resource = user.as_ref().map_or("unknown", |(id, _)| id.as_str());
    let entry =
        Entry { action: "user.otp_requested", resource_type: "user", resource_id: resource, changes: json!({}) };
    audit::record(&mut *tx, &who, None, entry).await?;
    tx.commit().await?;
    Ok(Data(Message { message: "if the number can sign in here, a code is on its way".into() }))
}

/// A number and the code texted to it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OtpVerify {
    #[schema(value_type = crate::http::shapes::Phone)]
    pub phone: String,
    pub code: String,
    pub tenant_id: Option<String>,
}

/// Verify OTP
///
/// Trades the texted code for a session, or an MFA challenge when the user has a second factor
/// (the number counts as verified; a number with no user yet becomes one). A wrong code is 401; after 5 wrong guesses the code is spent.
#[utoipa::path(post, path = "/v1/auth/otp/verify", tag = "Authentication",
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant's id or slug")),
    request_body = OtpVerify,
    responses((status = 200, body = crate::http::response::Envelope<SignedIn>, description = "Tokens, or an MFA challenge"),
              (status = 401, body = crate::http::error::ErrorBody, description = "Wrong, used or expired code"),
              (status = 403, body = crate::http::error::ErrorBody, description = "Banned"),
              (status = 429, body = crate::http::error::ErrorBody)))]
pub async fn otp_verify(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<OtpVerify>,
) -> ApiResult<Data<SignedIn>> {
    let tenant = super::tenant_of(&app, auth.as_ref().ok(), &headers, body.tenant_id.as_deref()).await?;
    let phone = super::normalise_phone(&body.phone).map_err(|e| ApiError::invalid("phone", e))?;
    throttle(&app, format!("otp-verify-ip:{tenant}:{}", ip.0), 30, 30).await?;
    let refused = || ApiError::unauthorized("wrong, used or expired code: ask for a new one if it keeps failing");
    if body.code.len() != 6 || !body.code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    let mut tx = app.db.begin_write().await?;
    let code = match codes::check_otp(&mut tx, &app.code_key, &tenant, &phone, &body.code).await? {
        OtpCheck::Right(code) => code,
        OtpCheck::Wrong => {
            tx.commit().await?;
            return Err(refused());
        }
        OtpCheck::Missing => return Err(refused()),
    };
    let now = time::to_db(&time::now());
    // The tenant's settings when the code is used, not when it was sent.
    let settings = config::load(&mut tx, &tenant).await?;
    if !settings.methods.otp {
        return Err(ApiError::forbidden("sign-in by SMS code is off for this tenant"));
    }
    let existing = match &code.user_id {
        Some(id) => Some(
            super::find(&mut tx, &tenant, id)
                .await?
                .filter(|u| u.phone.as_deref() == Some(&phone))
                .ok_or_else(refused)?,
        ),
        None => {
            let found: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE tenant_id = $1 AND phone = $2")
                .bind(&tenant)
                .bind(&phone)
                .fetch_optional(&mut *tx)
                .await?;
            match found {
                Some((id,)) => super::find(&mut tx, &tenant, &id).await?,
                None => None,
            }
        }
    };
    let mut user = match existing {
        Some(user) => user,
        None if settings.signup != "open" => return Err(refused()),
        None => {
            let fields = NewUser {
                phone: Some(phone.clone()),
                role: "authenticated".into(),
                phone_verified: true,
                user_metadata: json!({}),
                ..NewUser::default()
            };
            admin::insert(&mut tx, &tenant, fields).await?
        }
    };
    if user.is_banned() {
        return Err(ApiError::forbidden("this user is banned"));
    }
    super::claim(&mut tx, &mut user).await?;
    if user.phone_verified_at.is_none() {
        sqlx::query("UPDATE users SET phone_verified_at = $1 WHERE id = $2")
            .bind(&now)
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        user.phone_verified_at = Some(now.clone());
    }
    let device = auth_routes::device_of(ip, &headers);
    let signed = auth_routes::sign_in(&app, &mut tx, &user, &device, "otp").await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(signed))
}
