//! Realtime: WebSocket channels and the Server-Sent Events stream carry a tenant's events and
//! nothing of another tenant's; the stream resumes after `Last-Event-ID`; several nodes on one
//! PostgreSQL hear each other's events.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::both_backends;
use crate::common::{Backend, TestApp, TestTenant};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous, so that a busy machine does not fail a test; the latency itself is measured by the
/// benchmark harness, not asserted here.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn open_socket(app: &TestApp, token: &str) -> Socket {
    let url = format!("{}/v1/realtime?token={token}", app.base.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("the WebSocket opens");
    let welcome = next_frame(&mut socket).await;
    assert_eq!(welcome["type"], "welcome");
    socket
}

/// The next JSON frame, skipping pings.
pub async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next()).await.expect("a frame in time").expect("open").unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Waits for the server to close the socket with 1008 (policy) and answers the reason; pings and,
/// with `skip_events`, event frames on the way are passed over.
async fn closed_for_policy(socket: &mut Socket, skip_events: bool) -> String {
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1008);
                return frame.reason.to_string();
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(_))) if skip_events => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub async fn command(socket: &mut Socket, frame: Value) -> Value {
    socket.send(Message::Text(frame.to_string().into())).await.unwrap();
    next_frame(socket).await
}

async fn object(app: &TestApp, tenant: &TestTenant, kind: &str) -> String {
    let created = app.post(&format!("/v1/objects/{kind}"), &tenant.key, json!({ "properties": {} })).await;
    created.expect(201);
    created.data()["id"].as_str().unwrap().to_string()
}

/// Server-Sent Events read off a streaming response.
pub struct EventStream {
    pub response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    pub async fn open(app: &TestApp, path: &str, token: Option<&str>, last_event_id: Option<&str>) -> EventStream {
        let mut request = app.request(reqwest::Method::GET, path, token);
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        EventStream { response, buffer: String::new() }
    }

    /// The next event: (id, type, data).
    pub async fn next(&mut self) -> (String, String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim_start().to_string()))
                };
                if let (Some(id), Some(kind), Some(data)) = (field("id"), field("event"), field("data")) {
                    return (id, kind, serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk()).await.expect("an event in time").unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open")));
        }
    }
}

async fn track(app: &TestApp, tenant: &TestTenant, kind: &str) -> String {
    let tracked = app.post("/v1/events", &tenant.key, json!({ "event_type": kind, "data": {} })).await;
    tracked.expect(201);
    tracked.data()["id"].as_str().unwrap().to_string()
}

both_backends! {
    async fn streams_end_when_their_credential_is_revoked(app) {
        let tenant = app.tenant("Revoke").await;
        let (key_id, key) = app.key(&tenant, json!({ "scopes": ["events:read"] })).await;
        let mut socket = open_socket(&app, &key).await;
        let mut stream = EventStream::open(&app, "/v1/events/stream", Some(&key), None).await;
        app.delete(&format!("/v1/keys/{key_id}"), &tenant.key).await.expect(200);
        assert!(closed_for_policy(&mut socket, false).await.contains("revoked"));
        let ended = tokio::time::timeout(WAIT, async {
            while let Ok(Some(_)) = stream.response.chunk().await {}
        })
        .await;
        assert!(ended.is_ok(), "the event stream ends");
        app.get("/v1/events/stream", &key).await.expect_error(401, "UNAUTHORIZED");
    }

    async fn streams_end_when_their_users_session_ends(app) {
        let tenant = app.tenant("Session stream").await;
        let signed_up = app.send(app.request(reqwest::Method::POST, "/v1/auth/signup", None).header("x-tenant-id", &tenant.id)
            .json(&json!({ "email": "live@example.com", "password": "granite-otter-harbour-42" }))).await;
        signed_up.expect(201);
        let signed_in = app.send(app.request(reqwest::Method::POST, "/v1/auth/login", None).header("x-tenant-id", &tenant.id)
            .json(&json!({ "email": "live@example.com", "password": "granite-otter-harbour-42" }))).await;
        let access = signed_in.data()["access_token"].as_str().unwrap().to_string();
        app.send(app.request(reqwest::Method::PUT, "/v1/roles/authenticated/permissions", Some(&tenant.key))
            .json(&json!({ "permissions": ["objects:read"] }))).await.expect(200);
        let mut socket = open_socket(&app, &access).await;
        let subscribed = command(&mut socket, json!({ "type": "subscribe", "channel": "objects:*" })).await;
        assert_eq!(subscribed["type"], "subscribed");
        app.send(app.request(reqwest::Method::POST, "/v1/auth/logout", Some(&access))).await.expect(200);
        closed_for_policy(&mut socket, false).await;
    }

    async fn websocket_subscribers_get_their_tenants_events_only(app) {
        let tenant = app.tenant("Live").await;
        let other = app.tenant("Other").await;
        for t in [&tenant, &other] {
            app.post("/v1/object-types", &t.key, json!({ "name": "deals" })).await.expect(201);
        }
        app.post("/v1/object-types", &tenant.key, json!({ "name": "notes" })).await.expect(201);

        let mut socket = open_socket(&app, &tenant.key).await;
        let subscribed = command(&mut socket, json!({ "type": "subscribe", "channel": "objects:deals" })).await;
        assert_eq!(subscribed, json!({ "type": "subscribed", "channel": "objects:deals" }));
        let refused = command(&mut socket, json!({ "type": "subscribe", "channel": "nonsense" })).await;
        assert_eq!(refused["error"]["code"], "VALIDATION_FAILED");
        assert_eq!(command(&mut socket, json!({ "type": "ping" })).await["type"], "pong");
        assert_eq!(command(&mut socket, json!({ "hello": 1 })).await["error"]["code"], "BAD_REQUEST");

        let stats = app.get("/v1/realtime/stats", &tenant.key).await;
        stats.expect(200);
        assert_eq!(stats.data()["connections"], 1);
        assert_eq!(stats.data()["channels"], json!({ "objects:deals": 1 }));
        assert_eq!(stats.data()["by_kind"]["websocket"], 1);
        assert_eq!(app.get("/v1/realtime/stats", &other.key).await.data()["connections"], 0);

        // Another tenant's deal and this tenant's note come first, and are not sent.
        object(&app, &other, "deals").await;
        object(&app, &tenant, "notes").await;
        let id = object(&app, &tenant, "deals").await;
        let frame = next_frame(&mut socket).await;
        assert_eq!(frame["type"], "event");
        assert_eq!(frame["channel"], "objects:deals");
        assert_eq!(frame["event"]["type"], "object.created");
        assert_eq!(frame["event"]["tenant_id"], tenant.id.as_str());
        assert_eq!(frame["event"]["data"]["object"]["id"], id.as_str());

        // Unsubscribed, nothing more comes; events:* brings everything of the tenant's.
        command(&mut socket, json!({ "type": "unsubscribe", "channel": "objects:deals" })).await;
        object(&app, &tenant, "deals").await;
        command(&mut socket, json!({ "type": "subscribe", "channel": "events:audit.*" })).await;
        let tracked = track(&app, &tenant, "audit.done").await;
        let frame = next_frame(&mut socket).await;
        assert_eq!(frame["event"]["id"], tracked.as_str(), "the deal after unsubscribing was not sent");
        socket.close(None).await.unwrap();

        // Scopes bind channels; the Authorization header works as well as ?token=.
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["events:read"] })).await;
        let mut request = format!("{}/v1/realtime", app.base.replace("http://", "ws://")).into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {reader}").parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(next_frame(&mut socket).await["type"], "welcome");
        let refused = command(&mut socket, json!({ "type": "subscribe", "channel": "objects:deals" })).await;
        assert_eq!(refused["error"]["code"], "INSUFFICIENT_SCOPE");
        let allowed = command(&mut socket, json!({ "type": "subscribe", "channel": "events:object.*" })).await;
        assert_eq!(allowed["type"], "subscribed");

        // No credential, or not an upgrade: refused in the contract's shape.
        let anonymous = tokio_tungstenite::connect_async(format!("{}/v1/realtime", app.base.replace("http://", "ws://"))).await;
        match anonymous {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
        app.get("/v1/realtime", &tenant.key).await.expect_error(400, "BAD_REQUEST");
    }

    async fn the_event_stream_resumes_after_the_last_event_id(app) {
        let tenant = app.tenant("Stream").await;
        let other = app.tenant("Other").await;
        app.post("/v1/object-types", &tenant.key, json!({ "name": "deals" })).await.expect(201);
        let first = track(&app, &tenant, "step.one").await;
        let second = track(&app, &tenant, "step.two").await;
        let third = track(&app, &tenant, "step.three").await;

        let mut stream = EventStream::open(&app, "/v1/events/stream", Some(&tenant.key), Some(&first)).await;
        let (id, kind, data) = stream.next().await;
        assert_eq!((id.as_str(), kind.as_str()), (second.as_str(), "step.two"));
        assert_eq!(data["id"], second.as_str());
        assert_eq!(stream.next().await.0, third);
        // Live now: another tenant's event is not sent, this tenant's is.
        track(&app, &other, "step.other").await;
        let id = object(&app, &tenant, "deals").await;
        let (_, kind, data) = stream.next().await;
        assert_eq!(kind, "object.created");
        assert_eq!(data["data"]["object"]["id"], id.as_str());
        let stats = app.get("/v1/realtime/stats", &tenant.key).await;
        assert_eq!(stats.data()["by_kind"]["sse"], 1);

        // The unversioned path, ?token= for EventSource, and a type filter.
        let mut objects = EventStream::open(&app, &format!("/events/stream?token={}&types=object.*", tenant.key), None, None).await;
        track(&app, &tenant, "step.four").await;
        object(&app, &tenant, "deals").await;
        assert_eq!(objects.next().await.1, "object.created");

        app.get("/v1/events/stream?last_event_id=nope", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/events/stream?types=Bad", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        app.get_public("/v1/events/stream").await.expect_error(401, "UNAUTHORIZED");
        let (_, writer) = app.key(&tenant, json!({ "scopes": ["objects:write"] })).await;
        app.get("/v1/events/stream", &writer).await.expect_error(403, "INSUFFICIENT_SCOPE");
    }
}

/// Two nodes on one PostgreSQL: an event committed on one reaches subscribers of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_fans_out_across_nodes() {
    let first = TestApp::spawn(Backend::Postgres).await;
    let second = first.another_node(|_| {}).await;
    let tenant = first.tenant("Nodes").await;
    let mut socket = open_socket(&second, &tenant.key).await;
    command(&mut socket, json!({ "type": "subscribe", "channel": "events:*" })).await;
    let mut stream = EventStream::open(&first, "/v1/events/stream", Some(&tenant.key), None).await;
    // The listener of the second node may still be connecting: poll until one arrives.
    let mut heard = None;
    for _ in 0..20 {
        let id = track(&first, &tenant, "node.one").await;
        if let Ok(frame) = tokio::time::timeout(Duration::from_millis(500), next_frame(&mut socket)).await {
            heard = Some((id, frame));
            break;
        }
    }
    let (id, frame) = heard.expect("the second node hears the first node's event");
    assert_eq!(frame["event"]["id"], id.as_str());
    // A burst, told together once committed: every one is heard.
    let burst = (0..24)
        .map(|n| first.post("/v1/events", &tenant.key, json!({ "event_type": "node.burst", "data": { "n": n } })));
    let mut sent: std::collections::BTreeSet<String> = futures::future::join_all(burst)
        .await
        .iter()
        .map(|r| r.expect(201).data()["id"].as_str().unwrap().to_string())
        .collect();
    while !sent.is_empty() {
        let frame = tokio::time::timeout(Duration::from_secs(10), next_frame(&mut socket))
            .await
            .expect("a burst's event unheard");
        sent.remove(frame["event"]["id"].as_str().unwrap_or_default());
    }
    // And the other way round, large events too (they travel by id).
    let big = second
        .post("/v1/events", &tenant.key, json!({ "event_type": "node.two", "data": { "text": "x".repeat(20_000) } }))
        .await;
    big.expect(201);
    loop {
        let (got, _, data) = stream.next().await;
        if got == big.data()["id"].as_str().unwrap() {
            assert_eq!(data["data"]["text"].as_str().unwrap().len(), 20_000);
            break;
        }
    }
}

/// Two nodes on one PostgreSQL: a key revoked on one ends its streams on the other at once,
/// told by a notification, not at the other's next periodic check (a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_revoked_on_one_node_ends_its_streams_on_the_other() {
    let first = TestApp::spawn(Backend::Postgres).await;
    let second = first.another_node(|_| {}).await;
    let tenant = first.tenant("Revoked across").await;
    let (key_id, key) = first.key(&tenant, json!({ "scopes": ["events:read", "events:write"] })).await;
    let mut socket = open_socket(&second, &key).await;
    command(&mut socket, json!({ "type": "subscribe", "channel": "events:*" })).await;
    // The second node listens once it hears the first's events.
    let mut listening = false;
    for _ in 0..20 {
        track(&first, &tenant, "node.ready").await;
        if tokio::time::timeout(Duration::from_millis(500), next_frame(&mut socket)).await.is_ok() {
            listening = true;
            break;
        }
    }
    assert!(listening, "the second node hears the first");
    let mut stream = EventStream::open(&second, "/v1/events/stream", Some(&key), None).await;
    first.delete(&format!("/v1/keys/{key_id}"), &tenant.key).await.expect(200);
    // Closed well before the periodic check.
    let reason = closed_for_policy(&mut socket, true).await;
    assert!(reason.contains("revoked"), "{reason}");
    let ended = tokio::time::timeout(WAIT, async { while let Ok(Some(_)) = stream.response.chunk().await {} }).await;
    assert!(ended.is_ok(), "the event stream on the other node ends");
    second.get("/v1/events/stream", &key).await.expect_error(401, "UNAUTHORIZED");
}

/// A subscriber that stops reading is disconnected once it falls behind; the server does not
/// queue for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_disconnected() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| config.realtime_buffer = 16).await;
    let tenant = app.tenant_on("Slow", "pro").await;
    let mut socket = open_socket(&app, &tenant.key).await;
    command(&mut socket, json!({ "type": "subscribe", "channel": "events:*" })).await;
    // Never read again: large events fill the socket's buffers, then the server's small one.
    let pad = "x".repeat(60_000);
    let mut disconnected = false;
    for _ in 0..400 {
        app.post("/v1/events", &tenant.key, json!({ "event_type": "bulk.item", "data": { "pad": pad } }))
            .await
            .expect(201);
        if app.get("/v1/realtime/stats", &tenant.key).await.data()["connections"] == 0 {
            disconnected = true;
            break;
        }
    }
    for _ in 0..300 {
        if disconnected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        disconnected = app.get("/v1/realtime/stats", &tenant.key).await.data()["connections"] == 0;
    }
    assert!(disconnected, "the slow subscriber was disconnected");
    drop(socket);
}
