//! The dead-letter queue (seed 002): background work that ran out of attempts, one message per
//! piece of work, kept until a tenant retries or discards it. Webhook deliveries land here now;
//! other kinds of background work join them by `kind`.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::db::WriteTx;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Data, ListParams, Page, Path, Query};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::scopes::required::{DLQ_DELETE, DLQ_READ, DLQ_WRITE};
use crate::time;

/// The kind of a dead webhook delivery.
pub const WEBHOOK_DELIVERY: &str = "webhook_delivery";

/// One message of the dead-letter queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DlqMessage {
    #[schema(example = "dlq_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: String,
    /// What ran out of attempts: `webhook_delivery`.
    pub kind: String,
    /// The work's own id (for `webhook_delivery`, the delivery's `msg_` id).
    pub reference_id: String,
    /// What the work was: for a delivery, `webhook_id`, `event_id`, `event_type`.
    #[schema(value_type = Object)]
    pub summary: Value,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub attempts: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, FromRow)]
struct DlqRow {
    id: String,
    tenant_id: TenantId,
    kind: String,
    reference_id: String,
    summary: String,
    error: Option<String>,
    attempts: i64,
    created_at: String,
}

impl TryFrom<DlqRow> for DlqMessage {
    type Error = ApiError;

    fn try_from(row: DlqRow) -> ApiResult<DlqMessage> {
        Ok(DlqMessage {
            summary: serde_json::from_str(&row.summary)?,
            created_at: time::from_db(&row.created_at)?,
            id: row.id,
            tenant_id: row.tenant_id.into(),
            kind: row.kind,
            reference_id: row.reference_id,
            error: row.error,
            attempts: row.attempts,
        })
    }
}

const COLUMNS: &str = "id, tenant_id, kind, reference_id, summary, error, attempts, created_at";

pub(crate) const LIST: ListSpec = ListSpec {
    table: "dlq_messages",
    columns: COLUMNS,
    sortable: &[SortField { name: "created_at", column: "created_at" }],
    fields: &["id", "tenant_id", "kind", "reference_id", "summary", "error", "attempts", "created_at"],
    updated_at: false,
};

/// Puts a dead webhook delivery in the queue, in the transaction that gave up on it.
pub async fn add_delivery(
    tx: &mut WriteTx,
    tenant: &TenantId,
    delivery_id: &str,
    attempts: i64,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let summary: Option<(String, Option<String>, String)> =
        sqlx::query_as("SELECT webhook_id, event_id, event_type FROM webhook_deliveries WHERE id = $1")
            .bind(delivery_id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((webhook_id, event_id, event_type)) = summary else { return Ok(()) };
    let summary = serde_json::json!({ "webhook_id": webhook_id, "event_id": event_id, "event_type": event_type });
    sqlx::query(
        "INSERT INTO dlq_messages (id, tenant_id, kind, reference_id, summary, error, attempts, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id::new_id(prefix::DLQ_MESSAGE))
    .bind(tenant)
    .bind(WEBHOOK_DELIVERY)
    .bind(delivery_id)
    .bind(summary.to_string())
    .bind(error)
    .bind(attempts)
    .bind(time::to_db(&time::now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the messages about a piece of work out of the queue (it is being retried, or is gone).
pub async fn remove_for(conn: &mut sqlx::AnyConnection, tenant: &TenantId, reference_id: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM dlq_messages WHERE tenant_id = $1 AND reference_id = $2")
        .bind(tenant)
        .bind(reference_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqFilter {
    /// Only messages of this kind (`webhook_delivery`).
    pub kind: Option<String>,
}

/// A retried message.
#[derive(Debug, Serialize, ToSchema)]
pub struct DlqRetried {
    pub retried: bool,
    pub id: String,
    pub kind: String,
    pub reference_id: String,
}

/// A discarded message.
#[derive(Debug, Serialize, ToSchema)]
pub struct DlqDiscarded {
    pub discarded: bool,
    pub id: String,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_dlq_messages))
        .routes(routes!(retry_message))
        .routes(routes!(discard_message))
}

async fn find(conn: &mut sqlx::AnyConnection, tenant: &TenantId, msg_id: &str) -> ApiResult<DlqMessage> {
    let row: Option<DlqRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM dlq_messages WHERE id = $1 AND tenant_id = $2"))
            .bind(msg_id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(DlqMessage::try_from).transpose()?.ok_or_else(|| ApiError::not_found("dead-letter message"))
}

/// List dead-letter messages
///
/// Work that ran out of attempts, newest first.
#[utoipa::path(get, path = "/v1/dlq", tag = "DLQ", security(("bearer" = [])),
    params(crate::http::list::ListQuery, DlqFilter),
    responses((status = 200, body = crate::http::response::Envelope<Page<DlqMessage>>)))]
async fn list_dlq_messages(
    auth: Auth,
    State(app): State<App>,
    params: ListParams,
    Query(filter): Query<DlqFilter>,
) -> ApiResult<Data<Page<Value>>> {
    auth.require(DLQ_READ)?;
    let filter = Filter::new().eq("tenant_id", auth.tenant()?.as_str()).eq_opt("kind", filter.kind);
    let page: Page<DlqRow> = list::fetch(&app.db, &LIST, filter, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(DlqMessage::try_from)?)?))
}

/// Retry a dead-letter message
///
/// Queues the work for one more attempt now and takes the message out of the queue; if that
/// attempt fails too, a new message arrives.
#[utoipa::path(post, path = "/v1/dlq/{msg_id}/retry", tag = "DLQ", security(("bearer" = [])),
    params(("msg_id" = String, Path, description = "The message's id")),
    responses((status = 200, body = crate::http::response::Envelope<DlqRetried>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn retry_message(auth: Auth, State(app): State<App>, Path(msg_id): Path<String>) -> ApiResult<Data<DlqRetried>> {
    auth.require(DLQ_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let message = find(&mut tx, tenant, &msg_id).await?;
    if message.kind == WEBHOOK_DELIVERY {
        crate::webhooks::log::requeue(&mut tx, tenant, &message.reference_id).await?;
    }
    remove_for(&mut tx, tenant, &message.reference_id).await?;
    let entry = Entry {
        action: "dlq.retried",
        resource_type: "dlq_message",
        resource_id: &message.id,
        changes: serde_json::json!({ "kind": message.kind, "reference_id": message.reference_id }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Data(DlqRetried { retried: true, id: message.id, kind: message.kind, reference_id: message.reference_id }))
}

/// Discard a dead-letter message
///
/// Forgets the message; the work stays as it ended (a delivery stays `failed`).
#[utoipa::path(delete, path = "/v1/dlq/{msg_id}", tag = "DLQ", security(("bearer" = [])),
    params(("msg_id" = String, Path, description = "The message's id")),
    responses((status = 200, body = crate::http::response::Envelope<DlqDiscarded>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn discard_message(
    auth: Auth,
    State(app): State<App>,
    Path(msg_id): Path<String>,
) -> ApiResult<Data<DlqDiscarded>> {
    auth.require(DLQ_DELETE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let message = find(&mut tx, tenant, &msg_id).await?;
    sqlx::query("DELETE FROM dlq_messages WHERE id = $1 AND tenant_id = $2")
        .bind(&message.id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    let entry = Entry {
        action: "dlq.discarded",
        resource_type: "dlq_message",
        resource_id: &message.id,
        changes: serde_json::json!({ "kind": message.kind, "reference_id": message.reference_id }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Data(DlqDiscarded { discarded: true, id: message.id }))
}
