//! `POST /v1/ai/upload` (seed 000): an image kept for a short while and answered with a signed
//! public URL that a vision provider can fetch (no credential). It is a file of the one file
//! store (folder `ai-uploads`, private, with an `expires_at`): the link is a file's signed link,
//! and the sweeper purges it once it expires. `POST /v1/ai/vision` also takes the upload's id and
//! sends the bytes inline.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::auth::Auth;
use crate::http::{ApiError, ApiResult, Created, ErrorCode, Query};
use crate::scopes::required::CHAT_WRITE;
use crate::time;

/// Largest image accepted (the largest any vision provider takes).
pub const UPLOAD_MAX_BYTES: usize = crate::limits::AI_UPLOAD_MAX_BYTES;
/// Link lifetimes: the default and the bounds (seed 002's signed URL TTL).
const TTL_DEFAULT_SECS: u64 = 900;
const TTL_MIN_SECS: u64 = 60;
const TTL_MAX_SECS: u64 = 86_400;
/// The folder uploads are kept in.
const FOLDER: &str = "ai-uploads";

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(axum::extract::DefaultBodyLimit::max(UPLOAD_MAX_BYTES + 64 * 1024))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// How long the link works, in seconds: 60 to 86400, 900 when absent.
    #[param(minimum = 60, maximum = 86_400)]
    pub expires_in: Option<u64>,
}

/// An uploaded image.
#[derive(Debug, Serialize, ToSchema)]
pub struct Upload {
    pub id: String,
    /// `ai_upload`.
    pub object: &'static str,
    /// The signed public link, good until `expires_at`.
    pub url: String,
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`, read from the bytes.
    pub content_type: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The image in a request: the `file` (or `image`) part of `multipart/form-data`, or the body
/// itself.
async fn image_of(app: &App, request: Request) -> ApiResult<Bytes> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let too_large = || {
        ApiError::new(ErrorCode::PayloadTooLarge, format!("an image is at most {} MB", UPLOAD_MAX_BYTES / 1024 / 1024))
    };
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(request, app)
            .await
            .map_err(|e| ApiError::bad_request(format!("the form cannot be read: {}", e.body_text())))?;
        while let Some(field) =
            form.next_field().await.map_err(|e| ApiError::bad_request(format!("the form cannot be read: {e}")))?
        {
            if matches!(field.name(), Some("file" | "image")) {
                return field.bytes().await.map_err(|e| match e.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => too_large(),
                    _ => ApiError::bad_request(format!("the form cannot be read: {e}")),
                });
            }
        }
        return Err(ApiError::invalid("file", "the form has no `file` part"));
    }
    if content_type.starts_with("image/") || content_type.starts_with("application/octet-stream") {
        return axum::body::to_bytes(request.into_body(), UPLOAD_MAX_BYTES).await.map_err(|_| too_large());
    }
    Err(ApiError::new(
        ErrorCode::UnsupportedMediaType,
        "send the image as the body (Content-Type: image/png, ...) or as the `file` part of multipart/form-data",
    ))
}

/// Upload an image for vision
///
/// A PNG, JPEG, GIF or WebP image (at most 20 MB) as the body (`Content-Type: image/...`) or as
/// the `file` part of `multipart/form-data`. The answer's `url` is a signed public link that
/// works without a credential until `expires_at` (`?expires_in=` seconds, 60 to 86400, default
/// 900), for vision providers that fetch images; `POST /v1/ai/vision` also takes the `id`.
#[utoipa::path(post, path = "/v1/ai/upload", tag = "AI", security(("bearer" = [])),
    params(UploadQuery),
    request_body(description = "The image (PNG, JPEG, GIF or WebP), or a multipart form with a `file` part",
        content((crate::http::shapes::Binary = "image/png"), (crate::http::shapes::Binary = "image/jpeg"),
                (crate::http::shapes::Binary = "image/gif"), (crate::http::shapes::Binary = "image/webp"))),
    responses((status = 201, body = crate::http::response::Envelope<Upload>),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 413, body = crate::http::error::ErrorBody, description = "Over 20 MB"),
              (status = 415, body = crate::http::error::ErrorBody, description = "Not an image body or form"),
              (status = 422, body = crate::http::error::ErrorBody, description = "Not a PNG, JPEG, GIF or WebP image")))]
async fn upload(
    auth: Auth,
    State(app): State<App>,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> ApiResult<Created<Upload>> {
    auth.require(CHAT_WRITE)?;
    let tenant = auth.tenant()?.clone();
    let ttl = query.expires_in.unwrap_or(TTL_DEFAULT_SECS);
    if !(TTL_MIN_SECS..=TTL_MAX_SECS).contains(&ttl) {
        return Err(ApiError::invalid("expires_in", format!("must be {TTL_MIN_SECS} to {TTL_MAX_SECS} seconds")));
    }
    let bytes = image_of(&app, request).await?;
    if bytes.is_empty() {
        return Err(ApiError::invalid("file", "the image is empty"));
    }
    let content_type = crate::files::images::resolve_type(&bytes, None, true).unwrap_or_default();
    if !crate::files::images::is_raster(&content_type) {
        return Err(ApiError::invalid("file", "must be a PNG, JPEG, GIF or WebP image"));
    }
    let content_type = content_type.as_str();
    let sha256 = crate::secrets::sha256_hex_bytes(&bytes);
    let size_bytes = bytes.len() as u64;
    let dimensions =
        crate::files::images::dimensions(&bytes, content_type).map_err(|m| ApiError::invalid("file", m))?;
    let expires_at = time::now() + chrono::Duration::seconds(ttl as i64);
    // The bytes count against the tenant's `storage` until the upload expires.
    let settings = crate::files::routes::Settings {
        filename: Some(format!("image.{}", content_type.trim_start_matches("image/"))),
        access: Some("private".into()),
        folder: Some(FOLDER.into()),
        ..Default::default()
    };
    let reservation = crate::files::routes::Reservation {
        file_id: None,
        size: size_bytes as i64,
        mime_type: content_type,
        settings,
        expected_sha256: None,
        expires_at: Some(expires_at),
    };
    let written = crate::files::routes::Written { sha256: sha256.clone(), mime_type: content_type.into(), dimensions };
    let file = crate::files::routes::store_whole(&app, &auth, reservation, bytes, written).await?;
    let row = {
        let mut conn = app.db.pool().acquire().await?;
        crate::files::fetch(&mut conn, &tenant, &file.id).await?
    };
    let link = crate::files::content::signed(&app, &row, ttl as i64);
    Ok(Created(Upload {
        id: file.id,
        object: "ai_upload",
        url: link.url,
        content_type: content_type.to_string(),
        size_bytes,
        sha256,
        created_at: file.created_at,
        expires_at,
    }))
}

/// An image for `POST /v1/ai/vision` as a `data:` URL: an upload (`upload_id`, any credential
/// that may call the AI routes) or any image file the caller may read (`file_id`, which needs
/// `files:read`).
pub async fn data_url(app: &App, auth: &Auth, id: &str, as_file: bool) -> ApiResult<String> {
    if as_file {
        auth.require(crate::scopes::required::FILES_READ)?;
    }
    let (file, bytes) = crate::files::content::for_ai(app, auth, id, UPLOAD_MAX_BYTES as i64).await.map_err(|e| {
        if as_file {
            e
        } else {
            ApiError::invalid("upload_id", "no such upload, or it has expired")
        }
    })?;
    if !as_file && (file.folder != FOLDER || file.expires_at.is_none()) {
        return Err(ApiError::invalid("upload_id", "no such upload, or it has expired"));
    }
    if !crate::files::images::is_raster(&file.mime_type) {
        return Err(ApiError::invalid("file_id", "must be a PNG, JPEG, GIF or WebP image"));
    }
    Ok(format!("data:{};base64,{}", file.mime_type, base64::engine::general_purpose::STANDARD.encode(&bytes)))
}
