//! Extractors whose rejections answer in the contract's envelope.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;

use super::error::{ApiError, ErrorCode};

/// A JSON body: malformed JSON is 400, a wrong content type 415, too large 413, a body of the
/// wrong shape 422. A number with no fraction (`601.0`) is an integer, as JSON Schema has it.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(not_json());
        }
        let bytes = body_bytes(request, state).await?;
        parse(&bytes).map(Json)
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"))
}

fn not_json() -> ApiError {
    ApiError::new(ErrorCode::UnsupportedMediaType, "expected a request with `Content-Type: application/json`")
}

async fn body_bytes<S: Send + Sync>(request: axum::extract::Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is larger than the configured limit")
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })
}

/// Reads `bytes` as `T`; when that fails on its shape and the body holds integral numbers
/// written with a fraction (`601.0`), reads it again with them as integers.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde reads a struct from an array of its fields in order (`[null]`); a body documented as
    // an object is one, so a top-level array is read only into what takes arrays.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return T::deserialize(NoStructFromArray(value))
            .map_err(|e| ApiError::new(ErrorCode::ValidationFailed, format!("the body: {e}")));
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(rejection @ JsonRejection::JsonDataError(_)) => {
            let retried = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|mut value| integral(&mut value).then_some(value))
                .and_then(|value| serde_json::from_value::<T>(value).ok());
            retried.ok_or_else(|| rejection.into())
        }
        Err(rejection) => Err(rejection.into()),
    }
}

/// Turns integral floats into integers, in place; whether any was.
fn integral(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(number) if number.is_f64() => {
            let Some(float) = number.as_f64() else { return false };
            let whole = float.fract() == 0.0 && float.abs() < 9_007_199_254_740_992.0;
            if whole {
                // Exact: below 2^53 every integer is a float.
                #[allow(clippy::cast_possible_truncation)]
                let int = float as i64;
                *value = serde_json::Value::from(int);
            }
            whole
        }
        serde_json::Value::Array(items) => items.iter_mut().fold(false, |any, item| integral(item) | any),
        serde_json::Value::Object(fields) => fields.values_mut().fold(false, |any, field| integral(field) | any),
        _ => false,
    }
}

/// Query parameters: a malformed query is 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters: a malformed one is 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// For a changes body: distinguishes `"field": null` (`Some(None)`: clear it) from an absent field
/// (`None`: keep it). Use with `#[serde(default, deserialize_with = "crate::http::extract::present")]`.
pub fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

const SERDE_PREFIX: &str = "Failed to deserialize the JSON body into the target type: ";

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(error) => {
                let text = error.body_text();
                let problem = text.strip_prefix(SERDE_PREFIX).unwrap_or(&text).to_string();
                let mut errors = super::error::FieldErrors::default();
                errors.add("body", problem);
                errors.into_error()
            }
            JsonRejection::JsonSyntaxError(error) => {
                ApiError::bad_request(format!("malformed JSON: {}", error.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a request with `Content-Type: application/json`",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(ErrorCode::PayloadTooLarge, "request body is larger than the configured limit")
            }
            other => ApiError::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
    }
}

/// An optional JSON body: an empty body or `null` is `None`; anything else must be valid JSON as for
/// `Json`.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let bytes = body_bytes(request, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(None));
        }
        if !json {
            return Err(not_json());
        }
        // `null` is no body too, as the document's `oneOf: [null, ...]` has it.
        parse::<Option<T>>(&bytes).map(OptionalJson)
    }
}

#[cfg(test)]
mod integral_tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Body {
        limit: u32,
        ratio: f64,
        items: Vec<i64>,
    }

    #[test]
    fn integral_numbers_read_as_integers() {
        let body: Body = parse(br#"{"limit": 601.0, "ratio": 0.5, "items": [1.0, -2]}"#).unwrap();
        assert_eq!(body, Body { limit: 601, ratio: 0.5, items: vec![1, -2] });
        // A real fraction still does not fit an integer.
        let error = parse::<Body>(br#"{"limit": 601.5, "ratio": 1, "items": []}"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::ValidationFailed);
        assert!(parse::<Body>(b"{").is_err());
    }
}

/// A top-level JSON value read like `serde_json::Value` reads, except that a struct is never
/// read from an array.
struct NoStructFromArray(serde_json::Value);

impl<'de> serde::Deserializer<'de> for NoStructFromArray {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_option(visitor)
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if self.0.is_array() {
            return Err(serde::de::Error::custom("must be a JSON object, not an array"));
        }
        self.0.deserialize_struct(name, fields, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Budget {
        ai_budget_usd: Option<String>,
    }

    #[test]
    fn a_struct_is_never_read_from_an_array() {
        assert!(serde_json::from_slice::<Budget>(b"[null]").is_ok(), "what serde alone does");
        let refused = parse::<Budget>(b" [null]").unwrap_err();
        assert_eq!(refused.code.as_str(), "VALIDATION_FAILED");
        assert!(parse::<Budget>(br#"{"ai_budget_usd": "25.00"}"#).is_ok());
        assert_eq!(parse::<Vec<i64>>(b"[1, 2]").unwrap(), vec![1, 2]);
        assert!(parse::<serde_json::Value>(b"[1]").unwrap().is_array());
        assert!(parse::<Vec<Budget>>(br#"[{"ai_budget_usd": null}]"#).is_ok());
    }
}
