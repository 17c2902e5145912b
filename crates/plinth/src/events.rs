//! Events: the platform's event types, custom events and the events API. Recording is the
//! core outbox's (`crate::outbox`).

pub use crate::outbox::{payload, record, Event};

/// The event types the platform emits.
pub const BUILT_IN: &[&str] = &[
    "object.created",
    "object.updated",
    "object.deleted",
    "object.restored",
    "association.created",
    "association.updated",
    "association.deleted",
    "comment.created",
    "comment.updated",
    "comment.deleted",
    "workflow.submitted",
    "workflow.approved",
    "workflow.completed",
    "workflow.rejected",
    "file.uploaded",
    "file.updated",
    "file.deleted",
    "file.restored",
    "webhook.test",
    "webhook.disabled",
    "tenant.plan_changed",
    "user.created",
    "user.updated",
    "user.banned",
    "user.deleted",
    "user.signed_in",
    "user.sign_in_failed",
    "user.session_ended",
    "user.mfa_enrolled",
    "user.mfa_removed",
    "role.created",
    "role.updated",
    "role.deleted",
    "role.assigned",
    "role.unassigned",
    "policy.created",
    "policy.updated",
    "policy.deleted",
];

/// Prefixes custom events may not take: they belong to the platform's own events.
pub const RESERVED: &[&str] = &[
    "object",
    "association",
    "comment",
    "webhook",
    "file",
    "user",
    "inbound",
    "api_key",
    "tenant",
    "role",
    "policy",
    "custom_reserved",
];

/// Largest custom event `data`, serialised.
const CUSTOM_DATA_MAX_BYTES: usize = 64 * 1024;

pub use routes_impl::routes;

pub(crate) mod routes_impl {
    use axum::extract::State;
    use serde::{Deserialize, Serialize};
    use serde_json::{json, Value};
    use sqlx::FromRow;
    use utoipa::{IntoParams, ToSchema};
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    use super::{Event, BUILT_IN, CUSTOM_DATA_MAX_BYTES, RESERVED};
    use crate::app::App;
    use crate::auth::Auth;
    use crate::http::error::FieldErrors;
    use crate::http::list::{self, Filter, ListSpec, SortField};
    use crate::http::{ApiError, ApiResult, Created, Data, Json, ListParams, Page, Query};
    use crate::id::TenantId;
    use crate::scopes::required::{EVENTS_READ, EVENTS_WRITE};
    use crate::time;

    /// One event of the outbox.
    #[derive(Debug, Serialize, ToSchema)]
    pub struct EventRecord {
        #[schema(example = "evt_01jd8x3k4m5n6p7q8r9s0t1v2w")]
        pub id: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub tenant_id: String,
        pub resource_type: String,
        pub resource_id: String,
        /// The payload, secret-looking fields redacted.
        #[schema(value_type = Object)]
        pub data: Value,
        pub created_at: chrono::DateTime<chrono::Utc>,
    }

    #[derive(Debug, FromRow)]
    struct EventRow {
        id: String,
        tenant_id: TenantId,
        #[sqlx(rename = "type")]
        kind: String,
        resource_type: String,
        resource_id: String,
        data: String,
        created_at: String,
    }

    impl TryFrom<EventRow> for EventRecord {
        type Error = ApiError;

        fn try_from(row: EventRow) -> ApiResult<EventRecord> {
            Ok(EventRecord {
                data: serde_json::from_str(&row.data)?,
                created_at: time::from_db(&row.created_at)?,
                id: row.id,
                kind: row.kind,
                tenant_id: row.tenant_id.into(),
                resource_type: row.resource_type,
                resource_id: row.resource_id,
            })
        }
    }

    pub(crate) const LIST: ListSpec = ListSpec {
        table: "events",
        columns: "id, tenant_id, type, resource_type, resource_id, data, created_at",
        sortable: &[SortField { name: "created_at", column: "created_at" }],
        fields: &["id", "type", "tenant_id", "resource_type", "resource_id", "data", "created_at"],
        updated_at: false,
    };

    #[derive(Debug, Deserialize, IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct EventFilter {
        /// Only events of this type.
        #[serde(rename = "type")]
        pub kind: Option<String>,
        /// Only events of this resource id.
        pub resource_id: Option<String>,
    }

    /// A custom event.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct TrackEvent {
        /// Dotted lowercase words, such as `checkout.completed`; not one of the platform's own
        /// prefixes (`object`, `webhook`, `file`, `user`, `inbound`, ...).
        #[schema(value_type = crate::http::shapes::EventName)]
        pub event_type: String,
        /// Any JSON object, at most 64 KiB.
        #[schema(value_type = Option<Object>)]
        pub data: Option<Value>,
    }

    #[derive(Debug, Serialize, ToSchema)]
    pub struct Tracked {
        pub tracked: bool,
        pub id: String,
    }

    pub fn routes() -> OpenApiRouter<App> {
        OpenApiRouter::new()
            .routes(routes!(event_types))
            .routes(routes!(event_types_v1))
            .routes(routes!(track_event))
            .routes(routes!(list_events))
    }

    async fn types_of(app: &App, auth: &Auth) -> ApiResult<Vec<String>> {
        auth.require(EVENTS_READ)?;
        let custom: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT type FROM events WHERE tenant_id = $1 AND resource_type IN ('custom', 'inbound_message') \
             ORDER BY type LIMIT 200",
        )
        .bind(auth.tenant()?)
        .fetch_all(app.db.pool())
        .await?;
        Ok(BUILT_IN.iter().map(|t| t.to_string()).chain(custom.into_iter().map(|(t,)| t)).collect())
    }

    /// List event types
    ///
    /// The platform's event types, then the tenant's custom ones seen so far.
    #[utoipa::path(get, path = "/events/types", tag = "Events", security(("bearer" = [])),
        responses((status = 200, body = crate::http::response::Envelope<Vec<String>>)))]
    async fn event_types(auth: Auth, State(app): State<App>) -> ApiResult<Data<Vec<String>>> {
        Ok(Data(types_of(&app, &auth).await?))
    }

    /// List event types (under /v1)
    #[utoipa::path(get, path = "/v1/events/types", tag = "Events", security(("bearer" = [])),
        responses((status = 200, body = crate::http::response::Envelope<Vec<String>>)))]
    async fn event_types_v1(auth: Auth, State(app): State<App>) -> ApiResult<Data<Vec<String>>> {
        Ok(Data(types_of(&app, &auth).await?))
    }

    /// Track a custom event
    ///
    /// Records an event that flows like the platform's own (outbox, webhooks).
    #[utoipa::path(post, path = "/v1/events", tag = "Events", security(("bearer" = [])),
        request_body = TrackEvent,
        responses((status = 201, body = crate::http::response::Envelope<Tracked>),
                  (status = 422, body = crate::http::error::ErrorBody)))]
    async fn track_event(
        auth: Auth,
        State(app): State<App>,
        Json(body): Json<TrackEvent>,
    ) -> ApiResult<Created<Tracked>> {
        auth.require(EVENTS_WRITE)?;
        let tenant = auth.tenant()?;
        let mut errors = FieldErrors::default();
        let kind = body.event_type.as_str();
        let reserved = RESERVED.iter().any(|p| kind == *p || kind.starts_with(&format!("{p}.")));
        if !crate::names::is_event_name(kind) {
            errors.add("event_type", "must be dotted lowercase words, such as `checkout.completed`");
        } else if reserved {
            errors.add("event_type", format!("`{kind}` belongs to the platform's own events: pick another prefix"));
        }
        let data = body.data.unwrap_or_else(|| json!({}));
        if !data.is_object() {
            errors.add("data", "must be a JSON object");
        } else if serde_json::to_vec(&data).map(|v| v.len()).unwrap_or(usize::MAX) > CUSTOM_DATA_MAX_BYTES {
            errors.add("data", format!("must be at most {CUSTOM_DATA_MAX_BYTES} bytes of JSON"));
        } else if crate::objects::types::has_nul(&data) {
            errors.add("data", "must not contain the NUL character");
        }
        errors.finish()?;
        let mut tx = app.db.begin_write().await?;
        let event = Event { kind, resource_type: "custom", resource_id: tenant.as_str(), data };
        let id = super::record(&mut tx, tenant, event).await?;
        tx.commit().await?;
        Ok(Created(Tracked { tracked: true, id }))
    }

    /// List events
    ///
    /// The tenant's events, newest first: the platform's and custom ones, filtered by `type`.
    #[utoipa::path(get, path = "/v1/events/list", tag = "Events", security(("bearer" = [])),
        params(crate::http::list::ListQuery, EventFilter),
        responses((status = 200, body = crate::http::response::Envelope<Page<EventRecord>>)))]
    async fn list_events(
        auth: Auth,
        State(app): State<App>,
        params: ListParams,
        Query(filter): Query<EventFilter>,
    ) -> ApiResult<Data<Page<Value>>> {
        auth.require(EVENTS_READ)?;
        let mut filter = Filter::new()
            .eq("tenant_id", auth.tenant()?.as_str())
            .eq_opt("type", filter.kind)
            .eq_opt("resource_id", filter.resource_id);
        if auth.access.is_some() {
            // An end user reads objects through the object routes and streams, where row
            // policies apply; the outbox's copies of them are not theirs to list.
            filter = filter.raw("resource_type <> 'object'");
            // Nor what the service resources guard (inbound messages, webhooks, tenants, keys).
            filter = filter.raw(
                "type NOT LIKE 'inbound.%' AND type NOT LIKE 'webhook.%' AND type NOT LIKE 'tenant.%' \
                 AND type NOT LIKE 'api_key.%'",
            );
        }
        if auth.require(crate::scopes::required::USERS_READ).is_err() {
            // Users' events carry their addresses and metadata.
            filter = filter.raw("type NOT LIKE 'user.%'");
        }
        let page: Page<EventRow> = list::fetch(&app.db, &LIST, filter, &params).await?;
        Ok(Data(params.project(&LIST, page.try_map(EventRecord::try_from)?)?))
    }
}
