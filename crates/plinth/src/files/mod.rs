//! Files (seed 002): uploads direct (multipart, at most 25 MiB) and through a presigned slot,
//! metadata, content with ranges and validators, signed links, image variants cached per
//! version, versions, trash, folders, search, batches and storage quotas. The bytes live in one
//! `object_store` store (`store`), a local folder or an S3-compatible bucket; rows say what
//! they are. Every route asks the authorization module (`authz::files`) who may do what.
//!
//! Bytes and rows: an upload first reserves its bytes (the `storage` entitlement, counted in
//! the same transaction as a `pending` row), then writes them, then marks them `ready`. A crash
//! between leaves a pending row, which the sweeper gives back after 24 hours; bytes whose row is
//! gone (a purge, a deleted tenant) are removed through the jobs engine (`purge`).

pub mod content;
pub mod images;
pub mod purge;
pub(crate) mod routes;
pub mod store;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::authz::files::FileFacts;
use crate::http::{ApiError, ApiResult};
use crate::id::TenantId;
use crate::time;

pub use routes::routes;
pub use store::Files;

/// Largest direct upload.
pub const UPLOAD_MAX_BYTES: usize = crate::limits::FILE_UPLOAD_MAX_BYTES;
/// Longest filename, in characters.
const FILENAME_MAX_CHARS: usize = 255;
/// Longest folder path, in characters.
const FOLDER_MAX_CHARS: usize = 255;
/// Largest `meta`, serialised.
const META_MAX_BYTES: usize = 16 * 1024;
/// How long a presigned slot stays open.
const SLOT_TTL_SECS: i64 = 3600;
/// Pending uploads older than this are stale: their reservation is given back.
pub const STALE_HOURS: i64 = 24;

/// Who may read a file beside the credentials that reach every file of the tenant.
pub const ACCESS_LEVELS: &[&str] = &["private", "authenticated", "public"];

/// A file's row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: String,
    pub tenant_id: String,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: i64,
    pub sha256: Option<String>,
    pub version: i64,
    pub status: String,
    pub access: String,
    pub folder: String,
    pub meta: String,
    pub object_type_id: Option<String>,
    pub object_id: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub uploaded_by: Option<String>,
    pub uploaded_by_type: String,
    pub stored_bytes: i64,
    pub storage_key: String,
    pub expected_sha256: Option<String>,
    pub upload_expires_at: Option<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

/// The columns `FileRow` reads.
pub const COLUMNS: &str = "id, tenant_id, filename, mime_type, size_bytes, sha256, version, status, access, folder, \
    meta, object_type_id, object_id, width, height, uploaded_by, uploaded_by_type, stored_bytes, storage_key, \
    expected_sha256, upload_expires_at, expires_at, created_at, updated_at, deleted_at";

impl FileRow {
    pub fn facts(&self) -> FileFacts<'_> {
        FileFacts {
            access: &self.access,
            uploaded_by: self.uploaded_by.as_deref(),
            object_type_id: self.object_type_id.as_deref(),
            object_id: self.object_id.as_deref(),
        }
    }

    pub fn tenant(&self) -> TenantId {
        TenantId::trusted(self.tenant_id.clone())
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// The file as the API shows it.
    pub fn to_api(&self) -> ApiResult<File> {
        let at = |text: &str| time::from_db(text).map_err(ApiError::internal);
        let at_opt = |text: &Option<String>| time::from_db_opt(text.clone()).map_err(ApiError::internal);
        Ok(File {
            id: self.id.clone(),
            object: "file",
            filename: self.filename.clone(),
            mime_type: self.mime_type.clone(),
            size_bytes: self.size_bytes,
            sha256: self.sha256.clone(),
            status: self.status.clone(),
            access: self.access.clone(),
            folder: self.folder.clone(),
            meta: serde_json::from_str(&self.meta).unwrap_or_default(),
            object_type_id: self.object_type_id.clone(),
            object_id: self.object_id.clone(),
            version: self.version,
            width: self.width,
            height: self.height,
            uploaded_by: self.uploaded_by.clone(),
            uploaded_by_type: self.uploaded_by_type.clone(),
            url: format!("/v1/files/{}/content", self.id),
            is_deleted: self.deleted_at.is_some(),
            created_at: at(&self.created_at)?,
            updated_at: at(&self.updated_at)?,
            deleted_at: at_opt(&self.deleted_at)?,
            expires_at: at_opt(&self.expires_at)?,
        })
    }
}

/// A file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct File {
    /// `file_...`.
    pub id: String,
    /// `file`.
    pub object: &'static str,
    pub filename: String,
    /// Read from the bytes, not taken from the client.
    pub mime_type: String,
    /// The current version's size (a pending upload's announced size).
    pub size_bytes: i64,
    /// Hex SHA-256 of the current version's bytes; `null` while pending.
    pub sha256: Option<String>,
    /// `pending` (a presigned upload not completed yet) or `ready`.
    pub status: String,
    /// `private` (keys, the uploader, and users who may read its object), `authenticated`
    /// (every signed-in user of the tenant too) or `public` (anyone with its URL).
    pub access: String,
    /// `""` for the root, else `a/b`.
    pub folder: String,
    #[schema(value_type = Object)]
    pub meta: Map<String, Value>,
    pub object_type_id: Option<String>,
    pub object_id: Option<String>,
    /// Starts at 1; each re-upload adds one and keeps the earlier bytes.
    pub version: i64,
    /// Pixels, for images.
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// The key or end user that uploaded it.
    pub uploaded_by: Option<String>,
    /// `api_key`, `token`, `tenant_jwt`, `user` or `admin`.
    pub uploaded_by_type: String,
    /// The content's path (`GET` with a credential, or a signed link without one).
    pub url: String,
    pub is_deleted: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// When it is removed by itself (images uploaded for vision providers).
    pub expires_at: Option<DateTime<Utc>>,
}

/// The file `id` of `tenant`, in the trash or not; 404 when there is none.
pub async fn fetch(conn: &mut AnyConnection, tenant: &TenantId, id: &str) -> ApiResult<FileRow> {
    let row: Option<FileRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM files WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.ok_or_else(|| ApiError::not_found("file"))
}

/// The file `id` whoever's it is (a signed link names no tenant).
pub async fn fetch_any(conn: &mut AnyConnection, id: &str) -> ApiResult<Option<FileRow>> {
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM files WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// Where a version's bytes go: under the file's own folder of the store, with a random part so
/// that a key is never reused.
pub fn storage_key(tenant: &TenantId, file_id: &str, version: i64) -> String {
    format!("files/{tenant}/{file_id}/{version}-{}", crate::secrets::random_alphanumeric(12).to_ascii_lowercase())
}

/// The folder of the store that holds every byte of a file: its versions and their variants.
pub fn file_prefix(tenant: &str, file_id: &str) -> String {
    format!("files/{tenant}/{file_id}")
}

/// A filename fit to store and to send in a header: the last part of a path, without control
/// characters, at most 255 characters; `file` when nothing is left.
pub fn sanitize_filename(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last.chars().filter(|c| !c.is_control()).take(FILENAME_MAX_CHARS).collect();
    let clean = clean.trim().trim_matches('.').trim().to_string();
    if clean.is_empty() {
        "file".into()
    } else {
        clean
    }
}

/// A folder path as stored: segments joined by `/`, no empty, `.` or `..` segment; `""` is the
/// root.
pub fn normalize_folder(folder: &str) -> Result<String, String> {
    if folder.chars().count() > FOLDER_MAX_CHARS {
        return Err(format!("at most {FOLDER_MAX_CHARS} characters"));
    }
    if folder.chars().any(|c| c.is_control() || c == '\\') {
        return Err("no control characters or backslashes".into());
    }
    let mut parts = Vec::new();
    for part in folder.split('/').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err("no `.` or `..` segments".into());
        }
        parts.push(part);
    }
    Ok(parts.join("/"))
}

pub fn check_access(access: &str) -> Result<(), String> {
    if ACCESS_LEVELS.contains(&access) {
        Ok(())
    } else {
        Err(format!("must be one of {}", ACCESS_LEVELS.join(", ")))
    }
}

/// `meta` as stored: a JSON object of at most 16 KiB.
pub fn meta_text(meta: &Value) -> Result<String, String> {
    if !meta.is_object() {
        return Err("must be a JSON object".into());
    }
    let text = meta.to_string();
    if text.len() > META_MAX_BYTES {
        return Err(format!("at most {META_MAX_BYTES} bytes of JSON"));
    }
    Ok(text)
}

/// The live object `object_id` of the type `type_ref` (id or name) in the tenant: the type's id,
/// or 422.
pub async fn resolve_link(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    type_ref: &str,
    object_id: &str,
) -> ApiResult<String> {
    let found: Option<(String,)> = sqlx::query_as(
        "SELECT o.object_type_id FROM objects o JOIN object_types t ON t.id = o.object_type_id \
         WHERE o.id = $1 AND o.tenant_id = $2 AND o.deleted_at IS NULL AND (t.id = $3 OR t.name = $3)",
    )
    .bind(object_id)
    .bind(tenant.as_str())
    .bind(type_ref)
    .fetch_optional(&mut *conn)
    .await?;
    found.map(|(id,)| id).ok_or_else(|| ApiError::invalid("object_id", "no live object of that type has this id"))
}

/// When a pending slot opened now closes.
fn slot_expiry() -> time::Timestamp {
    time::now() + chrono::Duration::seconds(SLOT_TTL_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\Users\\a\\report.pdf"), "report.pdf");
        assert_eq!(sanitize_filename("a\r\nb.txt"), "ab.txt");
        assert_eq!(sanitize_filename(".."), "file");
        assert_eq!(sanitize_filename(&"x".repeat(400)).chars().count(), 255);
    }

    #[test]
    fn folders_are_normalized_and_never_climb() {
        assert_eq!(normalize_folder("/a//b/ ").unwrap(), "a/b");
        assert_eq!(normalize_folder("").unwrap(), "");
        assert!(normalize_folder("a/../b").is_err());
        assert!(normalize_folder("a\\b").is_err());
    }
}
