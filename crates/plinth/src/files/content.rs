//! A file's bytes: the presigned slot's upload, the content with ranges and validators, signed
//! links that work without a credential, and image variants cached per version.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use utoipa::{IntoParams, ToSchema};

use super::*;
use crate::app::App;
use crate::auth::Auth;
use crate::authz::files::{self as access, FileAction};
use crate::http::{ApiError, ApiResult, Data, ErrorCode, Path, Query};
use crate::scopes::required::{FILES_READ, FILES_WRITE};

/// Link lifetimes (the contract's signed URL TTL).
const TTL_DEFAULT_SECS: i64 = 3600;
const TTL_MIN_SECS: i64 = 60;
const TTL_MAX_SECS: i64 = 86_400;
/// Bytes of a presigned upload read to tell its type.
const HEAD_BYTES: usize = 64 * 1024;
/// Largest image a variant is made of.
const VARIANT_SOURCE_MAX_BYTES: i64 = 50 * 1024 * 1024;
/// Most of a presigned image read to find its sides when its header lies past the first bytes.
const HEADER_SEARCH_BYTES: u64 = 16 * 1024 * 1024;
/// The variants a path may name: the presets, and `custom`.
pub const VARIANTS: &[&str] = &["thumb", "small", "medium", "large", "custom"];
/// Named variants: their box and fit.
const PRESETS: &[(&str, u32, u32, images::Fit)] = &[
    ("thumb", 200, 200, images::Fit::Cover),
    ("small", 320, 320, images::Fit::Contain),
    ("medium", 800, 800, images::Fit::Contain),
    ("large", 1600, 1600, images::Fit::Contain),
];

fn mac(app: &App, purpose: &str, file_id: &str, version: i64, expires: i64) -> String {
    let text = format!("{purpose}\n{file_id}\n{version}\n{expires}");
    crate::secrets::hex(&crate::secrets::hmac_sha256(&app.link_key, &[text.as_bytes()]))
}

/// The signed link of a slot's upload endpoint.
pub fn upload_link(app: &App, file_id: &str, version: i64, expires: i64) -> String {
    let token = mac(app, "file-upload", file_id, version, expires);
    format!("{}/v1/files/{file_id}/upload-put?token={token}&expires={expires}&t={version}", app.public_url)
}

/// A signed link's query: `token`, `expires` (Unix seconds) and `t` (the version it is for).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// The link's signature.
    #[param(pattern = "^[0-9a-f]{64}$")]
    pub token: Option<String>,
    /// When the link stops working (Unix seconds).
    pub expires: Option<i64>,
    /// The file version the link was made for.
    pub t: Option<i64>,
    /// `true` to download (`Content-Disposition: attachment`) rather than show.
    pub download: Option<bool>,
}

impl LinkQuery {
    fn is_signed(&self) -> bool {
        self.token.is_some() || self.expires.is_some() || self.t.is_some()
    }

    /// Checks the link for `file_id` and `purpose`: the version it names, or 403.
    fn verify(&self, app: &App, purpose: &str, file_id: &str) -> ApiResult<i64> {
        let (Some(token), Some(expires), Some(version)) = (&self.token, self.expires, self.t) else {
            return Err(ApiError::forbidden("a signed link needs `token`, `expires` and `t`"));
        };
        let expected = mac(app, purpose, file_id, version, expires);
        if !crate::secrets::constant_time_eq(expected.as_bytes(), token.as_bytes()) {
            return Err(ApiError::forbidden("the link's signature does not match"));
        }
        if expires < crate::time::now().timestamp() {
            return Err(ApiError::forbidden("the link has expired"));
        }
        Ok(version)
    }
}

/// The file a read asks for, as the caller may read it: with a credential, through the
/// authorization module; with a signed link, the version it was signed for (refused once the
/// file has changed); with neither, a `public` file.
async fn readable_file(app: &App, auth: Result<Auth, ApiError>, file_id: &str, link: &LinkQuery) -> ApiResult<FileRow> {
    let mut conn = app.db.pool().acquire().await?;
    let file = if link.is_signed() {
        let version = link.verify(app, "file-read", file_id)?;
        let file = fetch_any(&mut conn, file_id).await?.ok_or_else(|| ApiError::not_found("file"))?;
        if file.version != version {
            return Err(ApiError::forbidden("the file has changed since the link was made: ask for a new one"));
        }
        file
    } else {
        match auth {
            Ok(auth) => {
                auth.require(FILES_READ)?;
                let file = fetch(&mut conn, auth.tenant()?, file_id).await?;
                access::check(app, &mut conn, &auth, file.facts(), FileAction::Read).await?;
                file
            }
            // No credential at all: public files only. A bad credential stays a 401.
            // A file that is not public is not there for a request without a credential: its
            // existence is not told either.
            Err(error) if error.message.contains("missing") => {
                let file = fetch_any(&mut conn, file_id).await?.ok_or_else(|| ApiError::not_found("file"))?;
                if file.access != "public" {
                    return Err(ApiError::not_found("file"));
                }
                file
            }
            Err(error) => return Err(error),
        }
    };
    if file.is_deleted() || file.status != "ready" {
        return Err(ApiError::not_found("file"));
    }
    Ok(file)
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` of a file of `size` bytes: the range, `None` for the
/// whole file (no header, or a form the server answers whole), or 416.
fn parse_range(headers: &HeaderMap, size: u64) -> ApiResult<Option<std::ops::Range<u64>>> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        // Several ranges: answered whole, as RFC 9110 allows.
        return Ok(None);
    }
    let unsatisfiable = || {
        let mut error = ApiError::new(ErrorCode::RangeNotSatisfiable, format!("the file has {size} bytes"));
        error.extra.insert("size_bytes".into(), serde_json::json!(size));
        error
    };
    let Some((start, end)) = spec.split_once('-') else { return Ok(None) };
    let (start, end) = (start.trim(), end.trim());
    let range = match (start.parse::<u64>(), end.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => start..end.saturating_add(1).min(size),
        (Ok(start), Err(_)) if end.is_empty() => start..size,
        (Err(_), Ok(0)) if start.is_empty() => return Err(unsatisfiable()),
        (Err(_), Ok(suffix)) if start.is_empty() => size.saturating_sub(suffix)..size,
        _ => return Ok(None),
    };
    if range.start >= size {
        return Err(unsatisfiable());
    }
    Ok(Some(range))
}

/// Whether `If-None-Match` names the entity tag.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag))
}

/// `Content-Disposition` for a filename: ASCII fallback and the UTF-8 form.
fn disposition(kind: &str, filename: &str) -> HeaderValue {
    let ascii: String = filename
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let encoded = url::form_urlencoded::byte_serialize(filename.as_bytes()).collect::<String>().replace('+', "%20");
    HeaderValue::from_str(&format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Types a browser may show inline from this origin without running anything.
fn shows_inline(mime: &str) -> bool {
    (mime.starts_with("image/") && mime != "image/svg+xml")
        || mime.starts_with("video/")
        || mime.starts_with("audio/")
        || mime == "application/pdf"
        || mime == "text/plain"
}

fn common_headers(response: &mut Response, file: &FileRow, etag: &str, mime: &str, download: bool) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    let kind = if download || !shows_inline(mime) { "attachment" } else { "inline" };
    headers.insert(header::CONTENT_DISPOSITION, disposition(kind, &file.filename));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    let cache = if file.access == "public" { "public, max-age=300" } else { "private, max-age=0, must-revalidate" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
}

/// Download file content
///
/// The file's bytes, raw (not in the envelope): `Content-Type` as read from the bytes,
/// `Content-Disposition` with its filename (`?download=true` for `attachment`), a strong `ETag`
/// (304 for a matching `If-None-Match`), and single `Range` requests (206; 416 outside the file).
/// With a credential; with a signed link's `token`, `expires` and `t` and no credential; or
/// with nothing, for a `public` file.
#[utoipa::path(get, path = "/v1/files/{file_id}/content", tag = "Files", security((), ("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id"), LinkQuery,
           ("Range" = Option<String>, Header, description = "`bytes=0-1023`"),
           ("If-None-Match" = Option<String>, Header, description = "The `ETag` of a copy the client holds")),
    responses((status = 200, content_type = "*/*", body = Vec<u8>, description = "The bytes, typed as read from them"),
              (status = 206, content_type = "*/*", body = Vec<u8>, description = "The range asked for"),
              (status = 304, description = "Not modified"),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody, description = "A link that is forged, expired or for an earlier version"),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 416, body = crate::http::error::ErrorBody, description = "A range outside the file")))]
pub async fn file_content(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    Path(file_id): Path<String>,
    Query(link): Query<LinkQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let file = readable_file(&app, auth, &file_id, &link).await?;
    let etag = format!("\"{}\"", file.sha256.clone().unwrap_or_default());
    let download = link.download.unwrap_or(false);
    if none_match(&headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        common_headers(&mut response, &file, &etag, &file.mime_type, download);
        return Ok(response);
    }
    let size = file.size_bytes.max(0) as u64;
    // `If-Range` with another tag: the whole (changed) file.
    let if_range_holds = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() == etag);
    let range = if if_range_holds {
        match parse_range(&headers, size) {
            Ok(range) => range,
            Err(error) => {
                let mut response = error.into_response();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return Ok(response);
            }
        }
    } else {
        None
    };
    let fetched = app.files.get_range(&file.storage_key, range.clone()).await?.ok_or_else(|| {
        tracing::error!(file = %file.id, "a ready file's bytes are missing from the store");
        ApiError::not_found("file")
    })?;
    let answered = fetched.range.clone();
    let mut response = Response::new(Body::from_stream(fetched.stream));
    common_headers(&mut response, &file, &etag, &file.mime_type, download);
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(answered.end - answered.start));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!("bytes {}-{}/{}", answered.start, answered.end.saturating_sub(1), fetched.size);
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// How long a signed link works.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedUrlRequest {
    /// Seconds: 60 to 86400, default 3600.
    #[schema(minimum = 60, maximum = 86400)]
    pub expires_in: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignedUrl {
    /// `GET` it without a credential until `expires_at`, while the file keeps this version.
    pub url: String,
    pub expires_at: DateTime<Utc>,
    /// Seconds the link works.
    pub ttl: i64,
}

/// Generate signed URL
///
/// A link to the file's content (and, with `/variants/{variant}` in place of `/content`, its
/// variants) that works without a credential until it expires (60 s to 24 h) and only while the
/// file keeps its current version: a re-upload ends it, and while the file is in the trash it
/// serves nothing.
#[utoipa::path(post, path = "/v1/files/{file_id}/signed-url", tag = "Files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id")),
    request_body(content = Option<SignedUrlRequest>),
    responses((status = 200, body = crate::http::response::Envelope<SignedUrl>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn create_signed_url(
    auth: Auth,
    State(app): State<App>,
    Path(file_id): Path<String>,
    body: crate::http::extract::OptionalJson<SignedUrlRequest>,
) -> ApiResult<Data<SignedUrl>> {
    auth.require(FILES_READ)?;
    let ttl = body.0.unwrap_or_default().expires_in.unwrap_or(TTL_DEFAULT_SECS);
    if !(TTL_MIN_SECS..=TTL_MAX_SECS).contains(&ttl) {
        return Err(ApiError::invalid("expires_in", format!("must be {TTL_MIN_SECS} to {TTL_MAX_SECS} seconds")));
    }
    let mut conn = app.db.pool().acquire().await?;
    let file = fetch(&mut conn, auth.tenant()?, &file_id).await?;
    access::check(&app, &mut conn, &auth, file.facts(), FileAction::Read).await?;
    if file.is_deleted() || file.status != "ready" {
        return Err(ApiError::conflict("only a ready file outside the trash has a link"));
    }
    Ok(Data(signed(&app, &file, ttl)))
}

/// A signed read link to `file`'s current version, good for `ttl` seconds.
pub fn signed(app: &App, file: &FileRow, ttl: i64) -> SignedUrl {
    let expires_at = crate::time::now() + chrono::Duration::seconds(ttl);
    let expires = expires_at.timestamp();
    let token = mac(app, "file-read", &file.id, file.version, expires);
    let url =
        format!("{}/v1/files/{}/content?token={token}&expires={expires}&t={}", app.public_url, file.id, file.version);
    SignedUrl { url, expires_at, ttl }
}

/// Upload file content to presigned slot
///
/// The raw bytes of a slot opened by `POST /v1/files/upload-url`, as the body (streamed to the
/// store, never held whole): with a credential, or with the slot's signed `upload_endpoint` and
/// none. Exactly the announced size (413 past it, 422 short of it); the type is read from the
/// bytes (422 when it contradicts the declared one). Then `POST .../upload-complete`.
#[utoipa::path(post, path = "/v1/files/{file_id}/upload-put", tag = "Files", security((), ("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id"), LinkQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The bytes"),
    responses((status = 200, body = crate::http::response::Envelope<File>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "No open slot, or it expired"),
              (status = 413, body = crate::http::error::ErrorBody, description = "More bytes than announced"),
              (status = 422, body = crate::http::error::ErrorBody, description = "Fewer bytes than announced, or of another type")))]
pub async fn upload_to_slot(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    Path(file_id): Path<String>,
    Query(link): Query<LinkQuery>,
    body: Body,
) -> ApiResult<Data<File>> {
    let mut conn = app.db.pool().acquire().await?;
    let (file, signed_version) = if link.is_signed() {
        let version = link.verify(&app, "file-upload", &file_id)?;
        (fetch_any(&mut conn, &file_id).await?.ok_or_else(|| ApiError::not_found("file"))?, Some(version))
    } else {
        let auth = auth?;
        auth.require(FILES_WRITE)?;
        let file = fetch(&mut conn, auth.tenant()?, &file_id).await?;
        access::check(&app, &mut conn, &auth, file.facts(), FileAction::Write).await?;
        (file, None)
    };
    let open: Option<(i64, String, i64, String)> = sqlx::query_as(
        "SELECT version, storage_key, size_bytes, mime_type FROM file_versions \
         WHERE file_id = $1 AND status <> 'ready' ORDER BY version DESC LIMIT 1",
    )
    .bind(&file.id)
    .fetch_optional(&mut *conn)
    .await?;
    drop(conn);
    let Some((version, key, size, declared)) = open else {
        return Err(ApiError::conflict("the file has no open upload slot"));
    };
    if signed_version.is_some_and(|v| v != version) {
        return Err(ApiError::forbidden("the link is for another upload of this file"));
    }
    let closes = file.upload_expires_at.as_deref().map(crate::time::from_db).transpose().map_err(ApiError::internal)?;
    if closes.is_none_or(|at| at < crate::time::now()) {
        return Err(ApiError::conflict("the upload slot has expired: open another with POST /v1/files/upload-url"));
    }
    // The slot is claimed while its bytes come: a second sender is refused, never mixed in.
    let claimed = sqlx::query(
        "UPDATE file_versions SET status = 'receiving' WHERE file_id = $1 AND version = $2 AND status = 'pending'",
    )
    .bind(&file.id)
    .bind(version)
    .execute(app.db.pool())
    .await?
    .rows_affected();
    if claimed == 0 {
        return Err(ApiError::conflict(
            "bytes are being sent to this slot, or were already: complete it, or open another",
        ));
    }
    let received = receive(&app, &file, version, &key, size, &declared, body).await;
    if received.is_err() {
        // Given up: the slot is open again, for the next try.
        if let Err(removal) = app.files.delete(&key).await {
            tracing::warn!(message = %removal.message, "removing refused bytes failed; the sweeper will");
        }
        sqlx::query(
            "UPDATE file_versions SET status = 'pending' WHERE file_id = $1 AND version = $2 AND status = 'receiving'",
        )
        .bind(&file.id)
        .bind(version)
        .execute(app.db.pool())
        .await?;
    }
    received
}

/// Streams a slot's bytes to the store, checks their size and type, and records them as
/// `received`.
async fn receive(
    app: &App,
    file: &FileRow,
    version: i64,
    key: &str,
    size: i64,
    declared: &str,
    body: Body,
) -> ApiResult<Data<File>> {
    let mut hasher = sha2::Sha256::new();
    let mut head = Vec::with_capacity(HEAD_BYTES.min(size as usize));
    let mut received: i64 = 0;
    let stream = body.into_data_stream();
    app.files
        .put_stream(key, stream, |chunk: &Bytes| {
            received += chunk.len() as i64;
            if received > size {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the slot was opened for {size} bytes: more came"),
                ));
            }
            hasher.update(chunk);
            if head.len() < HEAD_BYTES {
                let take = (HEAD_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            Ok(())
        })
        .await?;
    if received != size {
        return Err(ApiError::invalid("body", format!("the slot was opened for {size} bytes: {received} came")));
    }
    let complete = head.len() as i64 == received;
    let mime_type = match images::resolve_type(&head, Some(declared), complete) {
        Ok(mime) => mime,
        Err(problem) => return Err(ApiError::invalid("body", problem)),
    };
    let dimensions = if images::is_raster(&mime_type) {
        match images::dimensions(&head, &mime_type) {
            Ok(found) => found,
            // A header past the head: more of the image is read.
            Err(_) if !complete => {
                let bytes = read_head(app, key, HEADER_SEARCH_BYTES).await?;
                match images::dimensions(&bytes, &mime_type) {
                    Ok(found) => found,
                    Err(problem) => return Err(ApiError::invalid("body", problem)),
                }
            }
            Err(problem) => return Err(ApiError::invalid("body", problem)),
        }
    } else {
        None
    };
    let sha256 = crate::secrets::hex(&hasher.finalize());
    let (width, height) = dimensions.map(|(w, h)| (i64::from(w), i64::from(h))).unzip();
    let mut tx = app.db.begin_write().await?;
    sqlx::query(
        "UPDATE file_versions SET status = 'received', sha256 = $1, mime_type = $2, width = $3, height = $4 \
         WHERE file_id = $5 AND version = $6 AND status = 'receiving'",
    )
    .bind(&sha256)
    .bind(&mime_type)
    .bind(width)
    .bind(height)
    .bind(&file.id)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut shown = file.to_api()?;
    shown.sha256 = None;
    Ok(Data(shown))
}

/// A variant's parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VariantQuery {
    /// Width, 1 to 4096 px.
    #[param(minimum = 1, maximum = 4096)]
    pub w: Option<u32>,
    /// Height, 1 to 4096 px.
    #[param(minimum = 1, maximum = 4096)]
    pub h: Option<u32>,
    /// `contain` (default: within the box), `cover` (fill it, cropped) or `fill` (stretched).
    pub fit: Option<String>,
    /// `jpeg`, `png`, `webp` or `gif`; the source's when absent.
    pub format: Option<String>,
    #[param(pattern = "^[0-9a-f]{64}$")]
    pub token: Option<String>,
    pub expires: Option<i64>,
    pub t: Option<i64>,
}

impl VariantQuery {
    fn spec(&self, variant: &str, source: &str) -> ApiResult<images::Spec> {
        let preset = PRESETS.iter().find(|p| p.0 == variant);
        if preset.is_none() && variant != "custom" {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
            return Err(ApiError::invalid(
                "variant",
                format!("unknown variant `{variant}`: use {} or `custom` with `w` and/or `h`", names.join(", ")),
            ));
        }
        let side = |name: &str, side: Option<u32>| -> ApiResult<Option<u32>> {
            match side {
                Some(s) if !(1..=images::VARIANT_MAX_SIDE).contains(&s) => {
                    Err(ApiError::invalid(name, format!("must be 1 to {} px", images::VARIANT_MAX_SIDE)))
                }
                other => Ok(other),
            }
        };
        let (mut width, mut height) = (side("w", self.w)?, side("h", self.h)?);
        let mut fit = images::Fit::Contain;
        if let Some((_, w, h, preset_fit)) = preset {
            if width.is_none() && height.is_none() {
                (width, height) = (Some(*w), Some(*h));
            }
            fit = *preset_fit;
        } else if width.is_none() && height.is_none() {
            return Err(ApiError::invalid("w", "a `custom` variant needs `w`, `h` or both"));
        }
        if let Some(text) = &self.fit {
            fit = images::Fit::parse(text).ok_or_else(|| ApiError::invalid("fit", "must be contain, cover or fill"))?;
        }
        let output = match &self.format {
            Some(text) => images::Output::parse(text)
                .ok_or_else(|| ApiError::invalid("format", "must be jpeg, png, webp or gif"))?,
            None => images::Output::of(source),
        };
        Ok(images::Spec { width, height, fit, output })
    }
}

/// Get image variant
///
/// The image resized on the fly (at most 4096 px a side): a named variant (`thumb` 200x200
/// cover, `small` 320, `medium` 800, `large` 1600, within the box) or `custom` with `w`/`h`,
/// `fit` and `format`. Made from PNG, JPEG, GIF and WebP images; each rendering is cached with
/// the version it was made from (`X-Cache: hit` or `miss`), so a re-upload renews it. Raw bytes,
/// with the content's headers; readable as the content is (credential, signed link, public).
#[utoipa::path(get, path = "/v1/files/{file_id}/variants/{variant}", tag = "Files", security((), ("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id"),
           ("variant" = String, Path, description = "`thumb`, `small`, `medium`, `large` or `custom`"),
           VariantQuery),
    responses((status = 200, description = "The variant",
               content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/webp"), (Vec<u8> = "image/gif"))),
              (status = 304, description = "Not modified"),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody, description = "Not an image, a source past the limits, bad parameters")))]
pub async fn file_variant(
    auth: Result<Auth, ApiError>,
    State(app): State<App>,
    Path((file_id, variant)): Path<(String, String)>,
    Query(query): Query<VariantQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let link = LinkQuery { token: query.token.clone(), expires: query.expires, t: query.t, download: None };
    let file = readable_file(&app, auth, &file_id, &link).await?;
    if !images::is_raster(&file.mime_type) {
        return Err(ApiError::invalid("file", "variants are made of PNG, JPEG, GIF and WebP images"));
    }
    let spec = query.spec(&variant, &file.mime_type)?;
    let cached_key = format!("{}.variants/{}", file.storage_key, spec.cache_name());
    let etag = format!("\"{}-{}\"", file.sha256.clone().unwrap_or_default(), spec.cache_name());
    let mime = spec.output.mime();
    if none_match(&headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        common_headers(&mut response, &file, &etag, mime, false);
        return Ok(response);
    }
    let (bytes, hit) = match app.files.get(&cached_key).await? {
        Some(bytes) => (bytes, true),
        None => {
            if file.size_bytes > VARIANT_SOURCE_MAX_BYTES {
                return Err(ApiError::invalid("file", "variants are made of images of at most 50 MiB"));
            }
            let _turn = app.files.render_turn().await;
            let source = app.files.get(&file.storage_key).await?.ok_or_else(|| ApiError::not_found("file"))?;
            let rendered = tokio::task::spawn_blocking(move || images::render(&source, &file_mime(&source), &spec))
                .await
                .map_err(ApiError::internal)?;
            let bytes = Bytes::from(rendered.map_err(|e| match e {
                images::RenderError::Source(problem) => ApiError::invalid("file", problem),
                other => ApiError::internal(other),
            })?);
            if let Err(error) = app.files.put(&cached_key, bytes.clone()).await {
                tracing::warn!(message = %error.message, "caching a variant failed");
            }
            (bytes, false)
        }
    };
    let mut response = Response::new(Body::from(bytes));
    common_headers(&mut response, &file, &etag, mime, false);
    response.headers_mut().insert("x-cache", HeaderValue::from_static(if hit { "hit" } else { "miss" }));
    Ok(response)
}

/// The first `limit` bytes of a stored file.
async fn read_head(app: &App, key: &str, limit: u64) -> ApiResult<Vec<u8>> {
    let Some(mut fetched) = app.files.get_range(key, Some(0..limit)).await? else { return Ok(Vec::new()) };
    let mut bytes = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut fetched.stream).await {
        bytes.extend_from_slice(&chunk.map_err(|e| ApiError::internal(format!("reading a stored file: {e}")))?);
    }
    Ok(bytes)
}

/// The raster type of an image's bytes.
fn file_mime(bytes: &[u8]) -> String {
    infer::get(bytes).map(|k| k.mime_type().to_string()).unwrap_or_default()
}

/// For `/v1/ai/*`: the ready file `file_id` of the caller's tenant that the caller may read, of
/// at most `max_bytes` (checked once the caller may know of the file, before it is read).
pub async fn for_ai(app: &App, auth: &Auth, file_id: &str, max_bytes: i64) -> ApiResult<(FileRow, Bytes)> {
    let mut conn = app.db.pool().acquire().await?;
    let file =
        fetch(&mut conn, auth.tenant()?, file_id).await.map_err(|_| ApiError::invalid("file_id", "no such file"))?;
    access::check(app, &mut conn, auth, file.facts(), FileAction::Read)
        .await
        .map_err(|_| ApiError::invalid("file_id", "no such file"))?;
    if file.is_deleted() || file.status != "ready" {
        return Err(ApiError::invalid("file_id", "the file is not ready, or in the trash"));
    }
    if file.size_bytes > max_bytes {
        return Err(ApiError::invalid("file_id", format!("the image is over {} MB", max_bytes / 1024 / 1024)));
    }
    let bytes = app.files.get(&file.storage_key).await?.ok_or_else(|| ApiError::invalid("file_id", "no such file"))?;
    Ok((file, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> ApiResult<Option<std::ops::Range<u64>>> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        parse_range(&headers, size)
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(range("bytes=90-", 100).unwrap(), Some(90..100));
        assert_eq!(range("bytes=-10", 100).unwrap(), Some(90..100));
        assert_eq!(range("bytes=95-200", 100).unwrap(), Some(95..100));
        assert_eq!(range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(range("items=0-1", 100).unwrap(), None);
        assert_eq!(range("bytes=100-", 100).unwrap_err().code, ErrorCode::RangeNotSatisfiable);
        assert_eq!(range("bytes=-0", 100).unwrap_err().code, ErrorCode::RangeNotSatisfiable);
        assert_eq!(range("bytes=5-18446744073709551615", 100).unwrap(), Some(5..100));
        assert_eq!(range("bytes=-500", 100).unwrap(), Some(0..100));
    }

    #[test]
    fn a_disposition_carries_any_filename_safely() {
        let value = disposition("attachment", "résumé \"final\".pdf");
        let text = value.to_str().unwrap();
        assert!(text.starts_with("attachment; filename=\"r_sum_ _final_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20"));
    }
}
