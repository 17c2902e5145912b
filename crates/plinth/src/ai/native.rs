//! The native AI routes (seed 000), in the envelope: `POST /v1/ai/chat`. Without `provider` the
//! tenant's priority list is walked: providers without credentials (or without chat) are
//! skipped, and the next survivor is tried when one fails with 5xx, 401, 403, 429, a timeout or
//! a connection error; any other 4xx surfaces at once. With `provider`, exactly that one.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::calls::{chat_once, Failure};
use super::upstream::{upstream_for, OpenAiError};
use crate::app::App;
use crate::auth::Auth;
use crate::config::Secret;
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Data, ErrorCode, Json};
use crate::id::TenantId;
use crate::scopes::required::CHAT_WRITE;

/// Most history messages.
const HISTORY_MAX: usize = 20;
/// Most bytes of history.
const HISTORY_MAX_BYTES: usize = 50 * 1024;
/// Most bytes of the prompt, and of the system text.
const TEXT_MAX_BYTES: usize = 32 * 1024;

/// A chat request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The user's message (`message` is accepted too): not blank, at most 32 KB.
    #[schema(value_type = Option<crate::http::shapes::Prose>)]
    pub prompt: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::Prose>)]
    pub message: Option<String>,
    /// Earlier turns, oldest first: at most 20 messages and 50 KB.
    #[schema(max_items = 20)]
    pub history: Option<Vec<Turn>>,
    pub system: Option<String>,
    /// Exactly this provider (`anthropic`, `openai`, `openrouter`, or an instance's name), no
    /// failover; otherwise the priority list.
    pub provider: Option<String>,
    /// The provider's default when absent (`claude-sonnet-4-6`, `gpt-4o-mini`,
    /// `openai/gpt-4o-mini`, an instance's `default_models.chat`).
    #[schema(value_type = Option<crate::http::shapes::ModelName>)]
    pub model: Option<String>,
    #[schema(minimum = 1, maximum = 200_000)]
    pub max_tokens: Option<u64>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// A per-request credential for `provider` (required with it): used for this call instead of
    /// the vault's, never stored, logged or sent on in the body.
    #[schema(value_type = Option<String>)]
    pub api_key: Option<Secret>,
}

/// One turn of history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// One provider tried.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tried {
    pub provider: String,
    /// The provider's status; none when it was skipped.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// A chat answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatAnswer {
    /// The provider that answered (also the `X-Plinth-Provider` header).
    pub provider: String,
    pub model: String,
    pub content: String,
    pub finish_reason: Option<String>,
    /// `prompt_tokens`, `completion_tokens`, `total_tokens`.
    #[schema(value_type = Object)]
    pub usage: Value,
    /// Every provider tried or skipped, in order.
    pub attempts: Vec<Tried>,
}

/// The model a provider uses when the request names none (seed 000's table).
fn default_model(provider: &str, instance: Option<&Value>) -> Option<String> {
    match provider {
        "anthropic" | "claude-cli" => Some("claude-sonnet-4-6".into()),
        "openai" => Some("gpt-4o-mini".into()),
        "openai-cli" => Some("gpt-5".into()),
        "openrouter" => Some("openai/gpt-4o-mini".into()),
        _ => instance.and_then(|config| config["default_models"]["chat"].as_str()).map(str::to_string),
    }
}

/// Checks a per-request credential: it is for the named provider alone.
fn check_key(key: Option<&Secret>, provider: Option<&String>, errors: &mut FieldErrors) {
    let Some(key) = key else { return };
    if provider.is_none() {
        errors.add("api_key", "is one provider's credential: name that provider in `provider`");
    }
    if let Err(error) = crate::vault::check_override(key.expose()) {
        errors.add("api_key", error);
    }
}

/// The providers to try: the named one alone, or the tenant's priority list.
async fn candidates(app: &App, tenant: &TenantId, named: Option<&String>) -> ApiResult<Vec<String>> {
    match named {
        Some(provider) => Ok(vec![provider.clone()]),
        None => {
            let mut conn = app.db.pool().acquire().await?;
            super::priority::get(&mut conn, tenant).await
        }
    }
}

/// Notes a failed attempt at `provider`; the error to answer with when no other provider may
/// be tried (the provider was named, or the failure is the caller's: a 4xx other than 401,
/// 403 and 429).
fn failed(provider: &str, failure: Failure, explicit: bool, attempts: &mut Vec<Tried>) -> Option<ApiError> {
    if let Some(refused) = failure.refused {
        return Some(*refused);
    }
    let fails_over = failure.fails_over();
    attempts.push(Tried {
        provider: provider.to_string(),
        status: Some(failure.status),
        error: Some(failure.message.clone()),
    });
    if !explicit && fails_over {
        return None;
    }
    let code = if (400..500).contains(&failure.status) && !fails_over {
        ErrorCode::BadRequest
    } else {
        ErrorCode::UpstreamUnavailable
    };
    let mut error = ApiError::new(code, format!("{provider} answered {}: {}", failure.status, failure.message));
    error.extra.insert("attempts".into(), json!(attempts));
    Some(error)
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(chat))
        .routes(routes!(generate))
        .routes(routes!(ai_stream))
        .routes(routes!(vision))
        .routes(routes!(describe))
        .routes(routes!(image))
        .routes(routes!(models))
        .routes(routes!(embed))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModelsQuery {
    /// `anthropic`, `openai`, `openrouter` or an instance's name; the first provider of the
    /// priority list with credentials when absent.
    pub provider: Option<String>,
}

/// A provider's models.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub provider: String,
    /// `{id, object, created, owned_by}` as the provider lists them.
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<Value>,
    /// Whether the list came from the five-minute cache.
    pub cached: bool,
}

/// List a provider's models
///
/// Live from the provider, kept five minutes.
#[utoipa::path(get, path = "/v1/ai/models", tag = "AI", security(("bearer" = [])),
    params(ModelsQuery),
    responses((status = 200, body = crate::http::response::Envelope<ModelList>),
              (status = 401, body = crate::http::error::ErrorBody, description = "No credentials for the provider"),
              (status = 503, body = crate::http::error::ErrorBody, description = "The provider failed")))]
async fn models(
    auth: Auth,
    State(app): State<App>,
    crate::http::Query(query): crate::http::Query<ModelsQuery>,
) -> ApiResult<Data<ModelList>> {
    auth.require(crate::scopes::required::MODELS_READ)?;
    let tenant = auth.tenant()?.clone();
    let candidates = candidates(&app, &tenant, query.provider.as_ref()).await?;
    for provider in candidates {
        let Some(upstream) = upstream_for(&app, &tenant, &provider, "", None).await.map_err(api_error)? else {
            continue;
        };
        return match super::calls::models_of(&app, &tenant, &upstream).await {
            Ok((models, cached)) => Ok(Data(ModelList { provider, models, cached })),
            Err(failure) => Err(ApiError::new(
                ErrorCode::UpstreamUnavailable,
                format!("{provider} answered {}: {}", failure.status, failure.message),
            )),
        };
    }
    Err(ApiError::unauthorized("no credentials for that provider: store them with PUT /v1/credentials/{provider}"))
}

fn check(body: &ChatRequest, errors: &mut FieldErrors) -> Option<String> {
    let prompt = match (&body.prompt, &body.message) {
        (Some(_), Some(_)) => {
            errors.add("prompt", "give `prompt` or `message`, not both");
            None
        }
        (Some(text), None) | (None, Some(text)) if crate::names::has_text(text) && text.len() <= TEXT_MAX_BYTES => {
            Some(text.clone())
        }
        _ => {
            errors.add("prompt", format!("is required: 1 byte to {} KB of text", TEXT_MAX_BYTES / 1024));
            None
        }
    };
    if let Some(history) = &body.history {
        if history.len() > HISTORY_MAX {
            errors.add("history", format!("at most {HISTORY_MAX} messages"));
        }
        if history.iter().map(|t| t.content.len()).sum::<usize>() > HISTORY_MAX_BYTES {
            errors.add("history", format!("at most {} KB", HISTORY_MAX_BYTES / 1024));
        }
        if history.iter().any(|t| t.role != "user" && t.role != "assistant") {
            errors.add("history", "roles are `user` or `assistant`");
        }
    }
    if body.system.as_ref().is_some_and(|s| s.len() > TEXT_MAX_BYTES) {
        errors.add("system", format!("at most {} KB", TEXT_MAX_BYTES / 1024));
    }
    if body.model.as_ref().is_some_and(|m| !crate::names::has_text(m) || m.chars().count() > 200) {
        errors.add("model", "must be 1 to 200 characters");
    }
    if body.max_tokens.is_some_and(|n| n == 0 || n > 200_000) {
        errors.add("max_tokens", "must be 1 to 200000");
    }
    if body.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        errors.add("temperature", "must be between 0 and 2");
    }
    check_key(body.api_key.as_ref(), body.provider.as_ref(), errors);
    prompt
}

fn api_error(error: OpenAiError) -> ApiError {
    let body = error.into_response();
    let status = body.status();
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        400..=499 => ErrorCode::BadRequest,
        _ => ErrorCode::UpstreamUnavailable,
    };
    ApiError::new(code, format!("the AI call failed ({status})"))
}

/// Chat
///
/// One answer from the first provider that gives one: `provider`, or the tenant's priority list
/// with failover (5xx, 401, 403, 429, timeouts and connection errors move on; other 4xx answer
/// at once). `attempts` tells which were tried. 403 `BUDGET_EXCEEDED` over the monthly budget.
#[utoipa::path(post, path = "/v1/ai/chat", tag = "AI", security(("bearer" = [])),
    request_body = ChatRequest,
    responses((status = 200, body = crate::http::response::Envelope<ChatAnswer>),
              (status = 401, body = crate::http::error::ErrorBody, description = "No credentials for the named provider"),
              (status = 403, body = crate::http::error::ErrorBody, description = "`BUDGET_EXCEEDED` or `FEATURE_LIMIT_REACHED`"),
              (status = 503, body = crate::http::error::ErrorBody, description = "`UPSTREAM_UNAVAILABLE`: every provider failed")))]
async fn chat(auth: Auth, State(app): State<App>, Json(body): Json<ChatRequest>) -> ApiResult<Response> {
    run_chat(app, auth, body).await
}

/// Generate text
///
/// `prompt` in, text out: the same as `POST /v1/ai/chat` (same fields, failover and answer).
#[utoipa::path(post, path = "/v1/ai/generate", tag = "AI", security(("bearer" = [])),
    request_body = ChatRequest,
    responses((status = 200, body = crate::http::response::Envelope<ChatAnswer>),
              (status = 503, body = crate::http::error::ErrorBody, description = "`UPSTREAM_UNAVAILABLE`: every provider failed")))]
async fn generate(auth: Auth, State(app): State<App>, Json(body): Json<ChatRequest>) -> ApiResult<Response> {
    run_chat(app, auth, body).await
}

/// Stream a chat answer (Server-Sent Events)
///
/// The same body as `POST /v1/ai/chat`; the answer is `text/event-stream` of OpenAI
/// `chat.completion.chunk` frames ending with `data: [DONE]`, the provider named in
/// `X-Plinth-Provider`. Providers are tried in priority order until one accepts the request;
/// once bytes flow there is no failover, and an error in the middle arrives as an error frame.
#[utoipa::path(post, path = "/v1/ai/stream", tag = "AI", security(("bearer" = [])),
    request_body = ChatRequest,
    responses((status = 200, content_type = "text/event-stream", body = String, description = "The stream"),
              (status = 503, body = crate::http::error::ErrorBody, description = "`UPSTREAM_UNAVAILABLE`: every provider failed")))]
async fn ai_stream(auth: Auth, State(app): State<App>, Json(body): Json<ChatRequest>) -> ApiResult<Response> {
    Ok(respond(answer(app, auth, body, true, None).await?))
}

async fn run_chat(app: App, auth: Auth, body: ChatRequest) -> ApiResult<Response> {
    Ok(respond(answer(app, auth, body, false, None).await?))
}

/// A question about an image.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisionRequest {
    #[schema(value_type = crate::http::shapes::Prose)]
    pub prompt: String,
    /// An `https://` image URL the provider fetches...
    pub image_url: Option<String>,
    /// ...or the image itself, base64, with its `media_type` (`image/png`, `image/jpeg`, ...)...
    pub image_base64: Option<String>,
    pub media_type: Option<String>,
    /// ...or an image uploaded with `POST /v1/ai/upload` (sent to the provider inline)...
    pub upload_id: Option<String>,
    /// ...or an image file of the file store (needs `files:read`; sent inline).
    pub file_id: Option<String>,
    pub system: Option<String>,
    pub provider: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::ModelName>)]
    pub model: Option<String>,
    #[schema(minimum = 1, maximum = 200_000)]
    pub max_tokens: Option<u64>,
    /// A per-request credential for `provider` (required with it): used for this call instead of
    /// the vault's, never stored, logged or sent on in the body.
    #[schema(value_type = Option<String>)]
    pub api_key: Option<Secret>,
}

/// Ask about an image
///
/// A prompt and an image (`image_url`, `image_base64` with `media_type`, or the `upload_id` of
/// `POST /v1/ai/upload`), answered like
/// `POST /v1/ai/chat` (priority list, failover, the same answer).
#[utoipa::path(post, path = "/v1/ai/vision", tag = "AI", security(("bearer" = [])),
    request_body = VisionRequest,
    responses((status = 200, body = crate::http::response::Envelope<ChatAnswer>),
              (status = 503, body = crate::http::error::ErrorBody, description = "`UPSTREAM_UNAVAILABLE`: every provider failed")))]
async fn vision(auth: Auth, State(app): State<App>, Json(body): Json<VisionRequest>) -> ApiResult<Response> {
    let stored = match (&body.upload_id, &body.file_id) {
        (Some(id), None) => Some((id, false)),
        (None, Some(id)) => Some((id, true)),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(ApiError::invalid("file_id", "give `upload_id` or `file_id`, not both")),
    };
    let image = match (&body.image_url, &body.image_base64, &body.media_type, stored) {
        (Some(url), None, _, None) if url.starts_with("https://") && url.len() <= 4096 => url.clone(),
        (None, None, None, Some((id, as_file))) if id.len() <= 64 => {
            auth.require(CHAT_WRITE)?;
            super::uploads::data_url(&app, &auth, id, as_file).await?
        }
        (None, Some(data), Some(media), None) if media.starts_with("image/") && !data.is_empty() => {
            use base64::Engine;
            if base64::engine::general_purpose::STANDARD.decode(data).is_err() {
                return Err(ApiError::invalid("image_base64", "must be base64"));
            }
            format!("data:{media};base64,{data}")
        }
        _ => {
            return Err(ApiError::invalid(
                "image_url",
                "give one of: an https:// `image_url`, `image_base64` with an `image/...` `media_type`, an \
                 `upload_id` from POST /v1/ai/upload, or an image's `file_id`",
            ))
        }
    };
    let chat = ChatRequest {
        prompt: Some(body.prompt),
        message: None,
        history: None,
        system: body.system,
        provider: body.provider,
        model: body.model,
        max_tokens: body.max_tokens,
        temperature: None,
        api_key: body.api_key,
    };
    Ok(respond(answer(app, auth, chat, false, Some(image)).await?))
}

/// Largest image `POST /v1/ai/describe` sends to a provider.
const DESCRIBE_MAX_BYTES: i64 = 10 * 1024 * 1024;
/// What a description asks when the request says nothing.
const DESCRIBE_PROMPT: &str =
    "Describe this image in a few sentences: what it shows, its text if any, and its setting.";

/// A stored image to describe.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeRequest {
    /// An image file (JPEG, PNG, WebP or GIF, at most 10 MB) the caller may read.
    #[schema(max_length = 64)]
    pub file_id: String,
    /// What to ask of it; a general description when absent.
    #[schema(value_type = Option<crate::http::shapes::Prose>)]
    pub prompt: Option<String>,
    pub provider: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::ModelName>)]
    pub model: Option<String>,
    #[schema(minimum = 1, maximum = 200_000)]
    pub max_tokens: Option<u64>,
}

/// A stored image, described.
#[derive(Debug, Serialize, ToSchema)]
pub struct Description {
    pub description: String,
    pub file_id: String,
    pub filename: String,
    pub provider: String,
    pub model: String,
    #[schema(value_type = Object)]
    pub usage: Value,
}

/// Describe image
///
/// A text description of an image file of the file store (JPEG, PNG, WebP or GIF, at most
/// 10 MB), sent to the provider inline, answered like `POST /v1/ai/chat` (priority list,
/// failover). Needs `chat:write` and `files:read`; an end user, a file their roles let them read.
#[utoipa::path(post, path = "/v1/ai/describe", tag = "AI", security(("bearer" = [])),
    request_body = DescribeRequest,
    responses((status = 200, body = crate::http::response::Envelope<Description>),
              (status = 422, body = crate::http::error::ErrorBody, description = "No such image file, or over 10 MB"),
              (status = 503, body = crate::http::error::ErrorBody, description = "`UPSTREAM_UNAVAILABLE`: every provider failed")))]
async fn describe(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<DescribeRequest>,
) -> ApiResult<Data<Description>> {
    auth.require(CHAT_WRITE)?;
    auth.require(crate::scopes::required::FILES_READ)?;
    let (file, bytes) = crate::files::content::for_ai(&app, &auth, &body.file_id, DESCRIBE_MAX_BYTES).await?;
    if !crate::files::images::is_raster(&file.mime_type) {
        return Err(ApiError::invalid("file_id", "must be a PNG, JPEG, GIF or WebP image"));
    }
    let filename = file.filename.clone();
    let image = {
        use base64::Engine;
        format!("data:{};base64,{}", file.mime_type, base64::engine::general_purpose::STANDARD.encode(&bytes))
    };
    let chat = ChatRequest {
        prompt: Some(body.prompt.unwrap_or_else(|| DESCRIBE_PROMPT.into())),
        message: None,
        history: None,
        system: None,
        provider: body.provider,
        model: body.model,
        max_tokens: body.max_tokens,
        temperature: None,
        api_key: None,
    };
    let Answered::Chat(answer) = answer(app, auth, chat, false, Some(image)).await? else {
        return Err(ApiError::internal("a description is never streamed"));
    };
    Ok(Data(Description {
        description: answer.content,
        file_id: body.file_id,
        filename,
        provider: answer.provider,
        model: answer.model,
        usage: answer.usage,
    }))
}

/// What a chat came to: an answer, or a stream already under way.
pub enum Answered {
    Chat(ChatAnswer),
    Stream(Response),
}

/// The answer as a response, the provider named in `X-Plinth-Provider`.
fn respond(answered: Answered) -> Response {
    match answered {
        Answered::Chat(answer) => {
            let provider = answer.provider.clone();
            let mut response = Data(answer).into_response();
            if let Ok(value) = HeaderValue::from_str(&provider) {
                response.headers_mut().insert("x-plinth-provider", value);
            }
            response
        }
        Answered::Stream(response) => response,
    }
}

/// Answers a chat request: the priority list walked with failover, or the named provider.
pub async fn answer(
    app: App,
    auth: Auth,
    body: ChatRequest,
    streamed: bool,
    image: Option<String>,
) -> ApiResult<Answered> {
    auth.require(CHAT_WRITE)?;
    let tenant = auth.tenant()?.clone();
    let mut errors = FieldErrors::default();
    let prompt = check(&body, &mut errors);
    errors.finish()?;
    app.ai_meter.check(&app, &tenant).await?;
    let explicit = body.provider.is_some();
    let candidates = candidates(&app, &tenant, body.provider.as_ref()).await?;
    if candidates.is_empty() {
        return Err(ApiError::invalid(
            "provider",
            "no AI provider is configured: store credentials with PUT /v1/credentials/anthropic (or openai, openrouter)",
        ));
    }
    let mut messages = Vec::new();
    if let Some(system) = body.system.as_ref().filter(|s| !s.trim().is_empty()) {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for turn in body.history.iter().flatten() {
        messages.push(json!({ "role": turn.role, "content": turn.content }));
    }
    let text = prompt.unwrap_or_default();
    let content = match &image {
        Some(url) => json!([{ "type": "text", "text": text }, { "type": "image_url", "image_url": { "url": url } }]),
        None => json!(text),
    };
    messages.push(json!({ "role": "user", "content": content }));
    let mut request = json!({ "messages": messages });
    if let Some(max_tokens) = body.max_tokens {
        request["max_tokens"] = json!(max_tokens);
    }
    if let Some(temperature) = body.temperature {
        request["temperature"] = json!(temperature);
    }
    let mut attempts = Vec::new();
    let key_id = auth.actor.key_id().map(str::to_string);
    for provider in &candidates {
        let placeholder = body.model.clone().unwrap_or_default();
        let upstream =
            upstream_for(&app, &tenant, provider, &placeholder, body.api_key.as_ref()).await.map_err(api_error)?;
        let Some(mut upstream) = upstream else {
            if explicit {
                return Err(ApiError::unauthorized(format!(
                    "this tenant has no credentials for `{provider}`: store them with PUT /v1/credentials/{provider}"
                )));
            }
            attempts.push(Tried { provider: provider.clone(), status: None, error: Some("no credentials".into()) });
            continue;
        };
        match body.model.clone().or_else(|| default_model(provider, upstream.instance.as_ref())) {
            Some(model) => upstream.model = model,
            None => {
                attempts.push(Tried {
                    provider: provider.clone(),
                    status: None,
                    error: Some("no model named, and no default".into()),
                });
                continue;
            }
        }
        let outcome = if streamed {
            match super::calls::stream_once(&app, &tenant, key_id.clone(), &upstream, request.clone()).await {
                Ok(response) => return Ok(Answered::Stream(response)),
                Err(failure) => Err(failure),
            }
        } else {
            chat_once(&app, &tenant, key_id.clone(), &upstream, request.clone()).await
        };
        match outcome {
            Ok(completion) => {
                attempts.push(Tried { provider: provider.clone(), status: Some(200), error: None });
                let choice = &completion["choices"][0];
                let answer = ChatAnswer {
                    provider: provider.clone(),
                    model: completion["model"].as_str().unwrap_or(&upstream.model).to_string(),
                    content: choice["message"]["content"].as_str().unwrap_or_default().to_string(),
                    finish_reason: choice["finish_reason"].as_str().map(str::to_string),
                    usage: completion["usage"].clone(),
                    attempts,
                };
                return Ok(Answered::Chat(answer));
            }
            Err(failure) => {
                if let Some(error) = failed(provider, failure, explicit, &mut attempts) {
                    return Err(error);
                }
            }
        }
    }
    let mut error = if attempts.iter().all(|a| a.status.is_none()) {
        ApiError::invalid("provider", "no provider in the priority list has credentials and a model")
    } else {
        ApiError::new(ErrorCode::UpstreamUnavailable, "every provider in the priority list failed")
    };
    error.extra.insert("attempts".into(), json!(attempts));
    Err(error)
}

/// An embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// A text, or up to 100 texts.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Exactly this provider; otherwise the priority list's providers that have embeddings.
    pub provider: Option<String>,
    /// `text-embedding-3-small` (OpenAI) or `openai/text-embedding-3-small` (OpenRouter) when absent.
    pub model: Option<String>,
    /// A per-request credential for `provider` (required with it): used for this call instead of
    /// the vault's, never stored, logged or sent on in the body.
    #[schema(value_type = Option<String>)]
    pub api_key: Option<Secret>,
}

/// Embeddings.
#[derive(Debug, Serialize, ToSchema)]
pub struct Embeddings {
    pub provider: String,
    pub model: String,
    /// One vector per input, in order.
    pub embeddings: Vec<Vec<f64>>,
    #[schema(value_type = Object)]
    pub usage: Value,
}

/// Create embeddings
///
/// Vectors for one text or many, from `provider` or the first provider of the priority list
/// that has embeddings (Anthropic has none), with failover as for chat.
#[utoipa::path(post, path = "/v1/ai/embeddings", tag = "AI", security(("bearer" = [])),
    request_body = EmbedRequest,
    responses((status = 200, body = crate::http::response::Envelope<Embeddings>),
              (status = 503, body = crate::http::error::ErrorBody, description = "`UPSTREAM_UNAVAILABLE`")))]
async fn embed(auth: Auth, State(app): State<App>, Json(body): Json<EmbedRequest>) -> ApiResult<Data<Embeddings>> {
    auth.require(crate::scopes::required::EMBEDDINGS_WRITE)?;
    let tenant = auth.tenant()?.clone();
    let texts = match &body.input {
        Value::String(text) if !text.is_empty() => 1,
        Value::Array(items)
            if (1..=100).contains(&items.len()) && items.iter().all(|i| i.as_str().is_some_and(|t| !t.is_empty())) =>
        {
            items.len()
        }
        _ => return Err(ApiError::invalid("input", "must be a text or 1 to 100 texts")),
    };
    let mut errors = FieldErrors::default();
    check_key(body.api_key.as_ref(), body.provider.as_ref(), &mut errors);
    errors.finish()?;
    if serde_json::to_vec(&body.input).map(|v| v.len()).unwrap_or(usize::MAX) > 1024 * 1024 {
        return Err(ApiError::invalid("input", "must be at most 1 MB"));
    }
    app.ai_meter.check(&app, &tenant).await?;
    let explicit = body.provider.is_some();
    let candidates = candidates(&app, &tenant, body.provider.as_ref()).await?;
    let key_id = auth.actor.key_id().map(str::to_string);
    let mut attempts = Vec::new();
    for provider in &candidates {
        let Some(mut upstream) =
            upstream_for(&app, &tenant, provider, "", body.api_key.as_ref()).await.map_err(api_error)?
        else {
            if explicit {
                return Err(ApiError::unauthorized(format!("this tenant has no credentials for `{provider}`")));
            }
            attempts.push(Tried { provider: provider.clone(), status: None, error: Some("no credentials".into()) });
            continue;
        };
        let default = match provider.as_str() {
            "openai" => Some("text-embedding-3-small".to_string()),
            "openrouter" => Some("openai/text-embedding-3-small".to_string()),
            _ => {
                upstream.instance.as_ref().and_then(|c| c["default_models"]["embeddings"].as_str()).map(str::to_string)
            }
        };
        let model = body.model.clone().or(default);
        let (Some(model), super::upstream::Wire::OpenAi) = (model, upstream.wire) else {
            if explicit {
                return Err(ApiError::invalid(
                    "provider",
                    format!("`{provider}` has no embeddings (or no model was named)"),
                ));
            }
            attempts.push(Tried { provider: provider.clone(), status: None, error: Some("no embeddings".into()) });
            continue;
        };
        upstream.model = model;
        match super::calls::embed_once(&app, &tenant, key_id.clone(), &upstream, body.input.clone()).await {
            Ok(answer) => {
                let mut data: Vec<&Value> = answer["data"].as_array().map(|d| d.iter().collect()).unwrap_or_default();
                data.sort_by_key(|d| d["index"].as_u64().unwrap_or(0));
                let embeddings: Vec<Vec<f64>> = data
                    .iter()
                    .map(|d| {
                        d["embedding"]
                            .as_array()
                            .map(|v| v.iter().filter_map(Value::as_f64).collect())
                            .unwrap_or_default()
                    })
                    .collect();
                if embeddings.len() != texts {
                    return Err(ApiError::new(
                        ErrorCode::UpstreamUnavailable,
                        format!("{provider} answered {} vectors for {texts} texts", embeddings.len()),
                    ));
                }
                return Ok(Data(Embeddings {
                    provider: provider.clone(),
                    model: upstream.model,
                    embeddings,
                    usage: answer["usage"].clone(),
                }));
            }
            Err(failure) => {
                if let Some(error) = failed(provider, failure, explicit, &mut attempts) {
                    return Err(error);
                }
            }
        }
    }
    // Nothing tried: the tenant's settings, not an upstream, stand in the way.
    let mut error = if attempts.iter().all(|a| a.status.is_none()) {
        ApiError::invalid("provider", "no provider in the priority list has credentials and embeddings")
    } else {
        ApiError::new(ErrorCode::UpstreamUnavailable, "no provider in the priority list gave embeddings")
    };
    error.extra.insert("attempts".into(), json!(attempts));
    Err(error)
}

/// An image to generate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    #[schema(value_type = crate::http::shapes::Prose)]
    pub prompt: String,
    /// `openai` or `openrouter`; otherwise the priority list's providers that make images.
    pub provider: Option<String>,
    /// `gpt-image-1` (OpenAI's default), `dall-e-3`, `google/gemini-2.5-flash-image-preview`
    /// (OpenRouter's default), `google/gemini-3-pro-image-preview`.
    pub model: Option<String>,
    /// Such as `1024x1024` (OpenAI).
    #[schema(max_length = 20)]
    pub size: Option<String>,
    /// 1 to 4 images (OpenAI).
    #[schema(minimum = 1, maximum = 4)]
    pub n: Option<u64>,
    /// A per-request credential for `provider` (required with it): used for this call instead of
    /// the vault's, never stored, logged or sent on in the body.
    #[schema(value_type = Option<String>)]
    pub api_key: Option<Secret>,
}

/// Generated images.
#[derive(Debug, Serialize, ToSchema)]
pub struct Images {
    pub provider: String,
    pub model: String,
    /// `{b64_json}` each, whichever provider made them.
    #[schema(value_type = Vec<Object>)]
    pub images: Vec<Value>,
    pub attempts: Vec<Tried>,
}

/// Generate an image
///
/// OpenAI (`gpt-image-1`, `dall-e-3`) or OpenRouter's image models, always answered as
/// `{b64_json}`; the priority list's failover as for chat.
#[utoipa::path(post, path = "/v1/ai/image", tag = "AI", security(("bearer" = [])),
    request_body = ImageRequest,
    responses((status = 200, body = crate::http::response::Envelope<Images>),
              (status = 503, body = crate::http::error::ErrorBody, description = "`UPSTREAM_UNAVAILABLE`")))]
async fn image(auth: Auth, State(app): State<App>, Json(body): Json<ImageRequest>) -> ApiResult<Data<Images>> {
    auth.require(CHAT_WRITE)?;
    let tenant = auth.tenant()?.clone();
    let mut errors = FieldErrors::default();
    if !crate::names::has_text(&body.prompt) || body.prompt.len() > TEXT_MAX_BYTES {
        errors.add("prompt", format!("is required: at most {} KB", TEXT_MAX_BYTES / 1024));
    }
    if body.n.is_some_and(|n| !(1..=4).contains(&n)) {
        errors.add("n", "must be 1 to 4");
    }
    if body.size.as_ref().is_some_and(|s| s.chars().count() > 20) {
        errors.add("size", "must be a size such as `1024x1024`");
    }
    check_key(body.api_key.as_ref(), body.provider.as_ref(), &mut errors);
    errors.finish()?;
    app.ai_meter.check(&app, &tenant).await?;
    let explicit = body.provider.is_some();
    let candidates = candidates(&app, &tenant, body.provider.as_ref()).await?;
    let key_id = auth.actor.key_id().map(str::to_string);
    let mut attempts = Vec::new();
    for provider in &candidates {
        let default = match provider.as_str() {
            "openai" => Some("gpt-image-1"),
            "openrouter" => Some("google/gemini-2.5-flash-image-preview"),
            _ => None,
        };
        let upstream = match default {
            Some(_) => upstream_for(&app, &tenant, provider, "", body.api_key.as_ref()).await.map_err(api_error)?,
            None => None,
        };
        let Some(mut upstream) = upstream else {
            if explicit {
                return Err(ApiError::invalid(
                    "provider",
                    format!("`{provider}` makes no images here, or has no credentials"),
                ));
            }
            attempts.push(Tried {
                provider: provider.clone(),
                status: None,
                error: Some("no image generation or no credentials".into()),
            });
            continue;
        };
        upstream.model = body.model.clone().unwrap_or_else(|| default.unwrap_or_default().to_string());
        let n = body.n.unwrap_or(1);
        match super::calls::image_once(&app, &tenant, key_id.clone(), &upstream, &body.prompt, body.size.as_deref(), n)
            .await
        {
            Ok(images) => {
                attempts.push(Tried { provider: provider.clone(), status: Some(200), error: None });
                return Ok(Data(Images { provider: provider.clone(), model: upstream.model, images, attempts }));
            }
            Err(failure) => {
                if let Some(error) = failed(provider, failure, explicit, &mut attempts) {
                    return Err(error);
                }
            }
        }
    }
    let mut error = if attempts.iter().all(|a| a.status.is_none()) {
        ApiError::invalid("provider", "no provider in the priority list has credentials and makes images")
    } else {
        ApiError::new(ErrorCode::UpstreamUnavailable, "no provider in the priority list made the image")
    };
    error.extra.insert("attempts".into(), json!(attempts));
    Err(error)
}
