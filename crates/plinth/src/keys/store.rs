//! API key queries. Every query that reads or changes a tenant's keys takes its `TenantId`.

use ipnet::IpNet;
use sqlx::{Any, AnyConnection, AnyPool, Executor, FromRow};

use super::model::{ApiKey, KeyChanges, KeyMode, KeyStatus, NewKey};
use crate::auth::{KeyCredential, TenantId};
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, ListParams, Page};
use crate::tenants::model::Tier;
use crate::time::{self, Timestamp};

#[derive(Debug, FromRow)]
struct KeyRow {
    id: String,
    tenant_id: TenantId,
    label: String,
    mode: String,
    prefix: String,
    scopes: String,
    ip_allowlist: String,
    rate_limit_tier: Option<String>,
    rate_limit: Option<i64>,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    replaced_by: Option<String>,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, tenant_id, label, mode, prefix, scopes, ip_allowlist, rate_limit_tier, rate_limit, \
                       expires_at, last_used_at, replaced_by, created_at, updated_at";

impl TryFrom<KeyRow> for ApiKey {
    type Error = ApiError;

    fn try_from(row: KeyRow) -> ApiResult<ApiKey> {
        let expires_at = time::from_db_opt(row.expires_at)?;
        let status = match (expires_at, &row.replaced_by) {
            (Some(at), _) if at <= time::now() => KeyStatus::Expired,
            (_, Some(_)) => KeyStatus::Rotating,
            _ => KeyStatus::Active,
        };
        Ok(ApiKey {
            mode: if row.mode == "test" { KeyMode::Test } else { KeyMode::Live },
            scopes: serde_json::from_str(&row.scopes)?,
            ip_allowlist: serde_json::from_str(&row.ip_allowlist)?,
            rate_limit_tier: row.rate_limit_tier.as_deref().and_then(Tier::parse),
            rate_limit: row.rate_limit,
            status,
            expires_at,
            last_used_at: time::from_db_opt(row.last_used_at)?,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            id: row.id,
            tenant_id: row.tenant_id.into(),
            label: row.label,
            prefix: row.prefix,
            replaced_by: row.replaced_by,
        })
    }
}

fn allowlist_json(nets: &[IpNet]) -> String {
    serde_json::to_string(&nets.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default()
}

fn scopes_json(scopes: &[String]) -> String {
    serde_json::to_string(scopes).unwrap_or_default()
}

/// Inserts a key whose secret hashes to `secret_hash`.
#[allow(clippy::too_many_arguments)]
pub async fn insert<'e, E: Executor<'e, Database = Any>>(
    db: E,
    tenant: &TenantId,
    id: &str,
    key: &NewKey,
    prefix: &str,
    secret_hash: &str,
    now: &Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, label, mode, prefix, secret_hash, scopes, ip_allowlist, \
         rate_limit_tier, rate_limit, expires_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
    )
    .bind(id)
    .bind(tenant.as_str())
    .bind(&key.label)
    .bind(key.mode.as_str())
    .bind(prefix)
    .bind(secret_hash)
    .bind(scopes_json(&key.scopes))
    .bind(allowlist_json(&key.ip_allowlist))
    .bind(key.rate_limit_tier.map(Tier::as_str))
    .bind(key.rate_limit)
    .bind(key.expires_at.as_ref().map(time::to_db))
    .bind(time::to_db(now))
    .execute(db)
    .await
    .map(|_| ())
}

/// A key of `tenant` that has not been revoked.
pub async fn get<'e, E: Executor<'e, Database = Any>>(db: E, tenant: &TenantId, id: &str) -> ApiResult<Option<ApiKey>> {
    let row: Option<KeyRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL"
    ))
    .bind(id)
    .bind(tenant.as_str())
    .fetch_optional(db)
    .await?;
    row.map(ApiKey::try_from).transpose()
}

/// How key lists are stored and what they offer.
pub const LIST: ListSpec = ListSpec {
    table: "api_keys",
    columns: COLUMNS,
    sortable: &[
        SortField { name: "label", column: "label" },
        SortField { name: "created_at", column: "created_at" },
        SortField { name: "updated_at", column: "updated_at" },
    ],
    fields: &[
        "id",
        "tenant_id",
        "label",
        "prefix",
        "mode",
        "scopes",
        "ip_allowlist",
        "rate_limit_tier",
        "rate_limit",
        "status",
        "expires_at",
        "last_used_at",
        "replaced_by",
        "created_at",
        "updated_at",
    ],
    updated_at: true,
};

/// The tenant's keys that have not been revoked.
pub async fn list(db: &crate::db::Db, tenant: &TenantId, params: &ListParams) -> ApiResult<Page<ApiKey>> {
    let filter = Filter::new().eq("tenant_id", tenant.as_str()).raw("revoked_at IS NULL");
    let page: Page<KeyRow> = list::fetch(db, &LIST, filter, params).await?;
    page.try_map(ApiKey::try_from)
}

/// How many keys of the tenant have not been revoked.
pub async fn count(db: &AnyPool, tenant: &TenantId) -> ApiResult<i64> {
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL")
        .bind(tenant.as_str())
        .fetch_one(db)
        .await?;
    Ok(total)
}

/// Applies `changes`; false when there is no such live key.
pub async fn update(db: &mut AnyConnection, tenant: &TenantId, id: &str, changes: &KeyChanges) -> ApiResult<bool> {
    let Some(current) = get(&mut *db, tenant, id).await? else {
        return Ok(false);
    };
    let label = changes.label.as_ref().unwrap_or(&current.label);
    let scopes = changes.scopes.as_ref().unwrap_or(&current.scopes);
    let allowlist = match &changes.ip_allowlist {
        Some(nets) => allowlist_json(nets),
        None => serde_json::to_string(&current.ip_allowlist)?,
    };
    let expires_at = changes.expires_at.unwrap_or(current.expires_at);
    let tier = changes.rate_limit_tier.unwrap_or(current.rate_limit_tier);
    let rate_limit = changes.rate_limit.unwrap_or(current.rate_limit);
    let done = sqlx::query(
        "UPDATE api_keys SET label = $1, scopes = $2, ip_allowlist = $3, expires_at = $4, rate_limit_tier = $5, \
         rate_limit = $6, updated_at = $7 WHERE id = $8 AND tenant_id = $9 AND revoked_at IS NULL",
    )
    .bind(label)
    .bind(scopes_json(scopes))
    .bind(allowlist)
    .bind(expires_at.as_ref().map(time::to_db))
    .bind(tier.map(Tier::as_str))
    .bind(rate_limit)
    .bind(time::to_db(&time::now()))
    .bind(id)
    .bind(tenant.as_str())
    .execute(&mut *db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Marks the key replaced by `successor`, working until `until` (revoked now when `until` is now).
/// False when it was revoked or rotated meanwhile.
pub async fn mark_rotated<'e, E: Executor<'e, Database = Any>>(
    db: E,
    tenant: &TenantId,
    id: &str,
    successor: &str,
    until: &Timestamp,
    revoke_now: bool,
) -> ApiResult<bool> {
    let now = time::to_db(&time::now());
    let done = sqlx::query(
        "UPDATE api_keys SET replaced_by = $1, expires_at = $2, revoked_at = $3, updated_at = $4 \
         WHERE id = $5 AND tenant_id = $6 AND revoked_at IS NULL AND replaced_by IS NULL",
    )
    .bind(successor)
    .bind(time::to_db(until))
    .bind(revoke_now.then(|| now.clone()))
    .bind(&now)
    .bind(id)
    .bind(tenant.as_str())
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Revokes the key: it, and every token issued from it, stops working at once.
pub async fn revoke<'e, E: Executor<'e, Database = Any>>(db: E, tenant: &TenantId, id: &str) -> ApiResult<bool> {
    let now = time::to_db(&time::now());
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1, updated_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
    )
    .bind(&now)
    .bind(id)
    .bind(tenant.as_str())
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[derive(Debug, FromRow)]
struct CredentialRow {
    id: String,
    tenant_id: TenantId,
    scopes: String,
    ip_allowlist: String,
    expires_at: Option<String>,
    tier: String,
    rate_limit: Option<i64>,
    tenant_ip_allowlist: Option<String>,
}

impl TryFrom<CredentialRow> for KeyCredential {
    type Error = ApiError;

    fn try_from(row: CredentialRow) -> ApiResult<KeyCredential> {
        let allowlist: Vec<String> = serde_json::from_str(&row.ip_allowlist)?;
        Ok(KeyCredential {
            key_id: row.id,
            tenant_id: row.tenant_id,
            scopes: serde_json::from_str::<Vec<String>>(&row.scopes)?.into(),
            ip_allowlist: allowlist.iter().filter_map(|n| n.parse().ok()).collect(),
            expires_at: time::from_db_opt(row.expires_at)?,
            tier: Tier::parse(&row.tier).unwrap_or_default(),
            rate_limit: row.rate_limit,
            tenant_ip_allowlist: crate::auth::parse_stored_allowlist(row.tenant_ip_allowlist.as_deref()),
        })
    }
}

/// The live key whose secret hashes to `secret_hash`.
pub async fn find_credential(db: &AnyPool, secret_hash: &str) -> ApiResult<Option<KeyCredential>> {
    let row: Option<CredentialRow> = sqlx::query_as(
        "SELECT k.id, k.tenant_id, k.scopes, k.ip_allowlist, k.expires_at, \
         COALESCE(k.rate_limit_tier, t.tier) AS tier, k.rate_limit, g.ip_allowlist AS tenant_ip_allowlist \
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id LEFT JOIN governance g ON g.tenant_id = k.tenant_id \
         WHERE k.secret_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(secret_hash)
    .fetch_optional(db)
    .await?;
    row.map(KeyCredential::try_from).transpose()
}

/// The live key behind the live token `jti`: one round trip checks both revocations.
pub async fn find_token_credential(db: &AnyPool, jti: &str) -> ApiResult<Option<KeyCredential>> {
    let row: Option<CredentialRow> = sqlx::query_as(
        "SELECT k.id, k.tenant_id, k.scopes, k.ip_allowlist, k.expires_at, \
         COALESCE(k.rate_limit_tier, tn.tier) AS tier, k.rate_limit, g.ip_allowlist AS tenant_ip_allowlist \
         FROM issued_tokens t JOIN api_keys k ON k.id = t.key_id JOIN tenants tn ON tn.id = k.tenant_id \
         LEFT JOIN governance g ON g.tenant_id = k.tenant_id \
         WHERE t.jti = $1 AND t.revoked_at IS NULL AND k.revoked_at IS NULL",
    )
    .bind(jti)
    .fetch_optional(db)
    .await?;
    row.map(KeyCredential::try_from).transpose()
}

/// Records when keys were last used (written in batches, never moving backwards).
pub async fn touch_last_used<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: &str,
    at: &Timestamp,
) -> Result<(), sqlx::Error> {
    let at = time::to_db(at);
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)")
        .bind(&at)
        .bind(id)
        .execute(db)
        .await
        .map(|_| ())
}
