//! The event stream as Server-Sent Events: each event once, `id:` its event id, `event:` its
//! type, `data:` the delivered JSON. A client that reconnects with `Last-Event-ID` first gets
//! what it missed from the outbox, then live events; one that falls too far behind is ended and
//! resumes the same way, so it loses nothing.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa::IntoParams;

use super::{Hub, Recheck, Registered};
use crate::app::App;
use crate::auth::Auth;
use crate::http::error::FieldErrors;
use crate::http::{ApiResult, Query};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::scopes::required::EVENTS_READ;
use crate::time;
use crate::webhooks::delivery::matches;

/// Events read from the outbox per query while catching up.
const REPLAY_PAGE: i64 = 500;
/// How often an idle stream sends a comment, so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Event types or patterns, comma-separated (`object.*,inbound.*`); all when absent.
    // Its pattern (`shapes::EventPatterns`) is written onto the document by `contract`.
    pub types: Option<String>,
    /// Resume after this event id (for clients that cannot send the `Last-Event-ID` header).
    pub last_event_id: Option<String>,
    /// The credential, when no Authorization header can be sent (`EventSource`).
    pub token: Option<String>,
}

/// Where a stream is.
struct Cursor {
    app: App,
    tenant: TenantId,
    patterns: Vec<String>,
    live: broadcast::Receiver<Arc<Value>>,
    /// Read from the outbox, not yet sent.
    backlog: VecDeque<Value>,
    /// Still catching up from the outbox after this id.
    replay_after: Option<String>,
    /// Recent events sent from the outbox, which may also come live (they committed after this
    /// stream began listening): each is skipped once when it does.
    replayed: HashSet<String>,
    /// When the stream began listening: events recorded well before cannot come live.
    listening_since: time::Timestamp,
    recheck: Recheck,
    /// The caller, as of its last check, and what it may receive.
    auth: Auth,
    filter: crate::authz::access::EventFilter,
    /// The id given as `Last-Event-ID`, not to be sent again.
    resumed_from: Option<String>,
    _registered: Registered,
}

/// How long before listening an event that still comes live may have been recorded (the
/// longest a writing transaction is expected to stay open).
const IN_FLIGHT: chrono::Duration = chrono::Duration::minutes(5);

fn wanted(patterns: &[String], event: &Value) -> bool {
    matches(patterns, event["type"].as_str().unwrap_or_default())
}

fn sse_event(event: &Value) -> SseEvent {
    SseEvent::default()
        .id(event["id"].as_str().unwrap_or_default())
        .event(event["type"].as_str().unwrap_or("message"))
        .data(event.to_string())
}

/// The tenant's events after `after`, oldest first, as delivered.
async fn outbox_page(app: &App, tenant: &TenantId, after: &str) -> ApiResult<Vec<Value>> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(&format!(
        "SELECT id, type, data, created_at FROM events WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT {REPLAY_PAGE}"
    ))
    .bind(tenant)
    .bind(after)
    .fetch_all(app.db.pool())
    .await?;
    rows.into_iter()
        .map(|(id, kind, data, created_at)| {
            Ok(crate::events::payload(&id, &kind, tenant, &time::from_db(&created_at)?, serde_json::from_str(&data)?))
        })
        .collect()
}

impl Cursor {
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Cursor)> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                if self.resumed_from.as_deref() == event["id"].as_str() {
                    continue;
                }
                let recorded = event["created_at"].as_str().and_then(|at| time::from_db(at).ok());
                if recorded.is_some_and(|at| at >= self.listening_since - IN_FLIGHT) {
                    self.replayed.insert(event["id"].as_str().unwrap_or_default().to_string());
                }
                if wanted(&self.patterns, &event) {
                    if let Some(event) = self.filter.admit(&self.app, &self.auth, &event).await {
                        return Some((Ok(sse_event(&event)), self));
                    }
                }
                continue;
            }
            if let Some(after) = self.replay_after.take() {
                let page = outbox_page(&self.app, &self.tenant, &after).await.ok()?;
                if page.len() as i64 == REPLAY_PAGE {
                    self.replay_after = page.last().and_then(|e| e["id"].as_str()).map(str::to_string);
                }
                self.backlog.extend(page);
                continue;
            }
            if self.recheck.changed() {
                // A change that answered before the next event was recorded holds for it.
                let current = self.recheck.valid(&self.app).await?;
                self.auth = current;
                self.filter.reset();
            }
            let received = tokio::select! {
                received = self.live.recv() => received,
                () = self.recheck.due() => {
                    if let Some(current) = self.recheck.valid(&self.app).await {
                        // Roles and policies may have changed: decide afresh from here on.
                        self.auth = current;
                        self.filter.reset();
                        continue;
                    }
                    // The credential was revoked or expired: the stream ends.
                    return None;
                }
            };
            match received {
                Ok(event) => {
                    if event["tenant_id"].as_str() != Some(self.tenant.as_str()) || !wanted(&self.patterns, &event) {
                        continue;
                    }
                    if !self.replayed.is_empty() && self.replayed.remove(event["id"].as_str().unwrap_or_default()) {
                        continue;
                    }
                    let Some(event) = self.filter.admit(&self.app, &self.auth, &event).await else { continue };
                    return Some((Ok(sse_event(&event)), self));
                }
                // Too far behind, or shutting down: the client resumes with Last-Event-ID.
                Err(RecvError::Lagged(_) | RecvError::Closed) => return None,
            }
        }
    }
}

/// Where the outbox is read from when resuming after `last`. On PostgreSQL, transactions commit
/// out of id order and nodes' clocks differ, so the replay starts a few seconds before `last`:
/// the client may see those events again (de-duplicate on the id), never miss one.
async fn resume_point(app: &App, tenant: &TenantId, last: &str) -> ApiResult<String> {
    if app.db.backend() != crate::db::Backend::Postgres {
        return Ok(last.to_string());
    }
    let at: Option<(String,)> = sqlx::query_as("SELECT created_at FROM events WHERE id = $1 AND tenant_id = $2")
        .bind(last)
        .bind(tenant)
        .fetch_optional(app.db.pool())
        .await?;
    let Some((at,)) = at else { return Ok(last.to_string()) };
    let since = time::from_db(&at)? - RESUME_OVERLAP;
    let bound = id::lower_bound(prefix::EVENT, since.timestamp_millis().max(0) as u64);
    // Just below the bound, so that `id > after` includes it.
    Ok(bound.trim_end_matches('0').to_string())
}

/// How far before `Last-Event-ID` a PostgreSQL replay starts.
const RESUME_OVERLAP: chrono::Duration = chrono::Duration::seconds(5);

async fn open(
    app: App,
    auth: &Auth,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    query: StreamQuery,
) -> ApiResult<Response> {
    auth.require(EVENTS_READ)?;
    let tenant = auth.tenant()?.clone();
    let mut errors = FieldErrors::default();
    let patterns: Vec<String> = match &query.types {
        Some(types) => types.split(',').map(str::to_string).collect(),
        None => vec!["*".to_string()],
    };
    if patterns.is_empty()
        || patterns.len() > 50
        || !patterns.iter().all(|p| crate::names::is_event_pattern_of_any_length(p))
    {
        errors.add("types", "must be 1 to 50 event types or patterns, comma-separated");
    }
    const NOT_AN_EVENT: &str = "must be an event id (`evt_...`)";
    let header = headers.get("last-event-id").filter(|v| !v.is_empty());
    let last = match header.map(|v| v.to_str()) {
        // A header that is not text names no event: refused, not ignored.
        Some(Err(_)) => {
            errors.add("last_event_id", NOT_AN_EVENT);
            None
        }
        Some(Ok(id)) => Some(id.to_string()),
        None => query.last_event_id,
    }
    .filter(|id| !id.is_empty());
    if last.as_deref().is_some_and(|id| !id::is_valid(prefix::EVENT, id)) {
        errors.add("last_event_id", NOT_AN_EVENT);
    }
    errors.finish()?;
    let credential = crate::auth::credential_of(headers, uri)
        .ok_or_else(|| crate::http::ApiError::unauthorized("missing credential"))?;
    let replay_after = match &last {
        Some(last) => Some(resume_point(&app, &tenant, last).await?),
        None => None,
    };
    // Listen before reading the outbox, so that nothing falls between the two.
    let live = app.db.outbox().events();
    let channels: HashSet<String> = patterns.iter().map(|p| format!("events:{p}")).collect();
    let registered = Hub::register(&app, &tenant, "sse", channels);
    let recheck = Recheck::new(&app, credential, auth.client_ip);
    let cursor = Cursor {
        app,
        tenant,
        patterns,
        live,
        backlog: VecDeque::new(),
        replay_after,
        replayed: HashSet::new(),
        listening_since: time::now(),
        recheck,
        auth: auth.clone(),
        filter: Default::default(),
        resumed_from: last,
        _registered: registered,
    };
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(stream::unfold(cursor, Cursor::next));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// Stream events (Server-Sent Events)
///
/// The tenant's events as they commit, filtered by `types`; with `Last-Event-ID` (or
/// `?last_event_id=`) it first sends the events after that one from the outbox. Needs
/// `events:read`; `?token=` carries the credential for `EventSource`. Also at `/events/stream`.
#[utoipa::path(get, path = "/v1/events/stream", tag = "Realtime", security(("bearer" = [])),
    params(StreamQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, content_type = "text/event-stream", body = String, description = "The event stream")))]
pub async fn stream(
    auth: Auth,
    State(app): State<App>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<StreamQuery>,
) -> ApiResult<Response> {
    open(app, &auth, &headers, &uri, query).await
}
