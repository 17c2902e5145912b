//! The HTTP contract: the envelope, errors, request ids, extractors, lists and the OpenAPI document.

pub mod error;
pub mod extract;
pub mod list;
pub mod openapi;
pub mod request_id;
pub mod response;

pub use error::{ApiError, ApiResult, ErrorCode};
pub use extract::{Json, OptionalJson, Path, Query};
pub use list::{Filter, ListParams, ListSpec, Page, SortField};
pub use response::{Created, Data, Deleted};

/// Where clients reach this server, for links it hands out: `PLINTH_PUBLIC_URL`, else the
/// request's `Host` over plain HTTP.
pub fn public_base(app: &crate::app::App, headers: &axum::http::HeaderMap) -> String {
    if let Some(url) = &app.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}
