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
use super::usage::Call;
use crate::app::App;
use crate::auth::Auth;
use crate::config::Secret;
use crate::http::ApiError;
use crate::scopes::required::{CHAT_WRITE, EMBEDDINGS_WRITE};
use crate::scopes::Required;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: Option<String>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        OpenAiError { status, message: message.into(), kind, code: code.map(str::to_string) }
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
        let kind = match status.as_u16() {
            401 => "invalid_request_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        };
        let code = match status.as_u16() {
            401 => "invalid_api_key".to_string(),
            _ => error.code.as_str().to_ascii_lowercase(),
        };
        OpenAiError { status, message: error.message, kind, code: Some(code) }
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
    /// A provider instance's configuration (its prices).
    pub instance: Option<Value>,
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
pub async fn resolve(app: &App, tenant: &str, model: &str, key: Option<&Secret>) -> Result<Upstream, OpenAiError> {
    if let Some((head, rest)) = model.split_once('/') {
        if !super::BUILT_IN.contains(&head) {
            if let Some(upstream) = upstream_for(app, tenant, head, rest, key).await? {
                return Ok(upstream);
            }
        }
    }
    let (provider, upstream_model) = route(model);
    upstream_for(app, tenant, provider, &upstream_model, key).await?.ok_or_else(|| {
        OpenAiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("missing_credentials"),
            format!(
                "`{model}` goes to {provider}, and this tenant has no {provider} credentials: store them with \
                 PUT /v1/credentials/{provider} {{\"api_key\": \"...\"}}"
            ),
        )
    })
}

/// The upstream of `provider` (a provider slug with credentials in the vault, or one of the
/// tenant's instances by name) for `model`; `None` when the tenant has no such credentials or
/// instance. `key`, a per-request credential, wins over the stored one for this call only (and
/// makes a built-in provider usable without a vault entry).
pub async fn upstream_for(
    app: &App,
    tenant: &str,
    provider: &str,
    model: &str,
    key: Option<&Secret>,
) -> Result<Option<Upstream>, OpenAiError> {
    let mut conn = app.db.pool().acquire().await.map_err(ApiError::from)?;
    if !super::BUILT_IN.contains(&provider) {
        let Some((kind, stored, config)) = super::providers::open(&mut conn, app, tenant, provider).await? else {
            return Ok(None);
        };
        let wire = if kind == "anthropic" { Wire::Anthropic } else { Wire::OpenAi };
        let (base_url, trusted) = match config["base_url"].as_str() {
            Some(url) => (url.to_string(), false),
            None => (default_base(app, &kind).to_string(), true),
        };
        return Ok(Some(Upstream {
            provider: provider.to_string(),
            wire,
            base_url,
            api_key: key.map(|k| k.expose().to_string()).or(stored),
            model: model.to_string(),
            headers: Vec::new(),
            trusted,
            instance: Some(config),
        }));
    }
    if !matches!(provider, "openai" | "anthropic" | "openrouter") {
        // The CLI providers ride a subscription on the server, which this one does not have.
        return Ok(None);
    }
    let fields = match (crate::vault::open(&mut conn, app, tenant, provider).await?, key) {
        (Some(fields), _) => fields,
        (None, Some(_)) => serde_json::Map::new(),
        (None, None) => return Ok(None),
    };
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
    Ok(Some(Upstream {
        provider: provider.to_string(),
        wire: if provider == "anthropic" { Wire::Anthropic } else { Wire::OpenAi },
        base_url: default_base(app, provider).to_string(),
        api_key: key.map(|k| k.expose().to_string()).or_else(|| field("api_key")),
        model: model.to_string(),
        headers,
        trusted: true,
        instance: None,
    }))
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

/// The caller's tenant and credential, with the scope checked and the budget and `ai_tokens`
/// allowing one more call.
async fn caller(
    app: &App,
    auth: Result<Auth, ApiError>,
    scope: Required,
) -> Result<(String, Option<String>), OpenAiError> {
    let auth = auth?;
    auth.require(scope)?;
    let tenant = auth.tenant()?.as_str().to_string();
    super::usage::check(app, &tenant).await?;
    Ok((tenant, auth.actor.key_id().map(str::to_string)))
}

fn call(tenant: String, key_id: Option<String>, upstream: &Upstream, operation: &'static str) -> Call {
    Call {
        tenant,
        key_id,
        provider: upstream.provider.clone(),
        model: upstream.model.clone(),
        operation,
        started: std::time::Instant::now(),
        instance: upstream.instance.clone(),
    }
}

/// Tokens an OpenAI-format answer says it used: (input, output).
fn openai_usage(usage: &Value) -> (u64, u64) {
    (usage["prompt_tokens"].as_u64().unwrap_or(0), usage["completion_tokens"].as_u64().unwrap_or(0))
}

/// A whole (not streamed) upstream answer, recorded and passed on as it came.
async fn buffered(app: &App, call: &Call, answer: reqwest::Response) -> Result<Response, OpenAiError> {
    let status = answer.status().as_u16();
    let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let bytes = answer.bytes().await.map_err(failed)?;
    let (input, output) = serde_json::from_slice::<Value>(&bytes).map(|v| openai_usage(&v["usage"])).unwrap_or((0, 0));
    call.record(app, status, input, output).await;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(content_type) = content_type.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    Ok(response)
}

fn json_body(bytes: &Bytes) -> Result<Value, OpenAiError> {
    let body: Value =
        serde_json::from_slice(bytes).map_err(|e| OpenAiError::invalid(format!("the body is not valid JSON: {e}")))?;
    if !body.is_object() {
        return Err(OpenAiError::invalid("the body must be a JSON object"));
    }
    Ok(body)
}

/// Takes the per-request provider credential (`api_key`) out of the body, so that it reaches
/// the provider only as its credential, never inside the request sent on.
fn take_key(body: &mut Value) -> Result<Option<Secret>, OpenAiError> {
    match body.as_object_mut().and_then(|fields| fields.remove("api_key")) {
        None => Ok(None),
        Some(Value::String(key)) => {
            crate::vault::check_override(&key).map_err(|e| OpenAiError::invalid(format!("`api_key` {e}")))?;
            Ok(Some(Secret::new(key)))
        }
        Some(_) => Err(OpenAiError::invalid("`api_key` must be a string")),
    }
}

fn model_of(body: &Value) -> Result<String, OpenAiError> {
    match body["model"].as_str() {
        Some(model) if !model.trim().is_empty() && model.len() <= 200 => Ok(model.to_string()),
        _ => Err(OpenAiError::invalid("`model` is required, such as `claude-sonnet-4-6` or `gpt-4o-mini`")),
    }
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(chat_completions)).routes(routes!(embeddings)).routes(routes!(list_models))
}

/// Create a chat completion (OpenAI-compatible)
///
/// OpenAI's request and answer, without the envelope; errors as `{error: {message, type, code}}`.
/// The model picks the provider (see the AI docs); the answer names it in `X-Plinth-Provider`.
/// `"stream": true` answers `text/event-stream` of `chat.completion.chunk` frames and `[DONE]`.
/// Also at `/v1/ai/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "AI", security(("bearer" = [])),
    request_body(content = Object, description = "OpenAI's chat completion request"),
    responses((status = 200, body = Object, description = "OpenAI's chat completion, or its stream"),
              (status = 400, body = Object, description = "`{error: {message, type, code}}`"),
              (status = 401, body = Object, description = "No credential, or no credentials for the provider")))]
async fn chat_completions(auth: Result<Auth, ApiError>, State(app): State<App>, body: Bytes) -> Response {
    complete(app, auth, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn complete(app: App, auth: Result<Auth, ApiError>, bytes: Bytes) -> Result<Response, OpenAiError> {
    let (tenant, key_id) = caller(&app, auth, CHAT_WRITE).await?;
    let mut body = json_body(&bytes)?;
    let key = take_key(&mut body)?;
    let model = model_of(&body)?;
    if body["messages"].as_array().is_none_or(|m| m.is_empty()) {
        return Err(OpenAiError::invalid("`messages` must be a non-empty array"));
    }
    let upstream = resolve(&app, &tenant, &model, key.as_ref()).await?;
    let call = call(tenant, key_id, &upstream, "chat");
    let stream = body["stream"] == true;
    let response = match upstream.wire {
        Wire::OpenAi => {
            body["model"] = json!(upstream.model);
            let wants_usage = body["stream_options"]["include_usage"] == true;
            if stream {
                // Usage is always asked of the provider, so that streams are counted too; the
                // usage frame reaches the client only when it asked for it.
                body["stream_options"]["include_usage"] = json!(true);
            }
            let sent = upstream.post(&app, "/chat/completions")?.json(&body).send().await;
            let answer = match sent {
                Ok(answer) => answer,
                Err(error) => {
                    call.record(&app, 502, 0, 0).await;
                    return Err(failed(error));
                }
            };
            if stream && answer.status().is_success() {
                metered_stream(app.clone(), call, answer, wants_usage)
            } else {
                buffered(&app, &call, answer).await?
            }
        }
        Wire::Anthropic => {
            let request = anthropic::request(&body, &upstream.model).map_err(OpenAiError::invalid)?;
            let sent = upstream.post(&app, "/v1/messages")?.json(&request).send().await;
            let answer = match sent {
                Ok(answer) => answer,
                Err(error) => {
                    call.record(&app, 502, 0, 0).await;
                    return Err(failed(error));
                }
            };
            if !answer.status().is_success() {
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let error: Value = answer.json().await.unwrap_or(Value::Null);
                call.record(&app, status.as_u16(), 0, 0).await;
                (status, [(header::CONTENT_TYPE, "application/json")], anthropic::error(&error).to_string())
                    .into_response()
            } else if stream {
                let include_usage = body["stream_options"]["include_usage"] == true;
                translate_stream(app.clone(), call, answer, &upstream.model, include_usage)
            } else {
                let answer: Value = answer.json().await.map_err(failed)?;
                let created = crate::time::now().timestamp();
                let translated = anthropic::response(&answer, created);
                let (input, output) = openai_usage(&translated["usage"]);
                call.record(&app, 200, input, output).await;
                axum::Json(translated).into_response()
            }
        }
    };
    Ok(with_provider(response, &upstream.provider))
}

/// Where a passed-through stream is: whole frames are forwarded as they complete.
struct Metering {
    bytes: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    pending: String,
    ready: VecDeque<Bytes>,
    usage: (u64, u64),
    wants_usage: bool,
    finished: bool,
    app: App,
    call: Call,
}

/// An OpenAI-format stream passed through frame by frame, its usage frame read for the record
/// (and dropped when the client did not ask for it).
fn metered_stream(app: App, call: Call, answer: reqwest::Response, wants_usage: bool) -> Response {
    let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let state = Metering {
        bytes: answer.bytes_stream().boxed(),
        pending: String::new(),
        ready: VecDeque::new(),
        usage: (0, 0),
        wants_usage,
        finished: false,
        app,
        call,
    };
    let body = stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.ready.pop_front() {
                return Some((Ok::<Bytes, std::convert::Infallible>(bytes), state));
            }
            if state.finished {
                return None;
            }
            match state.bytes.next().await {
                Some(Ok(chunk)) => {
                    state.pending.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = state.pending.find("\n\n") {
                        let frame: String = state.pending.drain(..end + 2).collect();
                        let data = frame.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim);
                        let parsed = data.and_then(|d| serde_json::from_str::<Value>(d).ok());
                        let usage_only = parsed.as_ref().is_some_and(|v| {
                            v["usage"].is_object() && v["choices"].as_array().is_some_and(|c| c.is_empty())
                        });
                        if let Some(usage) = parsed.as_ref().map(|v| &v["usage"]).filter(|u| u.is_object()) {
                            state.usage = openai_usage(usage);
                        }
                        if !usage_only || state.wants_usage {
                            state.ready.push_back(Bytes::from(frame));
                        }
                    }
                }
                ended => {
                    if !state.pending.trim().is_empty() {
                        state.ready.push_back(Bytes::from(std::mem::take(&mut state.pending)));
                    }
                    if let Some(Err(error)) = ended {
                        // Broken mid-stream: said as an error frame, never retried elsewhere.
                        let message = format!("the provider's stream broke: {}", crate::outbound::describe(&error));
                        let frame = json!({ "error": { "message": message, "type": "upstream_error", "code": "stream_interrupted" } });
                        state.ready.push_back(Bytes::from(format!("data: {frame}\n\ndata: [DONE]\n\n")));
                    }
                    state.finished = true;
                    let (app, call, (input, output)) = (state.app.clone(), state.call.clone(), state.usage);
                    app.tasks.clone().spawn("AI usage", async move { call.record(&app, 200, input, output).await });
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    let content_type = content_type
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or(HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}

/// Where a translated stream is.
struct Translating {
    events: BoxStream<'static, Result<eventsource_stream::Event, String>>,
    translator: StreamTranslator,
    ready: VecDeque<Bytes>,
    done: bool,
    recorded: bool,
    app: App,
    call: Call,
}

impl Translating {
    /// Records the stream's usage once, when it ends.
    fn record(&mut self) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let (app, call, (input, output)) = (self.app.clone(), self.call.clone(), self.translator.usage());
        app.tasks.clone().spawn("AI usage", async move { call.record(&app, 200, input, output).await });
    }
}

fn frame(chunk: &Value) -> Bytes {
    match chunk.as_str() {
        Some(done) => Bytes::from(format!("data: {done}\n\n")),
        None => Bytes::from(format!("data: {chunk}\n\n")),
    }
}

/// Anthropic's stream as OpenAI chunks, each sent as soon as its event arrives; an error in the
/// middle becomes an error frame and `[DONE]`.
fn translate_stream(app: App, call: Call, answer: reqwest::Response, model: &str, include_usage: bool) -> Response {
    let events = answer.bytes_stream().eventsource().map(|event| event.map_err(|e| e.to_string())).boxed();
    let state = Translating {
        events,
        translator: StreamTranslator::new(model, crate::time::now().timestamp(), include_usage),
        ready: VecDeque::new(),
        done: false,
        recorded: false,
        app,
        call,
    };
    let body = stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.ready.pop_front() {
                return Some((Ok::<Bytes, std::convert::Infallible>(bytes), state));
            }
            if state.done {
                state.record();
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
    let (tenant, key_id) = caller(&app, auth, EMBEDDINGS_WRITE).await?;
    let mut body = json_body(&bytes)?;
    let key = take_key(&mut body)?;
    let model = model_of(&body)?;
    if body["input"].is_null() {
        return Err(OpenAiError::invalid("`input` is required"));
    }
    let upstream = resolve(&app, &tenant, &model, key.as_ref()).await?;
    if upstream.wire == Wire::Anthropic {
        return Err(OpenAiError::invalid(format!(
            "{} has no embeddings: use an OpenAI or OpenRouter model",
            upstream.provider
        )));
    }
    body["model"] = json!(upstream.model);
    let call = call(tenant, key_id, &upstream, "embeddings");
    let answer = match upstream.post(&app, "/embeddings")?.json(&body).send().await {
        Ok(answer) => answer,
        Err(error) => {
            call.record(&app, 502, 0, 0).await;
            return Err(failed(error));
        }
    };
    Ok(with_provider(buffered(&app, &call, answer).await?, &upstream.provider))
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

/// Why one attempt at a provider failed.
#[derive(Debug)]
pub struct Failure {
    /// The provider's status, or 502/504 when it could not be reached or did not answer.
    pub status: u16,
    pub message: String,
}

impl Failure {
    /// Whether the next provider should be tried (seed 000): 5xx, 401, 403, 429, timeouts and
    /// connection errors; any other 4xx is the caller's and surfaces at once.
    pub fn fails_over(&self) -> bool {
        self.status >= 500 || matches!(self.status, 401 | 403 | 429)
    }

    fn unreachable(error: &reqwest::Error) -> Failure {
        Failure { status: if error.is_timeout() { 504 } else { 502 }, message: crate::outbound::describe(error) }
    }

    fn refused(status: u16, body: &Value) -> Failure {
        let message = body["error"]["message"].as_str().unwrap_or("the provider refused the request").to_string();
        Failure { status, message }
    }
}

/// Sends `body` to `path` at `upstream`; a request that never got an answer is recorded.
async fn send(
    app: &App,
    call: &Call,
    upstream: &Upstream,
    path: &str,
    body: &Value,
) -> Result<reqwest::Response, Failure> {
    let request = upstream.post(app, path).map_err(|error| Failure { status: 502, message: error.message })?;
    match request.json(body).send().await {
        Ok(answer) => Ok(answer),
        Err(error) => {
            call.record(app, 502, 0, 0).await;
            Err(Failure::unreachable(&error))
        }
    }
}

/// Sends `body` to `path` and reads the whole JSON answer: the body when 2xx (the caller
/// records its usage), the failure otherwise (recorded here).
async fn exchange(
    app: &App,
    call: &Call,
    upstream: &Upstream,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), Failure> {
    let answer = send(app, call, upstream, path, body).await?;
    let status = answer.status().as_u16();
    let value: Value = match answer.json().await {
        Ok(value) => value,
        Err(error) => {
            call.record(app, status, 0, 0).await;
            return Err(Failure::unreachable(&error));
        }
    };
    if !(200..300).contains(&status) {
        call.record(app, status, 0, 0).await;
        return Err(Failure::refused(status, &value));
    }
    Ok((status, value))
}

/// One non-streamed chat completion at `upstream`, `body` in OpenAI's format: the answer in
/// OpenAI's format (translated from Anthropic's), recorded as usage either way.
pub async fn chat_once(
    app: &App,
    tenant: &str,
    key_id: Option<String>,
    upstream: &Upstream,
    mut body: Value,
) -> Result<Value, Failure> {
    let call = call(tenant.to_string(), key_id, upstream, "chat");
    let (path, request) = match upstream.wire {
        Wire::OpenAi => {
            body["model"] = json!(upstream.model);
            ("/chat/completions", body)
        }
        Wire::Anthropic => {
            let request =
                anthropic::request(&body, &upstream.model).map_err(|message| Failure { status: 400, message })?;
            ("/v1/messages", request)
        }
    };
    let (status, value) = exchange(app, &call, upstream, path, &request).await?;
    let completion = match upstream.wire {
        Wire::OpenAi => value,
        Wire::Anthropic => anthropic::response(&value, crate::time::now().timestamp()),
    };
    let (input, output) = openai_usage(&completion["usage"]);
    call.record(app, status, input, output).await;
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
    fn get(&self, tenant: &str, provider: &str) -> Option<Vec<Value>> {
        let cache = self.0.lock().ok()?;
        let (at, models) = cache.get(&(tenant.to_string(), provider.to_string()))?;
        (at.elapsed() < MODELS_TTL).then(|| models.clone())
    }

    fn put(&self, tenant: &str, provider: &str, models: Vec<Value>) {
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
pub async fn models_of(app: &App, tenant: &str, upstream: &Upstream) -> Result<(Vec<Value>, bool), Failure> {
    if let Some(models) = app.ai_models.get(tenant, &upstream.provider) {
        return Ok((models, true));
    }
    let path = if upstream.wire == Wire::Anthropic { "/v1/models" } else { "/models" };
    let url = format!("{}{path}", upstream.base_url.trim_end_matches('/'));
    let parsed =
        reqwest::Url::parse(&url).map_err(|_| Failure { status: 502, message: "the base URL is not a URL".into() })?;
    if !upstream.trusted {
        crate::outbound::check_target(&parsed, app.config.outbound_allow_private)
            .map_err(|message| Failure { status: 502, message })?;
    }
    let mut request = upstream.client(app).get(parsed).timeout(std::time::Duration::from_secs(15));
    request = match (upstream.wire, &upstream.api_key) {
        (Wire::Anthropic, Some(key)) => {
            request.header("x-api-key", key).header("anthropic-version", anthropic::API_VERSION)
        }
        (Wire::OpenAi, Some(key)) => request.bearer_auth(key),
        _ => request,
    };
    let answer = request.send().await.map_err(|e| Failure { status: 502, message: crate::outbound::describe(&e) })?;
    let status = answer.status().as_u16();
    let body: Value =
        answer.json().await.map_err(|e| Failure { status: 502, message: crate::outbound::describe(&e) })?;
    if !(200..300).contains(&status) {
        let message = body["error"]["message"].as_str().unwrap_or("the provider refused").to_string();
        return Err(Failure { status, message });
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

/// List models (OpenAI-compatible)
///
/// The models of every provider the tenant has credentials for, live from each (kept five
/// minutes), in OpenAI's list format; a provider's own instances list theirs as `<name>/<model>`.
#[utoipa::path(get, path = "/v1/models", tag = "AI", security(("bearer" = [])),
    responses((status = 200, body = Object, description = "`{object: \"list\", data: [{id, object, created, owned_by}]}`")))]
pub async fn list_models(auth: Result<Auth, ApiError>, State(app): State<App>) -> Response {
    let listed = async {
        let auth = auth?;
        auth.require(crate::scopes::required::MODELS_READ)?;
        let tenant = auth.tenant()?.as_str().to_string();
        let mut conn = app.db.pool().acquire().await.map_err(ApiError::from)?;
        let mut providers = super::priority::get(&mut conn, &tenant).await?;
        drop(conn);
        for built_in in ["openai", "anthropic", "openrouter"] {
            if !providers.iter().any(|p| p == built_in) {
                providers.push(built_in.to_string());
            }
        }
        let mut data = Vec::new();
        for provider in providers {
            let Some(upstream) = upstream_for(&app, &tenant, &provider, "", None).await? else { continue };
            match models_of(&app, &tenant, &upstream).await {
                Ok((models, _)) => data.extend(models),
                Err(failure) => tracing::info!(provider, status = failure.status, "listing a provider's models failed"),
            }
        }
        Ok::<Value, OpenAiError>(json!({ "object": "list", "data": data }))
    };
    match listed.await {
        Ok(list) => axum::Json(list).into_response(),
        Err(error) => error.into_response(),
    }
}

/// One embeddings call at an OpenAI-format `upstream`: the answer, recorded as usage.
pub async fn embed_once(
    app: &App,
    tenant: &str,
    key_id: Option<String>,
    upstream: &Upstream,
    input: Value,
) -> Result<Value, Failure> {
    let call = call(tenant.to_string(), key_id, upstream, "embeddings");
    let body = json!({ "model": upstream.model, "input": input });
    let (status, value) = exchange(app, &call, upstream, "/embeddings", &body).await?;
    let (input_tokens, _) = openai_usage(&value["usage"]);
    call.record(app, status, input_tokens, 0).await;
    Ok(value)
}

/// Starts a streamed chat completion at `upstream` (`body` in OpenAI's format): the streaming
/// answer once the provider has accepted it, or why it did not (before any byte was sent, so
/// the caller may try another provider).
pub async fn stream_once(
    app: &App,
    tenant: &str,
    key_id: Option<String>,
    upstream: &Upstream,
    mut body: Value,
) -> Result<Response, Failure> {
    let call = call(tenant.to_string(), key_id, upstream, "stream");
    body["stream"] = json!(true);
    let wants_usage = body["stream_options"]["include_usage"] == true;
    let (path, request) = match upstream.wire {
        Wire::OpenAi => {
            body["model"] = json!(upstream.model);
            body["stream_options"]["include_usage"] = json!(true);
            ("/chat/completions", body)
        }
        Wire::Anthropic => {
            let request =
                anthropic::request(&body, &upstream.model).map_err(|message| Failure { status: 400, message })?;
            ("/v1/messages", request)
        }
    };
    let answer = send(app, &call, upstream, path, &request).await?;
    let status = answer.status().as_u16();
    if !(200..300).contains(&status) {
        call.record(app, status, 0, 0).await;
        return Err(Failure::refused(status, &answer.json().await.unwrap_or(Value::Null)));
    }
    let response = match upstream.wire {
        Wire::OpenAi => metered_stream(app.clone(), call, answer, wants_usage),
        Wire::Anthropic => translate_stream(app.clone(), call, answer, &upstream.model, wants_usage),
    };
    Ok(with_provider(response, &upstream.provider))
}

/// One image generation at `upstream`: the images as base64 (`{b64_json}` each), whatever form
/// the provider answers in. OpenAI's Images API, or OpenRouter's image models through chat
/// completions with `modalities`.
pub async fn image_once(
    app: &App,
    tenant: &str,
    key_id: Option<String>,
    upstream: &Upstream,
    prompt: &str,
    size: Option<&str>,
    n: u64,
) -> Result<Vec<Value>, Failure> {
    let call = call(tenant.to_string(), key_id, upstream, "image");
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
    let (status, value) = exchange(app, &call, upstream, path, &body).await?;
    let (input, output) = openai_usage(&value["usage"]);
    call.record(app, status, input, output).await;
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
        return Err(Failure { status: 502, message: "the provider answered no image as base64".into() });
    }
    Ok(images)
}
