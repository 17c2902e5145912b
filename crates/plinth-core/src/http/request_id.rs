//! Request ids: kept from a client's valid `X-Request-Id`, otherwise made; echoed in the header
//! and in every envelope, and carried in a task-local so that any response can name it.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::id;
use crate::limits::REQUEST_ID_MAX_CHARS;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, or an empty string outside of one.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

fn client_supplied(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    (printable && !bytes.is_empty() && bytes.len() <= REQUEST_ID_MAX_CHARS)
        .then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// Outermost middleware: assigns the id, logs the request and sets `X-Request-Id`.
pub async fn assign(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(client_supplied)
        .unwrap_or_else(|| id::new_id(id::prefix::REQUEST));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();

    let mut response = REQUEST_ID.scope(request_id.clone(), next.run(request)).await;

    let status = response.status().as_u16();
    tracing::info!(
        request_id = %request_id,
        method = %method,
        path = %path,
        status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
