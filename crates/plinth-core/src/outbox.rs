//! The event outbox: every change worth telling is written here, in the transaction that made
//! it, and handed to the capabilities that subscribed (webhook fan-out, other nodes' realtime), so
//! that nothing is lost in between.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::db::{Db, WriteTx};
use crate::http::ApiError;
use crate::id::{self, prefix, TenantId};
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

/// Why an event could not be recorded; the recording transaction is then to be rolled back.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A subscriber failed for a reason of its own.
    #[error("{subscriber}: {reason}")]
    Subscriber { subscriber: &'static str, reason: String },
}

impl From<OutboxError> for ApiError {
    fn from(error: OutboxError) -> Self {
        match error {
            // A saturated database stays 503.
            OutboxError::Database(error) => error.into(),
            other => ApiError::internal(other),
        }
    }
}

/// What a capability does, in the recording transaction, with each event: queue its webhook
/// deliveries, tell other nodes. Registered once at start with `subscribe`.
pub trait Subscriber: Send + Sync + 'static {
    fn recorded<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        tenant: &'a TenantId,
        event: &'a Value,
    ) -> BoxFuture<'a, Result<(), OutboxError>>;
}

/// Adds what a capability does with each event recorded through `db` from now on.
pub fn subscribe(db: &Db, subscriber: Arc<dyn Subscriber>) {
    db.outbox().attach(Arc::new(subscriber));
}

/// Records `event` for `tenant` in the caller's transaction, secret-looking fields redacted, and
/// hands it to every subscriber in the same transaction; returns its id. After commit, this
/// process's realtime listeners receive it.
pub async fn record(tx: &mut WriteTx, tenant: &TenantId, event: Event<'_>) -> Result<String, OutboxError> {
    let id = id::new_id(prefix::EVENT);
    let now = time::now();
    // Secret-looking fields never reach a payload (the contract's list, as in audit records).
    let data = crate::redact::redact(event.data);
    // Nothing in the transaction reads the event's row: it goes with the commit.
    tx.defer(
        crate::db::Deferred::new(
            "INSERT INTO events (id, tenant_id, type, resource_type, resource_id, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .text(id.as_str())
        .text(tenant.as_str())
        .text(event.kind)
        .text(event.resource_type)
        .text(event.resource_id)
        .string(Some(data.to_string()))
        .string(Some(time::to_db(&now))),
    );
    let payload = Arc::new(payload(&id, event.kind, tenant, &now, data));
    for attached in tx.attached() {
        if let Some(subscriber) = attached.downcast_ref::<Arc<dyn Subscriber>>() {
            subscriber.recorded(tx, tenant, &payload).await?;
        }
    }
    tx.recorded_event(payload);
    Ok(id)
}

/// The JSON an event is delivered as, to webhooks and realtime subscribers: Standard Webhooks'
/// `type`, `timestamp` and `data`, with the event's id and tenant.
pub fn payload(id: &str, kind: &str, tenant: &TenantId, at: &time::Timestamp, data: Value) -> Value {
    serde_json::json!({
        "id": id,
        "type": kind,
        "tenant_id": tenant,
        "timestamp": at,
        "created_at": at,
        "data": data,
    })
}
