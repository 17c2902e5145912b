//! Lists: one extractor (`ListParams`) and one query helper (`fetch`) give every list `limit`,
//! a keyset `cursor` (opaque and tamper-evident), `created_after`/`created_before`,
//! `updated_after`/`updated_before`, `sort` over the list's sortable fields, `fields` (sparse
//! fieldsets) and `total`. A list declares itself with a `ListSpec`.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Arguments, FromRow, Row};
use utoipa::{IntoParams, ToSchema};

use super::error::FieldErrors;
use super::{ApiError, ApiResult, Query};
use crate::db::Db;
use crate::limits::{LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT};
use crate::time;

/// The largest `offset`.
pub const OFFSET_MAX: u32 = 10_000;

/// The query parameters every list takes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (with the same `sort`).
    pub cursor: Option<String>,
    /// Items to skip, 0 to 10,000: from the start, or past `cursor` when one is given (pages by
    /// cursor stay stable under inserts; offsets do not).
    #[param(maximum = 10000)]
    pub offset: Option<u32>,
    /// RFC 3339: created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// RFC 3339: created before.
    pub created_before: Option<DateTime<Utc>>,
    /// RFC 3339: updated at or after (lists whose items have `updated_at`).
    pub updated_after: Option<DateTime<Utc>>,
    /// RFC 3339: updated before.
    pub updated_before: Option<DateTime<Utc>>,
    /// Comma-separated sortable fields, `-` for descending: `-created_at,name`. Default newest first.
    pub sort: Option<String>,
    /// Comma-separated fields to return: `id,name`. `id` is always returned.
    pub fields: Option<String>,
}

/// A field a list may be sorted by: its name in the API and its (text, non-null) column.
#[derive(Debug, Clone, Copy)]
pub struct SortField {
    pub name: &'static str,
    pub column: &'static str,
}

/// How a list is stored and what it offers.
#[derive(Debug)]
pub struct ListSpec {
    pub table: &'static str,
    /// The selected columns, read by the row type.
    pub columns: &'static str,
    pub sortable: &'static [SortField],
    /// The fields of an item, for `fields=`.
    pub fields: &'static [&'static str],
    /// Whether items have `updated_at`.
    pub updated_at: bool,
}

/// Validated list parameters.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub limit: u32,
    pub offset: u32,
    query: ListQueryOwned,
    cursor_key: [u8; 32],
}

#[derive(Debug, Clone, Default)]
struct ListQueryOwned {
    cursor: Option<String>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    updated_after: Option<DateTime<Utc>>,
    updated_before: Option<DateTime<Utc>>,
    sort: String,
    fields: Option<Vec<String>>,
}

/// What a cursor carries: the sort it belongs to, and the last item's sort values and id.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cursor {
    sort: String,
    values: Vec<String>,
    id: String,
}

/// A page size as a list takes it: `LIST_DEFAULT_LIMIT` when absent, 422 outside 1 to
/// `LIST_MAX_LIMIT`.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(LIST_DEFAULT_LIMIT);
    if !(1..=LIST_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("must be between 1 and {LIST_MAX_LIMIT}")));
    }
    Ok(limit)
}

/// An `offset` as a list takes it: 0 when absent, 422 past `OFFSET_MAX`.
pub fn page_offset(offset: Option<u32>) -> Result<u32, ApiError> {
    let offset = offset.unwrap_or(0);
    if offset > OFFSET_MAX {
        return Err(ApiError::invalid("offset", format!("must be at most {OFFSET_MAX}: page further with `cursor`")));
    }
    Ok(offset)
}

impl ListParams {
    pub fn new(query: ListQuery, cursor_key: [u8; 32]) -> Result<Self, ApiError> {
        let limit = page_limit(query.limit)?;
        let offset = page_offset(query.offset)?;
        let split = |text: &str| -> Vec<String> {
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        };
        Ok(ListParams {
            limit,
            offset,
            query: ListQueryOwned {
                cursor: query.cursor.filter(|c| !c.is_empty()),
                created_after: query.created_after,
                created_before: query.created_before,
                updated_after: query.updated_after,
                updated_before: query.updated_before,
                sort: query.sort.map(|s| split(&s).join(",")).unwrap_or_default(),
                fields: query.fields.map(|f| split(&f)),
            },
            cursor_key,
        })
    }

    fn encode_cursor(&self, cursor: &Cursor) -> String {
        seal(&self.cursor_key, cursor)
    }

    fn decode_cursor(&self) -> Result<Option<Cursor>, ApiError> {
        let Some(text) = &self.query.cursor else { return Ok(None) };
        let cursor: Cursor = open(&self.cursor_key, text)?;
        if cursor.sort != self.query.sort {
            return Err(ApiError::bad_request(
                "this cursor belongs to another `sort`: keep the sort of the first page",
            ));
        }
        Ok(Some(cursor))
    }

    /// The sort fields with their direction (`true` = descending), checked against `spec`.
    fn sort_fields(&self, spec: &ListSpec) -> ApiResult<Vec<(SortField, bool)>> {
        let mut errors = FieldErrors::default();
        let mut fields = Vec::new();
        for token in self.query.sort.split(',').filter(|t| !t.is_empty()) {
            let (name, descending) = match token.strip_prefix('-') {
                Some(name) => (name, true),
                None => (token.strip_prefix('+').unwrap_or(token), false),
            };
            match spec.sortable.iter().find(|f| f.name == name) {
                Some(field) if !fields.iter().any(|(f, _): &(SortField, bool)| f.name == name) => {
                    fields.push((*field, descending))
                }
                Some(_) => errors.add("sort", format!("`{name}` is named twice")),
                None => {
                    let names: Vec<&str> = spec.sortable.iter().map(|f| f.name).collect();
                    errors.add("sort", format!("`{name}` is not sortable here; sortable: {}", names.join(", ")));
                }
            }
        }
        errors.finish()?;
        Ok(fields)
    }

    /// Keeps only the requested `fields` of each item (and `id`).
    pub fn project<T: Serialize>(&self, spec: &ListSpec, page: Page<T>) -> ApiResult<Page<Value>> {
        let results = page.results.into_iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>()?;
        let Some(fields) = &self.query.fields else {
            return Ok(Page { results, next_cursor: page.next_cursor, total: page.total });
        };
        let mut errors = FieldErrors::default();
        for field in fields {
            if !spec.fields.contains(&field.as_str()) {
                errors.add("fields", format!("unknown field `{field}`; fields: {}", spec.fields.join(", ")));
            }
        }
        errors.finish()?;
        let results = results
            .into_iter()
            .map(|item| match item {
                Value::Object(object) => Value::Object(
                    object.into_iter().filter(|(k, _)| k == "id" || fields.iter().any(|f| f == k)).collect(),
                ),
                other => other,
            })
            .collect();
        Ok(Page { results, next_cursor: page.next_cursor, total: page.total })
    }
}

fn mac(key: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    crate::secrets::hmac_sha256(key, &[payload])[..16].to_vec()
}

/// A cursor: `payload` as JSON, base64url, with a truncated HMAC so a client can neither read a
/// meaning into it nor forge one.
pub fn seal<T: Serialize>(key: &[u8; 32], payload: &T) -> String {
    let payload = serde_json::to_vec(payload).unwrap_or_default();
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(mac(key, &payload)))
}

/// The payload of a cursor made by `seal` with `key`; 400 for anything else.
pub fn open<T: serde::de::DeserializeOwned>(key: &[u8; 32], text: &str) -> ApiResult<T> {
    let invalid = || ApiError::bad_request("invalid cursor: pass `next_cursor` from the previous page unchanged");
    let (payload, tag) = text.split_once('.').ok_or_else(invalid)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    if !crate::secrets::constant_time_eq(&tag, &mac(key, &payload)) {
        return Err(invalid());
    }
    serde_json::from_slice(&payload).map_err(|_| invalid())
}

/// The conditions a list is filtered by, beyond the common ones, with their values.
#[derive(Debug, Default)]
pub struct Filter {
    conditions: Vec<String>,
    binds: Vec<String>,
}

impl Filter {
    pub fn new() -> Self {
        Filter::default()
    }

    /// `column <op> value`, with `value` bound.
    pub fn compare(mut self, column: &str, op: &str, value: impl Into<String>) -> Self {
        self.binds.push(value.into());
        self.conditions.push(format!("{column} {op} ${}", self.binds.len()));
        self
    }

    pub fn eq(self, column: &str, value: impl Into<String>) -> Self {
        self.compare(column, "=", value)
    }

    pub fn eq_opt(self, column: &str, value: Option<String>) -> Self {
        match value {
            Some(value) => self.eq(column, value),
            None => self,
        }
    }

    /// A condition with no value, such as `revoked_at IS NULL`.
    pub fn raw(mut self, condition: &str) -> Self {
        self.conditions.push(condition.to_owned());
        self
    }

    fn sql(&self) -> String {
        if self.conditions.is_empty() {
            "1 = 1".into()
        } else {
            self.conditions.join(" AND ")
        }
    }
}

fn arguments(values: &[String]) -> ApiResult<AnyArguments<'_>> {
    let mut args = AnyArguments::default();
    for value in values {
        args.add(value.as_str()).map_err(|e| ApiError::internal(format!("binding a list value: {e}")))?;
    }
    Ok(args)
}

/// One page of `spec` filtered by `filter` and the common parameters, with the total.
pub async fn fetch<T>(db: &Db, spec: &ListSpec, filter: Filter, params: &ListParams) -> ApiResult<Page<T>>
where
    T: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
{
    let sort = params.sort_fields(spec)?;
    let cursor = params.decode_cursor()?;
    let q = &params.query;
    if !spec.updated_at && (q.updated_after.is_some() || q.updated_before.is_some()) {
        return Err(ApiError::invalid("updated_after", "this list's items have no `updated_at`"));
    }
    let mut filter = filter;
    for (column, op, at) in [
        ("created_at", ">=", q.created_after),
        ("created_at", "<", q.created_before),
        ("updated_at", ">=", q.updated_after),
        ("updated_at", "<", q.updated_before),
    ] {
        if let Some(at) = at {
            filter = filter.compare(column, op, time::to_db(&at));
        }
    }
    let where_sql = filter.sql();
    let count_sql = format!("SELECT COUNT(*) FROM {} WHERE {where_sql}", spec.table);
    let (total,): (i64,) = sqlx::query_as_with(&count_sql, arguments(&filter.binds)?).fetch_one(db.pool()).await?;
    // Text sorts by bytes on both databases, whatever PostgreSQL's default collation.
    let collate = crate::db::dialect::byte_order(db.backend());

    // Keyset: the sort fields, then the id in the direction of the last one (newest first by default).
    let id_descending = sort.last().is_none_or(|(_, descending)| *descending);
    let mut keys: Vec<(&str, bool)> = sort.iter().map(|(f, d)| (f.column, *d)).collect();
    keys.push(("id", id_descending));
    let mut binds = filter.binds.clone();
    let mut keyset = String::new();
    if let Some(cursor) = &cursor {
        if cursor.values.len() != sort.len() {
            return Err(ApiError::bad_request("invalid cursor"));
        }
        let mut values: Vec<String> = cursor.values.clone();
        values.push(cursor.id.clone());
        let mut placeholders = Vec::new();
        for value in values {
            binds.push(value);
            placeholders.push(format!("${}", binds.len()));
        }
        let alternatives: Vec<String> = (0..keys.len())
            .map(|i| {
                let mut parts: Vec<String> = (0..i).map(|j| format!("{} = {}", keys[j].0, placeholders[j])).collect();
                let op = if keys[i].1 { "<" } else { ">" };
                parts.push(format!("{}{collate} {op} {}", keys[i].0, placeholders[i]));
                format!("({})", parts.join(" AND "))
            })
            .collect();
        keyset = format!(" AND ({})", alternatives.join(" OR "));
    }
    let order: Vec<String> = keys
        .iter()
        .map(|(column, descending)| format!("{column}{collate} {}", if *descending { "DESC" } else { "ASC" }))
        .collect();
    let sort_columns: String =
        sort.iter().enumerate().map(|(i, (f, _))| format!(", {} AS plinth_sort_{i}", f.column)).collect();
    let sql = format!(
        "SELECT {}{sort_columns} FROM {} WHERE {where_sql}{keyset} ORDER BY {} LIMIT ${} OFFSET {}",
        spec.columns,
        spec.table,
        order.join(", "),
        binds.len() + 1,
        params.offset
    );
    let mut args = arguments(&binds)?;
    args.add(params.limit_plus_one()).map_err(|e| ApiError::internal(format!("binding a list limit: {e}")))?;
    let rows: Vec<AnyRow> = sqlx::query_with(&sql, args).fetch_all(db.pool()).await?;

    let limit = params.limit as usize;
    let next_cursor = if rows.len() > limit {
        let last = &rows[limit - 1];
        let values = (0..sort.len())
            .map(|i| last.try_get::<String, _>(format!("plinth_sort_{i}").as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let id: String = last.try_get("id")?;
        Some(params.encode_cursor(&Cursor { sort: params.query.sort.clone(), values, id }))
    } else {
        None
    };
    let results = rows.iter().take(limit).map(T::from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(Page { results, next_cursor, total })
}

impl ListParams {
    fn limit_plus_one(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// The key list cursors are signed with: the state hands it to the `ListParams` extractor.
#[derive(Clone, Copy)]
pub struct CursorKey(pub [u8; 32]);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl<S> FromRequestParts<S> for ListParams
where
    CursorKey: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<ListQuery>::from_request_parts(parts, state).await?;
        ListParams::new(query, CursorKey::from_ref(state).0)
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub results: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// How many items the whole list holds (with the filters, without the cursor).
    pub total: i64,
}

impl<T> Page<T> {
    /// The same page with each item converted.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            results: self.results.into_iter().map(f).collect::<Result<_, _>>()?,
            next_cursor: self.next_cursor,
            total: self.total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: ListSpec = ListSpec {
        table: "t",
        columns: "id, name",
        sortable: &[SortField { name: "name", column: "name" }, SortField { name: "created_at", column: "created_at" }],
        fields: &["id", "name"],
        updated_at: false,
    };

    fn params(sort: &str, cursor: Option<String>) -> ListParams {
        let query = ListQuery { sort: Some(sort.into()), cursor, ..ListQuery::default() };
        ListParams::new(query, [7; 32]).unwrap()
    }

    #[test]
    fn cursors_round_trip_and_resist_tampering() {
        let first = params("-name", None);
        let cursor = Cursor { sort: "-name".into(), values: vec!["b".into()], id: "key_1".into() };
        let text = first.encode_cursor(&cursor);
        assert_eq!(params("-name", Some(text.clone())).decode_cursor().unwrap(), Some(cursor));
        assert!(params("name", Some(text.clone())).decode_cursor().is_err(), "another sort");
        let (payload, mac) = text.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sort":"-name","values":["z"],"id":"key_9"}"#);
        assert!(params("-name", Some(format!("{forged}.{mac}"))).decode_cursor().is_err());
        assert!(params("-name", Some(payload.to_string())).decode_cursor().is_err());
        let other_key = ListParams::new(
            ListQuery { sort: Some("-name".into()), cursor: Some(text), ..Default::default() },
            [8; 32],
        )
        .unwrap();
        assert!(other_key.decode_cursor().is_err());
    }

    #[test]
    fn sort_accepts_only_sortable_fields() {
        assert_eq!(params("-created_at,name", None).sort_fields(&SPEC).unwrap().len(), 2);
        assert!(params("secret", None).sort_fields(&SPEC).is_err());
        assert!(params("name,-name", None).sort_fields(&SPEC).is_err());
        assert!(ListParams::new(ListQuery { limit: Some(0), ..Default::default() }, [0; 32]).is_err());
        assert!(ListParams::new(ListQuery { limit: Some(101), ..Default::default() }, [0; 32]).is_err());
    }
}
