//! Governance (seed 002): a tenant's policies. `audit_retention_days` bounds the audit log,
//! `session_duration_secs` and `password_min_length` bound end-user sessions and passwords, and
//! `ip_allowlist` refuses, for every credential of the tenant, requests from anywhere else.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Any, Executor, FromRow};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::http::error::FieldErrors;
use crate::http::{ApiResult, Data, Json};
use crate::keys::model::parse_allowlist;
use crate::scopes::required::{GOVERNANCE_READ, GOVERNANCE_WRITE};
use crate::time;

pub const DEFAULT_AUDIT_RETENTION_DAYS: i64 = 90;
const DEFAULT_SESSION_SECS: i64 = 86_400;
const DEFAULT_PASSWORD_MIN: i64 = 8;

/// A tenant's policies.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Governance {
    pub tenant_id: String,
    /// Days audit records are kept, 1 to 3,650. Default 90.
    pub audit_retention_days: i64,
    /// Lifetime of end-user sessions, 300 to 2,592,000 seconds. Default 86,400.
    pub session_duration_secs: i64,
    /// Shortest end-user password, 8 to 1,024. Default 8.
    pub password_min_length: i64,
    /// CIDRs every credential of the tenant is limited to; empty means anywhere.
    pub ip_allowlist: Vec<String>,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, FromRow)]
struct GovernanceRow {
    audit_retention_days: i64,
    session_duration_secs: i64,
    password_min_length: i64,
    ip_allowlist: String,
    updated_at: String,
}

/// Changes to the policies: absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGovernance {
    #[schema(minimum = 1, maximum = 3650)]
    pub audit_retention_days: Option<i64>,
    #[schema(minimum = 300, maximum = 2_592_000)]
    pub session_duration_secs: Option<i64>,
    #[schema(minimum = 8, maximum = 1024)]
    pub password_min_length: Option<i64>,
    #[schema(value_type = Option<Vec<crate::http::shapes::IpNetwork>>, max_items = 100)]
    pub ip_allowlist: Option<Vec<String>>,
}

/// The tenant's policies, or the defaults when it never set any.
pub async fn load<'e, E: Executor<'e, Database = Any>>(db: E, tenant: &TenantId) -> ApiResult<Governance> {
    let row: Option<GovernanceRow> = sqlx::query_as(
        "SELECT audit_retention_days, session_duration_secs, password_min_length, ip_allowlist, updated_at \
         FROM governance WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some(row) => Governance {
            tenant_id: tenant.as_str().to_owned(),
            audit_retention_days: row.audit_retention_days,
            session_duration_secs: row.session_duration_secs,
            password_min_length: row.password_min_length,
            ip_allowlist: serde_json::from_str(&row.ip_allowlist)?,
            updated_at: Some(time::from_db(&row.updated_at)?),
        },
        None => Governance {
            tenant_id: tenant.as_str().to_owned(),
            audit_retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
            session_duration_secs: DEFAULT_SESSION_SECS,
            password_min_length: DEFAULT_PASSWORD_MIN,
            ip_allowlist: Vec::new(),
            updated_at: None,
        },
    })
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(get_governance, update_governance))
}

/// Get governance settings
#[utoipa::path(get, path = "/v1/governance", tag = "Governance", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<Governance>)))]
async fn get_governance(auth: Auth, State(app): State<App>) -> ApiResult<Data<Governance>> {
    auth.require(GOVERNANCE_READ)?;
    Ok(Data(load(app.db.pool(), auth.tenant()?).await?))
}

fn within(field: &str, value: i64, range: std::ops::RangeInclusive<i64>, errors: &mut FieldErrors) {
    if !range.contains(&value) {
        errors.add(field, format!("must be between {} and {}", range.start(), range.end()));
    }
}

/// Update governance settings
///
/// A tenant-wide `ip_allowlist` holds from the next request on, for every credential of the
/// tenant: take care not to lock yourself out.
#[utoipa::path(patch, path = "/v1/governance", tag = "Governance", security(("bearer" = [])),
    request_body = UpdateGovernance,
    responses((status = 200, body = crate::http::response::Envelope<Governance>)))]
async fn update_governance(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<UpdateGovernance>,
) -> ApiResult<Data<Governance>> {
    auth.require(GOVERNANCE_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    let mut tx = app.db.begin_write().await?;
    // Concurrent changes queue on the tenant's row (PostgreSQL; SQLite's writers are one at a
    // time), so that neither loses the other's fields.
    crate::db::lock_row(&mut tx, app.db.backend(), "tenants", tenant.as_str(), true).await?;
    let mut policy = load(&mut *tx, tenant).await?;
    if let Some(days) = body.audit_retention_days {
        within("audit_retention_days", days, 1..=3650, &mut errors);
        policy.audit_retention_days = days;
    }
    if let Some(secs) = body.session_duration_secs {
        within("session_duration_secs", secs, 300..=2_592_000, &mut errors);
        policy.session_duration_secs = secs;
    }
    if let Some(length) = body.password_min_length {
        within("password_min_length", length, 8..=1024, &mut errors);
        policy.password_min_length = length;
    }
    if let Some(entries) = &body.ip_allowlist {
        let nets = parse_allowlist("ip_allowlist", entries, &mut errors);
        policy.ip_allowlist = nets.iter().map(ToString::to_string).collect();
    }
    errors.finish()?;
    let now = time::now();
    policy.updated_at = Some(now);
    sqlx::query(
        "INSERT INTO governance (tenant_id, audit_retention_days, session_duration_secs, password_min_length, \
         ip_allowlist, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id) DO UPDATE SET audit_retention_days = excluded.audit_retention_days, \
         session_duration_secs = excluded.session_duration_secs, password_min_length = excluded.password_min_length, \
         ip_allowlist = excluded.ip_allowlist, updated_at = excluded.updated_at",
    )
    .bind(tenant.as_str())
    .bind(policy.audit_retention_days)
    .bind(policy.session_duration_secs)
    .bind(policy.password_min_length)
    .bind(serde_json::to_string(&policy.ip_allowlist)?)
    .bind(time::to_db(&now))
    .execute(&mut *tx)
    .await?;
    let entry = Entry {
        action: "governance.updated",
        resource_type: "governance",
        resource_id: tenant.as_str(),
        changes: json!({
            "audit_retention_days": body.audit_retention_days,
            "session_duration_secs": body.session_duration_secs,
            "password_min_length": body.password_min_length,
            "ip_allowlist": body.ip_allowlist.as_ref().map(|_| &policy.ip_allowlist),
        }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    // The tenant-wide allowlist is part of every cached credential of the tenant.
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(policy))
}
