//! The HTTP contract: the envelope, errors, request ids, extractors, lists and the OpenAPI document.

pub mod document;
pub mod error;
pub mod extract;
pub mod list;
pub mod openapi;
pub mod request_id;
pub mod response;
pub mod shapes;

pub use error::{ApiError, ApiResult, ErrorCode};
pub use extract::{Json, OptionalJson, Path, Query};
pub use list::{CursorKey, Filter, ListParams, ListSpec, Page, SortField};
pub use response::{Accepted, Created, Data, Deleted};
