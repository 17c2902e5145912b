//! The event outbox: every change worth telling is written here, in the transaction that made
//! it, so that webhooks and realtime can deliver it later and nothing is lost in between.

use serde_json::Value;
use sqlx::AnyConnection;

use crate::http::ApiResult;
use crate::id::{self, prefix};
use crate::time;

/// An event to record.
#[derive(Debug)]
pub struct Event<'a> {
    /// `<resource>.<action>`, such as `object.created`.
    pub kind: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub data: Value,
}

/// Records `event` for `tenant` in the caller's transaction, secret-looking fields redacted;
/// returns its id.
pub async fn record(conn: &mut AnyConnection, tenant: &str, event: Event<'_>) -> ApiResult<String> {
    let id = id::new_id(prefix::EVENT);
    sqlx::query(
        "INSERT INTO events (id, tenant_id, type, resource_type, resource_id, data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(event.kind)
    .bind(event.resource_type)
    .bind(event.resource_id)
    // Secret-looking fields never reach a payload (the contract's list, as in audit records).
    .bind(crate::audit::redact(event.data).to_string())
    .bind(time::to_db(&time::now()))
    .execute(&mut *conn)
    .await?;
    Ok(id)
}
