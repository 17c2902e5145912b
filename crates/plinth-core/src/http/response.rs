//! Success responses in the contract's envelope: `{"success": true, "data": ..., "request_id": ...}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{request_id, ApiError};

/// The success envelope, as documented.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
    /// Equals the `X-Request-Id` header.
    pub request_id: String,
}

#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    success: bool,
    data: &'a T,
    request_id: String,
}

fn render<T: Serialize>(status: StatusCode, data: &T) -> Response {
    let body = EnvelopeRef { success: true, data, request_id: request_id::current() };
    match serde_json::to_vec(&body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => ApiError::internal(format!("serialising a response: {error}")).into_response(),
    }
}

/// 200 with `data`.
pub struct Data<T>(pub T);

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        render(StatusCode::OK, &self.0)
    }
}

/// 201 with `data`.
pub struct Created<T>(pub T);

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        render(StatusCode::CREATED, &self.0)
    }
}

/// 202 with `data`: the work goes on after the answer (a job).
pub struct Accepted<T>(pub T);

impl<T: Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> Response {
        render(StatusCode::ACCEPTED, &self.0)
    }
}

/// The body of every `DELETE`: `{"id": ..., "deleted": true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

impl Deleted {
    pub fn new(id: impl Into<String>) -> Data<Deleted> {
        Data(Deleted { id: id.into(), deleted: true })
    }
}
