//! Single-use secrets sent to users: email verification, password reset and magic-link tokens
//! (43 random characters), stored as SHA-256 hashes with an expiry. Issuing one for a user and
//! purpose retires the earlier ones; using one marks it used, so it works once.

use chrono::Duration;
use sqlx::FromRow;

use crate::db::WriteTx;
use crate::http::{ApiError, ApiResult};
use crate::id::{self, prefix};
use crate::{secrets, time};

/// What a code is for, and how long it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
    MagicLink,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
            Purpose::MagicLink => "magic_link",
        }
    }

    fn lifetime(self) -> Duration {
        match self {
            Purpose::VerifyEmail => Duration::hours(24),
            Purpose::ResetPassword => Duration::hours(1),
            Purpose::MagicLink => Duration::minutes(15),
        }
    }
}

/// A code as stored.
#[derive(Debug, Clone, FromRow)]
pub struct Code {
    pub id: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub target: Option<String>,
    pub redirect_to: Option<String>,
}

/// A new code for `user` (or, for a magic link to an address with no user yet, none) sent to
/// `target`: the token to send. Earlier unused codes of the user (or target) for the purpose
/// stop working.
pub async fn issue(
    tx: &mut WriteTx,
    tenant: &str,
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
pub async fn redeem(tx: &mut WriteTx, tenant: Option<&str>, purpose: Purpose, token: &str) -> ApiResult<Code> {
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
        Some(code) if tenant.is_none_or(|t| t == code.tenant_id) => Ok(code),
        _ => Err(invalid()),
    }
}
