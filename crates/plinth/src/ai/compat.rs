//! The OpenAI-compatible endpoint (seed 000): `POST /v1/chat/completions` (also
//! `/v1/ai/completions`) and `POST /v1/embeddings` in OpenAI's wire format, without the
//! envelope, errors as `{error: {message, type, code}}`. The model picks the upstream:
//! `<instance>/<model>` a tenant's provider instance, `anthropic/...` or `claude-*` Anthropic
//! (translated both ways, streams event by event), `openai/...`, `gpt-*`, `o1`, `o3`, `o4` (and
//! `text-embedding-*`, `dall-e-*`) OpenAI, anything else OpenRouter; OpenAI-wire answers and streams are passed through as they
//! arrive.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::anthropic;
use super::calls::{buffered, call, models_of, openai_usage, with_provider};
use super::streams::{metered_stream, translate_stream};
use super::upstream::{failed, resolve, upstream_for, OpenAiError, Wire};
use super::usage::Estimate;
use crate::app::App;
use crate::auth::Auth;
use crate::config::Secret;
use crate::http::ApiError;
use crate::id::TenantId;
use crate::scopes::required::{CHAT_WRITE, EMBEDDINGS_WRITE};
use crate::scopes::Required;

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
    let mut call = call(&app, &tenant, key_id, &upstream, "chat", Estimate::chat(&body)).await?;
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
                    call.record(502, 0, 0);
                    return Err(failed(error));
                }
            };
            if stream && answer.status().is_success() {
                metered_stream(call, answer, wants_usage)
            } else {
                buffered(call, answer).await?
            }
        }
        Wire::Anthropic => {
            let request = anthropic::request(&body, &upstream.model).map_err(OpenAiError::invalid)?;
            let sent = upstream.post(&app, "/v1/messages")?.json(&request).send().await;
            let answer = match sent {
                Ok(answer) => answer,
                Err(error) => {
                    call.record(502, 0, 0);
                    return Err(failed(error));
                }
            };
            if !answer.status().is_success() {
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let error = crate::outbound::read_json_capped(answer, crate::limits::UPSTREAM_BODY_MAX_BYTES).await;
                let error = error.unwrap_or(Value::Null);
                call.record(status.as_u16(), 0, 0);
                (status, [(header::CONTENT_TYPE, "application/json")], anthropic::error(&error).to_string())
                    .into_response()
            } else if stream {
                let include_usage = body["stream_options"]["include_usage"] == true;
                translate_stream(call, answer, &upstream.model, include_usage)
            } else {
                let answer = crate::outbound::read_json_capped(answer, crate::limits::UPSTREAM_BODY_MAX_BYTES)
                    .await
                    .map_err(OpenAiError::upstream)?;
                let created = crate::time::now().timestamp();
                let translated = anthropic::response(&answer, created);
                let (input, output) = openai_usage(&translated["usage"]);
                call.record(200, input, output);
                axum::Json(translated).into_response()
            }
        }
    };
    Ok(with_provider(response, &upstream.provider))
}

/// The caller's tenant and credential, with the scope checked and the budget and `ai_tokens`
/// allowing one more call.
async fn caller(
    app: &App,
    auth: Result<Auth, ApiError>,
    scope: Required,
) -> Result<(TenantId, Option<String>), OpenAiError> {
    let auth = auth?;
    auth.require(scope)?;
    let tenant = auth.tenant()?.clone();
    app.ai_meter.check(app, &tenant).await?;
    Ok((tenant, auth.actor.key_id().map(str::to_string)))
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
        Some(model) if crate::names::has_text(model) && model.chars().count() <= 200 => Ok(model.to_string()),
        _ => Err(OpenAiError::invalid("`model` is required, such as `claude-sonnet-4-6` or `gpt-4o-mini`")),
    }
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
    let estimate = Estimate { input: Estimate::of_text(body["input"].to_string().len()), output: 0 };
    let mut call = call(&app, &tenant, key_id, &upstream, "embeddings", estimate).await?;
    let answer = match upstream.post(&app, "/embeddings")?.json(&body).send().await {
        Ok(answer) => answer,
        Err(error) => {
            call.record(502, 0, 0);
            return Err(failed(error));
        }
    };
    Ok(with_provider(buffered(call, answer).await?, &upstream.provider))
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
        let tenant = auth.tenant()?.clone();
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
