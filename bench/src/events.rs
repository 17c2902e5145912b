//! `--events`: what recording an event costs with and without a webhook endpoint to fan out to,
//! how fast queued deliveries drain to a receiver on loopback (while events keep coming, and as a
//! backlog on its own), and how long an event takes to reach a WebSocket subscriber and a
//! Server-Sent Events stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::{call, drive, percentile, Options, Scenario};

/// Realtime round trips measured, one at a time.
const ROUND_TRIPS: usize = 500;

struct Receiver {
    count: AtomicUsize,
    last: Mutex<Option<Instant>>,
    /// From an event's recording (its `created_at`) to its delivery's arrival, while `lags_on`.
    lags: Mutex<Vec<Duration>>,
    lags_on: std::sync::atomic::AtomicBool,
    /// Deliveries are answered only while it is true: closed, they wait, and the server's
    /// deliveries in flight with them, so that a backlog builds.
    open: tokio::sync::watch::Sender<bool>,
}

async fn receiver() -> anyhow::Result<(String, Arc<Receiver>)> {
    let state = Arc::new(Receiver {
        count: AtomicUsize::new(0),
        last: Mutex::new(None),
        lags: Mutex::new(Vec::new()),
        lags_on: std::sync::atomic::AtomicBool::new(false),
        open: tokio::sync::watch::channel(true).0,
    });
    let shared = state.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let state = shared.clone();
        async move {
            let _ = state.open.subscribe().wait_for(|open| *open).await;
            if state.lags_on.load(Ordering::Relaxed) {
                let recorded = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|event| chrono::DateTime::parse_from_rfc3339(event["created_at"].as_str()?).ok());
                if let Some(lag) = recorded.and_then(|at| (chrono::Utc::now() - at.to_utc()).to_std().ok()) {
                    state.lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(lag);
                }
            }
            state.count.fetch_add(1, Ordering::Relaxed);
            *state.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, state))
}

fn report(name: &str, mut latencies: Vec<Duration>, elapsed: Duration, failures: usize) {
    latencies.sort();
    println!(
        "{:<52} {:>8.0}µs {:>8.0}µs {:>10.0} {:>7}",
        name,
        percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        failures
    );
}

pub async fn run(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let event = Scenario {
        name: "POST /v1/events",
        method: reqwest::Method::POST,
        path: "/v1/events".into(),
        token: Some(key.into()),
        body: Some(json!({ "event_type": "bench.tick", "data": { "n": 1, "note": "a small payload" } })),
    };
    let options = Options { requests, concurrency, events: true, ..Options::plain() };
    println!("events: {requests} requests per scenario, concurrency {concurrency}");
    println!("{:<52} {:>10} {:>10} {:>10} {:>7}", "scenario", "median", "p99", "per s", "failed");

    let warm = Options { requests: concurrency * 4, ..options_like(&options) };
    drive(client, base, &event, &warm).await;
    let plain = drive(client, base, &event, &options).await;
    report("POST /v1/events, no endpoint", plain.latencies, plain.elapsed, plain.failures);

    let (url, received) = receiver().await?;
    let hook = json!({ "url": url, "events": ["*"] });
    call(client, reqwest::Method::POST, format!("{base}/v1/webhooks"), key, hook).await?;
    let started = Instant::now();
    received.lags_on.store(true, Ordering::Relaxed);
    let fanned = drive(client, base, &event, &options).await;
    report("POST /v1/events, one endpoint (delivery queued)", fanned.latencies, fanned.elapsed, fanned.failures);
    let expected = requests - fanned.failures;
    let deadline = Instant::now() + Duration::from_secs(600);
    while received.count.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    received.lags_on.store(false, Ordering::Relaxed);
    let delivered = received.count.load(Ordering::Relaxed);
    let last = received.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).unwrap_or_else(Instant::now);
    let drained = last.duration_since(started);
    let lags = std::mem::take(&mut *received.lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    report("event recorded -> delivery received (while they come)", lags, drained, 0);
    println!(
        "deliveries: {delivered}/{expected} received, {:.0} per s from the first request to the last delivery; \
         the last arrived {:.0} ms after the last request answered",
        delivered as f64 / drained.as_secs_f64(),
        last.saturating_duration_since(started + fanned.elapsed).as_secs_f64() * 1e3
    );

    // A backlog on its own: the receiver holds its answers while as many events are recorded
    // (the server's deliveries in flight wait with it, the rest queue), then answers all.
    received.open.send_replace(false);
    let before = received.count.load(Ordering::Relaxed);
    let queued = drive(client, base, &event, &options).await;
    let expected = before + requests - queued.failures;
    let opened = Instant::now();
    received.open.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(600);
    while received.count.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = received.count.load(Ordering::Relaxed) - before;
    let last = received.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).unwrap_or_else(Instant::now);
    println!(
        "backlog: {drained}/{} deliveries queued while the receiver held its answers, drained at {:.0} per s \
         once it answered",
        expected - before,
        drained as f64 / last.saturating_duration_since(opened).as_secs_f64()
    );

    // Realtime: one event at a time, from sending the request to the frame or SSE event.
    let ws_url = format!("{}/v1/realtime?token={key}", base.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.context("opening the WebSocket")?;
    socket.next().await;
    socket.send(Message::Text(json!({ "type": "subscribe", "channel": "events:bench.*" }).to_string().into())).await?;
    socket.next().await;
    let mut stream = client.get(format!("{base}/v1/events/stream?types=bench.*")).bearer_auth(key).send().await?;
    let mut ws_latencies = Vec::new();
    let mut sse_latencies = Vec::new();
    let mut buffer = String::new();
    let body = json!({ "event_type": "bench.ping", "data": {} });
    let round_trips = Instant::now();
    for _ in 0..ROUND_TRIPS {
        let sent = Instant::now();
        let answer = call(client, reqwest::Method::POST, format!("{base}/v1/events"), key, body.clone()).await?;
        let id = answer["data"]["id"].as_str().context("event id")?.to_string();
        loop {
            let frame =
                tokio::time::timeout(Duration::from_secs(10), socket.next()).await?.context("socket closed")??;
            if let Message::Text(text) = frame {
                let frame: Value = serde_json::from_str(text.as_str())?;
                if frame["event"]["id"] == id.as_str() {
                    ws_latencies.push(sent.elapsed());
                    break;
                }
            }
        }
        while !buffer.contains(&format!("id: {id}")) && !buffer.contains(&format!("id:{id}")) {
            let chunk =
                tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await??.context("stream ended")?;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
        sse_latencies.push(sent.elapsed());
        buffer.clear();
    }
    let elapsed = round_trips.elapsed();
    report("event -> WebSocket frame (request sent to frame)", ws_latencies, elapsed, 0);
    report("event -> SSE event (request sent to event)", sse_latencies, elapsed, 0);
    Ok(())
}

pub(crate) fn options_like(options: &Options) -> Options {
    Options { database_url: None, binary: String::new(), ..options.clone() }
}
