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
/// address the server listens on. Never the request's `Host`, which the sender chooses.
pub fn public_base(app: &crate::app::App) -> String {
    app.public_url.clone()
}
