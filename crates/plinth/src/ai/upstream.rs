//! The upstream client: which provider a model goes to, with which base URL and credential, the
//! guarded request builder, and errors in OpenAI's shape.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::anthropic::{self};
use crate::app::App;
use crate::config::Secret;
use crate::http::ApiError;
use crate::id::TenantId;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    pub message: String,
    kind: &'static str,
    code: Option<String>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        OpenAiError { status, message: message.into(), kind, code: code.map(str::to_string) }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
    }

    pub fn upstream(message: impl Into<String>) -> Self {
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

/// OpenAI's error body, as the OpenAI-compatible routes answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `permission_error`, `rate_limit_error`, `upstream_error`,
    /// `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Such as `invalid_api_key`, `insufficient_scope`, `upstream_unavailable`.
    pub code: Option<String>,
}

/// The paths that answer errors in OpenAI's shape (with their aliases).
pub const OPENAI_SHAPED: &[&str] = &["/v1/chat/completions", "/v1/ai/completions", "/v1/embeddings", "/v1/models"];

/// Documents the OpenAI-compatible routes' errors as they are: OpenAI's shape from the route,
/// or the envelope from what runs before it (an `Idempotency-Key` conflict, the rate limit, a
/// body over the limit, a timeout).
pub fn document_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{OneOfBuilder, Schema};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr};
    use utoipa::{PartialSchema, ToSchema};
    let components = openapi.components.get_or_insert_with(Default::default);
    components.schemas.insert(OpenAiErrorBody::name().into_owned(), OpenAiErrorBody::schema());
    components.schemas.insert(OpenAiErrorDetail::name().into_owned(), OpenAiErrorDetail::schema());
    let either = || -> RefOr<Schema> {
        Schema::OneOf(
            OneOfBuilder::new()
                .item(Ref::from_schema_name(OpenAiErrorBody::name()))
                .item(Ref::from_schema_name("ErrorBody"))
                .build(),
        )
        .into()
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !OPENAI_SHAPED.contains(&path.as_str()) {
            continue;
        }
        let operations = [&mut item.get, &mut item.post];
        for operation in operations.into_iter().flatten() {
            operation.responses.responses.entry("502".into()).or_insert_with(|| {
                utoipa::openapi::ResponseBuilder::new()
                    .description("Every provider tried failed (`upstream_error`)")
                    .build()
                    .into()
            });
            for (status, response) in operation.responses.responses.iter_mut() {
                if status.starts_with(['4', '5']) {
                    if let RefOr::T(response) = response {
                        response
                            .content
                            .insert("application/json".into(), ContentBuilder::new().schema(Some(either())).build());
                    }
                }
            }
        }
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
pub async fn resolve(app: &App, tenant: &TenantId, model: &str, key: Option<&Secret>) -> Result<Upstream, OpenAiError> {
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
    tenant: &TenantId,
    provider: &str,
    model: &str,
    key: Option<&Secret>,
) -> Result<Option<Upstream>, OpenAiError> {
    if !super::BUILT_IN.contains(&provider) {
        let Some((kind, stored, config)) = super::providers::open(app, tenant, provider).await? else {
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
    let fields = match (crate::vault::open(app, tenant, provider).await?, key) {
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

pub fn default_base<'a>(app: &'a App, provider: &str) -> &'a str {
    match provider {
        "anthropic" => &app.config.ai.anthropic_base_url,
        "openrouter" => &app.config.ai.openrouter_base_url,
        _ => &app.config.ai.openai_base_url,
    }
}

impl Upstream {
    pub fn client<'a>(&self, app: &'a App) -> &'a reqwest::Client {
        if self.trusted {
            &app.ai_trusted
        } else {
            &app.ai_guarded
        }
    }

    /// A POST to `path` under the base URL, authenticated the way the upstream wants.
    pub fn post(&self, app: &App, path: &str) -> Result<reqwest::RequestBuilder, OpenAiError> {
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

pub fn failed(error: reqwest::Error) -> OpenAiError {
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
