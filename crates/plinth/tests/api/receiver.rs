//! A webhook receiver on a loopback port: it keeps what it is sent and answers as scripted, and
//! checks signatures the way a receiver following Standard Webhooks does, independently of the
//! server's code.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Inner {
    arrived: Mutex<Vec<Received>>,
    got: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<u16>>,
    fallback: Mutex<u16>,
    delay: Mutex<Duration>,
}

pub struct Receiver {
    pub base: String,
    inner: Arc<Inner>,
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let headers = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = String::from_utf8_lossy(&body).to_string();
    let mut received = Received { path: uri.path().to_string(), headers, body, status: 0 };
    inner.arrived.lock().unwrap().push(received.clone());
    let delay = *inner.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = inner.script.lock().unwrap().pop_front().unwrap_or(*inner.fallback.lock().unwrap());
    received.status = status;
    inner.got.lock().unwrap().push(received);
    (StatusCode::from_u16(status).unwrap(), format!("{{\"received\":true,\"status\":{status}}}"))
}

impl Receiver {
    /// Starts a receiver that answers 200 until told otherwise.
    pub async fn start() -> Receiver {
        let inner = Arc::new(Inner::default());
        *inner.fallback.lock().unwrap() = 200;
        let router = axum::Router::new().fallback(receive).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Receiver { base: format!("http://{addr}"), inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The next answers, in order; then the fallback.
    pub fn answer(&self, statuses: &[u16]) {
        self.inner.script.lock().unwrap().extend(statuses);
    }

    /// The answer when the script is spent.
    pub fn always(&self, status: u16) {
        *self.inner.fallback.lock().unwrap() = status;
    }

    /// Holds every request this long before answering.
    pub fn delay(&self, delay: Duration) {
        *self.inner.delay.lock().unwrap() = delay;
    }

    /// Requests as they arrived, before any delay (answered or not).
    pub fn arrived(&self) -> Vec<Received> {
        self.inner.arrived.lock().unwrap().clone()
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        self.inner.arrived.lock().unwrap().clear();
        self.inner.got.lock().unwrap().clear();
    }

    /// Requests answered.
    pub fn got(&self) -> Vec<Received> {
        self.inner.got.lock().unwrap().clone()
    }

    /// Waits (30 s at most) until `n` requests arrived, and returns them.
    #[track_caller]
    pub fn wait_for(&self, n: usize) -> impl std::future::Future<Output = Vec<Received>> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            for _ in 0..600 {
                let got = self.got();
                if got.len() >= n {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{caller}: the receiver got {} requests, not {n}", self.got().len());
        }
    }
}

/// The Standard Webhooks check: one of the `v1,` signatures is the base64 HMAC-SHA256 of
/// `id.timestamp.body` under the base64-decoded secret, and the timestamp is recent.
pub fn verifies(secret: &str, got: &Received) -> bool {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let timestamp: i64 = got.header("webhook-timestamp").parse().unwrap_or(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - timestamp).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", got.header("webhook-id"), timestamp, got.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    got.header("webhook-signature").split(' ').any(|signature| signature == expected)
}

/// The GitHub-style check: `X-Plinth-Signature` is `sha256=` and the hex HMAC-SHA256 of the body
/// under the whole secret string.
pub fn verifies_sha256(secret: &str, got: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(got.body.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    got.header("x-plinth-signature") == format!("sha256={hex}")
}
