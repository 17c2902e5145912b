//! Lists: `limit` and an opaque keyset `cursor` in, `{results, next_cursor, total}` out.
//! Every list is ordered newest first by id (ids are time-ordered), so the cursor is the last id seen.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, Query};
use crate::limits::{LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT};

/// The query parameters every list takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Validated list parameters.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub limit: u32,
    after: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    after: String,
}

impl ListParams {
    pub fn new(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(LIST_DEFAULT_LIMIT);
        if !(1..=LIST_MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("must be between 1 and {LIST_MAX_LIMIT}")));
        }
        let after = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| ApiError::bad_request("invalid cursor"))?),
        };
        Ok(ListParams { limit, after })
    }

    /// The id the page starts after (exclusive), when a cursor was given.
    pub fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// Builds the page from `fetch_limit()` rows ordered newest first.
    pub fn page<T>(&self, mut rows: Vec<T>, total: i64, id_of: impl Fn(&T) -> &str) -> Page<T> {
        let limit = self.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode_cursor(id_of(last)))
        } else {
            None
        };
        Page { results: rows, next_cursor, total }
    }
}

fn encode_cursor(after: &str) -> String {
    let json = serde_json::to_vec(&Cursor { after: after.to_string() }).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let cursor: Cursor = serde_json::from_slice(&bytes).ok()?;
    let valid = !cursor.after.is_empty()
        && cursor.after.len() <= 128
        && cursor.after.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some(cursor.after)
}

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<ListQuery>::from_request_parts(parts, state).await?;
        ListParams::new(query.limit, query.cursor.as_deref())
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub results: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// How many items the whole list holds.
    pub total: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = encode_cursor("key_01h455vb4pex5vsknk084sn02q");
        let params = ListParams::new(Some(5), Some(&cursor)).unwrap();
        assert_eq!(params.after(), Some("key_01h455vb4pex5vsknk084sn02q"));
    }

    #[test]
    fn rejects_bad_limits_and_cursors() {
        assert!(ListParams::new(Some(0), None).is_err());
        assert!(ListParams::new(Some(101), None).is_err());
        assert!(ListParams::new(None, Some("not-a-cursor!")).is_err());
        let sneaky = URL_SAFE_NO_PAD.encode(br#"{"after":"x' OR 1=1"}"#);
        assert!(ListParams::new(None, Some(&sneaky)).is_err());
    }

    #[test]
    fn page_sets_cursor_only_when_more_rows_follow() {
        let params = ListParams::new(Some(2), None).unwrap();
        let page = params.page(vec!["c", "b", "a"], 3, |s| s);
        assert_eq!(page.results, vec!["c", "b"]);
        assert!(page.next_cursor.is_some());
        let page = params.page(vec!["c", "b"], 2, |s| s);
        assert!(page.next_cursor.is_none());
    }
}
