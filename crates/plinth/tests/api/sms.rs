//! A fake Twilio (its Messages API: form-encoded, Basic auth, 201 with the message) and a fake
//! Turnstile-style verifier (`siteverify`: form with `secret` and `response`), on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::Engine;
use serde_json::json;

pub const ACCOUNT: &str = "AC0123456789abcdef";
pub const AUTH_TOKEN: &str = "twilio-auth-token-0123";

/// A text message the fake received.
#[derive(Debug, Clone)]
pub struct Text {
    pub to: String,
    pub from: String,
    pub body: String,
}

impl Text {
    /// The 6-digit code in the message.
    pub fn code(&self) -> String {
        self.body.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).expect("a code").to_string()
    }
}

#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Text>>>);

pub struct FakeSms {
    pub base_url: String,
    inbox: Inbox,
}

impl FakeSms {
    pub async fn start() -> FakeSms {
        let inbox = Inbox::default();
        let app = axum::Router::new()
            .route("/2010-04-01/Accounts/{account}/Messages.json", axum::routing::post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeSms { base_url, inbox }
    }

    pub fn to(&self, number: &str) -> Vec<Text> {
        self.inbox.0.lock().unwrap().iter().filter(|t| t.to == number).cloned().collect()
    }

    /// Waits (bounded) for the `count`th message to `number`.
    pub async fn wait_for(&self, number: &str, count: usize) -> Text {
        for _ in 0..200 {
            let texts = self.to(number);
            if texts.len() >= count {
                return texts[count - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no text #{count} to {number}");
    }
}

async fn receive(
    State(inbox): State<Inbox>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{AUTH_TOKEN}")));
    if account != ACCOUNT || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "code": 20003, "message": "Authenticate" })))
            .into_response();
    }
    let text = Text {
        to: form.get("To").cloned().unwrap_or_default(),
        from: form.get("From").cloned().unwrap_or_default(),
        body: form.get("Body").cloned().unwrap_or_default(),
    };
    inbox.0.lock().unwrap().push(text.clone());
    (StatusCode::CREATED, axum::Json(json!({ "sid": "SM0001", "status": "queued", "to": text.to, "body": text.body })))
        .into_response()
}

/// A verifier that accepts `good-token` under `secret`.
pub async fn start_verifier(secret: &'static str) -> String {
    let app = axum::Router::new().route(
        "/siteverify",
        axum::routing::post(move |Form(form): Form<std::collections::HashMap<String, String>>| async move {
            let ok = form.get("secret").map(String::as_str) == Some(secret)
                && form.get("response").map(String::as_str) == Some("good-token");
            axum::Json(
                json!({ "success": ok, "error-codes": if ok { json!([]) } else { json!(["invalid-input-response"]) } }),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/siteverify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}
