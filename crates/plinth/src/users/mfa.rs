//! A second factor (seed 002's MFA): TOTP per RFC 6238 (SHA-1, 6 digits, 30 s, one step of
//! clock skew either way, a code never accepted twice), ten one-use recovery codes, and a lock
//! of 15 minutes after five failed checks. A user with a verified factor who signs in gets an
//! MFA challenge (`mfa_ticket`, 5 minutes) instead of tokens, and finishes with
//! `POST /v1/auth/mfa/complete` or `/recover`.

use axum::extract::State;
use axum::http::HeaderMap;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use totp_rs::{Algorithm, TOTP};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth_routes::{self, signed_in, throttle};
use super::codes::{self, Purpose};
use super::sessions::Tokens;
use super::UserRow;
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, ClientIp};
use crate::db::WriteTx;
use crate::events::{self, Event};
use crate::http::{ApiError, ApiResult, Created, Data, ErrorCode, Json, OptionalJson, Path};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::scopes::required::USERS_READ;
use crate::{keyring, secrets, time};

const STEP_SECS: u64 = 30;
const DIGITS: usize = 6;
/// Failed checks before the lock, and how long it holds.
const FAILURES_BEFORE_LOCK: i64 = 5;
const LOCK_MINUTES: i64 = 15;
const RECOVERY_CODES: usize = 10;
const FACTORS_MAX: i64 = 10;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(enroll))
        .routes(routes!(verify_factor))
        .routes(routes!(challenge))
        .routes(routes!(complete))
        .routes(routes!(recover))
        .routes(routes!(list_factors))
        .routes(routes!(unenroll))
        .routes(routes!(user_factors))
}

/// An enrolled factor.
#[derive(Debug, Serialize, ToSchema)]
pub struct Factor {
    #[schema(example = "mfa_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    /// `totp`.
    #[serde(rename = "type")]
    pub kind: String,
    pub friendly_name: Option<String>,
    /// `verified` once a code confirmed it, else `unverified`.
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
}

type FactorRow = (String, String, Option<String>, String, Option<String>);

async fn factors_of(conn: &mut sqlx::AnyConnection, tenant: &TenantId, user: &str) -> ApiResult<Vec<Factor>> {
    let rows: Vec<FactorRow> = sqlx::query_as(
        "SELECT id, kind, friendly_name, created_at, verified_at FROM mfa_factors \
         WHERE user_id = $1 AND tenant_id = $2 ORDER BY created_at, id",
    )
    .bind(user)
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(id, kind, friendly_name, created, verified)| {
            Ok(Factor {
                status: if verified.is_some() { "verified" } else { "unverified" },
                verified_at: time::from_db_opt(verified)?,
                created_at: time::from_db(&created)?,
                id,
                kind,
                friendly_name,
            })
        })
        .collect()
}

/// What a sign-in answers when a second factor is due.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaChallenge {
    /// Always true.
    pub mfa_required: bool,
    /// Send it to `POST /v1/auth/mfa/complete` with a code (or `/recover`) within 5 minutes.
    pub mfa_ticket: String,
    pub factors: Vec<Factor>,
}

/// A sign-in's answer: tokens, or the MFA challenge.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SignedIn {
    Tokens(Box<Tokens>),
    Mfa(MfaChallenge),
}

/// The challenge for `user` when they have a verified factor: the sign-in stops there.
pub async fn gate(tx: &mut WriteTx, user: &UserRow) -> ApiResult<Option<MfaChallenge>> {
    let factors: Vec<Factor> =
        factors_of(tx, &user.tenant_id, &user.id).await?.into_iter().filter(|f| f.status == "verified").collect();
    if factors.is_empty() {
        return Ok(None);
    }
    let ticket = codes::issue(tx, &user.tenant_id, Some(&user.id), Purpose::MfaTicket, &user.id, None).await?;
    Ok(Some(MfaChallenge { mfa_required: true, mfa_ticket: ticket, factors }))
}

fn totp(secret: Vec<u8>) -> TOTP {
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 1, STEP_SECS, secret)
}

/// The time step `code` is right for (this one, or one either side), if later than `last_step`.
fn matching_step(secret: &[u8], code: &str, last_step: i64, now: u64) -> Option<i64> {
    let generator = totp(secret.to_vec());
    let current = (now / STEP_SECS) as i64;
    (current - 1..=current + 1).filter(|step| *step > last_step).find(|step| {
        let expected = generator.generate(*step as u64 * STEP_SECS);
        secrets::constant_time_eq(expected.as_bytes(), code.trim().as_bytes())
    })
}

/// Refuses (403) a change to how `user` signs in from a session that has not passed their
/// second factor, when they have one: a stolen first-factor session cannot weaken the second.
pub async fn require_second_factor(conn: &mut sqlx::AnyConnection, user: &str, session: &str) -> ApiResult<()> {
    let (verified,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM mfa_factors WHERE user_id = $1 AND verified_at IS NOT NULL")
            .bind(user)
            .fetch_one(&mut *conn)
            .await?;
    if verified == 0 {
        return Ok(());
    }
    let (aal,): (String,) =
        sqlx::query_as("SELECT aal FROM auth_sessions WHERE id = $1").bind(session).fetch_one(&mut *conn).await?;
    if aal == "aal2" {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "this change needs a session that passed the second factor: POST /v1/auth/mfa/challenge first",
    ))
}

/// Refuses while the user's second factor is locked.
fn check_lock(locked_until: Option<&str>) -> ApiResult<()> {
    if let Some(until) = locked_until.and_then(|t| time::from_db(t).ok()).filter(|t| *t > time::now()) {
        let mut error = ApiError::new(
            ErrorCode::RateLimited,
            "too many failed codes: second-factor checks are locked for 15 minutes",
        );
        error.extra.insert("retry_after".into(), json!((until - time::now()).num_seconds().max(1)));
        return Err(error);
    }
    Ok(())
}

async fn lock_state(tx: &mut WriteTx, user: &str) -> ApiResult<Option<String>> {
    let (until,): (Option<String>,) =
        sqlx::query_as("SELECT mfa_locked_until FROM users WHERE id = $1").bind(user).fetch_one(&mut **tx).await?;
    Ok(until)
}

/// Counts a failed check; the fifth locks.
async fn failed(tx: &mut WriteTx, user: &str) -> ApiResult<()> {
    let (failures,): (i64,) =
        sqlx::query_as("UPDATE users SET mfa_failures = mfa_failures + 1 WHERE id = $1 RETURNING mfa_failures")
            .bind(user)
            .fetch_one(&mut **tx)
            .await?;
    if failures >= FAILURES_BEFORE_LOCK {
        let until = time::now() + chrono::Duration::minutes(LOCK_MINUTES);
        sqlx::query("UPDATE users SET mfa_failures = 0, mfa_locked_until = $1 WHERE id = $2")
            .bind(time::to_db(&until))
            .bind(user)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn succeeded(tx: &mut WriteTx, user: &str) -> ApiResult<()> {
    sqlx::query("UPDATE users SET mfa_failures = 0, mfa_locked_until = NULL WHERE id = $1")
        .bind(user)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Checks a TOTP code against the user's factor (`factor`, or any verified one); counts
/// failures. `Ok(false)` for a wrong code: commit `tx` to keep the count.
async fn check_code(
    app: &App,
    tx: &mut WriteTx,
    user: &UserRow,
    factor: Option<&str>,
    code: &str,
    verified_only: bool,
) -> ApiResult<Option<String>> {
    // Held until commit: concurrent guesses queue behind each other's failure count.
    crate::db::lock_row(tx, app.db.backend(), "users", &user.id, true).await?;
    check_lock(lock_state(tx, &user.id).await?.as_deref())?;
    let rows: Vec<(String, String, i64, Option<String>)> = sqlx::query_as(
        "SELECT id, secret, last_step, verified_at FROM mfa_factors WHERE user_id = $1 AND tenant_id = $2 AND kind = 'totp'",
    )
    .bind(&user.id)
    .bind(&user.tenant_id)
    .fetch_all(&mut **tx)
    .await?;
    let candidates: Vec<_> = rows
        .into_iter()
        .filter(|(id, _, _, verified)| factor.is_none_or(|f| f == id) && (!verified_only || verified.is_some()))
        .collect();
    if candidates.is_empty() {
        return Err(ApiError::not_found("factor"));
    }
    let now = time::now().timestamp().max(0) as u64;
    for (id, sealed, last_step, _) in candidates {
        let secret = keyring::open(tx, &app.wrap_key, &user.tenant_id, "mfa_factor", &id, &sealed).await?;
        let bytes = totp_rs::Secret::Encoded(secret)
            .to_bytes()
            .map_err(|_| ApiError::internal("a factor's secret is unreadable"))?;
        if let Some(step) = matching_step(&bytes, code, last_step, now) {
            // The step is taken only if nobody took it (or a later one) meanwhile.
            let taken = sqlx::query("UPDATE mfa_factors SET last_step = $1 WHERE id = $2 AND last_step < $1")
                .bind(step)
                .bind(&id)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if taken == 1 {
                succeeded(tx, &user.id).await?;
                return Ok(Some(id));
            }
        }
    }
    failed(tx, &user.id).await?;
    Ok(None)
}

fn wrong_code() -> ApiError {
    ApiError::unauthorized("wrong or already used code")
}

/// The QR code of `uri` as an SVG `data:` URI.
fn qr_uri(uri: &str) -> String {
    let Ok(qr) = qrcodegen::QrCode::encode_text(uri, qrcodegen::QrCodeEcc::Medium) else { return String::new() };
    let border = 4;
    let size = qr.size() + border * 2;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" shape-rendering=\"crispEdges\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    );
    format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(svg))
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

/// A new factor's secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpSecret {
    /// Base32, for typing into an authenticator.
    pub secret: String,
    /// `otpauth://totp/...`.
    pub uri: String,
    /// The URI as a QR code: an SVG `data:` URI.
    pub qr_uri: String,
}

/// A factor being enrolled, with its recovery codes (shown only now).
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrolled {
    pub factor_id: String,
    /// `totp`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub friendly_name: Option<String>,
    pub totp: TotpSecret,
    /// Ten one-use codes for when the authenticator is lost; they replace earlier ones.
    pub recovery_codes: Vec<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    pub friendly_name: Option<String>,
}

fn recovery_hash(code: &str) -> String {
    secrets::sha256_hex(&code.trim().to_lowercase().replace('-', ""))
}

/// Enroll TOTP factor
///
/// A new TOTP factor for the signed-in user: the secret, its `otpauth://` URI and a QR code, and
/// ten recovery codes, shown only now. The factor counts once `POST /v1/auth/mfa/verify` confirms
/// a code from it.
#[utoipa::path(post, path = "/v1/auth/mfa/enroll", tag = "MFA", security(("bearer" = [])),
    request_body(content = Option<Enroll>),
    responses((status = 201, body = crate::http::response::Envelope<Enrolled>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "Ten factors already")))]
async fn enroll(
    auth: Auth,
    State(app): State<App>,
    OptionalJson(body): OptionalJson<Enroll>,
) -> ApiResult<Created<Enrolled>> {
    let (user_id, session) = signed_in(&auth)?;
    let tenant = auth.tenant()?.clone();
    let body = body.unwrap_or_default();
    {
        // A new factor replaces the recovery codes: only from a session that passed the current one.
        let mut conn = app.db.pool().acquire().await?;
        require_second_factor(&mut conn, &user_id, &session).await?;
    }
    if body.friendly_name.as_ref().is_some_and(|n| n.trim().is_empty() || n.chars().count() > 100) {
        return Err(ApiError::invalid("friendly_name", "1 to 100 characters"));
    }
    let mut tx = app.db.begin_write().await?;
    let user = super::find(&mut tx, &tenant, &user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM mfa_factors WHERE user_id = $1")
        .bind(&user_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= FACTORS_MAX {
        return Err(ApiError::new(ErrorCode::Conflict, format!("at most {FACTORS_MAX} factors: remove one first")));
    }
    let id = id::new_id(prefix::MFA_FACTOR);
    let raw: Vec<u8> = (0..20).map(|_| rand::Rng::gen::<u8>(&mut rand::rngs::OsRng)).collect();
    let secret = match totp_rs::Secret::Raw(raw).to_encoded() {
        totp_rs::Secret::Encoded(text) => text,
        totp_rs::Secret::Raw(_) => return Err(ApiError::internal("encoding a secret failed")),
    };
    let sealed = keyring::seal(&mut tx, &app.wrap_key, &tenant, "mfa_factor", &id, &secret).await?;
    let now = time::to_db(&time::now());
    sqlx::query(
        "INSERT INTO mfa_factors (id, tenant_id, user_id, kind, friendly_name, secret, created_at) \
         VALUES ($1, $2, $3, 'totp', $4, $5, $6)",
    )
    .bind(&id)
    .bind(&tenant)
    .bind(&user_id)
    .bind(&body.friendly_name)
    .bind(&sealed)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1").bind(&user_id).execute(&mut *tx).await?;
    let mut recovery_codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let raw = secrets::random_alphanumeric(10).to_lowercase();
        let code = format!("{}-{}", &raw[..5], &raw[5..]);
        sqlx::query("INSERT INTO mfa_recovery_codes (id, tenant_id, user_id, code_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id::new_id(prefix::RECOVERY_CODE))
            .bind(&tenant)
            .bind(&user_id)
            .bind(recovery_hash(&code))
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        recovery_codes.push(code);
    }
    let (name,): (String,) =
        sqlx::query_as("SELECT name FROM tenants WHERE id = $1").bind(&tenant).fetch_one(&mut *tx).await?;
    let account = user.email.clone().or(user.phone.clone()).unwrap_or_else(|| user.id.clone());
    let uri = format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        encode(&name),
        encode(&account),
        encode(&name)
    );
    let entry =
        Entry { action: "user.mfa_enrolling", resource_type: "mfa_factor", resource_id: &id, changes: json!({}) };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Created(Enrolled {
        factor_id: id,
        kind: "totp",
        friendly_name: body.friendly_name,
        totp: TotpSecret { qr_uri: qr_uri(&uri), secret, uri },
        recovery_codes,
    }))
}

/// A code from a factor.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FactorCode {
    pub factor_id: String,
    pub code: String,
}

/// Whether a code checked out.
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeVerified {
    pub verified: bool,
}

async fn elevate(tx: &mut WriteTx, session: &str) -> ApiResult<()> {
    sqlx::query("UPDATE auth_sessions SET aal = 'aal2' WHERE id = $1").bind(session).execute(&mut **tx).await?;
    Ok(())
}

/// Verify TOTP code
///
/// Confirms a new factor with a code from it: from now on, signing in asks for a code. The
/// session counts as having passed a second factor.
#[utoipa::path(post, path = "/v1/auth/mfa/verify", tag = "MFA", security(("bearer" = [])),
    request_body = FactorCode,
    responses((status = 200, body = crate::http::response::Envelope<CodeVerified>),
              (status = 401, body = crate::http::error::ErrorBody, description = "Wrong or used code"),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 429, body = crate::http::error::ErrorBody, description = "Locked after five failures")))]
async fn verify_factor(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<FactorCode>,
) -> ApiResult<Data<CodeVerified>> {
    let (user_id, session) = signed_in(&auth)?;
    let tenant = auth.tenant()?.clone();
    let mut tx = app.db.begin_write().await?;
    let user = super::find(&mut tx, &tenant, &user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let Some(factor) = check_code(&app, &mut tx, &user, Some(&body.factor_id), &body.code, false).await? else {
        tx.commit().await?;
        return Err(wrong_code());
    };
    let now = time::to_db(&time::now());
    let first = sqlx::query("UPDATE mfa_factors SET verified_at = $1 WHERE id = $2 AND verified_at IS NULL")
        .bind(&now)
        .bind(&factor)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    elevate(&mut tx, &session).await?;
    if first {
        let data = json!({ "user_id": user_id, "factor_id": factor, "type": "totp" });
        events::record(
            &mut tx,
            &tenant,
            Event { kind: "user.mfa_enrolled", resource_type: "user", resource_id: &user_id, data },
        )
        .await?;
        let entry = Entry {
            action: "user.mfa_enrolled",
            resource_type: "mfa_factor",
            resource_id: &factor,
            changes: json!({}),
        };
        audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    }
    tx.commit().await?;
    Ok(Data(CodeVerified { verified: true }))
}

/// A step-up check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    pub factor_id: String,
    pub code: String,
    /// The signed-in user's id (optional; checked when given).
    pub user_id: Option<String>,
}

/// The outcome of a step-up check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Challenged {
    pub user_id: String,
    pub verified: bool,
}

/// Challenge MFA
///
/// A code from a verified factor of the signed-in user: the session counts as having passed a
/// second factor (needed, say, to remove a factor).
#[utoipa::path(post, path = "/v1/auth/mfa/challenge", tag = "MFA", security(("bearer" = [])),
    request_body = Challenge,
    responses((status = 200, body = crate::http::response::Envelope<Challenged>),
              (status = 401, body = crate::http::error::ErrorBody, description = "Wrong or used code"),
              (status = 429, body = crate::http::error::ErrorBody, description = "Locked after five failures")))]
async fn challenge(auth: Auth, State(app): State<App>, Json(body): Json<Challenge>) -> ApiResult<Data<Challenged>> {
    let (user_id, session) = signed_in(&auth)?;
    if body.user_id.as_ref().is_some_and(|u| *u != user_id) {
        return Err(ApiError::invalid("user_id", "is not the signed-in user"));
    }
    let tenant = auth.tenant()?.clone();
    let mut tx = app.db.begin_write().await?;
    let user = super::find(&mut tx, &tenant, &user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    if check_code(&app, &mut tx, &user, Some(&body.factor_id), &body.code, true).await?.is_none() {
        tx.commit().await?;
        return Err(wrong_code());
    }
    elevate(&mut tx, &session).await?;
    tx.commit().await?;
    Ok(Data(Challenged { user_id, verified: true }))
}

/// The user an MFA ticket is for, without spending it.
async fn ticket_user(tx: &mut WriteTx, ticket: &str) -> ApiResult<UserRow> {
    let invalid = || ApiError::unauthorized("invalid or expired MFA ticket: sign in again");
    if ticket.is_empty() || ticket.len() > 200 {
        return Err(invalid());
    }
    let found: Option<(TenantId, String)> = sqlx::query_as(
        "SELECT tenant_id, user_id FROM auth_codes WHERE code_hash = $1 AND purpose = 'mfa_ticket' AND used_at IS NULL \
         AND expires_at > $2",
    )
    .bind(secrets::sha256_hex(ticket))
    .bind(time::to_db(&time::now()))
    .fetch_optional(&mut **tx)
    .await?;
    let (tenant, user) = found.ok_or_else(invalid)?;
    let user = super::find(tx, &tenant, &user).await?.ok_or_else(invalid)?;
    if user.is_banned() {
        return Err(ApiError::forbidden("this user is banned"));
    }
    Ok(user)
}

async fn finish(
    app: &App,
    mut tx: WriteTx,
    user: &UserRow,
    ticket: &str,
    ip: ClientIp,
    headers: &HeaderMap,
    method: &str,
) -> ApiResult<Tokens> {
    codes::redeem(&mut tx, Some(&user.tenant_id), Purpose::MfaTicket, ticket).await?;
    let device = auth_routes::device_of(ip, headers);
    let tokens = auth_routes::open_session(app, &mut tx, user, &device, method, "aal2").await?;
    tx.commit().await?;
    Ok(tokens)
}

/// The second step of a sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    pub mfa_ticket: String,
    /// The factor; any verified one when absent.
    pub factor_id: Option<String>,
    pub code: String,
}

/// Complete MFA login
///
/// Finishes a sign-in that answered an MFA challenge: the ticket and a code from a verified
/// factor. Five failures lock second-factor checks for 15 minutes (429).
#[utoipa::path(post, path = "/v1/auth/mfa/complete", tag = "MFA",
    request_body = Complete,
    responses((status = 200, body = crate::http::response::Envelope<Tokens>),
              (status = 401, body = crate::http::error::ErrorBody, description = "Wrong code, or the ticket is spent"),
              (status = 429, body = crate::http::error::ErrorBody, description = "Locked after five failures")))]
async fn complete(
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<Complete>,
) -> ApiResult<Data<Tokens>> {
    throttle(&app, format!("mfa-ip:{}", ip.0), 30, 30).await?;
    let mut tx = app.db.begin_write().await?;
    let user = ticket_user(&mut tx, &body.mfa_ticket).await?;
    if check_code(&app, &mut tx, &user, body.factor_id.as_deref(), &body.code, true).await?.is_none() {
        let entry =
            Entry { action: "user.mfa_failed", resource_type: "user", resource_id: &user.id, changes: json!({}) };
        let who = auth_routes::who(&user.tenant_id, Some(&user.id), &auth_routes::device_of(ip, &headers));
        audit::record(&mut *tx, &who, None, entry).await?;
        tx.commit().await?;
        return Err(wrong_code());
    }
    Ok(Data(finish(&app, tx, &user, &body.mfa_ticket, ip, &headers, "mfa_totp").await?))
}

/// A recovery code instead of a TOTP code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    pub mfa_ticket: String,
    pub recovery_code: String,
}

/// MFA recovery
///
/// Finishes a sign-in with one of the recovery codes instead of a TOTP code; the code is spent.
#[utoipa::path(post, path = "/v1/auth/mfa/recover", tag = "MFA",
    request_body = Recover,
    responses((status = 200, body = crate::http::response::Envelope<Tokens>),
              (status = 401, body = crate::http::error::ErrorBody, description = "Wrong or used code"),
              (status = 429, body = crate::http::error::ErrorBody, description = "Locked after five failures")))]
async fn recover(
    State(app): State<App>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<Recover>,
) -> ApiResult<Data<Tokens>> {
    throttle(&app, format!("mfa-ip:{}", ip.0), 30, 30).await?;
    let mut tx = app.db.begin_write().await?;
    let user = ticket_user(&mut tx, &body.mfa_ticket).await?;
    crate::db::lock_row(&mut tx, app.db.backend(), "users", &user.id, true).await?;
    check_lock(lock_state(&mut tx, &user.id).await?.as_deref())?;
    let used = sqlx::query(
        "UPDATE mfa_recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
    )
    .bind(time::to_db(&time::now()))
    .bind(&user.id)
    .bind(recovery_hash(&body.recovery_code))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if used == 0 {
        failed(&mut tx, &user.id).await?;
        tx.commit().await?;
        return Err(wrong_code());
    }
    succeeded(&mut tx, &user.id).await?;
    Ok(Data(finish(&app, tx, &user, &body.mfa_ticket, ip, &headers, "mfa_recovery").await?))
}

/// List MFA factors
///
/// The signed-in user's factors.
#[utoipa::path(get, path = "/v1/auth/mfa/factors", tag = "MFA", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<Vec<Factor>>),
              (status = 401, body = crate::http::error::ErrorBody)))]
async fn list_factors(auth: Auth, State(app): State<App>) -> ApiResult<Data<Vec<Factor>>> {
    let (user, _) = signed_in(&auth)?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(Data(factors_of(&mut conn, auth.tenant()?, &user).await?))
}

/// Whether a factor was removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unenrolled {
    pub unenrolled: bool,
}

/// Unenroll MFA factor
///
/// Removes one of the signed-in user's factors. A verified factor goes only from a session that
/// passed a second factor (`POST /v1/auth/mfa/challenge` first); with the last one go the
/// recovery codes.
#[utoipa::path(delete, path = "/v1/auth/mfa/{factor_id}", tag = "MFA", security(("bearer" = [])),
    params(("factor_id" = String, Path, description = "The factor's id")),
    responses((status = 200, body = crate::http::response::Envelope<Unenrolled>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody, description = "The session has not passed a second factor"),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn unenroll(auth: Auth, State(app): State<App>, Path(factor_id): Path<String>) -> ApiResult<Data<Unenrolled>> {
    let (user_id, session) = signed_in(&auth)?;
    let tenant = auth.tenant()?.clone();
    let mut tx = app.db.begin_write().await?;
    let found: Option<(Option<String>,)> =
        sqlx::query_as("SELECT verified_at FROM mfa_factors WHERE id = $1 AND user_id = $2 AND tenant_id = $3")
            .bind(&factor_id)
            .bind(&user_id)
            .bind(&tenant)
            .fetch_optional(&mut *tx)
            .await?;
    found.ok_or_else(|| ApiError::not_found("factor"))?;
    require_second_factor(&mut tx, &user_id, &session).await?;
    sqlx::query("DELETE FROM mfa_factors WHERE id = $1").bind(&factor_id).execute(&mut *tx).await?;
    let (left,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM mfa_factors WHERE user_id = $1 AND verified_at IS NOT NULL")
            .bind(&user_id)
            .fetch_one(&mut *tx)
            .await?;
    if left == 0 {
        sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1").bind(&user_id).execute(&mut *tx).await?;
    }
    let data = json!({ "user_id": user_id, "factor_id": factor_id });
    events::record(
        &mut tx,
        &tenant,
        Event { kind: "user.mfa_removed", resource_type: "user", resource_id: &user_id, data },
    )
    .await?;
    let entry =
        Entry { action: "user.mfa_removed", resource_type: "mfa_factor", resource_id: &factor_id, changes: json!({}) };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Data(Unenrolled { unenrolled: true }))
}

/// List user MFA factors
///
/// An admin's view of a user's factors (never their secrets).
#[utoipa::path(get, path = "/v1/users/{user_id}/mfa", tag = "Users", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The user's id")),
    responses((status = 200, body = crate::http::response::Envelope<Vec<Factor>>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn user_factors(auth: Auth, State(app): State<App>, Path(user_id): Path<String>) -> ApiResult<Data<Vec<Factor>>> {
    auth.require(USERS_READ)?;
    let tenant = auth.tenant()?.clone();
    let mut conn = app.db.pool().acquire().await?;
    super::find(&mut conn, &tenant, &user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Data(factors_of(&mut conn, &tenant, &user_id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_one_step_either_side_and_never_twice() {
        let secret = b"12345678901234567890".to_vec();
        let generator = totp(secret.clone());
        // RFC 6238's SHA-1 test vector at T = 59 s: 94287082, of which six digits are 287082.
        assert_eq!(generator.generate(59), "287082");
        let now = 1_111_111_109u64;
        let step = (now / STEP_SECS) as i64;
        for offset in [-1i64, 0, 1] {
            let code = generator.generate(((step + offset) as u64) * STEP_SECS);
            assert_eq!(matching_step(&secret, &code, 0, now), Some(step + offset));
            assert_eq!(matching_step(&secret, &code, step + offset, now), None, "a used step is refused");
        }
        let far = generator.generate(((step + 2) as u64) * STEP_SECS);
        assert_eq!(matching_step(&secret, &far, 0, now), None);
        assert!(qr_uri("otpauth://totp/x?secret=ABC").starts_with("data:image/svg+xml;base64,"));
    }
}
