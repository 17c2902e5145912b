//! Fake AI providers on loopback ports, speaking OpenAI's and Anthropic's real wire formats
//! (answers, errors and SSE streams with tool-call deltas), keeping what they were sent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A request a fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct Inner {
    seen: Mutex<Vec<Seen>>,
    /// Statuses to answer next with an error, in order.
    failures: Mutex<VecDeque<u16>>,
}

pub struct Fake {
    /// The base URL as the official SDKs write it (`.../v1` for OpenAI's wire, the host for Anthropic's).
    pub base_url: String,
    inner: Arc<Inner>,
}

impl Fake {
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the fake was called")
    }

    /// The next answers fail with these statuses.
    pub fn fail_with(&self, statuses: &[u16]) {
        self.inner.failures.lock().unwrap().extend(statuses);
    }

    async fn start(router: axum::Router<Arc<Inner>>, suffix: &str) -> Fake {
        let inner = Arc::new(Inner::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router.with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { base_url: format!("http://{addr}{suffix}"), inner }
    }

    /// A server with OpenAI's wire format (also OpenRouter's, vLLM's, Ollama's).
    pub async fn openai() -> Fake {
        Fake::start(axum::Router::new().fallback(openai), "/v1").await
    }

    /// A server with Anthropic's Messages API.
    pub async fn anthropic() -> Fake {
        Fake::start(axum::Router::new().fallback(anthropic), "").await
    }
}

fn record(inner: &Inner, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Value {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let headers = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value.to_str().unwrap_or_default().to_string()))
        .collect();
    inner.seen.lock().unwrap().push(Seen { path: uri.path().to_string(), headers, body: body.clone() });
    body
}

fn sse(events: Vec<String>) -> Response {
    ([("content-type", "text/event-stream")], events.concat()).into_response()
}

/// A stream that sends `events`, then nothing more and never ends (a long answer the client
/// walks away from).
fn hanging(events: Vec<String>) -> Response {
    let head = futures::stream::iter(events.into_iter().map(|e| Ok::<_, std::convert::Infallible>(Bytes::from(e))));
    let body = axum::body::Body::from_stream(futures::StreamExt::chain(head, futures::stream::pending()));
    ([("content-type", "text/event-stream")], body).into_response()
}

/// The text of the last user message.
fn last_user(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

async fn openai(State(inner): State<Arc<Inner>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body = record(&inner, &uri, &headers, &body);
    if let Some(status) = inner.failures.lock().unwrap().pop_front() {
        let error =
            json!({ "error": { "message": format!("fake failure {status}"), "type": "server_error", "code": null } });
        return (StatusCode::from_u16(status).unwrap(), axum::Json(error)).into_response();
    }
    let model = body["model"].as_str().unwrap_or_default().to_string();
    match uri.path() {
        "/v1/embeddings" => axum::Json(json!({
            "object": "list",
            "data": [{ "object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.75] }],
            "model": model,
            "usage": { "prompt_tokens": 3, "total_tokens": 3 },
        }))
        .into_response(),
        "/v1/images/generations" => axum::Json(json!({ "created": 1, "data": [{ "b64_json": "aW1hZ2U=" }] })).into_response(),
        "/v1/chat/completions" if body["modalities"].as_array().is_some_and(|m| m.contains(&json!("image"))) => axum::Json(json!({
            "id": "chatcmpl-img", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": "",
                "images": [{ "type": "image_url", "image_url": { "url": "data:image/png;base64,cGl4ZWxz" } }] } }],
        }))
        .into_response(),
        "/v1/models" => axum::Json(json!({ "object": "list", "data": [{ "id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "fake" }] })).into_response(),
        "/v1/chat/completions" if body["stream"] == true => {
            let chunk = |delta: Value, finish: Value| {
                format!(
                    "data: {}\n\n",
                    json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
                            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
                )
            };
            if last_user(&body) == "hang" {
                let text = "a long answer that goes on and on";
                return hanging(vec![chunk(json!({ "role": "assistant", "content": "" }), Value::Null), chunk(json!({ "content": text }), Value::Null)]);
            }
            let mut frames = vec![
                chunk(json!({ "role": "assistant", "content": "" }), Value::Null),
                chunk(json!({ "content": "Hel" }), Value::Null),
                chunk(json!({ "content": "lo" }), Value::Null),
                chunk(json!({}), json!("stop")),
            ];
            if body["stream_options"]["include_usage"] == true {
                let usage = json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
                                    "choices": [], "usage": { "prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13 } });
                frames.push(format!("data: {usage}\n\n"));
            }
            frames.push("data: [DONE]\n\n".to_string());
            sse(frames)
        }
        "/v1/chat/completions" => axum::Json(json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": format!("echo: {}", last_user(&body)) }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13 },
        }))
        .into_response(),
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({ "error": { "message": "no such route", "type": "invalid_request_error" } }))).into_response(),
    }
}

fn event(kind: &str, data: Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

async fn anthropic(State(inner): State<Arc<Inner>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body = record(&inner, &uri, &headers, &body);
    let failure = inner.failures.lock().unwrap().pop_front();
    if let Some(status) = failure {
        let kind = if status == 429 { "rate_limit_error" } else { "api_error" };
        let error = json!({ "type": "error", "error": { "type": kind, "message": format!("fake failure {status}") } });
        return (StatusCode::from_u16(status).unwrap(), axum::Json(error)).into_response();
    }
    if uri.path() == "/v1/models" && headers.get("x-api-key").is_some() {
        let models = json!({ "data": [{ "id": "claude-sonnet-4-6", "type": "model", "display_name": "Claude Sonnet 4.6",
                                        "created_at": "2026-01-01T00:00:00Z" }], "has_more": false });
        return axum::Json(models).into_response();
    }
    if uri.path() != "/v1/messages" || headers.get("anthropic-version").is_none() || headers.get("x-api-key").is_none()
    {
        let error =
            json!({ "type": "error", "error": { "type": "invalid_request_error", "message": "bad route or headers" } });
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    }
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    if body["stream"] == true && last_user(&body).contains("hang") {
        return hanging(vec![
            event(
                "message_start",
                json!({ "type": "message_start", "message": { "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [], "usage": { "input_tokens": 11, "output_tokens": 1 } } }),
            ),
            event(
                "content_block_start",
                json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
            ),
            event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "a long answer that goes on and on" } }),
            ),
        ]);
    }
    if body["stream"] == true {
        let mut events = vec![
            event(
                "message_start",
                json!({ "type": "message_start", "message": { "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [], "usage": { "input_tokens": 11, "output_tokens": 1 } } }),
            ),
            event(
                "content_block_start",
                json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
            ),
            event("ping", json!({ "type": "ping" })),
            event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "Hel" } }),
            ),
            event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "lo" } }),
            ),
            event("content_block_stop", json!({ "type": "content_block_stop", "index": 0 })),
        ];
        if tools {
            events.extend([
                event("content_block_start", json!({ "type": "content_block_start", "index": 1, "content_block": { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": {} } })),
                event("content_block_delta", json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "input_json_delta", "partial_json": "{\"city\": " } })),
                event("content_block_delta", json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "input_json_delta", "partial_json": "\"Paris\"}" } })),
                event("content_block_stop", json!({ "type": "content_block_stop", "index": 1 })),
            ]);
        }
        let reason = if tools { "tool_use" } else { "end_turn" };
        events.extend([
            event("message_delta", json!({ "type": "message_delta", "delta": { "stop_reason": reason, "stop_sequence": null }, "usage": { "output_tokens": 7 } })),
            event("message_stop", json!({ "type": "message_stop" })),
        ]);
        return sse(events);
    }
    let mut content = vec![json!({ "type": "text", "text": format!("Hello from Claude: {}", last_user(&body)) })];
    if tools {
        content.push(json!({ "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } }));
        content.push(json!({ "type": "tool_use", "id": "toolu_2", "name": "weather", "input": { "city": "Oslo" } }));
    }
    axum::Json(json!({
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": if tools { "tool_use" } else { "end_turn" },
        "stop_sequence": null,
        "usage": { "input_tokens": 11, "output_tokens": 7 },
    }))
    .into_response()
}
