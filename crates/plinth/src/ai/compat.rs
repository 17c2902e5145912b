//! The OpenAI-compatible endpoint (seed 000): `POST /v1/chat/completions` (also
//! `/v1/ai/completions`) and `POST /v1/embeddings` in OpenAI's wire format, without the
//! envelope, errors as `{error: {message, type, code}}`. The model picks the upstream:
//! `<instance>/<model>` a tenant's provider instance, `anthropic/...` or `claude-*` Anthropic
//! (translated both ways, streams event by event), `openai/...`, `gpt-*`, `o1`, `o3`, `o4` (and
//! `text-embedding-*`, `dall-e-*`) OpenAI, anything else OpenRouter; OpenAI-wire answers and streams are passed through as they
//! arrive.

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use eventsource_stream::Eventsource;
use futures_util::stream::{self, BoxStream, StreamExt};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::anthropic::{self, StreamTranslator};
use crate::app::App;
use crate::auth::Auth;
use crate::http::ApiError;
use crate::scopes::required::{CHAT_WRITE, EMBEDDINGS_WRITE};
use crate::scopes::Required;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: Option<&'static str>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        OpenAiError { status, message: message.into(), kind, code }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
    }

    fn upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", Some("upstream_unavailable"), message)
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        let status = error.code.status();
        let (kind, code) = match status.as_u16() {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            403 => ("permission_error", Some("insufficient_scope")),
            404 => ("invalid_request_error", Some("not_found")),
            429 => ("rate_limit_error", Some("rate_limit_exceeded")),
            400..=499 => ("invalid_request_error", None),
            _ => ("api_error", None),
        };
        OpenAiError { status, message: error.message, kind, code }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "message": self.message, "type": self.kind, "code": self.code } });
        (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

/// The wire format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

/// Where a call goes, with what.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Named in `X-Plinth-Provider`: `openai`, `anthropic`, `openrouter`, or an instance's name.
    pub provider: String,
    pub wire: Wire,
    pub base_url: String,
    pub api_key: Option<String>,
    /// The model as the upstream knows it.
    pub model: String,
    pub headers: Vec<(&'static str, String)>,
    /// The base URL is the server's own configuration, not a tenant's.
    pub trusted: bool,
}

/// The provider a model string names, and the model as that provider knows it: (provider, model).
pub fn route(model: &str) -> (&'static str, String) {
    if let Some(rest) = model.strip_prefix("anthropic/") {
        return ("anthropic", rest.to_string());
    }
    if let Some(rest) = model.strip_prefix("openai/") {
        return ("openai", rest.to_string());
    }
    if model.starts_with("claude-") {
        return ("anthropic", model.to_string());
    }
    // Seed 000's chat families, and OpenAI's own embedding and image model names.
    let openai = ["gpt-", "text-embedding-", "dall-e-"].iter().any(|prefix| model.starts_with(prefix))
        || ["o1", "o3", "o4"].iter().any(|family| model == *family || model.starts_with(&format!("{family}-")));
    if openai {
        return ("openai", model.to_string());
    }
    ("openrouter", model.to_string())
}

/// Resolves the upstream of `model` for `tenant`: one of its provider instances by name
/// (`<name>/<model>`), else the routing rules, with the credentials from the vault.
pub async fn resolve(app: &App, tenant: &str, model: &str) -> Result<Upstream, OpenAiError> {
    let mut conn = app.db.pool().acquire().await.map_err(ApiError::from)?;
    if let Some((head, rest)) = model.split_once('/') {
        if let Some((kind, key, config)) = super::providers::open(&mut conn, app, tenant, head).await? {
            let wire = if kind == "anthropic" { Wire::Anthropic } else { Wire::OpenAi };
            let (base_url, trusted) = match config["base_url"].as_str() {
                Some(url) => (url.to_string(), false),
                None => (default_base(app, &kind).to_string(), true),
            };
            return Ok(Upstream {
                provider: head.to_string(),
                wire,
                base_url,
                api_key: key,
                model: rest.to_string(),
                headers: Vec::new(),
                trusted,
            });
        }
    }
    let (provider, upstream_model) = route(model);
    let fields = crate::vault::open(&mut conn, app, tenant, provider).await?.ok_or_else(|| {
        OpenAiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("missing_credentials"),
            format!(
                "`{model}` goes to {provider}, and this tenant has no {provider} credentials: store them with \
                 PUT /v1/credentials/{provider} {{\"api_key\": \"...\"}}"
            ),
        )
    })?;
    let field = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_string);
    let mut headers = Vec::new();
    match provider {
        "openai" => headers.extend(field("organization").map(|o| ("openai-organization", o))),
        "openrouter" => {
            headers.extend(field("referer").map(|r| ("http-referer", r)));
            headers.extend(field("app_title").map(|t| ("x-title", t)));
        }
        _ => {}
    }
    Ok(Upstream {
        provider: provider.to_string(),
        wire: if provider == "anthropic" { Wire::Anthropic } else { Wire::OpenAi },
        base_url: default_base(app, provider).to_string(),
        api_key: field("api_key"),
        model: upstream_model,
        headers,
        trusted: true,
    })
}

fn default_base<'a>(app: &'a App, provider: &str) -> &'a str {
    match provider {
        "anthropic" => &app.config.ai.anthropic_base_url,
        "openrouter" => &app.config.ai.openrouter_base_url,
        _ => &app.config.ai.openai_base_url,
    }
}

impl Upstream {
    fn client<'a>(&self, app: &'a App) -> &'a reqwest::Client {
        if self.trusted {
            &app.ai_trusted
        } else {
            &app.ai_guarded
        }
    }

    /// A POST to `path` under the base URL, authenticated the way the upstream wants.
    fn post(&self, app: &App, path: &str) -> Result<reqwest::RequestBuilder, OpenAiError> {
        let url = format!("{}{path}", self.base_url.trim_end_matches('/'));
        let parsed =
            reqwest::Url::parse(&url).map_err(|_| OpenAiError::upstream("the provider's base URL is not a URL"))?;
        if !self.trusted {
            crate::outbound::check_target(&parsed, app.config.outbound_allow_private).map_err(OpenAiError::upstream)?;
        }
        let mut request = self.client(app).post(parsed);
        request = match (self.wire, &self.api_key) {
            (Wire::Anthropic, Some(key)) => {
                request.header("x-api-key", key).header("anthropic-version", anthropic::API_VERSION)
            }
            (Wire::Anthropic, None) => request.header("anthropic-version", anthropic::API_VERSION),
            (Wire::OpenAi, Some(key)) => request.bearer_auth(key),
            (Wire::OpenAi, None) => request,
        };
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        Ok(request)
    }
}

fn failed(error: reqwest::Error) -> OpenAiError {
    if error.is_timeout() {
        OpenAiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_error",
            Some("upstream_timeout"),
            "the provider did not answer in time",
        )
    } else {
        OpenAiError::upstream(format!("the provider could not be reached: {}", crate::outbound::describe(&error)))
    }
}

fn with_provider(mut response: Response, provider: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(provider) {
        response.headers_mut().insert("x-plinth-provider", value);
    }
    response
}

/// An upstream answer passed through as it arrives: status, content type and body.
fn pass_through(upstream: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = upstream.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
    *response.status_mut() = status;
    if let Some(content_type) = content_type.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response
}

async fn caller(auth: Result<Auth, ApiError>, scope: Required) -> Result<String, OpenAiError> {
    let auth = auth?;
    auth.require(scope)?;
    Ok(auth.tenant()?.as_str().to_string())
}

fn json_body(bytes: &Bytes) -> Result<Value, OpenAiError> {
    let body: Value =
        serde_json::from_slice(bytes).map_err(|e| OpenAiError::invalid(format!("the body is not valid JSON: {e}")))?;
    if !body.is_object() {
        return Err(OpenAiError::invalid("the body must be a JSON object"));
    }
    Ok(body)
}

fn model_of(body: &Value) -> Result<String, OpenAiError> {
    match body["model"].as_str() {
        Some(model) if !model.trim().is_empty() && model.len() <= 200 => Ok(model.to_string()),
        _ => Err(OpenAiError::invalid("`model` is required, such as `claude-sonnet-4-6` or `gpt-4o-mini`")),
    }
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(chat_completions)).routes(routes!(ai_completions)).routes(routes!(embeddings))
}

/// Create a chat completion (OpenAI-compatible)
///
/// OpenAI's request and answer, without the envelope; errors as `{error: {message, type, code}}`.
/// The model picks the provider (see the AI docs); the answer names it in `X-Plinth-Provider`.
/// `"stream": true` answers `text/event-stream` of `chat.completion.chunk` frames and `[DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "AI", security(("bearer" = [])),
    request_body(content = Object, description = "OpenAI's chat completion request"),
    responses((status = 200, body = Object, description = "OpenAI's chat completion, or its stream"),
              (status = 400, body = Object, description = "`{error: {message, type, code}}`"),
              (status = 401, body = Object, description = "No credential, or no credentials for the provider")))]
async fn chat_completions(auth: Result<Auth, ApiError>, State(app): State<App>, body: Bytes) -> Response {
    complete(app, auth, body).await.unwrap_or_else(IntoResponse::into_response)
}

/// Create a chat completion (alias)
///
/// The same as `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/ai/completions", tag = "AI", security(("bearer" = [])),
    request_body(content = Object, description = "OpenAI's chat completion request"),
    responses((status = 200, body = Object, description = "OpenAI's chat completion, or its stream")))]
async fn ai_completions(auth: Result<Auth, ApiError>, State(app): State<App>, body: Bytes) -> Response {
    complete(app, auth, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn complete(app: App, auth: Result<Auth, ApiError>, bytes: Bytes) -> Result<Response, OpenAiError> {
    let tenant = caller(auth, CHAT_WRITE).await?;
    let mut body = json_body(&bytes)?;
    let model = model_of(&body)?;
    if body["messages"].as_array().is_none_or(|m| m.is_empty()) {
        return Err(OpenAiError::invalid("`messages` must be a non-empty array"));
    }
    let upstream = resolve(&app, &tenant, &model).await?;
    let stream = body["stream"] == true;
    let response = match upstream.wire {
        Wire::OpenAi => {
            body["model"] = json!(upstream.model);
            let answer = upstream.post(&app, "/chat/completions")?.json(&body).send().await.map_err(failed)?;
            pass_through(answer)
        }
        Wire::Anthropic => {
            let request = anthropic::request(&body, &upstream.model).map_err(OpenAiError::invalid)?;
            let answer = upstream.post(&app, "/v1/messages")?.json(&request).send().await.map_err(failed)?;
            if !answer.status().is_success() {
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let error: Value = answer.json().await.unwrap_or(Value::Null);
                (status, [(header::CONTENT_TYPE, "application/json")], anthropic::error(&error).to_string())
                    .into_response()
            } else if stream {
                let include_usage = body["stream_options"]["include_usage"] == true;
                translate_stream(answer, &upstream.model, include_usage)
            } else {
                let answer: Value = answer.json().await.map_err(failed)?;
                let created = crate::time::now().timestamp();
                axum::Json(anthropic::response(&answer, created)).into_response()
            }
        }
    };
    Ok(with_provider(response, &upstream.provider))
}

/// Where a translated stream is.
struct Translating {
    events: BoxStream<'static, Result<eventsource_stream::Event, String>>,
    translator: StreamTranslator,
    ready: VecDeque<Bytes>,
    done: bool,
}

fn frame(chunk: &Value) -> Bytes {
    match chunk.as_str() {
        Some(done) => Bytes::from(format!("data: {done}\n\n")),
        None => Bytes::from(format!("data: {chunk}\n\n")),
    }
}

/// Anthropic's stream as OpenAI chunks, each sent as soon as its event arrives; an error in the
/// middle becomes an error frame and `[DONE]`.
fn translate_stream(answer: reqwest::Response, model: &str, include_usage: bool) -> Response {
    let events = answer.bytes_stream().eventsource().map(|event| event.map_err(|e| e.to_string())).boxed();
    let state = Translating {
        events,
        translator: StreamTranslator::new(model, crate::time::now().timestamp(), include_usage),
        ready: VecDeque::new(),
        done: false,
    };
    let body = stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.ready.pop_front() {
                return Some((Ok::<Bytes, std::convert::Infallible>(bytes), state));
            }
            if state.done {
                return None;
            }
            match state.events.next().await {
                Some(Ok(event)) => {
                    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    let kind = if event.event.is_empty() {
                        data["type"].as_str().unwrap_or_default().to_string()
                    } else {
                        event.event
                    };
                    for chunk in state.translator.event(&kind, &data) {
                        state.done |= chunk == "[DONE]";
                        state.ready.push_back(frame(&chunk));
                    }
                }
                Some(Err(error)) => {
                    let error = json!({ "error": { "message": format!("the provider's stream broke: {error}"), "type": "upstream_error", "code": "stream_interrupted" } });
                    state.ready.push_back(frame(&error));
                    state.ready.push_back(frame(&json!("[DONE]")));
                    state.done = true;
                }
                None => {
                    // Ended without `message_stop`: close the stream the OpenAI way.
                    state.ready.push_back(frame(&json!("[DONE]")));
                    state.done = true;
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Create embeddings (OpenAI-compatible)
///
/// OpenAI's embeddings request and answer, routed by `model` like chat completions (Anthropic
/// has no embeddings).
#[utoipa::path(post, path = "/v1/embeddings", tag = "AI", security(("bearer" = [])),
    request_body(content = Object, description = "OpenAI's embeddings request"),
    responses((status = 200, body = Object, description = "OpenAI's embeddings answer")))]
async fn embeddings(auth: Result<Auth, ApiError>, State(app): State<App>, body: Bytes) -> Response {
    embed(app, auth, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn embed(app: App, auth: Result<Auth, ApiError>, bytes: Bytes) -> Result<Response, OpenAiError> {
    let tenant = caller(auth, EMBEDDINGS_WRITE).await?;
    let mut body = json_body(&bytes)?;
    let model = model_of(&body)?;
    if body["input"].is_null() {
        return Err(OpenAiError::invalid("`input` is required"));
    }
    let upstream = resolve(&app, &tenant, &model).await?;
    if upstream.wire == Wire::Anthropic {
        return Err(OpenAiError::invalid(format!(
            "{} has no embeddings: use an OpenAI or OpenRouter model",
            upstream.provider
        )));
    }
    body["model"] = json!(upstream.model);
    let answer = upstream.post(&app, "/embeddings")?.json(&body).send().await.map_err(failed)?;
    Ok(with_provider(pass_through(answer), &upstream.provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_route_by_their_names() {
        for (model, provider, upstream) in [
            ("anthropic/claude-3-5-haiku", "anthropic", "claude-3-5-haiku"),
            ("claude-sonnet-4-6", "anthropic", "claude-sonnet-4-6"),
            ("openai/gpt-4o", "openai", "gpt-4o"),
            ("gpt-4o-mini", "openai", "gpt-4o-mini"),
            ("o1", "openai", "o1"),
            ("o3-mini", "openai", "o3-mini"),
            ("o4-mini", "openai", "o4-mini"),
            ("google/gemini-2.5-flash", "openrouter", "google/gemini-2.5-flash"),
            ("mistral-large", "openrouter", "mistral-large"),
            ("o10-preview", "openrouter", "o10-preview"),
            ("text-embedding-3-small", "openai", "text-embedding-3-small"),
        ] {
            assert_eq!(route(model), (provider, upstream.to_string()), "{model}");
        }
    }
}
