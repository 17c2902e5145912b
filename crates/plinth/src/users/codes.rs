//! Single-use secrets sent to users: email verification, password reset and magic-link tokens
//! (43 random characters), stored as SHA-256 hashes with an expiry. Issuing one for a user and
//! purpose retires the earlier ones; using one marks it used, so it works once.

use chrono::Duration;
use sqlx::FromRow;

use crate::db::WriteTx;
use crate::http::{ApiError, ApiResult};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::{secrets, time};

/// What a code is for, and how long it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
    MagicLink,
    /// A 6-digit code by SMS.
    Otp,
    /// Proof of a password check, to finish a login with a second factor.
    MfaTicket,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
            Purpose::MagicLink => "magic_link",
            Purpose::Otp => "otp",
            Purpose::MfaTicket => "mfa_ticket",
        }
    }

    fn lifetime(self) -> Duration {
        match self {
            Purpose::VerifyEmail => Duration::hours(24),
            Purpose::ResetPassword => Duration::hours(1),
            Purpose::MagicLink => Duration::minutes(15),
            Purpose::Otp | Purpose::MfaTicket => Duration::minutes(5),
        }
    }
}

/// A code as stored.
#[derive(Debug, Clone, FromRow)]
pub struct Code {
    pub id: String,
    pub tenant_id: TenantId,
    pub user_id: Option<String>,
    pub target: Option<String>,
    pub redirect_to: Option<String>,
}

/// A new code for `user` (or, for a magic link to an address with no user yet, none) sent to
/// `target`: the token to send. Earlier unused codes of the user (or target) for the purpose
/// stop working.
pub async fn issue(
    tx: &mut WriteTx,
    tenant: &TenantId,
    user: Option<&str>,
    purpose: Purpose,
    target: &str,
    redirect_to: Option<&str>,
) -> ApiResult<String> {
    let now = time::now();
    sqlx::query(
        "UPDATE auth_codes SET used_at = $1 WHERE tenant_id = $2 AND purpose = $3 AND target = $4 AND used_at IS NULL",
    )
    .bind(time::to_db(&now))
    .bind(tenant)
    .bind(purpose.as_str())
    .bind(target)
    .execute(&mut **tx)
    .await?;
    let token = secrets::random_alphanumeric(43);
    sqlx::query(
        "INSERT INTO auth_codes (id, tenant_id, user_id, purpose, code_hash, target, redirect_to, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id::new_id(prefix::AUTH_CODE))
    .bind(tenant)
    .bind(user)
    .bind(purpose.as_str())
    .bind(secrets::sha256_hex(&token))
    .bind(target)
    .bind(redirect_to)
    .bind(time::to_db(&now))
    .bind(time::to_db(&(now + purpose.lifetime())))
    .execute(&mut **tx)
    .await?;
    Ok(token)
}

/// Uses the live code `token` of `purpose` (in `tenant`, when known): it works once. 400 for an
/// unknown, used or expired one.
pub async fn redeem(tx: &mut WriteTx, tenant: Option<&TenantId>, purpose: Purpose, token: &str) -> ApiResult<Code> {
    let invalid = || ApiError::bad_request("this link or token is invalid, used or expired: ask for a new one");
    if token.is_empty() || token.len() > 200 {
        return Err(invalid());
    }
    let now = time::to_db(&time::now());
    let code: Option<Code> = sqlx::query_as(
        "UPDATE auth_codes SET used_at = $1 WHERE code_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
         RETURNING id, tenant_id, user_id, target, redirect_to",
    )
    .bind(&now)
    .bind(secrets::sha256_hex(token))
    .bind(purpose.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    match code {
        Some(code) if tenant.is_none_or(|t| *t == code.tenant_id) => Ok(code),
        _ => Err(invalid()),
    }
}

/// Wrong guesses a code survives.
pub const OTP_ATTEMPTS: i64 = 5;

/// The stored form of a 6-digit code: an HMAC under the server's key, bound to the tenant and
/// phone (a plain hash of a million possible codes would be read back in a moment).
fn otp_hash(key: &[u8; 32], tenant: &TenantId, phone: &str, code: &str) -> String {
    secrets::hex(&secrets::hmac_sha256(key, &[format!("otp\n{tenant}\n{phone}\n{code}").as_bytes()]))
}

/// A new 6-digit code for `phone` (and its user, when there is one): earlier codes stop working.
pub async fn issue_otp(
    tx: &mut WriteTx,
    key: &[u8; 32],
    tenant: &TenantId,
    user: Option<&str>,
    phone: &str,
) -> ApiResult<String> {
    let code = format!("{:06}", rand::Rng::gen_range(&mut rand::rngs::OsRng, 0..1_000_000u32));
    let now = time::now();
    sqlx::query("UPDATE auth_codes SET used_at = $1 WHERE tenant_id = $2 AND purpose = 'otp' AND target = $3 AND used_at IS NULL")
        .bind(time::to_db(&now))
        .bind(tenant)
        .bind(phone)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO auth_codes (id, tenant_id, user_id, purpose, code_hash, target, created_at, expires_at) \
         VALUES ($1, $2, $3, 'otp', $4, $5, $6, $7)",
    )
    .bind(id::new_id(prefix::AUTH_CODE))
    .bind(tenant)
    .bind(user)
    .bind(otp_hash(key, tenant, phone, &code))
    .bind(phone)
    .bind(time::to_db(&now))
    .bind(time::to_db(&(now + Purpose::Otp.lifetime())))
    .execute(&mut **tx)
    .await?;
    Ok(code)
}

/// What checking a code came to. A wrong guess is counted in `tx`: commit it.
pub enum OtpCheck {
    Right(Code),
    Wrong,
    /// No live code, or its guesses ran out.
    Missing,
}

/// Checks `code` against the live code of `phone`.
pub async fn check_otp(
    tx: &mut WriteTx,
    key: &[u8; 32],
    tenant: &TenantId,
    phone: &str,
    code: &str,
) -> ApiResult<OtpCheck> {
    let now = time::to_db(&time::now());
    let live: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT id, code_hash, attempts FROM auth_codes WHERE tenant_id = $1 AND purpose = 'otp' AND target = $2 \
         AND used_at IS NULL AND expires_at > $3 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(phone)
    .bind(&now)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((id, stored, attempts)) = live else { return Ok(OtpCheck::Missing) };
    if attempts >= OTP_ATTEMPTS {
        return Ok(OtpCheck::Missing);
    }
    let given = otp_hash(key, tenant, phone, code.trim());
    if !secrets::constant_time_eq(given.as_bytes(), stored.as_bytes()) {
        // Counted atomically, so that concurrent guesses cannot share one attempt.
        sqlx::query("UPDATE auth_codes SET attempts = attempts + 1 WHERE id = $1").bind(&id).execute(&mut **tx).await?;
        return Ok(OtpCheck::Wrong);
    }
    let used: Option<Code> = sqlx::query_as(
        "UPDATE auth_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND attempts < $3 \
         RETURNING id, tenant_id, user_id, target, redirect_to",
    )
    .bind(&now)
    .bind(&id)
    .bind(OTP_ATTEMPTS)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(used.map_or(OtpCheck::Missing, OtpCheck::Right))
}
