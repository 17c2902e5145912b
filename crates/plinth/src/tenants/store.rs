//! Tenant queries.

use sqlx::{Any, AnyPool, Executor, FromRow};

use super::model::{Tenant, TenantSettings, Tier};
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, ListParams, Page};
use crate::time;

#[derive(Debug, FromRow)]
struct TenantRow {
    id: String,
    name: String,
    slug: String,
    tier: String,
    settings: String,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, name, slug, tier, settings, created_at, updated_at";

impl TryFrom<TenantRow> for Tenant {
    type Error = ApiError;

    fn try_from(row: TenantRow) -> ApiResult<Tenant> {
        Ok(Tenant {
            tier: Tier::parse(&row.tier).ok_or_else(|| ApiError::internal(format!("stored tier {}", row.tier)))?,
            settings: serde_json::from_str::<TenantSettings>(&row.settings)?,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            id: row.id,
            name: row.name,
            slug: row.slug,
        })
    }
}

pub async fn insert<'e, E: Executor<'e, Database = Any>>(db: E, tenant: &Tenant) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenants (id, name, slug, tier, settings, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&tenant.id)
    .bind(&tenant.name)
    .bind(&tenant.slug)
    .bind(tenant.tier.as_str())
    .bind(serde_json::to_string(&tenant.settings).unwrap_or_default())
    .bind(time::to_db(&tenant.created_at))
    .bind(time::to_db(&tenant.updated_at))
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn get<'e, E: Executor<'e, Database = Any>>(db: E, id: &str) -> ApiResult<Option<Tenant>> {
    let row: Option<TenantRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1")).bind(id).fetch_optional(db).await?;
    row.map(Tenant::try_from).transpose()
}

pub async fn exists(db: &AnyPool, id: &str) -> ApiResult<bool> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT id FROM tenants WHERE id = $1").bind(id).fetch_optional(db).await?;
    Ok(found.is_some())
}

/// How tenant lists are stored and what they offer.
pub const LIST: ListSpec = ListSpec {
    table: "tenants",
    columns: COLUMNS,
    sortable: &[
        SortField { name: "name", column: "name" },
        SortField { name: "slug", column: "slug" },
        SortField { name: "created_at", column: "created_at" },
        SortField { name: "updated_at", column: "updated_at" },
    ],
    fields: &["id", "name", "slug", "tier", "settings", "created_at", "updated_at"],
    updated_at: true,
};

pub async fn list(db: &crate::db::Db, params: &ListParams) -> ApiResult<Page<Tenant>> {
    let page: Page<TenantRow> = list::fetch(db, &LIST, Filter::new(), params).await?;
    page.try_map(Tenant::try_from)
}

pub async fn update<'e, E: Executor<'e, Database = Any>>(db: E, tenant: &Tenant) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenants SET name = $1, slug = $2, tier = $3, settings = $4, updated_at = $5 WHERE id = $6")
        .bind(&tenant.name)
        .bind(&tenant.slug)
        .bind(tenant.tier.as_str())
        .bind(serde_json::to_string(&tenant.settings).unwrap_or_default())
        .bind(time::to_db(&tenant.updated_at))
        .bind(&tenant.id)
        .execute(db)
        .await
        .map(|_| ())
}

/// Deletes the tenant; its keys, tokens and counters go with it (foreign keys cascade).
pub async fn delete<'e, E: Executor<'e, Database = Any>>(db: E, id: &str) -> ApiResult<bool> {
    let done = sqlx::query("DELETE FROM tenants WHERE id = $1").bind(id).execute(db).await?;
    Ok(done.rows_affected() > 0)
}

/// What depends on a tenant: its live keys and its public keys.
pub async fn dependants(conn: &mut sqlx::AnyConnection, id: &str) -> ApiResult<Vec<crate::deletion::Dependency>> {
    let (keys,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    let (public_keys,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM public_keys WHERE tenant_id = $1").bind(id).fetch_one(&mut *conn).await?;
    let (object_types,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM object_types WHERE tenant_id = $1").bind(id).fetch_one(&mut *conn).await?;
    Ok(vec![
        crate::deletion::Dependency { kind: "api_keys", count: keys, label: "API keys" },
        crate::deletion::Dependency { kind: "public_keys", count: public_keys, label: "Public keys" },
        crate::deletion::Dependency { kind: "object_types", count: object_types, label: "Object types" },
    ])
}
