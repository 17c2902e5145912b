//! A tenant's end users (seed 002): the admin side (`/v1/users`), sign-up and sign-in
//! (`/v1/auth/*`), sessions with rotating refresh tokens, and the tenant's auth settings.
//! A user's access token is a bearer credential on `/v1` like an API key.

pub mod admin;
pub mod auth_routes;
pub mod codes;
pub mod config;
pub mod email_flows;
pub mod mfa;
pub mod otp;
pub mod passwords;
pub mod portal;
pub mod sessions;
pub mod turnstile;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::app::App;
use crate::auth::Auth;
use crate::http::{ApiError, ApiResult};
use crate::id::TenantId;
use crate::time;

/// Roles a user may hold. `authenticated` is every signed-in user's.
pub const ROLES_MAX_CHARS: usize = 64;
/// Largest `user_metadata`, serialised.
pub const METADATA_MAX_BYTES: usize = 16 * 1024;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .merge(admin::routes())
        .merge(auth_routes::routes())
        .merge(email_flows::routes())
        .merge(otp::routes())
        .merge(mfa::routes())
        .merge(portal::routes())
        .merge(config::routes())
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    #[schema(example = "usr_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub email: Option<String>,
    /// E.164, such as `+15551234567`.
    pub phone: Option<String>,
    /// `authenticated` unless an admin set another.
    pub role: String,
    pub is_anonymous: bool,
    pub email_verified: bool,
    pub phone_verified: bool,
    pub banned: bool,
    pub ban_reason: Option<String>,
    #[schema(value_type = Object)]
    pub user_metadata: Value,
    /// Set by the tenant's admins only (never by the user): row policies read it as
    /// `$auth.metadata.<key>`.
    #[schema(value_type = Object)]
    pub app_metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

pub const COLUMNS: &str = "id, tenant_id, email, phone, password_hash, role, anonymous, email_verified_at, \
                           phone_verified_at, banned_at, ban_reason, user_metadata, app_metadata, last_sign_in_at, \
                           created_at, updated_at";

/// A stored user.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub tenant_id: TenantId,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub password_hash: Option<String>,
    pub role: String,
    pub anonymous: i64,
    pub email_verified_at: Option<String>,
    pub phone_verified_at: Option<String>,
    pub banned_at: Option<String>,
    pub ban_reason: Option<String>,
    pub user_metadata: String,
    pub app_metadata: String,
    pub last_sign_in_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl UserRow {
    pub fn is_banned(&self) -> bool {
        self.banned_at.is_some()
    }
}

impl TryFrom<UserRow> for User {
    type Error = ApiError;

    fn try_from(row: UserRow) -> ApiResult<User> {
        Ok(User {
            banned: row.banned_at.is_some(),
            email_verified: row.email_verified_at.is_some(),
            phone_verified: row.phone_verified_at.is_some(),
            is_anonymous: row.anonymous != 0,
            user_metadata: serde_json::from_str(&row.user_metadata).unwrap_or(Value::Object(Default::default())),
            app_metadata: serde_json::from_str(&row.app_metadata).unwrap_or(Value::Object(Default::default())),
            last_sign_in_at: time::from_db_opt(row.last_sign_in_at)?,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            id: row.id,
            email: row.email,
            phone: row.phone,
            role: row.role,
            ban_reason: row.ban_reason,
        })
    }
}

/// The user `id` of `tenant`.
pub async fn find(conn: &mut sqlx::AnyConnection, tenant: &TenantId, id: &str) -> ApiResult<Option<UserRow>> {
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?)
}

/// The user of `tenant` with `email` (lowercased).
pub async fn find_by_email(
    conn: &mut sqlx::AnyConnection,
    tenant: &TenantId,
    email: &str,
) -> ApiResult<Option<UserRow>> {
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND email = $2"))
        .bind(tenant)
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?)
}

/// An email address as stored: trimmed, lowercased, checked.
pub fn normalise_email(email: &str) -> Result<String, String> {
    let email = email.trim().to_lowercase();
    if email.len() > 254 || !email_address::EmailAddress::is_valid(&email) || !email.contains('.') {
        return Err("must be an email address".into());
    }
    Ok(email)
}

/// A phone number as stored: E.164 (`+` and 8 to 15 digits), spaces and dashes dropped.
pub fn normalise_phone(phone: &str) -> Result<String, String> {
    let compact: String = phone.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
    let digits = compact.strip_prefix('+').unwrap_or("");
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err("must be an E.164 number such as +15551234567".into());
    }
    Ok(compact)
}

/// Checks `user_metadata`: a JSON object of at most 16 KB.
pub fn check_metadata(metadata: &Value) -> Result<(), String> {
    if !metadata.is_object() {
        return Err("must be a JSON object".into());
    }
    if serde_json::to_vec(metadata).map(|v| v.len()).unwrap_or(usize::MAX) > METADATA_MAX_BYTES {
        return Err(format!("must be at most {} KB", METADATA_MAX_BYTES / 1024));
    }
    Ok(())
}

/// The tenant an end-user request is for: the credential's (an API key, or the platform admin
/// with `X-Tenant-ID`), else the one `X-Tenant-ID` or the body's `tenant_id` names, by id or
/// slug. Naming another tenant than the credential's is refused.
pub async fn tenant_of(app: &App, auth: Option<&Auth>, headers: &HeaderMap, body: Option<&str>) -> ApiResult<TenantId> {
    let named = headers
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .or(body.map(str::trim).filter(|v| !v.is_empty()));
    let credential = auth.and_then(|a| a.tenant().ok()).cloned();
    let resolved = match named {
        Some(name) if name.len() <= 100 => {
            let found: Option<(TenantId,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1 OR slug = $1")
                .bind(name)
                .fetch_optional(app.db.pool())
                .await?;
            Some(found.ok_or_else(|| ApiError::not_found("tenant"))?.0)
        }
        Some(_) => return Err(ApiError::not_found("tenant")),
        None => None,
    };
    match (credential, resolved) {
        (Some(own), Some(named)) if own != named => {
            Err(ApiError::bad_request("the tenant named differs from the credential's tenant"))
        }
        (Some(own), _) => Ok(own),
        (None, Some(named)) => Ok(named),
        (None, None) => Err(ApiError::bad_request(
            "name the tenant: an `X-Tenant-ID` header (tenant id or slug) or `tenant_id` in the body",
        )),
    }
}

/// When a link or code first proves an address of an account none of whose addresses was proven
/// before, whoever set that account's password may not be its owner (someone can sign up with
/// another's address): the password is dropped and every session ends, so the prover alone holds
/// the account.
pub async fn claim(tx: &mut crate::db::WriteTx, user: &mut UserRow) -> ApiResult<()> {
    let unproven = user.email_verified_at.is_none() && user.phone_verified_at.is_none() && user.anonymous == 0;
    if !unproven || user.password_hash.is_none() {
        return Ok(());
    }
    sqlx::query("UPDATE users SET password_hash = NULL WHERE id = $1").bind(&user.id).execute(&mut **tx).await?;
    sessions::end_all(tx, &user.tenant_id, &user.id, None, "address_claimed").await?;
    user.password_hash = None;
    Ok(())
}

/// Upkeep: removes codes a day past their expiry, messages a week after they were settled, and
/// sessions (with their refresh tokens) thirty days after they ended or expired.
pub async fn purge_expired(app: &App) -> Result<(), sqlx::Error> {
    let now = time::now();
    let day_ago = time::to_db(&(now - chrono::Duration::days(1)));
    let week_ago = time::to_db(&(now - chrono::Duration::days(7)));
    let month_ago = time::to_db(&(now - chrono::Duration::days(30)));
    let mut tx = app.db.begin_write().await?;
    sqlx::query("DELETE FROM auth_codes WHERE expires_at < $1").bind(&day_ago).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM outbound_messages WHERE status IN ('sent', 'failed') AND created_at < $1")
        .bind(&week_ago)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM auth_sessions \
         WHERE (ended_at IS NOT NULL AND ended_at < $1) OR expires_at < $1)",
    )
    .bind(&month_ago)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM auth_sessions WHERE (ended_at IS NOT NULL AND ended_at < $1) OR expires_at < $1")
        .bind(&month_ago)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod shape_tests {
    use proptest::prelude::*;
    use proptest::string::string_regex;

    use crate::http::shapes::PHONE_PATTERN;

    proptest! {
        #[test]
        fn phones_match_their_pattern_exactly(
            made in string_regex(&PHONE_PATTERN[1..PHONE_PATTERN.len() - 1]).unwrap(),
            any in string_regex("[ +().0-9a-]{0,24}").unwrap(),
        ) {
            prop_assert!(super::normalise_phone(&made).is_ok(), "{made}");
            let matches = regex::Regex::new(PHONE_PATTERN).unwrap().is_match(&any);
            prop_assert_eq!(matches, super::normalise_phone(&any).is_ok(), "{}", any);
        }
    }
}
