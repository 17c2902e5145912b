//! Realtime: a tenant's committed events pushed to WebSocket subscribers of channels
//! (`objects:<type>`, `files`, `files:<folder>`, `events:<pattern>`) and to Server-Sent Events
//! streams, which resume from the outbox after `Last-Event-ID`. Every node hears its own commits
//! in-process and, on PostgreSQL, every other node's through `LISTEN/NOTIFY`. A listener that
//! falls too far behind is disconnected, so no connection holds more than the shared buffer.

pub mod notify;
pub mod sse;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::auth::Auth;
use crate::http::{ApiError, ApiResult, Data};
use crate::id::TenantId;
use crate::scopes::required::{EVENTS_READ, FILES_READ, OBJECTS_READ};
use crate::scopes::Required;

/// How often the server pings a WebSocket client.
const HEARTBEAT: Duration = Duration::from_secs(25);
/// A client silent (no frame, no pong) this long is disconnected.
const IDLE_LIMIT: Duration = Duration::from_secs(75);
/// How long one frame may take to go out before the client counts as too slow.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Most channels one connection subscribes to.
const CHANNELS_MAX: usize = 100;
/// Largest frame a client may send.
const CLIENT_FRAME_MAX: usize = 16 * 1024;

/// How often a stream's credential is checked again at the latest (at once after any change to
/// credentials on this node).
const RECHECK: Duration = Duration::from_secs(60);

/// The credential a stream was opened with, checked again while the stream lasts: a revoked key
/// or an expired token ends it.
pub struct Recheck {
    credential: String,
    ip: std::net::IpAddr,
    changes: tokio::sync::watch::Receiver<u64>,
    next: tokio::time::Instant,
}

impl Recheck {
    pub fn new(app: &App, credential: String, ip: std::net::IpAddr) -> Recheck {
        Recheck {
            credential,
            ip,
            changes: app.credential_changes.subscribe(),
            next: tokio::time::Instant::now() + RECHECK,
        }
    }

    /// Waits until the credential is due for a check: a change to credentials, or the interval
    /// passed. Safe to race in a `select!`: dropped before it completes, it consumes nothing.
    pub async fn due(&mut self) {
        tokio::select! {
            changed = self.changes.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(self.next).await;
                }
            }
            _ = tokio::time::sleep_until(self.next) => {}
        }
    }

    /// Whether credentials changed on this node since the last check: then an event is let
    /// through only after the check, so a change that answered before the event was recorded
    /// holds for it.
    pub fn changed(&self) -> bool {
        self.changes.has_changed().unwrap_or(false)
    }

    /// Checks the credential (after `due`, outside any race, so that the check is never cut
    /// short by another branch): the caller as it now is (its roles read again), or `None` when
    /// the credential no longer holds.
    pub async fn valid(&mut self, app: &App) -> Option<Auth> {
        self.changes.borrow_and_update();
        self.next = tokio::time::Instant::now() + RECHECK;
        crate::auth::credential::authenticate(app, &self.credential, self.ip).await.ok()
    }
}

/// The live connections of this node, for stats.
#[derive(Debug, Default)]
pub struct Hub {
    next: AtomicU64,
    connections: Mutex<HashMap<u64, Connection>>,
}

#[derive(Debug)]
struct Connection {
    tenant: TenantId,
    kind: &'static str,
    channels: HashSet<String>,
}

/// Removes a connection from the hub when it ends, however it ends.
pub struct Registered {
    app: App,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.app.realtime.connections.lock() {
            connections.remove(&self.id);
        }
    }
}

impl Registered {
    fn set_channels(&self, channels: &HashSet<String>) {
        if let Ok(mut connections) = self.app.realtime.connections.lock() {
            if let Some(connection) = connections.get_mut(&self.id) {
                connection.channels = channels.clone();
            }
        }
    }
}

impl Hub {
    /// Counts a new connection of `tenant` until the returned guard drops.
    pub fn register(app: &App, tenant: &TenantId, kind: &'static str, channels: HashSet<String>) -> Registered {
        let id = app.realtime.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut connections) = app.realtime.connections.lock() {
            connections.insert(id, Connection { tenant: tenant.clone(), kind, channels });
        }
        Registered { app: app.clone(), id }
    }

    /// This node's open connections by kind (`websocket`, `sse`), every tenant's together.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut counts = vec![("websocket", 0), ("sse", 0)];
        if let Ok(connections) = self.connections.lock() {
            for connection in connections.values() {
                match counts.iter_mut().find(|(kind, _)| *kind == connection.kind) {
                    Some((_, count)) => *count += 1,
                    None => counts.push((connection.kind, 1)),
                }
            }
        }
        counts
    }

    fn stats(&self, tenant: &TenantId) -> Stats {
        let mut stats = Stats::default();
        if let Ok(connections) = self.connections.lock() {
            for connection in connections.values().filter(|c| &c.tenant == tenant) {
                stats.connections += 1;
                *stats.by_kind.entry(connection.kind.to_string()).or_default() += 1;
                for channel in &connection.channels {
                    *stats.channels.entry(channel.clone()).or_default() += 1;
                }
            }
        }
        stats
    }
}

/// A tenant's live realtime connections on the node that answers.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Stats {
    pub connections: u64,
    /// Connections by kind: `websocket`, `sse`.
    pub by_kind: BTreeMap<String, u64>,
    /// Subscribers per channel.
    pub channels: BTreeMap<String, u64>,
}

/// The scope a channel needs, or why the name is not a channel.
pub fn channel_scope(channel: &str) -> Result<Required, String> {
    let invalid = || {
        format!("`{channel}` is not a channel: use `objects:<type>`, `objects:*`, `files`, `files:<folder>` or `events:<pattern>`")
    };
    if channel.len() > 200 || channel.chars().any(char::is_control) {
        return Err(invalid());
    }
    match channel.split_once(':') {
        None if channel == "files" => Ok(FILES_READ),
        Some(("files", folder)) if !folder.is_empty() => Ok(FILES_READ),
        Some(("objects", name)) if name == "*" || crate::object_types::is_identifier(name) => Ok(OBJECTS_READ),
        Some(("events", pattern)) if crate::webhooks::is_event_pattern(pattern) => Ok(EVENTS_READ),
        _ => Err(invalid()),
    }
}

/// True when `event` (a delivered payload) belongs on `channel`.
pub fn channel_matches(channel: &str, event: &Value) -> bool {
    let kind = event["type"].as_str().unwrap_or_default();
    let data = &event["data"];
    match channel.split_once(':') {
        None => channel == "files" && kind.starts_with("file."),
        Some(("objects", name)) => {
            kind.starts_with("object.") && (name == "*" || data["object_type"].as_str() == Some(name))
        }
        Some(("files", folder)) => {
            kind.starts_with("file.")
                && (data["folder"].as_str() == Some(folder) || data["file"]["folder"].as_str() == Some(folder))
        }
        Some(("events", pattern)) => crate::webhooks::delivery::matches(&[pattern.to_string()], kind),
        _ => false,
    }
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Command {
    Subscribe { channel: String },
    Unsubscribe { channel: String },
    Ping,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(connect)).routes(routes!(stats)).routes(routes!(sse::stream))
}

/// Open a realtime connection
///
/// Upgrades to a WebSocket (credential in `Authorization`, or `?token=` where a client cannot
/// set headers). Send `{"type": "subscribe", "channel": "objects:deals"}` (also `unsubscribe`,
/// `ping`); receive `{"type": "event", "channel": ..., "event": {...}}` for the tenant's events
/// on subscribed channels, and `subscribed`, `unsubscribed`, `pong`, `error` frames. Each
/// channel needs its read scope (`objects:read`, `files:read`, `events:read`). The server pings
/// every 25 s; a client that falls too far behind is closed with code 1008 and reconnects.
#[utoipa::path(get, path = "/v1/realtime", tag = "Realtime", security(("bearer" = [])),
    params(("token" = Option<String>, Query, description = "The credential, when no Authorization header can be sent")),
    responses((status = 101, description = "Switching to the WebSocket protocol"),
              (status = 400, body = crate::http::error::ErrorBody, description = "Not a WebSocket upgrade")))]
async fn connect(
    auth: Auth,
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let tenant = auth.tenant()?.clone();
    let upgrade = upgrade.map_err(|_| ApiError::bad_request("this route upgrades to a WebSocket: connect with one"))?;
    let credential =
        crate::auth::credential_of(&headers, &uri).ok_or_else(|| ApiError::unauthorized("missing credential"))?;
    let recheck = Recheck::new(&app, credential, auth.client_ip);
    Ok(upgrade
        .max_message_size(CLIENT_FRAME_MAX)
        .max_frame_size(CLIENT_FRAME_MAX)
        .on_upgrade(move |socket| session(app, auth, tenant, recheck, socket)))
}

/// Sends one frame, or gives up on a client that does not take it in time.
async fn send(socket: &mut WebSocket, frame: Message) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(frame)).await, Ok(Ok(())))
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

fn error_frame(code: &str, message: impl Into<String>) -> Message {
    text(json!({ "type": "error", "error": { "code": code, "message": message.into() } }))
}

async fn session(app: App, mut auth: Auth, tenant: TenantId, mut recheck: Recheck, mut socket: WebSocket) {
    let mut events = app.db.outbox().events();
    let mut filter = crate::authz::access::EventFilter::default();
    let mut channels: HashSet<String> = HashSet::new();
    let registered = Hub::register(&app, &tenant, "websocket", HashSet::new());
    let welcome = json!({ "type": "welcome", "connection_id": registered.id, "tenant_id": tenant });
    if !send(&mut socket, text(welcome)).await {
        return;
    }
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let mut last_heard = Instant::now();
    loop {
        if recheck.changed()
            && !checked_again(&app, &mut auth, &mut recheck, &mut filter, &mut channels, &registered, &mut socket).await
        {
            break;
        }
        tokio::select! {
            // Events first: one recorded before a command arrived is sent before its answer.
            biased;
            event = events.recv() => match event {
                Ok(event) => {
                    if event["tenant_id"].as_str() != Some(tenant.as_str()) {
                        continue;
                    }
                    let Some(channel) = channels.iter().find(|c| channel_matches(c, &event)).cloned() else { continue };
                    if recheck.changed() && !checked_again(&app, &mut auth, &mut recheck, &mut filter, &mut channels, &registered, &mut socket).await {
                        break;
                    }
                    if !channels.contains(&channel) {
                        continue;
                    }
                    let Some(event) = filter.admit(&app, &auth, &event).await else { continue };
                    let frame = json!({ "type": "event", "channel": channel, "event": event });
                    if !send(&mut socket, text(frame)).await {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let reason = format!("too slow: {missed} events missed; reconnect");
                    let close = CloseFrame { code: axum::extract::ws::close_code::POLICY, reason: reason.into() };
                    let _ = send(&mut socket, Message::Close(Some(close))).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { break };
                last_heard = Instant::now();
                let reply = match message {
                    Message::Text(body) => command(&auth, &mut channels, body.as_str()),
                    Message::Binary(_) => Some(error_frame("BAD_REQUEST", "frames are JSON text")),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => None,
                };
                registered.set_channels(&channels);
                if let Some(reply) = reply {
                    if !send(&mut socket, reply).await {
                        break;
                    }
                }
            }
            () = recheck.due() => {
                if !checked_again(&app, &mut auth, &mut recheck, &mut filter, &mut channels, &registered, &mut socket).await {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > IDLE_LIMIT || !send(&mut socket, Message::Ping(Default::default())).await {
                    break;
                }
            }
        }
    }
}

/// Checks a socket's credential again: roles and policies may have changed, so its filter and
/// channels are decided afresh; `false` (the socket closed) when the credential no longer holds.
async fn checked_again(
    app: &App,
    auth: &mut Auth,
    recheck: &mut Recheck,
    filter: &mut crate::authz::access::EventFilter,
    channels: &mut HashSet<String>,
    registered: &Registered,
    socket: &mut WebSocket,
) -> bool {
    if let Some(current) = recheck.valid(app).await {
        *auth = current;
        filter.reset();
        channels.retain(|channel| may_subscribe(auth, channel).is_ok());
        registered.set_channels(channels);
        return true;
    }
    let reason = "the credential was revoked or has expired";
    let close = CloseFrame { code: axum::extract::ws::close_code::POLICY, reason: reason.into() };
    let _ = send(socket, Message::Close(Some(close))).await;
    false
}

/// Whether `auth` may subscribe to `channel`: its read scope, or for one object type the
/// permission to read that type (`objects.<type>:read`).
fn may_subscribe(auth: &Auth, channel: &str) -> ApiResult<()> {
    let scope = channel_scope(channel).map_err(|problem| ApiError::invalid("channel", problem))?;
    match channel.split_once(':') {
        Some(("objects", name)) if name != "*" => {
            if crate::authz::access::permits(auth, name, crate::authz::ObjectAction::Select) {
                Ok(())
            } else {
                Err(ApiError::new(
                    crate::http::ErrorCode::InsufficientScope,
                    format!("this credential lacks the scope `objects.{name}:read`"),
                ))
            }
        }
        _ => auth.require(scope),
    }
}

/// Applies a client's command; the frame to answer with.
fn command(auth: &Auth, channels: &mut HashSet<String>, body: &str) -> Option<Message> {
    let command: Command = match serde_json::from_str(body) {
        Ok(command) => command,
        Err(_) => {
            return Some(error_frame(
                "BAD_REQUEST",
                "send {\"type\": \"subscribe\" | \"unsubscribe\", \"channel\": ...} or {\"type\": \"ping\"}",
            ))
        }
    };
    Some(match command {
        Command::Ping => text(json!({ "type": "pong" })),
        Command::Subscribe { channel } => match channel_scope(&channel) {
            Err(problem) => error_frame("VALIDATION_FAILED", problem),
            Ok(_) => {
                if let Err(error) = may_subscribe(auth, &channel) {
                    error_frame("INSUFFICIENT_SCOPE", error.message)
                } else if channels.len() >= CHANNELS_MAX && !channels.contains(&channel) {
                    error_frame("VALIDATION_FAILED", format!("at most {CHANNELS_MAX} channels per connection"))
                } else {
                    channels.insert(channel.clone());
                    text(json!({ "type": "subscribed", "channel": channel }))
                }
            }
        },
        Command::Unsubscribe { channel } => {
            channels.remove(&channel);
            text(json!({ "type": "unsubscribed", "channel": channel }))
        }
    })
}

/// Realtime stats
///
/// The tenant's live connections on the node that answers, by kind, and subscribers per
/// channel.
#[utoipa::path(get, path = "/v1/realtime/stats", tag = "Realtime", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<Stats>)))]
async fn stats(auth: Auth, State(app): State<App>) -> ApiResult<Data<Stats>> {
    auth.require(EVENTS_READ)?;
    Ok(Data(app.realtime.stats(auth.tenant()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_what_they_carry() {
        let object = json!({ "type": "object.created", "data": { "object_type": "deals" } });
        assert!(channel_matches("objects:deals", &object));
        assert!(channel_matches("objects:*", &object));
        assert!(!channel_matches("objects:contacts", &object));
        assert!(channel_matches("events:object.*", &object));
        assert!(channel_matches("events:*", &object));
        assert!(!channel_matches("files", &object));
        let file = json!({ "type": "file.uploaded", "data": { "file": { "folder": "invoices" } } });
        assert!(channel_matches("files", &file) && channel_matches("files:invoices", &file));
        assert!(!channel_matches("files:other", &file));

        assert_eq!(channel_scope("objects:deals"), Ok(OBJECTS_READ));
        assert_eq!(channel_scope("events:inbound.*"), Ok(EVENTS_READ));
        assert_eq!(channel_scope("files:a/b"), Ok(FILES_READ));
        for bad in ["objects:", "objects:Bad Name", "events:*.x", "users", "files:", "x:y"] {
            assert!(channel_scope(bad).is_err(), "{bad}");
        }
    }
}
