//! One error type at the edge: `ApiError` renders the contract's error envelope.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::request_id;

/// The stable, machine-readable error codes and the status each answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    /// A retry of work that cannot be retried (a delivery that succeeded).
    CannotRetry,
    /// The tenant's monthly AI budget is spent.
    BudgetExceeded,
    Unauthorized,
    InsufficientScope,
    Forbidden,
    FeatureLimitReached,
    NotFound,
    MethodNotAllowed,
    Conflict,
    IdempotencyConflict,
    DependencyExists,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// A `Range` that lies outside the file.
    RangeNotSatisfiable,
    ValidationFailed,
    RateLimited,
    Internal,
    /// The server cannot take the request now (a saturated resource): retry shortly.
    Unavailable,
    UpstreamUnavailable,
    /// The request took longer than the server allows.
    Timeout,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::CannotRetry => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::InsufficientScope
            | ErrorCode::Forbidden
            | ErrorCode::FeatureLimitReached
            | ErrorCode::BudgetExceeded => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict | ErrorCode::IdempotencyConflict | ErrorCode::DependencyExists => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable | ErrorCode::UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::CannotRetry => "CANNOT_RETRY",
            ErrorCode::BudgetExceeded => "BUDGET_EXCEEDED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::InsufficientScope => "INSUFFICIENT_SCOPE",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::FeatureLimitReached => "FEATURE_LIMIT_REACHED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ErrorCode::DependencyExists => "DEPENDENCY_EXISTS",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::RangeNotSatisfiable => "RANGE_NOT_SATISFIABLE",
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::Timeout => "TIMEOUT",
        }
    }
}

/// An error answered in the contract's envelope.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Per-field messages, for `VALIDATION_FAILED`.
    pub details: Option<Map<String, Value>>,
    /// Fields of the error object beyond code, message and details (`retry_after`, ...).
    pub extra: Map<String, Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), details: None, extra: Map::new() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// A validation failure of one field.
    pub fn invalid(field: &str, problem: impl Into<String>) -> Self {
        let mut errors = FieldErrors::default();
        errors.add(field, problem);
        errors.into_error()
    }

    /// 503 `UNAVAILABLE` with `Retry-After`: a saturated resource, worth retrying shortly.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut error = Self::new(ErrorCode::Unavailable, message);
        error.extra.insert("retry_after".into(), Value::from(retry_after_secs));
        error
    }

    /// An internal failure: logged with the request id, answered without its text.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(request_id = %request_id::current(), error = %error, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

/// Collects per-field validation problems; turns into one `VALIDATION_FAILED`.
#[derive(Debug, Default)]
pub struct FieldErrors {
    fields: Map<String, Value>,
    first: Option<String>,
}

impl FieldErrors {
    pub fn add(&mut self, field: &str, problem: impl Into<String>) {
        let problem = problem.into();
        if self.first.is_none() {
            self.first = Some(format!("{field}: {problem}"));
        }
        let entry = self.fields.entry(field.to_string()).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(problem));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn into_error(self) -> ApiError {
        ApiError {
            code: ErrorCode::ValidationFailed,
            message: self.first.unwrap_or_else(|| "validation failed".into()),
            details: Some(self.fields),
            extra: Map::new(),
        }
    }

    /// `Ok(())` when nothing was added, else the validation error.
    pub fn finish(self) -> ApiResult<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }
}

/// The error body, as documented in the OpenAPI document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorDetail,
    /// Equals the `X-Request-Id` header.
    pub request_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable UPPER_SNAKE code, such as `VALIDATION_FAILED`.
    pub code: String,
    pub message: String,
    /// Per-field messages, for `VALIDATION_FAILED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Map<String, Value>>,
    /// Extra fields of some errors: `retry_after`, `limit`, `remaining` and `reset_at` with
    /// `RATE_LIMITED`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

/// The error object an answer carries (also what work done later keeps of an error it would have
/// answered).
impl From<ApiError> for ErrorDetail {
    fn from(error: ApiError) -> Self {
        ErrorDetail {
            code: error.code.as_str().to_string(),
            message: error.message,
            details: error.details,
            extra: error.extra,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let code = self.code;
        // An error that says when to retry says it in the header too.
        let retry_after = self.extra.get("retry_after").and_then(Value::as_u64);
        let body = ErrorBody { success: false, error: ErrorDetail::from(self), request_id: request_id::current() };
        let mut response = (status, axum::Json(body)).into_response();
        if code == ErrorCode::Unauthorized {
            response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    /// A saturated database (no connection free in time, a statement over its time, a lock
    /// not had) is 503 `UNAVAILABLE` with `Retry-After`; anything else is internal.
    fn from(error: sqlx::Error) -> Self {
        if crate::db::dialect::is_unstorable_text(&error) {
            // Text a capability did not check itself (PostgreSQL refuses NUL characters).
            return ApiError::bad_request("text may not hold the NUL character (`\\u0000`)");
        }
        match crate::db::dialect::saturation(&error) {
            Some(what) => {
                tracing::warn!(request_id = %request_id::current(), %error, "{what}");
                ApiError::unavailable(format!("{what}: retry shortly"), 1)
            }
            None => ApiError::internal(error),
        }
    }
}

impl From<chrono::ParseError> for ApiError {
    fn from(error: chrono::ParseError) -> Self {
        ApiError::internal(format!("stored timestamp: {error}"))
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> Self {
        ApiError::internal(format!("stored json: {error}"))
    }
}
