//! `POST /v1/ai/upload` (seed 000): an image kept for a short while and answered with a signed
//! public URL that a vision provider can fetch (`GET /v1/ai/uploads/{id}?expires=&signature=`,
//! no credential). `POST /v1/ai/vision` also takes the upload's id and sends the bytes inline.
//! Expired uploads are removed by the server's upkeep.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::auth::Auth;
use crate::http::{ApiError, ApiResult, Created, ErrorCode, Path, Query};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::scopes::required::CHAT_WRITE;
use crate::time;

/// Largest image accepted (the largest any vision provider takes).
pub const UPLOAD_MAX_BYTES: usize = crate::limits::AI_UPLOAD_MAX_BYTES;
/// Link lifetimes: the default and the bounds (seed 002's signed URL TTL).
const TTL_DEFAULT_SECS: u64 = 900;
const TTL_MIN_SECS: u64 = 60;
const TTL_MAX_SECS: u64 = 86_400;
/// Expired uploads removed per upkeep round.
const PURGE_BATCH: i64 = 500;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(axum::extract::DefaultBodyLimit::max(UPLOAD_MAX_BYTES + 64 * 1024))
        .routes(routes!(download))
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

/// The image type the bytes are, from their first bytes; `None` for anything else.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn link_mac(app: &App, id: &str, expires: i64) -> [u8; 32] {
    crate::secrets::hmac_sha256(&app.link_key, &[format!("ai-upload\n{id}\n{expires}").as_bytes()])
}

fn object_path(tenant: &TenantId, id: &str) -> String {
    format!("ai-uploads/{tenant}/{id}")
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
    let base = app.public_url.clone();
    let bytes = image_of(&app, request).await?;
    if bytes.is_empty() {
        return Err(ApiError::invalid("file", "the image is empty"));
    }
    let Some(content_type) = sniff(&bytes) else {
        return Err(ApiError::invalid("file", "must be a PNG, JPEG, GIF or WebP image"));
    };
    let id = id::new_id(prefix::AI_UPLOAD);
    let sha256 = crate::secrets::sha256_hex_bytes(&bytes);
    let size_bytes = bytes.len() as u64;
    // The bytes first: a row never names a file that is not there.
    let path = object_path(&tenant, &id);
    app.files.put(&path, bytes).await?;
    let created_at = time::now();
    let expires_at = created_at + chrono::Duration::seconds(ttl as i64);
    let recorded = async {
        let mut tx = app.db.begin_write().await?;
        // The bytes count against the tenant's `storage` until the upload expires.
        crate::entitlements::consume(
            &mut tx,
            &app,
            &tenant,
            crate::entitlements::Entitlement::Storage,
            size_bytes as i64,
        )
        .await?;
        sqlx::query(
            "INSERT INTO ai_uploads (id, tenant_id, content_type, size_bytes, sha256, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(&tenant)
        .bind(content_type)
        .bind(size_bytes as i64)
        .bind(&sha256)
        .bind(time::to_db(&created_at))
        .bind(time::to_db(&expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        ApiResult::Ok(())
    }
    .await;
    if let Err(error) = recorded {
        // Refused (over the storage limit, say) or failed: no file is kept without its row.
        if let Err(removal) = app.files.delete(&path).await {
            tracing::warn!(?removal, "removing the bytes of a refused upload failed");
        }
        return Err(error);
    }
    let expires = expires_at.timestamp();
    let signature = crate::secrets::hex(&link_mac(&app, &id, expires));
    let url = format!("{base}/v1/ai/uploads/{id}?expires={expires}&signature={signature}");
    Ok(Created(Upload {
        id,
        object: "ai_upload",
        url,
        content_type: content_type.to_string(),
        size_bytes,
        sha256,
        created_at,
        expires_at,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// When the link stops working (Unix seconds), as the upload answered it.
    pub expires: i64,
    /// The link's signature, as the upload answered it.
    #[param(pattern = "^[0-9a-f]{64}$")]
    pub signature: String,
}

/// Fetch an uploaded image (signed link)
///
/// The link from `POST /v1/ai/upload`, no credential: the image's bytes until the link expires.
/// A link whose signature does not match is 403; an expired or unknown one 404.
#[utoipa::path(get, path = "/v1/ai/uploads/{upload_id}", tag = "AI",
    params(("upload_id" = String, Path, description = "The upload's id"), LinkQuery),
    responses((status = 200, content_type = "image/png", body = Vec<u8>, description = "The image"),
              (status = 403, body = crate::http::error::ErrorBody, description = "The signature does not match"),
              (status = 404, body = crate::http::error::ErrorBody, description = "Unknown or expired")))]
async fn download(
    State(app): State<App>,
    Path(upload_id): Path<String>,
    Query(link): Query<LinkQuery>,
) -> ApiResult<Response> {
    let expected = crate::secrets::hex(&link_mac(&app, &upload_id, link.expires));
    let signed = crate::secrets::constant_time_eq(expected.as_bytes(), link.signature.as_bytes());
    if !signed {
        return Err(ApiError::new(ErrorCode::Forbidden, "the link's signature does not match"));
    }
    let now = time::now();
    let gone = || ApiError::not_found("no such upload, or its link has expired");
    if link.expires < now.timestamp() {
        return Err(gone());
    }
    let row: Option<(TenantId, String, String)> =
        sqlx::query_as("SELECT tenant_id, content_type, expires_at FROM ai_uploads WHERE id = $1")
            .bind(&upload_id)
            .fetch_optional(app.db.pool())
            .await?;
    let Some((tenant, content_type, expires_at)) = row else { return Err(gone()) };
    if time::from_db(&expires_at).map_err(ApiError::internal)? < now {
        return Err(gone());
    }
    let Some(bytes) = app.files.get(&object_path(&tenant, &upload_id)).await? else { return Err(gone()) };
    let max_age = (link.expires - now.timestamp()).max(0);
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("private, max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("inline"));
    Ok(response.into_response())
}

/// An unexpired upload of `tenant` as a `data:` URL, for `POST /v1/ai/vision`.
pub async fn data_url(app: &App, tenant: &TenantId, upload_id: &str) -> ApiResult<String> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT content_type, expires_at FROM ai_uploads WHERE id = $1 AND tenant_id = $2")
            .bind(upload_id)
            .bind(tenant)
            .fetch_optional(app.db.pool())
            .await?;
    let missing = || ApiError::invalid("upload_id", "no such upload, or it has expired");
    let Some((content_type, expires_at)) = row else { return Err(missing()) };
    if time::from_db(&expires_at).map_err(ApiError::internal)? < time::now() {
        return Err(missing());
    }
    let bytes = app.files.get(&object_path(tenant, upload_id)).await?.ok_or_else(missing)?;
    Ok(format!("data:{content_type};base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes)))
}

/// Removes expired uploads, their bytes first.
pub async fn purge_expired(app: &App) -> ApiResult<u64> {
    let now = time::to_db(&time::now());
    let expired: Vec<(String, TenantId, i64)> = sqlx::query_as(
        "SELECT id, tenant_id, size_bytes FROM ai_uploads WHERE expires_at < $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(&now)
    .bind(PURGE_BATCH)
    .fetch_all(app.db.pool())
    .await?;
    let mut removed = 0;
    for (id, tenant, size_bytes) in expired {
        app.files.delete(&object_path(&tenant, &id)).await?;
        let mut tx = app.db.begin_write().await?;
        let gone =
            sqlx::query("DELETE FROM ai_uploads WHERE id = $1").bind(&id).execute(&mut *tx).await?.rows_affected();
        if gone > 0 {
            crate::entitlements::release(&mut tx, &tenant, crate::entitlements::Entitlement::Storage, size_bytes)
                .await?;
        }
        tx.commit().await?;
        removed += gone;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_known_by_their_first_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0"), Some("image/png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a..."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"<svg xmlns="), None);
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVE"), None);
        assert_eq!(sniff(b""), None);
    }
}
