//! Calls to providers: one attempt each (chat, embeddings, streams, images, model lists), the
//! answer recorded for usage, or why it failed so the caller may try another provider.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::anthropic::{self};
use super::streams::{metered_stream, translate_stream};
use super::upstream::{OpenAiError, Upstream, Wire};
use super::usage::{Call, CallBase, Estimate};
use crate::app::App;
use crate::http::ApiError;
use crate::id::TenantId;

/// Starts a call to `upstream`, its `estimate` reserved.
pub async fn call(
    app: &App,
    tenant: &TenantId,
    key_id: Option<String>,
    upstream: &Upstream,
    operation: &'static str,
    estimate: Estimate,
) -> Result<Call, ApiError> {
    let base = CallBase {
        tenant: tenant.clone(),
        key_id,
        provider: upstream.provider.clone(),
        model: upstream.model.clone(),
        operation,
        instance: upstream.instance.clone(),
    };
    Call::start(app, base, estimate).await
}

/// Starts a call for an attempt: a refusal (the budget or `ai_tokens` ran out meanwhile) ends
/// the attempts, whatever the provider.
async fn attempt(
    app: &App,
    tenant: &TenantId,
    key_id: Option<String>,
    upstream: &Upstream,
    operation: &'static str,
    estimate: Estimate,
) -> Result<Call, Failure> {
    call(app, tenant, key_id, upstream, operation, estimate).await.map_err(Failure::refusal)
}

/// Tokens an OpenAI-format answer says it used: (input, output).
pub fn openai_usage(usage: &Value) -> (u64, u64) {
    (usage["prompt_tokens"].as_u64().unwrap_or(0), usage["completion_tokens"].as_u64().unwrap_or(0))
}

/// A whole (not streamed) upstream answer, recorded and passed on as it came.
pub async fn buffered(mut call: Call, answer: reqwest::Response) -> Result<Response, OpenAiError> {
    let status = answer.status().as_u16();
    let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let bytes = match crate::outbound::read_capped(answer, crate::limits::UPSTREAM_BODY_MAX_BYTES).await {
        Ok(bytes) => bytes,
        Err(problem) => {
            call.record(502, 0, 0);
            return Err(OpenAiError::upstream(problem));
        }
    };
    let (input, output) = serde_json::from_slice::<Value>(&bytes).map(|v| openai_usage(&v["usage"])).unwrap_or((0, 0));
    call.record(status, input, output);
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(content_type) = content_type.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    Ok(response)
}

pub fn with_provider(mut response: Response, provider: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(provider) {
        response.headers_mut().insert("x-plinth-provider", value);
    }
    response
}

/// Why one attempt at a provider failed.
#[derive(Debug)]
pub struct Failure {
    /// The provider's status, or 502/504 when it could not be reached or did not answer.
    pub status: u16,
    pub message: String,
    /// Set when the call was refused before it went out (the budget or `ai_tokens` ran out):
    /// the error to answer with; no other provider is tried.
    pub refused: Option<Box<ApiError>>,
}

impl Failure {
    /// Whether the next provider should be tried (seed 000): 5xx, 401, 403, 429, timeouts and
    /// connection errors; any other 4xx is the caller's and surfaces at once.
    pub fn fails_over(&self) -> bool {
        self.refused.is_none() && (self.status >= 500 || matches!(self.status, 401 | 403 | 429))
    }

    pub fn new(status: u16, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into(), refused: None }
    }

    fn unreachable(error: &reqwest::Error) -> Failure {
        Failure::new(if error.is_timeout() { 504 } else { 502 }, crate::outbound::describe(error))
    }

    fn refused(status: u16, body: &Value) -> Failure {
        Failure::new(status, body["error"]["message"].as_str().unwrap_or("the provider refused the request"))
    }

    fn refusal(error: ApiError) -> Failure {
        Failure { status: error.code.status().as_u16(), message: error.message.clone(), refused: Some(Box::new(error)) }
    }
}

/// Sends `body` to `path` at `upstream`; a request that never got an answer is recorded.
pub async fn send(
    app: &App,
    call: &mut Call,
    upstream: &Upstream,
    path: &str,
    body: &Value,
) -> Result<reqwest::Response, Failure> {
    let request = match upstream.post(app, path) {
        Ok(request) => request,
        Err(error) => {
            call.record(502, 0, 0);
            return Err(Failure::new(502, error.message));
        }
    };
    match request.json(body).send().await {
        Ok(answer) => Ok(answer),
        Err(error) => {
            call.record(502, 0, 0);
            Err(Failure::unreachable(&error))
        }
    }
}

/// Sends `body` to `path` and reads the whole JSON answer: the body when 2xx (the caller
/// records its usage), the failure otherwise (recorded here).
pub async fn exchange(
    app: &App,
    call: &mut Call,
    upstream: &Upstream,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), Failure> {
    let answer = send(app, call, upstream, path, body).await?;
    let status = answer.status().as_u16();
    let value: Value = match crate::outbound::read_json_capped(answer, crate::limits::UPSTREAM_BODY_MAX_BYTES).await {
        Ok(value) => value,
        Err(problem) => {
            call.record(status, 0, 0);
            return Err(Failure::new(502, problem));
        }
    };
    if !(200..300).contains(&status) {
        call.record(status, 0, 0);
        return Err(Failure::refused(status, &value));
    }
    Ok((status, value))
}

/// One non-streamed chat completion at `upstream`, `body` in OpenAI's format: the answer in
/// OpenAI's format (translated from Anthropic's), recorded as usage either way.
pub async fn chat_once(
    app: &App,
    tenant: &TenantId,
    key_id: Option<String>,
    upstream: &Upstream,
    mut body: Value,
) -> Result<Value, Failure> {
    let estimate = Estimate::chat(&body);
    let (path, request) = match upstream.wire {
        Wire::OpenAi => {
            body["model"] = json!(upstream.model);
            ("/chat/completions", body)
        }
        Wire::Anthropic => {
            let request = anthropic::request(&body, &upstream.model).map_err(|message| Failure::new(400, message))?;
            ("/v1/messages", request)
        }
    };
    // Reserved once the request is known to be well formed: a refused one costs nothing.
    let mut call = attempt(app, tenant, key_id, upstream, "chat", estimate).await?;
    let (status, value) = exchange(app, &mut call, upstream, path, &request).await?;
    let completion = match upstream.wire {
        Wire::OpenAi => value,
        Wire::Anthropic => anthropic::response(&value, crate::time::now().timestamp()),
    };
    let (input, output) = openai_usage(&completion["usage"]);
    call.record(status, input, output);
    Ok(completion)
}

/// How long a provider's model list is kept.
const MODELS_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Model lists per (tenant, provider), kept five minutes.
#[derive(Debug, Default)]
pub struct ModelCache(std::sync::Mutex<std::collections::HashMap<(String, String), Listed>>);

/// A model list and when it was read.
type Listed = (std::time::Instant, Vec<Value>);

impl ModelCache {
    fn get(&self, tenant: &TenantId, provider: &str) -> Option<Vec<Value>> {
        let cache = self.0.lock().ok()?;
        let (at, models) = cache.get(&(tenant.to_string(), provider.to_string()))?;
        (at.elapsed() < MODELS_TTL).then(|| models.clone())
    }

    fn put(&self, tenant: &TenantId, provider: &str, models: Vec<Value>) {
        if let Ok(mut cache) = self.0.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert((tenant.to_string(), provider.to_string()), (std::time::Instant::now(), models));
        }
    }
}

/// The models `upstream`'s provider offers, live (kept five minutes), as OpenAI model objects:
/// the second value tells whether they came from the cache.
pub async fn models_of(app: &App, tenant: &TenantId, upstream: &Upstream) -> Result<(Vec<Value>, bool), Failure> {
    if let Some(models) = app.ai_models.get(tenant, &upstream.provider) {
        return Ok((models, true));
    }
    let path = if upstream.wire == Wire::Anthropic { "/v1/models" } else { "/models" };
    let url = format!("{}{path}", upstream.base_url.trim_end_matches('/'));
    let parsed = reqwest::Url::parse(&url).map_err(|_| Failure::new(502, "the base URL is not a URL"))?;
    if !upstream.trusted {
        crate::outbound::check_target(&parsed, app.config.outbound_allow_private)
            .map_err(|message| Failure::new(502, message))?;
    }
    let mut request = upstream.client(app).get(parsed).timeout(std::time::Duration::from_secs(15));
    request = match (upstream.wire, &upstream.api_key) {
        (Wire::Anthropic, Some(key)) => {
            request.header("x-api-key", key).header("anthropic-version", anthropic::API_VERSION)
        }
        (Wire::OpenAi, Some(key)) => request.bearer_auth(key),
        _ => request,
    };
    let answer = request.send().await.map_err(|e| Failure::new(502, crate::outbound::describe(&e)))?;
    let status = answer.status().as_u16();
    let body: Value = crate::outbound::read_json_capped(answer, crate::limits::UPSTREAM_BODY_MAX_BYTES)
        .await
        .map_err(|problem| Failure::new(502, problem))?;
    if !(200..300).contains(&status) {
        let message = body["error"]["message"].as_str().unwrap_or("the provider refused").to_string();
        return Err(Failure::new(status, message));
    }
    let models: Vec<Value> = body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(|id| (id, m)))
        .map(|(id, m)| {
            let id = if super::BUILT_IN.contains(&upstream.provider.as_str()) { id.to_string() } else { format!("{}/{id}", upstream.provider) };
            json!({ "id": id, "object": "model", "created": m["created"].as_i64().unwrap_or(0), "owned_by": upstream.provider })
        })
        .collect();
    app.ai_models.put(tenant, &upstream.provider, models.clone());
    Ok((models, false))
}

/// One embeddings call at an OpenAI-format `upstream`: the answer, recorded as usage.
pub async fn embed_once(
    app: &App,
    tenant: &TenantId,
    key_id: Option<String>,
    upstream: &Upstream,
    input: Value,
) -> Result<Value, Failure> {
    let estimate = Estimate { input: Estimate::of_text(input.to_string().len()), output: 0 };
    let mut call = attempt(app, tenant, key_id, upstream, "embeddings", estimate).await?;
    let body = json!({ "model": upstream.model, "input": input });
    let (status, value) = exchange(app, &mut call, upstream, "/embeddings", &body).await?;
    let (input_tokens, _) = openai_usage(&value["usage"]);
    call.record(status, input_tokens, 0);
    Ok(value)
}

/// Starts a streamed chat completion at `upstream` (`body` in OpenAI's format): the streaming
/// answer once the provider has accepted it, or why it did not (before any byte was sent, so
/// the caller may try another provider).
pub async fn stream_once(
    app: &App,
    tenant: &TenantId,
    key_id: Option<String>,
    upstream: &Upstream,
    mut body: Value,
) -> Result<Response, Failure> {
    let estimate = Estimate::chat(&body);
    body["stream"] = json!(true);
    let wants_usage = body["stream_options"]["include_usage"] == true;
    let (path, request) = match upstream.wire {
        Wire::OpenAi => {
            body["model"] = json!(upstream.model);
            body["stream_options"]["include_usage"] = json!(true);
            ("/chat/completions", body)
        }
        Wire::Anthropic => {
            let request = anthropic::request(&body, &upstream.model).map_err(|message| Failure::new(400, message))?;
            ("/v1/messages", request)
        }
    };
    let mut call = attempt(app, tenant, key_id, upstream, "stream", estimate).await?;
    let answer = send(app, &mut call, upstream, path, &request).await?;
    let status = answer.status().as_u16();
    if !(200..300).contains(&status) {
        call.record(status, 0, 0);
        let body = crate::outbound::read_json_capped(answer, crate::limits::UPSTREAM_BODY_MAX_BYTES).await;
        return Err(Failure::refused(status, &body.unwrap_or(Value::Null)));
    }
    let response = match upstream.wire {
        Wire::OpenAi => metered_stream(call, answer, wants_usage),
        Wire::Anthropic => translate_stream(call, answer, &upstream.model, wants_usage),
    };
    Ok(with_provider(response, &upstream.provider))
}

/// One image generation at `upstream`: the images as base64 (`{b64_json}` each), whatever form
/// the provider answers in. OpenAI's Images API, or OpenRouter's image models through chat
/// completions with `modalities`.
pub async fn image_once(
    app: &App,
    tenant: &TenantId,
    key_id: Option<String>,
    upstream: &Upstream,
    prompt: &str,
    size: Option<&str>,
    n: u64,
) -> Result<Vec<Value>, Failure> {
    let estimate = Estimate { input: Estimate::of_text(prompt.len()), output: 0 };
    let mut call = attempt(app, tenant, key_id, upstream, "image", estimate).await?;
    let through_chat = upstream.provider == "openrouter";
    let (path, body) = if through_chat {
        let body = json!({ "model": upstream.model, "messages": [{ "role": "user", "content": prompt }], "modalities": ["image", "text"] });
        ("/chat/completions", body)
    } else {
        let mut body = json!({ "model": upstream.model, "prompt": prompt, "n": n });
        if let Some(size) = size {
            body["size"] = json!(size);
        }
        if upstream.model.starts_with("dall-e") {
            body["response_format"] = json!("b64_json");
        }
        ("/images/generations", body)
    };
    let (status, value) = exchange(app, &mut call, upstream, path, &body).await?;
    let (input, output) = openai_usage(&value["usage"]);
    call.record(status, input, output);
    let images: Vec<Value> = if through_chat {
        value["choices"][0]["message"]["images"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|image| image["image_url"]["url"].as_str())
            .filter_map(|url| url.split_once(";base64,").map(|(_, data)| json!({ "b64_json": data })))
            .collect()
    } else {
        value["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["b64_json"].as_str())
            .map(|b| json!({ "b64_json": b }))
            .collect()
    };
    if images.is_empty() {
        return Err(Failure::new(502, "the provider answered no image as base64"));
    }
    Ok(images)
}
