//! The audit log: who did what to which resource, from where, when. Mutations write their record
//! in the same transaction as the change; refused credentials and scopes are recorded too.
//! Secret-looking fields are redacted before anything is stored.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Any, Executor, FromRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::auth::{Actor, Auth};
use crate::db::WriteTx;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{request_id, ApiError, ApiResult, Data, ListParams, Page, Query};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::scopes::required::AUDIT_LOGS_READ;
use crate::time;

pub use crate::redact::{redact, SECRET_FIELDS};

/// What happened, to be recorded.
#[derive(Debug)]
pub struct Entry<'a> {
    /// `<resource>.<action>`, such as `api_key.created`.
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    /// A summary of the change; redacted before it is stored.
    pub changes: Value,
}

/// Who acted: from a request's credential, or the command line.
#[derive(Debug, Clone)]
pub struct Who {
    pub actor_type: &'static str,
    pub actor_id: Option<String>,
    pub tenant: Option<TenantId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Who {
    /// The `plinth` command line, run by an operator on the server.
    pub fn command_line() -> Who {
        Who { actor_type: "cli", actor_id: None, tenant: None, ip: None, user_agent: None }
    }
}

impl From<&Auth> for Who {
    fn from(auth: &Auth) -> Who {
        let (actor_type, actor_id) = match &auth.actor {
            Actor::Admin => ("admin", None),
            Actor::ApiKey { key_id } => ("api_key", Some(key_id.clone())),
            Actor::Token { key_id, .. } => ("token", Some(key_id.clone())),
            Actor::TenantJwt { public_key_id } => ("tenant_jwt", Some(public_key_id.clone())),
            Actor::User { user_id, .. } => ("user", Some(user_id.clone())),
        };
        Who {
            actor_type,
            actor_id,
            tenant: auth.tenant().ok().cloned(),
            ip: Some(auth.client_ip.to_string()),
            user_agent: auth.user_agent.clone(),
        }
    }
}

/// Records `entry` by `who`, in `tenant` (default: the actor's tenant).
pub async fn record<'e, E: Executor<'e, Database = Any>>(
    db: E,
    who: &Who,
    tenant: Option<&TenantId>,
    entry: Entry<'_>,
) -> Result<(), sqlx::Error> {
    let tenant = tenant.or(who.tenant.as_ref());
    insert(db, tenant, who.actor_type, who.actor_id.as_deref(), who.ip.as_deref(), who.user_agent.as_deref(), entry)
        .await
}

/// Records `entry` with the transaction's commit (one round trip with the other held writes):
/// for a write whose audit record nothing in the transaction reads.
pub fn defer(tx: &mut WriteTx, who: &Who, tenant: Option<&TenantId>, entry: Entry<'_>) {
    let tenant = tenant.or(who.tenant.as_ref());
    tx.defer(
        crate::db::Deferred::new(
            "INSERT INTO audit_logs (id, tenant_id, actor_type, actor_id, action, resource_type, resource_id, \
             ip_address, user_agent, request_id, changes, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .string(Some(id::new_id(prefix::AUDIT)))
        .text(tenant.map(TenantId::as_str))
        .text(who.actor_type)
        .text(who.actor_id.as_deref())
        .text(entry.action)
        .text(entry.resource_type)
        .text(entry.resource_id)
        .text(who.ip.as_deref())
        .string(who.user_agent.as_deref().map(|ua| ua.chars().take(512).collect::<String>()))
        .string(Some(request_id::current()))
        .string(Some(redact(entry.changes).to_string()))
        .string(Some(time::to_db(&time::now()))),
    );
}

/// Records `entry` as the platform's, in no tenant (a tenant's deletion, say).
pub async fn record_platform<'e, E: Executor<'e, Database = Any>>(
    db: E,
    who: &Who,
    entry: Entry<'_>,
) -> Result<(), sqlx::Error> {
    insert(db, None, who.actor_type, who.actor_id.as_deref(), who.ip.as_deref(), who.user_agent.as_deref(), entry).await
}

async fn insert<'e, E: Executor<'e, Database = Any>>(
    db: E,
    tenant: Option<&TenantId>,
    actor_type: &str,
    actor_id: Option<&str>,
    ip: Option<&str>,
    user_agent: Option<&str>,
    entry: Entry<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_logs (id, tenant_id, actor_type, actor_id, action, resource_type, resource_id, \
         ip_address, user_agent, request_id, changes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id::new_id(prefix::AUDIT))
    .bind(tenant)
    .bind(actor_type)
    .bind(actor_id)
    .bind(entry.action)
    .bind(entry.resource_type)
    .bind(entry.resource_id)
    .bind(ip)
    .bind(user_agent.map(|ua| ua.chars().take(512).collect::<String>()))
    .bind(request_id::current())
    .bind(redact(entry.changes).to_string())
    .bind(time::to_db(&time::now()))
    .execute(db)
    .await
    .map(|_| ())
}

/// A credential the server recognised but refused: recorded against its tenant.
#[derive(Debug, Clone)]
pub struct RefusedCredential {
    pub tenant_id: TenantId,
    pub actor_type: &'static str,
    pub actor_id: String,
    pub reason: String,
}

/// Middleware: records refused credentials of a known tenant and refused scopes.
pub async fn record_refusals(State(app): State<App>, request: Request, next: Next) -> Response {
    let refused = request.extensions().get::<RefusedCredential>().cloned();
    let auth = request.extensions().get::<Auth>().cloned();
    let ip = crate::auth::client_ip(request.headers(), request.extensions(), &app.config.trusted_proxies);
    let user_agent = request.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let route = format!("{} {}", request.method(), request.uri().path());
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
        // Refused by the rate limit before anything was decided: nothing to record.
        return response;
    }
    let outcome = if let Some(refused) = refused {
        let entry = Entry {
            action: "auth.refused",
            resource_type: "credential",
            resource_id: &refused.actor_id,
            changes: serde_json::json!({ "reason": refused.reason, "route": route }),
        };
        let ip = ip.to_string();
        let (tenant, actor) = (Some(&refused.tenant_id), Some(refused.actor_id.as_str()));
        insert(app.db.pool(), tenant, refused.actor_type, actor, Some(&ip), user_agent.as_deref(), entry).await
    } else if let Some(auth) = auth.filter(|_| response.status() == axum::http::StatusCode::FORBIDDEN) {
        let entry = Entry {
            action: "access.denied",
            resource_type: "route",
            resource_id: &route,
            changes: serde_json::json!({ "scopes": auth.scopes() }),
        };
        record(app.db.pool(), &Who::from(&auth), None, entry).await
    } else {
        Ok(())
    };
    if let Err(error) = outcome {
        tracing::error!(%error, "recording a refusal in the audit log failed");
    }
    response
}

/// One audit record.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    #[schema(example = "aud_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: Option<String>,
    /// `admin`, `api_key`, `token` or `tenant_jwt`.
    pub actor_type: String,
    pub actor_id: Option<String>,
    /// `<resource>.<action>`, such as `api_key.created`, `auth.refused`, `access.denied`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// A redacted summary of the change.
    #[schema(value_type = Object)]
    pub changes: Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, FromRow)]
struct AuditRow {
    id: String,
    tenant_id: Option<String>,
    actor_type: String,
    actor_id: Option<String>,
    action: String,
    resource_type: String,
    resource_id: Option<String>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    changes: String,
    created_at: String,
}

impl TryFrom<AuditRow> for AuditLog {
    type Error = ApiError;

    fn try_from(row: AuditRow) -> ApiResult<AuditLog> {
        Ok(AuditLog {
            changes: serde_json::from_str(&row.changes)?,
            created_at: time::from_db(&row.created_at)?,
            id: row.id,
            tenant_id: row.tenant_id,
            actor_type: row.actor_type,
            actor_id: row.actor_id,
            action: row.action,
            resource_type: row.resource_type,
            resource_id: row.resource_id,
            ip_address: row.ip_address,
            user_agent: row.user_agent,
            request_id: row.request_id,
        })
    }
}

/// Filters of the audit log (with the common list filters such as `created_after`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Exact action, such as `api_key.created`.
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub actor_id: Option<String>,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_audit_logs))
}

const COLUMNS: &str = "id, tenant_id, actor_type, actor_id, action, resource_type, resource_id, ip_address, \
                       user_agent, request_id, changes, created_at";

/// List audit records
///
/// The tenant's records, newest first. The platform admin without `X-Tenant-ID` sees the
/// platform's own records (tenants created and deleted).
#[utoipa::path(get, path = "/v1/audit-logs", tag = "Audit logs", security(("bearer" = [])),
    params(crate::http::list::ListQuery, AuditFilter),
    responses((status = 200, body = crate::http::response::Envelope<Page<AuditLog>>)))]
async fn list_audit_logs(
    auth: Auth,
    State(app): State<App>,
    params: ListParams,
    Query(filter_query): Query<AuditFilter>,
) -> ApiResult<Data<Page<Value>>> {
    auth.require(AUDIT_LOGS_READ)?;
    let filter = match auth.tenant() {
        Ok(tenant) => Filter::new().eq("tenant_id", tenant.as_str()),
        Err(_) if auth.is_admin() => Filter::new().raw("tenant_id IS NULL"),
        Err(error) => return Err(error),
    };
    let filter = filter
        .eq_opt("action", filter_query.action)
        .eq_opt("resource_type", filter_query.resource_type)
        .eq_opt("actor_id", filter_query.actor_id);
    let page: Page<AuditRow> = list::fetch(&app.db, &LIST, filter, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(AuditLog::try_from)?)?))
}

/// How audit lists are stored and what they offer.
pub(crate) const LIST: ListSpec = ListSpec {
    table: "audit_logs",
    columns: COLUMNS,
    sortable: &[SortField { name: "created_at", column: "created_at" }, SortField { name: "action", column: "action" }],
    fields: &[
        "id",
        "tenant_id",
        "actor_type",
        "actor_id",
        "action",
        "resource_type",
        "resource_id",
        "ip_address",
        "user_agent",
        "request_id",
        "changes",
        "created_at",
    ],
    updated_at: false,
};

/// Deletes records older than their tenant's `audit_retention_days` (governance; default 90,
/// which also bounds the platform's own records).
pub async fn prune(app: &App) -> Result<u64, sqlx::Error> {
    let pool = app.db.pool();
    let now = time::now();
    let cutoff = |days: i64| time::to_db(&(now - chrono::Duration::days(days)));
    let mut removed = 0;
    let custom: Vec<(String, i64)> =
        sqlx::query_as("SELECT tenant_id, audit_retention_days FROM governance").fetch_all(pool).await?;
    for (tenant, days) in &custom {
        let done = sqlx::query("DELETE FROM audit_logs WHERE tenant_id = $1 AND created_at < $2")
            .bind(tenant)
            .bind(cutoff(*days))
            .execute(pool)
            .await?;
        removed += done.rows_affected();
    }
    let done = sqlx::query(
        "DELETE FROM audit_logs WHERE created_at < $1 \
         AND (tenant_id IS NULL OR tenant_id NOT IN (SELECT tenant_id FROM governance))",
    )
    .bind(cutoff(crate::governance::DEFAULT_AUDIT_RETENTION_DAYS))
    .execute(pool)
    .await?;
    Ok(removed + done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let value = serde_json::json!({
            "label": "ci", "token": "plk_live_x", "nested": { "Password": "hunter2", "list": [{ "secret": "s" }] }
        });
        let redacted = redact(value);
        assert_eq!(redacted["label"], "ci");
        assert_eq!(redacted["token"], "[REDACTED]");
        assert_eq!(redacted["nested"]["Password"], "[REDACTED]");
        assert_eq!(redacted["nested"]["list"][0]["secret"], "[REDACTED]");
    }
}
