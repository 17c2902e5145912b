//! Several nodes on one PostgreSQL: each event's transaction sends a notification on
//! `plinth_events` (delivered only if it commits), and every node listens, handing the events of
//! other nodes to its own realtime listeners and waking its delivery workers. A notification
//! carries the event itself when it fits, else its id, which the listener reads back. A change to
//! credentials (a key revoked, a session ended, a tenant suspended) is told on `plinth_changes`
//! once committed: the other nodes forget what they cached and their open streams check their
//! credentials again at once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::app::App;
use crate::id::TenantId;
use crate::time;

/// The notification channel.
pub const CHANNEL: &str = "plinth_events";
/// The channel of changes to credentials.
pub const CHANGES: &str = "plinth_changes";
/// PostgreSQL refuses payloads of 8000 bytes or more; larger events travel by id.
const PAYLOAD_MAX: usize = 7500;

/// The notification text for `event`, recorded by `node`.
pub fn note(node: &str, event: &Value) -> String {
    let whole = json!({ "node": node, "event": event }).to_string();
    if whole.len() <= PAYLOAD_MAX {
        return whole;
    }
    json!({ "node": node, "id": event["id"], "tenant_id": event["tenant_id"] }).to_string()
}

/// Tells other nodes of each event as its transaction commits: the outbox's subscriber on
/// PostgreSQL.
pub struct TellOtherNodes;

impl crate::outbox::Subscriber for TellOtherNodes {
    fn recorded<'a>(
        &'a self,
        tx: &'a mut crate::db::WriteTx,
        _tenant: &'a TenantId,
        event: &'a Value,
    ) -> futures_util::future::BoxFuture<'a, Result<(), crate::outbox::OutboxError>> {
        Box::pin(async move {
            let note = note(tx.node(), event);
            let backend = tx.backend();
            crate::db::dialect::notify(tx, backend, CHANNEL, &note).await?;
            Ok(())
        })
    }
}

/// Tells the other nodes that credentials changed (a change committed on this one).
pub async fn credentials_changed(app: &App) -> Result<(), sqlx::Error> {
    let note = json!({ "node": app.db.node(), "changed": "credentials" }).to_string();
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES).bind(note).execute(app.db.pool()).await?;
    Ok(())
}

/// Listens (PostgreSQL only) until `stop` turns true.
pub async fn listen(app: App, url: String, mut stop: watch::Receiver<bool>) {
    loop {
        let mut listener = match connect(&url).await {
            Ok(listener) => {
                // Changes told while no one listened are unknown: every credential is checked
                // again, and cached again from now on.
                app.forget_credentials();
                app.credentials.set_serving(true);
                listener
            }
            Err(error) => {
                tracing::warn!(%error, "listening for other nodes' events failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) if notification.channel() == CHANGES => heard_change(&app, notification.payload()),
                    Ok(Some(notification)) => hear(&app, notification.payload()).await,
                    // The connection dropped: notifications in between are lost to realtime
                    // (SSE clients resume from the outbox; deliveries are polled for anyway), and
                    // credentials are not cached until this node listens again.
                    Ok(None) => {
                        tracing::warn!("the notification connection dropped; reconnecting");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "reading notifications failed; reconnecting");
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
        app.credentials.set_serving(false);
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen_all([CHANNEL, CHANGES]).await?;
    Ok(listener)
}

fn heard_change(app: &App, text: &str) {
    let Ok(note) = serde_json::from_str::<Value>(text) else { return };
    if note["node"].as_str() != Some(app.db.node()) && note["changed"] == "credentials" {
        app.forget_credentials();
    }
}

async fn hear(app: &App, text: &str) {
    let Ok(note) = serde_json::from_str::<Value>(text) else { return };
    if note["node"].as_str() == Some(app.db.node()) {
        return;
    }
    // Another node recorded it: its deliveries may be due here as well.
    app.db.outbox().wake();
    let event = match note.get("event") {
        Some(event) => event.clone(),
        None => match read_back(app, note["id"].as_str().unwrap_or_default()).await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "reading back another node's event failed");
                return;
            }
        },
    };
    app.db.outbox().publish(Arc::new(event));
}

async fn read_back(app: &App, id: &str) -> Result<Option<Value>, sqlx::Error> {
    let row: Option<(TenantId, String, String, String)> =
        sqlx::query_as("SELECT tenant_id, type, data, created_at FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(app.db.pool())
            .await?;
    Ok(row.and_then(|(tenant, kind, data, created_at)| {
        let at = time::from_db(&created_at).ok()?;
        Some(crate::events::payload(id, &kind, &tenant, &at, serde_json::from_str(&data).ok()?))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_events_travel_by_id() {
        let small = json!({ "id": "evt_1", "tenant_id": "tn_1", "data": {} });
        assert!(serde_json::from_str::<Value>(&note("n", &small)).unwrap()["event"].is_object());
        let large = json!({ "id": "evt_2", "tenant_id": "tn_1", "data": { "x": "y".repeat(10_000) } });
        let text = note("n", &large);
        assert!(text.len() < 200);
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["id"], "evt_2");
        assert!(parsed.get("event").is_none());
    }
}
