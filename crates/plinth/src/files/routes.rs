//! The files' routes (seed 002's twenty), each through the one authorization module.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::AnyConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::*;
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::authz::files::{self as access, FileAction, FileFacts};
use crate::db::WriteTx;
use crate::deletion::{self, DeleteParams, Target, Verdict};
use crate::entitlements::{self, Entitlement};
use crate::events::{self, Event};
use crate::http::{ApiError, ApiResult, Created, Data, ErrorCode, Json, Page, Path, Query};
use crate::id::{self, prefix};
use crate::objects::sql::{Bind, Binds};
use crate::scopes::required::{FILES_DELETE, FILES_READ, FILES_WRITE};

/// Most files one batch names.
const BATCH_MAX: usize = 100;
/// Largest text field of an upload form.
const FORM_FIELD_MAX_BYTES: usize = 32 * 1024;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(upload_file))
        .layer(axum::extract::DefaultBodyLimit::max(UPLOAD_MAX_BYTES + 64 * 1024))
        .routes(routes!(open_upload_slot))
        .routes(routes!(super::content::upload_to_slot))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .routes(routes!(complete_upload))
        .routes(routes!(get_file, update_file, delete_file))
        .routes(routes!(super::content::file_content))
        .routes(routes!(super::content::create_signed_url))
        .routes(routes!(super::content::file_variant))
        .routes(routes!(file_stats))
        .routes(routes!(list_file_trash))
        .routes(routes!(restore_file))
        .routes(routes!(list_file_versions))
        .routes(routes!(list_file_folders))
        .routes(routes!(search_files))
        .routes(routes!(clean_stale_uploads))
        .routes(routes!(batch_read_files))
        .routes(routes!(batch_update_files))
        .routes(routes!(batch_delete_files))
}

/// A file's settings, as an upload or a change gives them.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    pub filename: Option<String>,
    pub access: Option<String>,
    pub folder: Option<String>,
    pub meta: Option<String>,
    /// `Some(None)` unlinks.
    pub link: Option<Option<(String, String)>>,
}

impl Settings {
    /// Checks and normalises what a client sent: 422 naming every bad field.
    pub fn parse(
        filename: Option<&str>,
        access: Option<&str>,
        folder: Option<&str>,
        meta: Option<&Value>,
        link: Option<(Option<&str>, Option<&str>)>,
    ) -> ApiResult<Settings> {
        let mut errors = crate::http::error::FieldErrors::default();
        let mut settings = Settings { filename: filename.map(sanitize_filename), ..Settings::default() };
        if let Some(access) = access {
            match check_access(access) {
                Ok(()) => settings.access = Some(access.to_string()),
                Err(problem) => errors.add("access", problem),
            }
        }
        if let Some(folder) = folder {
            match normalize_folder(folder) {
                Ok(folder) => settings.folder = Some(folder),
                Err(problem) => errors.add("folder", problem),
            }
        }
        if let Some(meta) = meta {
            match meta_text(meta) {
                Ok(text) => settings.meta = Some(text),
                Err(problem) => errors.add("meta", problem),
            }
        }
        match link {
            None => {}
            Some((None, None)) => settings.link = Some(None),
            Some((Some(t), Some(o))) if !t.is_empty() && !o.is_empty() => {
                settings.link = Some(Some((t.to_string(), o.to_string())))
            }
            Some(_) => errors.add("object_id", "`object_type_id` and `object_id` go together: give both or neither"),
        }
        errors.finish()?;
        Ok(settings)
    }

    /// The link as stored: the type's id and the object's id, checked to be a live object the
    /// caller may change (an end user) or that exists (a key).
    async fn resolve_link(
        &self,
        app: &App,
        conn: &mut AnyConnection,
        auth: &Auth,
    ) -> ApiResult<Option<Option<(String, String)>>> {
        let Some(link) = &self.link else { return Ok(None) };
        let Some((type_ref, object_id)) = link else { return Ok(Some(None)) };
        let tenant = auth.tenant()?;
        let type_id = super::resolve_link(conn, tenant, type_ref, object_id).await?;
        let facts = FileFacts {
            access: "private",
            uploaded_by: None,
            object_type_id: Some(&type_id),
            object_id: Some(object_id),
        };
        access::check(app, conn, auth, facts, FileAction::Write).await.map_err(|e| match e.code {
            ErrorCode::NotFound => ApiError::invalid("object_id", "no live object of that type has this id"),
            _ => ApiError::forbidden("your roles and policies do not let you attach files to this object"),
        })?;
        Ok(Some(Some((type_id, object_id.clone()))))
    }
}

/// What an upload reserved: a pending version (of a new file or of an existing one).
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub file_id: String,
    pub version: i64,
    pub key: String,
    pub size: i64,
    pub new_file: bool,
}

/// An upload to reserve.
pub(crate) struct Reservation<'a> {
    /// The file a new version is for; a new file when `None`.
    pub file_id: Option<&'a str>,
    pub size: i64,
    pub mime_type: &'a str,
    pub settings: Settings,
    pub expected_sha256: Option<String>,
    pub expires_at: Option<crate::time::Timestamp>,
}

/// Reserves an upload, in its own transaction: the bytes counted against `storage` (403
/// `FEATURE_LIMIT_REACHED` past the limit, whatever other uploads race), and a pending version
/// (with its file, for a new one). Nothing is written to the store yet.
pub(crate) async fn reserve(app: &App, auth: &Auth, reservation: Reservation<'_>) -> ApiResult<Slot> {
    let tenant = auth.tenant()?.clone();
    let who = Who::from(auth);
    let now = crate::time::now();
    let mut tx = app.db.begin_write().await?;
    let link = reservation.settings.resolve_link(app, &mut tx, auth).await?;
    let slot = match reservation.file_id {
        None => {
            let file_id = id::new_id(prefix::FILE);
            let key = storage_key(&tenant, &file_id, 1);
            let (type_id, object_id) = link.flatten().unzip();
            entitlements::consume(&mut tx, app, &tenant, Entitlement::Storage, reservation.size).await?;
            let settings = &reservation.settings;
            sqlx::query(
                "INSERT INTO files (id, tenant_id, filename, mime_type, size_bytes, sha256, version, status, access, \
                 folder, meta, object_type_id, object_id, uploaded_by, uploaded_by_type, stored_bytes, storage_key, \
                 expected_sha256, upload_expires_at, expires_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, NULL, 1, 'pending', $6, $7, $8, $9, $10, $11, $12, $5, $13, $14, $15, $16, $17, $17)",
            )
            .bind(&file_id)
            .bind(tenant.as_str())
            .bind(settings.filename.clone().unwrap_or_else(|| "file".into()))
            .bind(reservation.mime_type)
            .bind(reservation.size)
            .bind(settings.access.clone().unwrap_or_else(|| "private".into()))
            .bind(settings.folder.clone().unwrap_or_default())
            .bind(settings.meta.clone().unwrap_or_else(|| "{}".into()))
            .bind(type_id)
            .bind(object_id)
            .bind(who.actor_id.clone())
            .bind(who.actor_type)
            .bind(&key)
            .bind(reservation.expected_sha256.clone())
            .bind(crate::time::to_db(&slot_expiry()))
            .bind(reservation.expires_at.map(|at| crate::time::to_db(&at)))
            .bind(crate::time::to_db(&now))
            .execute(&mut *tx)
            .await?;
            Slot { file_id, version: 1, key, size: reservation.size, new_file: true }
        }
        Some(file_id) => {
            crate::db::lock_row(&mut tx, app.db.backend(), "files", file_id, true).await?;
            let file = fetch(&mut tx, &tenant, file_id).await?;
            access::check(app, &mut tx, auth, file.facts(), FileAction::Write).await?;
            if file.is_deleted() {
                return Err(ApiError::conflict("the file is in the trash: restore it first"));
            }
            if file.status != "ready" {
                return Err(ApiError::conflict("the file's first upload is not complete yet"));
            }
            // One upload of a file at a time: an open slot is refused; one whose hour ran out is
            // given back first.
            let open: Vec<(i64, i64, String)> = sqlx::query_as(
                "SELECT version, size_bytes, storage_key FROM file_versions WHERE file_id = $1 AND status <> 'ready'",
            )
            .bind(file_id)
            .fetch_all(&mut *tx)
            .await?;
            if !open.is_empty() {
                let closes = file.upload_expires_at.as_deref().map(crate::time::from_db).transpose();
                let closes = closes.map_err(ApiError::internal)?;
                if closes.is_some_and(|at| at > now) {
                    return Err(ApiError::conflict(
                        "an upload of this file is under way: complete it, or wait until its slot closes",
                    ));
                }
                for (version, size, key) in open {
                    super::purge::drop_pending_version(&mut tx, &tenant, file_id, version, size, &key).await?;
                }
            }
            let (last,): (i64,) = sqlx::query_as("SELECT MAX(version) FROM file_versions WHERE file_id = $1")
                .bind(file_id)
                .fetch_one(&mut *tx)
                .await?;
            let version = last + 1;
            let key = storage_key(&tenant, file_id, version);
            entitlements::consume(&mut tx, app, &tenant, Entitlement::Storage, reservation.size).await?;
            sqlx::query(
                "UPDATE files SET stored_bytes = stored_bytes + $1, expected_sha256 = $2, upload_expires_at = $3 \
                 WHERE id = $4",
            )
            .bind(reservation.size)
            .bind(reservation.expected_sha256.clone())
            .bind(crate::time::to_db(&slot_expiry()))
            .bind(file_id)
            .execute(&mut *tx)
            .await?;
            Slot { file_id: file_id.to_string(), version, key, size: reservation.size, new_file: false }
        }
    };
    let filename = match &reservation.settings.filename {
        Some(name) => name.clone(),
        None => fetch(&mut tx, &tenant, &slot.file_id).await?.filename,
    };
    sqlx::query(
        "INSERT INTO file_versions (file_id, version, filename, mime_type, size_bytes, sha256, status, storage_key, \
         created_by, created_at) VALUES ($1, $2, $3, $4, $5, NULL, 'pending', $6, $7, $8)",
    )
    .bind(&slot.file_id)
    .bind(slot.version)
    .bind(filename)
    .bind(reservation.mime_type)
    .bind(slot.size)
    .bind(&slot.key)
    .bind(who.actor_id.clone())
    .bind(crate::time::to_db(&now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(slot)
}

/// Gives a reservation back when its bytes could not be written or were refused: the pending
/// version (and a new file) gone, the bytes uncounted, whatever was written removed.
pub(crate) async fn unreserve(app: &App, tenant: &TenantId, slot: &Slot) {
    let released = async {
        let mut tx = app.db.begin_write().await?;
        let gone = sqlx::query("DELETE FROM file_versions WHERE file_id = $1 AND version = $2 AND status <> 'ready'")
            .bind(&slot.file_id)
            .bind(slot.version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone > 0 {
            // A file in the trash gave its bytes, this reservation's too, back already.
            let live: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM files WHERE id = $1 AND deleted_at IS NULL")
                .bind(&slot.file_id)
                .fetch_optional(&mut *tx)
                .await?;
            if slot.new_file {
                sqlx::query("DELETE FROM files WHERE id = $1 AND status = 'pending'")
                    .bind(&slot.file_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query("UPDATE files SET stored_bytes = stored_bytes - $1 WHERE id = $2")
                    .bind(slot.size)
                    .bind(&slot.file_id)
                    .execute(&mut *tx)
                    .await?;
            }
            if live.is_some() {
                entitlements::release(&mut tx, tenant, Entitlement::Storage, slot.size).await?;
            }
        }
        tx.commit().await?;
        ApiResult::Ok(())
    }
    .await;
    if let Err(error) = released {
        tracing::warn!(message = %error.message, "giving back a refused upload's reservation failed; the sweeper will");
    }
    if let Err(error) = app.files.delete(&slot.key).await {
        tracing::warn!(message = %error.message, "removing a refused upload's bytes failed; the sweeper will");
    }
}

/// What was written for a slot.
pub(crate) struct Written {
    pub sha256: String,
    pub mime_type: String,
    pub dimensions: Option<(u32, u32)>,
}

/// Makes a slot's written bytes the file's current version (`ready`), and tells the world
/// (`file.uploaded`).
pub(crate) async fn finish(
    app: &App,
    auth_tenant: &TenantId,
    who: &Who,
    slot: &Slot,
    written: &Written,
) -> ApiResult<File> {
    let now = crate::time::to_db(&crate::time::now());
    let (width, height) = written.dimensions.map(|(w, h)| (i64::from(w), i64::from(h))).unzip();
    let mut tx = app.db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE file_versions SET status = 'ready', sha256 = $1, mime_type = $2, width = $3, height = $4 \
         WHERE file_id = $5 AND version = $6 AND status <> 'ready'",
    )
    .bind(&written.sha256)
    .bind(&written.mime_type)
    .bind(width)
    .bind(height)
    .bind(&slot.file_id)
    .bind(slot.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(ApiError::conflict("the upload was given up meanwhile: upload again"));
    }
    let moved = sqlx::query(
        "UPDATE files SET status = 'ready', version = $1, filename = (SELECT filename FROM file_versions \
         WHERE file_id = $2 AND version = $1), mime_type = $3, size_bytes = $4, sha256 = $5, width = $6, height = $7, \
         storage_key = $8, expected_sha256 = NULL, upload_expires_at = NULL, updated_at = $9 \
         WHERE id = $2 AND (version < $1 OR status = 'pending')",
    )
    .bind(slot.version)
    .bind(&slot.file_id)
    .bind(&written.mime_type)
    .bind(slot.size)
    .bind(&written.sha256)
    .bind(width)
    .bind(height)
    .bind(&slot.key)
    .bind(&now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        return Err(ApiError::conflict("a newer version of the file is current: upload again"));
    }
    let file = fetch(&mut tx, auth_tenant, &slot.file_id).await?.to_api()?;
    record(&mut tx, auth_tenant, who, "file.uploaded", &file, json!({ "version": file.version })).await?;
    tx.commit().await?;
    Ok(file)
}

/// Records a file's event (webhooks, realtime) and its audit entry, in the writing transaction.
pub(crate) async fn record(
    tx: &mut WriteTx,
    tenant: &TenantId,
    who: &Who,
    kind: &str,
    file: &File,
    extra: Value,
) -> ApiResult<()> {
    let mut data = json!({ "file": file, "folder": file.folder });
    if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), &extra) {
        data.extend(extra.clone());
    }
    events::record(tx, tenant, Event { kind, resource_type: "file", resource_id: &file.id, data }).await?;
    let entry = Entry { action: kind, resource_type: "file", resource_id: &file.id, changes: extra };
    audit::defer(tx, who, Some(tenant), entry);
    Ok(())
}

/// An upload form's fields.
#[derive(Default)]
struct Form {
    bytes: Option<Bytes>,
    part_filename: Option<String>,
    part_type: Option<String>,
    fields: Map<String, Value>,
}

async fn read_form(app: &App, request: Request) -> ApiResult<Form> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the file as the `file` part of multipart/form-data (larger files: POST /v1/files/upload-url)",
        ));
    }
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("a direct upload is at most {} MiB: use POST /v1/files/upload-url", UPLOAD_MAX_BYTES / 1024 / 1024),
        )
    };
    let unreadable = |e: String| ApiError::bad_request(format!("the form cannot be read: {e}"));
    let mut multipart = Multipart::from_request(request, app).await.map_err(|e| unreadable(e.body_text()))?;
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(|e| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        _ => unreadable(e.to_string()),
    })? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            if form.bytes.is_some() {
                return Err(ApiError::invalid("file", "one file an upload: the form has two `file` parts"));
            }
            form.part_filename = field.file_name().map(str::to_owned);
            form.part_type = field.content_type().map(str::to_owned);
            let bytes = field.bytes().await.map_err(|e| match e.status() {
                axum::http::StatusCode::PAYLOAD_TOO_LARGE => too_large(),
                _ => unreadable(e.to_string()),
            })?;
            if bytes.len() > UPLOAD_MAX_BYTES {
                return Err(too_large());
            }
            form.bytes = Some(bytes);
            continue;
        }
        let text = field.bytes().await.map_err(|e| unreadable(e.to_string()))?;
        if text.len() > FORM_FIELD_MAX_BYTES {
            return Err(ApiError::invalid(&name, format!("a form field is at most {FORM_FIELD_MAX_BYTES} bytes")));
        }
        let text = String::from_utf8(text.to_vec()).map_err(|_| ApiError::invalid(&name, "must be UTF-8 text"))?;
        // A form's way of leaving a field out: empty, or JSON's `null`.
        if text.is_empty() || text == "null" {
            continue;
        }
        let value = if name == "meta" {
            serde_json::from_str(&text).map_err(|_| ApiError::invalid("meta", "must be a JSON object"))?
        } else {
            Value::String(text)
        };
        form.fields.insert(name, value);
    }
    Ok(form)
}

/// The multipart form of a direct upload.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file, at most 25 MiB. Its type is read from its bytes; a part `Content-Type` that
    /// disagrees is 422.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Defaults to the part's filename.
    filename: Option<String>,
    /// The type the client declares (else the part's `Content-Type`): checked against the bytes.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")]
    mime_type: Option<String>,
    /// `private` (default), `authenticated` or `public`.
    #[schema(pattern = "^(private|authenticated|public)$")]
    access: Option<String>,
    /// `a/b`; the root when absent.
    #[schema(max_length = 255, pattern = r"^[^\\\u0000-\u001F\u007F-\u009F]*$")]
    folder: Option<String>,
    /// A JSON object, at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    meta: Option<String>,
    object_type_id: Option<String>,
    object_id: Option<String>,
    /// Upload a new version of this file (the earlier bytes are kept).
    file_id: Option<String>,
}

/// Upload a file
///
/// A `multipart/form-data` body with the `file` part (at most 25 MiB; larger files go through
/// `POST /v1/files/upload-url`) and optional `filename`, `mime_type`, `access`, `folder`, `meta`
/// (JSON), `object_type_id` with `object_id`, and `file_id` to upload a new version of an
/// existing file. The type is read from the bytes. The size counts against the tenant's
/// `storage` (403 `FEATURE_LIMIT_REACHED` past it). Emits `file.uploaded`.
#[utoipa::path(post, path = "/v1/files/upload", tag = "Files", security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, body = crate::http::response::Envelope<File>),
              (status = 403, body = crate::http::error::ErrorBody, description = "`FEATURE_LIMIT_REACHED`: over the storage quota"),
              (status = 413, body = crate::http::error::ErrorBody, description = "Over 25 MiB"),
              (status = 415, body = crate::http::error::ErrorBody, description = "Not a multipart form"),
              (status = 422, body = crate::http::error::ErrorBody, description = "Bytes that contradict the declared type, an image past the limits, a bad field")))]
async fn upload_file(auth: Auth, State(app): State<App>, request: Request) -> ApiResult<Created<File>> {
    auth.require(FILES_WRITE)?;
    auth.tenant()?;
    let form = read_form(&app, request).await?;
    let Some(bytes) = form.bytes else { return Err(ApiError::invalid("file", "the form has no `file` part")) };
    if bytes.is_empty() {
        return Err(ApiError::invalid("file", "the file is empty"));
    }
    let text = |name: &str| form.fields.get(name).and_then(Value::as_str).map(str::to_owned);
    if text("mime_type").is_some_and(|m| !images::is_media_type(&m)) {
        return Err(ApiError::invalid("mime_type", "must be a media type such as `video/mp4`"));
    }
    let declared = text("mime_type").or(form.part_type.clone());
    let mime_type =
        images::resolve_type(&bytes, declared.as_deref(), true).map_err(|m| ApiError::invalid("file", m))?;
    let dimensions = images::dimensions(&bytes, &mime_type).map_err(|m| ApiError::invalid("file", m))?;
    let filename = text("filename").or(form.part_filename.clone());
    let link = match (text("object_type_id"), text("object_id")) {
        (None, None) => None,
        (t, o) => Some((t, o)),
    };
    let settings = Settings::parse(
        filename.as_deref(),
        text("access").as_deref(),
        text("folder").as_deref(),
        form.fields.get("meta"),
        link.as_ref().map(|(t, o)| (t.as_deref(), o.as_deref())),
    )?;
    let file_id = text("file_id");
    let settings =
        if file_id.is_some() { Settings { filename: settings.filename, ..Settings::default() } } else { settings };
    let sha256 = crate::secrets::sha256_hex_bytes(&bytes);
    let size = bytes.len() as i64;
    let reservation = Reservation {
        file_id: file_id.as_deref(),
        size,
        mime_type: &mime_type,
        settings,
        expected_sha256: None,
        expires_at: None,
    };
    let file =
        store_whole(&app, &auth, reservation, bytes, Written { sha256, mime_type: mime_type.clone(), dimensions })
            .await?;
    Ok(Created(file))
}

/// Reserves, writes and finishes an upload whose bytes are at hand.
pub(crate) async fn store_whole(
    app: &App,
    auth: &Auth,
    reservation: Reservation<'_>,
    bytes: Bytes,
    written: Written,
) -> ApiResult<File> {
    let tenant = auth.tenant()?.clone();
    let slot = reserve(app, auth, reservation).await?;
    if let Err(error) = app.files.put(&slot.key, bytes).await {
        unreserve(app, &tenant, &slot).await;
        return Err(error);
    }
    match finish(app, &tenant, &Who::from(auth), &slot, &written).await {
        Ok(file) => Ok(file),
        Err(error) => {
            unreserve(app, &tenant, &slot).await;
            Err(error)
        }
    }
}

/// A slot for a presigned upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadUrl {
    #[schema(min_length = 1, max_length = 255)]
    pub filename: String,
    /// The type the client declares, checked against the bytes when they come.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")]
    pub mime_type: Option<String>,
    /// The exact size of the bytes to come: 1 byte to 5 GiB, within the storage quota.
    #[schema(minimum = 1, maximum = 5_368_709_120_i64)]
    pub size_bytes: i64,
    /// Hex SHA-256 the bytes must have (checked at completion).
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: Option<String>,
    /// `private` (default), `authenticated` or `public`.
    #[schema(pattern = "^(private|authenticated|public)$")]
    pub access: Option<String>,
    /// `a/b`; the root when absent.
    #[schema(max_length = 255, pattern = r"^[^\\\u0000-\u001F\u007F-\u009F]*$")]
    pub folder: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    pub object_type_id: Option<String>,
    pub object_id: Option<String>,
    /// Upload a new version of this file.
    pub file_id: Option<String>,
}

/// An open upload slot.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadSlot {
    pub file_id: String,
    /// The version the bytes become.
    pub version: i64,
    /// Where the bytes are kept in the file store.
    pub storage_key: String,
    /// `POST` the raw bytes here, with a credential or without (the link is signed); then
    /// `POST /v1/files/{file_id}/upload-complete`.
    pub upload_endpoint: String,
    pub expires_at: DateTime<Utc>,
}

/// Get a presigned upload URL
///
/// Reserves `size_bytes` against the tenant's `storage` (403 `FEATURE_LIMIT_REACHED` past it)
/// and opens a slot for one hour: `POST` the raw bytes to `upload_endpoint` (no credential
/// needed: the link is signed), then `POST /v1/files/{file_id}/upload-complete`. The file is
/// `pending` until then; a slot never completed is given back after 24 hours.
#[utoipa::path(post, path = "/v1/files/upload-url", tag = "Files", security(("bearer" = [])),
    request_body = UploadUrl,
    responses((status = 201, body = crate::http::response::Envelope<UploadSlot>),
              (status = 403, body = crate::http::error::ErrorBody, description = "`FEATURE_LIMIT_REACHED`"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn open_upload_slot(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<UploadUrl>,
) -> ApiResult<Created<UploadSlot>> {
    auth.require(FILES_WRITE)?;
    if !(1..=crate::limits::FILE_PRESIGNED_MAX_BYTES).contains(&body.size_bytes) {
        return Err(ApiError::invalid(
            "size_bytes",
            format!("must be 1 to {} bytes", crate::limits::FILE_PRESIGNED_MAX_BYTES),
        ));
    }
    if body.filename.trim().is_empty() || body.filename.chars().count() > 255 {
        return Err(ApiError::invalid("filename", "must be 1 to 255 characters"));
    }
    if let Some(sha) = &body.sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::invalid("sha256", "must be 64 hex digits"));
        }
    }
    if body.mime_type.as_deref().is_some_and(|m| !images::is_media_type(m)) {
        return Err(ApiError::invalid("mime_type", "must be a media type such as `video/mp4`"));
    }
    let declared = body.mime_type.as_deref().map(images::canonical);
    let link = match (&body.object_type_id, &body.object_id) {
        (None, None) => None,
        (t, o) => Some((t.as_deref(), o.as_deref())),
    };
    let settings = if body.file_id.is_some() {
        Settings::parse(Some(&body.filename), None, None, None, None)?
    } else {
        Settings::parse(Some(&body.filename), body.access.as_deref(), body.folder.as_deref(), body.meta.as_ref(), link)?
    };
    let mime_type = declared.unwrap_or_else(|| "application/octet-stream".into());
    let reservation = Reservation {
        file_id: body.file_id.as_deref(),
        size: body.size_bytes,
        mime_type: &mime_type,
        settings,
        expected_sha256: body.sha256.map(|s| s.to_ascii_lowercase()),
        expires_at: None,
    };
    let slot = reserve(&app, &auth, reservation).await?;
    let expires_at = slot_expiry();
    let endpoint = super::content::upload_link(&app, &slot.file_id, slot.version, expires_at.timestamp());
    Ok(Created(UploadSlot {
        file_id: slot.file_id,
        version: slot.version,
        storage_key: slot.key,
        upload_endpoint: endpoint,
        expires_at,
    }))
}

/// The newest version of a file that is not ready: a slot, open or filled.
#[derive(Debug, sqlx::FromRow)]
struct OpenVersion {
    version: i64,
    status: String,
    sha256: Option<String>,
    storage_key: String,
    size_bytes: i64,
    mime_type: String,
    width: Option<i64>,
    height: Option<i64>,
}

/// A completion's checks.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadComplete {
    /// Hex SHA-256 the bytes must have, when the slot was opened without one.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: Option<String>,
}

/// Confirm presigned upload
///
/// Makes the bytes sent to the slot the file's current version: `pending` becomes `ready` (or
/// the version is added) and `file.uploaded` is emitted. 409 when no bytes came yet; 422 when
/// their checksum is not the one announced.
#[utoipa::path(post, path = "/v1/files/{file_id}/upload-complete", tag = "Files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id")),
    request_body(content = Option<UploadComplete>),
    responses((status = 200, body = crate::http::response::Envelope<File>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "No bytes uploaded to the slot"),
              (status = 422, body = crate::http::error::ErrorBody, description = "The checksum differs")))]
async fn complete_upload(
    auth: Auth,
    State(app): State<App>,
    Path(file_id): Path<String>,
    body: crate::http::extract::OptionalJson<UploadComplete>,
) -> ApiResult<Data<File>> {
    auth.require(FILES_WRITE)?;
    let tenant = auth.tenant()?.clone();
    let body = body.0.unwrap_or_default();
    let mut conn = app.db.pool().acquire().await?;
    let file = fetch(&mut conn, &tenant, &file_id).await?;
    access::check(&app, &mut conn, &auth, file.facts(), FileAction::Write).await?;
    let pending: Option<OpenVersion> = sqlx::query_as(
        "SELECT version, status, sha256, storage_key, size_bytes, mime_type, width, height FROM file_versions \
         WHERE file_id = $1 AND status <> 'ready' ORDER BY version DESC LIMIT 1",
    )
    .bind(&file_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(open) = pending else {
        return Err(ApiError::conflict("the file has no open upload"));
    };
    let (Some(sha256), "received") = (open.sha256, open.status.as_str()) else {
        return Err(ApiError::conflict("no bytes were uploaded to the slot yet: POST them to its upload endpoint"));
    };
    // The checksum announced with the slot and the one given now must both hold.
    for expected in [file.expected_sha256.clone(), body.sha256.map(|s| s.to_ascii_lowercase())].into_iter().flatten() {
        if expected != sha256 {
            return Err(ApiError::invalid(
                "sha256",
                format!("the uploaded bytes have SHA-256 {sha256}, not {expected}: upload them again"),
            ));
        }
    }
    drop(conn);
    let version = open.version;
    let slot = Slot {
        file_id: file_id.clone(),
        version,
        key: open.storage_key,
        size: open.size_bytes,
        new_file: version == 1,
    };
    let dimensions = open.width.zip(open.height).map(|(w, h)| (w as u32, h as u32));
    let written = Written { sha256, mime_type: open.mime_type, dimensions };
    Ok(Data(finish(&app, &tenant, &Who::from(&auth), &slot, &written).await?))
}

/// The file `file_id` of the caller's tenant as the caller may `action` it.
async fn reach(
    app: &App,
    conn: &mut AnyConnection,
    auth: &Auth,
    file_id: &str,
    action: FileAction,
) -> ApiResult<FileRow> {
    let file = fetch(conn, auth.tenant()?, file_id).await?;
    access::check(app, conn, auth, file.facts(), action).await?;
    Ok(file)
}

/// Get file metadata
///
/// Files in the trash are returned too, with `is_deleted: true`.
#[utoipa::path(get, path = "/v1/files/{file_id}", tag = "Files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id")),
    responses((status = 200, body = crate::http::response::Envelope<File>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_file(auth: Auth, State(app): State<App>, Path(file_id): Path<String>) -> ApiResult<Data<File>> {
    auth.require(FILES_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(Data(reach(&app, &mut conn, &auth, &file_id, FileAction::Read).await?.to_api()?))
}

/// Changes to a file's metadata.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFile {
    #[schema(min_length = 1, max_length = 255)]
    pub filename: Option<String>,
    /// `private`, `authenticated` or `public`.
    #[schema(pattern = "^(private|authenticated|public)$")]
    pub access: Option<String>,
    #[schema(max_length = 255, pattern = r"^[^\\\u0000-\u001F\u007F-\u009F]*$")]
    pub folder: Option<String>,
    /// Replaces the file's `meta`.
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    /// With `object_id`: link the file to that object; both `null` unlink it.
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<String>)]
    pub object_type_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<String>)]
    pub object_id: Option<Option<String>>,
}

impl UpdateFile {
    fn settings(&self) -> ApiResult<Settings> {
        if self.filename.as_deref().is_some_and(|f| f.trim().is_empty()) {
            return Err(ApiError::invalid("filename", "must not be empty"));
        }
        let link = match (&self.object_type_id, &self.object_id) {
            (None, None) => None,
            (Some(t), Some(o)) => Some((t.as_deref(), o.as_deref())),
            _ => return Err(ApiError::invalid("object_id", "`object_type_id` and `object_id` change together")),
        };
        Settings::parse(
            self.filename.as_deref(),
            self.access.as_deref(),
            self.folder.as_deref(),
            self.meta.as_ref(),
            link,
        )
    }
}

/// Applies `settings` to `file` in the writing transaction, and records `file.updated` with the
/// names of the fields that changed; nothing when nothing changes.
async fn apply(
    tx: &mut WriteTx,
    auth: &Auth,
    file: &FileRow,
    settings: &Settings,
    link: Option<Option<(String, String)>>,
) -> ApiResult<(File, bool)> {
    let tenant = auth.tenant()?;
    let mut changed = Vec::new();
    let filename = settings.filename.clone().unwrap_or_else(|| file.filename.clone());
    let access = settings.access.clone().unwrap_or_else(|| file.access.clone());
    let folder = settings.folder.clone().unwrap_or_else(|| file.folder.clone());
    let meta = settings.meta.clone().unwrap_or_else(|| file.meta.clone());
    let (type_id, object_id) = match link {
        Some(link) => link.unzip(),
        None => (file.object_type_id.clone(), file.object_id.clone()),
    };
    for (name, differs) in [
        ("filename", filename != file.filename),
        ("access", access != file.access),
        ("folder", folder != file.folder),
        ("meta", serde_json::from_str::<Value>(&meta).ok() != serde_json::from_str::<Value>(&file.meta).ok()),
        ("object_id", type_id != file.object_type_id || object_id != file.object_id),
    ] {
        if differs {
            changed.push(name);
        }
    }
    if changed.is_empty() {
        return Ok((file.to_api()?, false));
    }
    sqlx::query(
        "UPDATE files SET filename = $1, access = $2, folder = $3, meta = $4, object_type_id = $5, object_id = $6, \
         updated_at = $7 WHERE id = $8",
    )
    .bind(&filename)
    .bind(&access)
    .bind(&folder)
    .bind(&meta)
    .bind(type_id)
    .bind(object_id)
    .bind(crate::time::to_db(&crate::time::now()))
    .bind(&file.id)
    .execute(&mut **tx)
    .await?;
    let updated = fetch(tx, tenant, &file.id).await?.to_api()?;
    record(tx, tenant, &Who::from(auth), "file.updated", &updated, json!({ "changed": changed })).await?;
    Ok((updated, true))
}

/// Update file metadata
///
/// Changes `filename`, `access`, `folder`, `meta` or the linked object (`object_type_id` with
/// `object_id`; both `null` unlink). Emits `file.updated` with the fields that changed.
#[utoipa::path(patch, path = "/v1/files/{file_id}", tag = "Files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id")),
    request_body = UpdateFile,
    responses((status = 200, body = crate::http::response::Envelope<File>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_file(
    auth: Auth,
    State(app): State<App>,
    Path(file_id): Path<String>,
    Json(body): Json<UpdateFile>,
) -> ApiResult<Data<File>> {
    auth.require(FILES_WRITE)?;
    let settings = body.settings()?;
    let mut tx = app.db.begin_write().await?;
    crate::db::lock_row(&mut tx, app.db.backend(), "files", &file_id, true).await?;
    let file = reach(&app, &mut tx, &auth, &file_id, FileAction::Write).await?;
    let link = settings.resolve_link(&app, &mut tx, &auth).await?;
    let (updated, _) = apply(&mut tx, &auth, &file, &settings, link).await?;
    tx.commit().await?;
    Ok(Data(updated))
}

/// Moves a file to the trash (its bytes no longer counted against `storage`) and records
/// `file.deleted`; nothing when it is there already.
async fn trash_one(tx: &mut WriteTx, auth: &Auth, file: &FileRow) -> ApiResult<()> {
    if file.is_deleted() {
        return Ok(());
    }
    let tenant = auth.tenant()?;
    let now = crate::time::to_db(&crate::time::now());
    let moved = sqlx::query("UPDATE files SET deleted_at = $1, updated_at = $1 WHERE id = $2 AND deleted_at IS NULL")
        .bind(&now)
        .bind(&file.id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if moved == 0 {
        return Ok(());
    }
    // The trash does not count against `storage`; a restore counts the bytes again.
    entitlements::release(tx, tenant, Entitlement::Storage, file.stored_bytes).await?;
    let trashed = fetch(tx, tenant, &file.id).await?.to_api()?;
    record(tx, tenant, &Who::from(auth), "file.deleted", &trashed, json!({ "purged": false })).await
}

/// Delete file
///
/// Moves the file to the trash (restorable for the retention period, 30 days by default; its
/// bytes no longer count against `storage`; restoring counts them again, 403 `FEATURE_LIMIT_REACHED`
/// when they no longer fit). `?force=true` purges it: its row goes now and its bytes
/// (every version and variant) are removed in the background, never in the request. A file
/// linked to a live object needs the `confirm_token` of a 409 `DEPENDENCY_EXISTS` answer first.
/// Emits `file.deleted`.
#[utoipa::path(delete, path = "/v1/files/{file_id}", tag = "Files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id"), DeleteParams),
    responses((status = 200, body = crate::http::response::Envelope<crate::http::Deleted>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "`DEPENDENCY_EXISTS`")))]
async fn delete_file(
    auth: Auth,
    State(app): State<App>,
    Path(file_id): Path<String>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Data<crate::http::Deleted>> {
    auth.require(FILES_DELETE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    crate::db::lock_row(&mut tx, app.db.backend(), "files", &file_id, true).await?;
    let file = reach(&app, &mut tx, &auth, &file_id, FileAction::Write).await?;
    if !params.force {
        trash_one(&mut tx, &auth, &file).await?;
        tx.commit().await?;
        return Ok(crate::http::Deleted::new(file.id));
    }
    let target = Target { scope: tenant.as_str(), resource_type: "file", resource_id: &file.id };
    let linked: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM objects WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL")
            .bind(file.object_id.as_deref().unwrap_or_default())
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await?;
    let dependencies = vec![crate::deletion::Dependency {
        kind: "objects",
        count: linked.0,
        label: "the live object this file is attached to",
    }];
    let asked = DeleteParams { force: params.confirm_token.is_some(), confirm_token: params.confirm_token.clone() };
    if let Verdict::Refuse(dependencies) = deletion::check(&mut tx, target, dependencies, &asked).await? {
        tx.rollback().await?;
        return Err(deletion::refuse(app.db.pool(), target, dependencies).await);
    }
    let purged = file.to_api()?;
    super::purge::purge_rows(&mut tx, &file).await?;
    record(&mut tx, tenant, &Who::from(&auth), "file.deleted", &purged, json!({ "purged": true })).await?;
    tx.commit().await?;
    Ok(crate::http::Deleted::new(file.id))
}

/// Restore deleted file
///
/// Takes the file out of the trash, its bytes counted against `storage` again (403
/// `FEATURE_LIMIT_REACHED` when they no longer fit). 409 when it is not in the trash. Emits
/// `file.restored`.
#[utoipa::path(post, path = "/v1/files/{file_id}/restore", tag = "Files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id")),
    responses((status = 200, body = crate::http::response::Envelope<File>),
              (status = 403, body = crate::http::error::ErrorBody, description = "`FEATURE_LIMIT_REACHED`"),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "Not in the trash")))]
async fn restore_file(auth: Auth, State(app): State<App>, Path(file_id): Path<String>) -> ApiResult<Data<File>> {
    auth.require(FILES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    crate::db::lock_row(&mut tx, app.db.backend(), "files", &file_id, true).await?;
    let file = reach(&app, &mut tx, &auth, &file_id, FileAction::Write).await?;
    if !file.is_deleted() {
        return Err(ApiError::conflict("the file is not in the trash"));
    }
    entitlements::consume(&mut tx, &app, tenant, Entitlement::Storage, file.stored_bytes).await?;
    sqlx::query("UPDATE files SET deleted_at = NULL, updated_at = $1 WHERE id = $2 AND deleted_at IS NOT NULL")
        .bind(crate::time::to_db(&crate::time::now()))
        .bind(&file.id)
        .execute(&mut *tx)
        .await?;
    let restored = fetch(&mut tx, tenant, &file.id).await?.to_api()?;
    record(&mut tx, tenant, &Who::from(&auth), "file.restored", &restored, json!({})).await?;
    tx.commit().await?;
    Ok(Data(restored))
}

/// One version of a file's bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileVersion {
    pub version: i64,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: i64,
    pub sha256: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// Whether it is the file's current version.
    pub current: bool,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// List file versions
///
/// Every stored version of the file's bytes, newest first; a re-upload keeps the earlier ones
/// (they count against `storage` until the file is purged).
#[utoipa::path(get, path = "/v1/files/{file_id}/versions", tag = "Files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id")),
    responses((status = 200, body = crate::http::response::Envelope<Vec<FileVersion>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn list_file_versions(
    auth: Auth,
    State(app): State<App>,
    Path(file_id): Path<String>,
) -> ApiResult<Data<Vec<FileVersion>>> {
    auth.require(FILES_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    let file = reach(&app, &mut conn, &auth, &file_id, FileAction::Read).await?;
    type Row = (i64, String, String, i64, Option<String>, Option<i64>, Option<i64>, Option<String>, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT version, filename, mime_type, size_bytes, sha256, width, height, created_by, created_at \
         FROM file_versions WHERE file_id = $1 AND status = 'ready' ORDER BY version DESC",
    )
    .bind(&file.id)
    .fetch_all(&mut *conn)
    .await?;
    let versions = rows
        .into_iter()
        .map(|(version, filename, mime_type, size_bytes, sha256, width, height, created_by, created_at)| {
            Ok(FileVersion {
                current: version == file.version,
                version,
                filename,
                mime_type,
                size_bytes,
                sha256,
                width,
                height,
                created_by,
                created_at: crate::time::from_db(&created_at).map_err(ApiError::internal)?,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Data(versions))
}

/// The tenant's files as a condition list with their values, narrowed to what the caller may
/// read.
async fn scope(app: &App, conn: &mut AnyConnection, auth: &Auth) -> ApiResult<(Vec<String>, Binds)> {
    let mut binds = Binds::new(app.db.backend());
    let tenant = binds.text(auth.tenant()?.as_str());
    let mut conds = vec![format!("tenant_id = {tenant}")];
    if let Some(visible) = access::visible_rows(app, conn, auth, &mut binds).await? {
        conds.push(visible);
    }
    Ok((conds, binds))
}

/// What a search sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchSort {
    CreatedAt,
    UpdatedAt,
    SizeBytes,
    Filename,
}

impl From<SearchSort> for FileSort {
    fn from(sort: SearchSort) -> FileSort {
        match sort {
            SearchSort::CreatedAt => FileSort::CreatedAt,
            SearchSort::UpdatedAt => FileSort::UpdatedAt,
            SearchSort::SizeBytes => FileSort::SizeBytes,
            SearchSort::Filename => FileSort::Filename,
        }
    }
}

/// A sort of a file list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FileSort {
    CreatedAt,
    UpdatedAt,
    SizeBytes,
    Filename,
    DeletedAt,
}

impl FileSort {
    fn column(self) -> &'static str {
        match self {
            FileSort::CreatedAt => "created_at",
            FileSort::UpdatedAt => "updated_at",
            FileSort::SizeBytes => "size_bytes",
            FileSort::Filename => "filename",
            FileSort::DeletedAt => "deleted_at",
        }
    }

    fn value(self, file: &FileRow) -> Value {
        match self {
            FileSort::CreatedAt => json!(file.created_at),
            FileSort::UpdatedAt => json!(file.updated_at),
            FileSort::SizeBytes => json!(file.size_bytes),
            FileSort::Filename => json!(file.filename),
            FileSort::DeletedAt => json!(file.deleted_at),
        }
    }
}

/// What a file list's cursor carries.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    sort: FileSort,
    descending: bool,
    value: Value,
    id: String,
}

/// How a page of files is asked for.
struct Listing<'a> {
    sort: FileSort,
    descending: bool,
    limit: u32,
    cursor: Option<&'a str>,
}

/// One page of the files `conds` admit, sorted by the listing's field then id, with the total.
async fn page(
    app: &App,
    conn: &mut AnyConnection,
    mut conds: Vec<String>,
    mut binds: Binds,
    listing: Listing<'_>,
) -> ApiResult<Page<File>> {
    let Listing { sort, descending, limit, cursor } = listing;
    let where_sql = conds.join(" AND ");
    let (total,): (i64,) =
        sqlx::query_as_with(&format!("SELECT COUNT(*) FROM files WHERE {where_sql}"), binds.arguments()?)
            .fetch_one(&mut *conn)
            .await?;
    let key = app.cursor_key;
    if let Some(text) = cursor.filter(|c| !c.is_empty()) {
        let cursor: Cursor = crate::http::list::open(&key, text)?;
        if cursor.sort != sort || cursor.descending != descending {
            return Err(ApiError::bad_request("this cursor belongs to another sort: keep the sort of the first page"));
        }
        let value = match &cursor.value {
            Value::Number(n) => binds.push(Bind::Int(n.as_i64().unwrap_or_default())),
            Value::String(s) => binds.text(s.clone()),
            _ => return Err(ApiError::bad_request("invalid cursor")),
        };
        let id = binds.text(cursor.id);
        let op = if descending { "<" } else { ">" };
        let column = sort.column();
        conds.push(format!("({column} {op} {value} OR ({column} = {value} AND id {op} {id}))"));
    }
    let direction = if descending { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT {COLUMNS} FROM files WHERE {} ORDER BY {} {direction}, id {direction} LIMIT {}",
        conds.join(" AND "),
        sort.column(),
        limit + 1
    );
    let mut rows: Vec<FileRow> = sqlx::query_as_with(&sql, binds.arguments()?).fetch_all(&mut *conn).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|last| {
            crate::http::list::seal(&key, &Cursor { sort, descending, value: sort.value(last), id: last.id.clone() })
        })
    } else {
        None
    };
    let results = rows.iter().map(FileRow::to_api).collect::<ApiResult<Vec<_>>>()?;
    Ok(Page { results, next_cursor, total })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrashQuery {
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List trashed files
///
/// Files in the trash, most recently deleted first: restorable until the retention period ends.
#[utoipa::path(get, path = "/v1/files/trash", tag = "Files", security(("bearer" = [])),
    params(TrashQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<File>>)))]
async fn list_file_trash(
    auth: Auth,
    State(app): State<App>,
    Query(query): Query<TrashQuery>,
) -> ApiResult<Data<Page<File>>> {
    auth.require(FILES_READ)?;
    let limit = crate::http::list::page_limit(query.limit)?;
    let mut conn = app.db.pool().acquire().await?;
    let (mut conds, binds) = scope(&app, &mut conn, &auth).await?;
    conds.push("deleted_at IS NOT NULL".into());
    let found = page(
        &app,
        &mut conn,
        conds,
        binds,
        Listing { sort: FileSort::DeletedAt, descending: true, limit, cursor: query.cursor.as_deref() },
    )
    .await?;
    Ok(Data(found))
}

/// A file search.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchFiles {
    /// An exact type, `image/png`.
    pub mime_type: Option<String>,
    /// The part before the slash: `image`, `video`, `audio`, `text`, `application`.
    #[schema(pattern = "^[A-Za-z0-9-]+$")]
    pub mime_category: Option<String>,
    #[schema(pattern = "^(private|authenticated|public)$")]
    pub access: Option<String>,
    /// `pending` or `ready`.
    #[schema(pattern = "^(pending|ready)$")]
    pub status: Option<String>,
    /// An exact folder (`""` for the root).
    #[schema(max_length = 255, pattern = r"^[^\\\u0000-\u001F\u007F-\u009F]*$")]
    pub folder: Option<String>,
    /// Part of the filename, any case.
    pub filename: Option<String>,
    pub object_type_id: Option<String>,
    pub object_id: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Default `created_at`.
    pub sort: Option<SearchSort>,
    /// `asc` or `desc` (default).
    #[schema(pattern = "^(asc|desc)$")]
    pub sort_dir: Option<String>,
    /// 1 to 100, default 20.
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Search files
///
/// Live files filtered by type, category, access, status, folder, filename (any case, part of
/// it), linked object and creation time; sorted by `created_at`, `updated_at`, `size_bytes` or
/// `filename`; paged by cursor.
#[utoipa::path(post, path = "/v1/files/search", tag = "Files", security(("bearer" = [])),
    request_body = SearchFiles,
    responses((status = 200, body = crate::http::response::Envelope<Page<File>>),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn search_files(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<SearchFiles>,
) -> ApiResult<Data<Page<File>>> {
    auth.require(FILES_READ)?;
    let limit = crate::http::list::page_limit(body.limit)?;
    let descending = match body.sort_dir.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(ApiError::invalid("sort_dir", "must be `asc` or `desc`")),
    };
    let sort = FileSort::from(body.sort.unwrap_or(SearchSort::CreatedAt));
    if let Some(status) = &body.status {
        if status != "pending" && status != "ready" {
            return Err(ApiError::invalid("status", "must be `pending` or `ready`"));
        }
    }
    if let Some(access) = &body.access {
        check_access(access).map_err(|m| ApiError::invalid("access", m))?;
    }
    if let Some(category) = &body.mime_category {
        if category.is_empty() || !category.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ApiError::invalid("mime_category", "must be a type's first part, such as `image`"));
        }
    }
    let mut conn = app.db.pool().acquire().await?;
    let (mut conds, mut binds) = scope(&app, &mut conn, &auth).await?;
    conds.push("deleted_at IS NULL".into());
    let eq = |column: &str, value: &Option<String>, binds: &mut Binds, conds: &mut Vec<String>| {
        if let Some(value) = value {
            let p = binds.text(value.clone());
            conds.push(format!("{column} = {p}"));
        }
    };
    eq("mime_type", &body.mime_type.as_deref().map(images::canonical), &mut binds, &mut conds);
    eq("access", &body.access, &mut binds, &mut conds);
    eq("status", &body.status, &mut binds, &mut conds);
    let folder =
        body.folder.as_deref().map(normalize_folder).transpose().map_err(|m| ApiError::invalid("folder", m))?;
    eq("folder", &folder, &mut binds, &mut conds);
    eq("object_type_id", &body.object_type_id, &mut binds, &mut conds);
    eq("object_id", &body.object_id, &mut binds, &mut conds);
    if let Some(category) = &body.mime_category {
        let p = binds.text(format!("{}/%", category.to_ascii_lowercase()));
        conds.push(format!("mime_type LIKE {p}"));
    }
    if let Some(name) = &body.filename {
        let escaped = name.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let p = binds.text(format!("%{escaped}%"));
        conds.push(format!("LOWER(filename) LIKE {p} ESCAPE '\\'"));
    }
    for (op, at) in [(">=", body.created_after), ("<", body.created_before)] {
        if let Some(at) = at {
            let p = binds.text(crate::time::to_db(&at));
            conds.push(format!("created_at {op} {p}"));
        }
    }
    let found =
        page(&app, &mut conn, conds, binds, Listing { sort, descending, limit, cursor: body.cursor.as_deref() })
            .await?;
    Ok(Data(found))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FoldersQuery {
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Folders to skip, 0 to 10,000.
    #[param(maximum = 10000)]
    pub offset: Option<u32>,
}

/// A folder and what it holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct Folder {
    /// `""` for the root.
    pub folder: String,
    pub file_count: i64,
    pub total_bytes: i64,
}

/// List folders
///
/// Every folder holding live files the caller may read, by name, with counts and sizes.
#[utoipa::path(get, path = "/v1/files/folders", tag = "Files", security(("bearer" = [])),
    params(FoldersQuery),
    responses((status = 200, body = crate::http::response::Envelope<Vec<Folder>>)))]
async fn list_file_folders(
    auth: Auth,
    State(app): State<App>,
    Query(query): Query<FoldersQuery>,
) -> ApiResult<Data<Vec<Folder>>> {
    auth.require(FILES_READ)?;
    let limit = crate::http::list::page_limit(query.limit)?;
    let offset = crate::http::list::page_offset(query.offset)?;
    let mut conn = app.db.pool().acquire().await?;
    let (mut conds, binds) = scope(&app, &mut conn, &auth).await?;
    conds.push("deleted_at IS NULL".into());
    let collate = crate::db::dialect::byte_order(app.db.backend());
    let sql = format!(
        "SELECT folder, COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM files WHERE {} GROUP BY folder \
         ORDER BY folder{collate} LIMIT {limit} OFFSET {offset}",
        conds.join(" AND ")
    );
    let rows: Vec<(String, i64, i64)> = sqlx::query_as_with(&sql, binds.arguments()?).fetch_all(&mut *conn).await?;
    let folders =
        rows.into_iter().map(|(folder, file_count, total_bytes)| Folder { folder, file_count, total_bytes }).collect();
    Ok(Data(folders))
}

/// What the tenant stores.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileStats {
    /// Live, ready files and the bytes of their current versions.
    pub total_files: i64,
    pub total_bytes: i64,
    /// Files in the trash and their bytes.
    pub trashed_files: i64,
    pub trashed_bytes: i64,
    /// Uploads not completed yet.
    pub pending_files: i64,
    /// Live files by the first part of their type (`image`, `text`, ...).
    pub by_category: std::collections::BTreeMap<String, i64>,
    /// Bytes counted against the `storage` entitlement: every version of the live files and
    /// pending reservations (the trash does not count).
    pub used_bytes: i64,
    /// The tenant's `storage` limit; `null` for none.
    pub quota_bytes: Option<i64>,
    pub remaining_bytes: Option<i64>,
}

/// Storage statistics
///
/// The caller's files in numbers, and the tenant's storage quota: used, limit, remaining.
#[utoipa::path(get, path = "/v1/files/stats", tag = "Files", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<FileStats>)))]
async fn file_stats(auth: Auth, State(app): State<App>) -> ApiResult<Data<FileStats>> {
    auth.require(FILES_READ)?;
    let tenant = auth.tenant()?.clone();
    let mut conn = app.db.pool().acquire().await?;
    let (conds, binds) = scope(&app, &mut conn, &auth).await?;
    let sql = format!(
        "SELECT CASE WHEN deleted_at IS NOT NULL THEN 'trash' WHEN status = 'pending' THEN 'pending' ELSE 'live' END, \
         COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM files WHERE {} GROUP BY 1",
        conds.join(" AND ")
    );
    let groups: Vec<(String, i64, i64)> = sqlx::query_as_with(&sql, binds.arguments()?).fetch_all(&mut *conn).await?;
    let of = |name: &str| groups.iter().find(|g| g.0 == name).map_or((0, 0), |g| (g.1, g.2));
    let (mut conds, binds) = scope(&app, &mut conn, &auth).await?;
    conds.push("deleted_at IS NULL AND status = 'ready'".into());
    let category = match app.db.backend() {
        crate::db::Backend::Postgres => "split_part(mime_type, '/', 1)",
        crate::db::Backend::Sqlite => "substr(mime_type, 1, instr(mime_type, '/') - 1)",
    };
    let sql = format!("SELECT {category}, COUNT(*) FROM files WHERE {} GROUP BY 1", conds.join(" AND "));
    let by_category: Vec<(String, i64)> = sqlx::query_as_with(&sql, binds.arguments()?).fetch_all(&mut *conn).await?;
    let used = entitlements::used_now(&mut conn, &tenant, Entitlement::Storage).await?;
    let quota = entitlements::limit(&mut conn, &app, &tenant, Entitlement::Storage).await?;
    let ((total_files, total_bytes), (trashed_files, trashed_bytes), (pending_files, _)) =
        (of("live"), of("trash"), of("pending"));
    Ok(Data(FileStats {
        total_files,
        total_bytes,
        trashed_files,
        trashed_bytes,
        pending_files,
        by_category: by_category.into_iter().collect(),
        used_bytes: used,
        quota_bytes: quota,
        remaining_bytes: quota.map(|q| (q - used).max(0)),
    }))
}

/// How many stale uploads were given back.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleaned {
    pub cleaned: i64,
}

/// Clean stale uploads
///
/// Gives back the file's uploads that were opened more than 24 hours ago and never completed: a
/// pending file is purged, a pending new version dropped, their reserved bytes released. The
/// sweeper does the same for every tenant by itself.
#[utoipa::path(post, path = "/v1/files/{file_id}/stale-cleanup", tag = "Files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file's id")),
    responses((status = 200, body = crate::http::response::Envelope<Cleaned>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn clean_stale_uploads(
    auth: Auth,
    State(app): State<App>,
    Path(file_id): Path<String>,
) -> ApiResult<Data<Cleaned>> {
    auth.require(FILES_WRITE)?;
    let mut conn = app.db.pool().acquire().await?;
    reach(&app, &mut conn, &auth, &file_id, FileAction::Write).await?;
    drop(conn);
    let cleaned = super::purge::clean_stale(&app, Some(&file_id)).await?;
    Ok(Data(Cleaned { cleaned: cleaned as i64 }))
}

/// Files named in a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileIds {
    /// 1 to 100 file ids, each once.
    #[schema(min_items = 1, max_items = 100)]
    pub file_ids: Vec<String>,
}

fn check_batch(ids: &[String]) -> ApiResult<()> {
    if ids.is_empty() || ids.len() > BATCH_MAX {
        return Err(ApiError::invalid("file_ids", format!("name 1 to {BATCH_MAX} files")));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(ApiError::invalid("file_ids", format!("`{twice}` is named twice")));
    }
    Ok(())
}

/// Every file of `ids` as the caller may `action` it, in order: 404 naming the first one it may
/// not see, 403 for one it may not change; nothing is done then.
async fn reach_all(
    app: &App,
    conn: &mut AnyConnection,
    auth: &Auth,
    ids: &[String],
    action: FileAction,
) -> ApiResult<Vec<FileRow>> {
    let mut files = Vec::with_capacity(ids.len());
    for id in ids {
        if action == FileAction::Write {
            crate::db::lock_row(conn, app.db.backend(), "files", id, true).await?;
        }
        let file = reach(app, conn, auth, id, action).await.map_err(|mut e| {
            if e.code == ErrorCode::NotFound {
                e.message = format!("file `{id}` not found: nothing was done");
            }
            e
        })?;
        files.push(file);
    }
    Ok(files)
}

/// Batch read file metadata
///
/// Up to 100 files by id, in the order named; all or nothing (404 naming a file the caller may
/// not see).
#[utoipa::path(post, path = "/v1/files/batch/read", tag = "Files", security(("bearer" = [])),
    request_body = FileIds,
    responses((status = 200, body = crate::http::response::Envelope<Vec<File>>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn batch_read_files(auth: Auth, State(app): State<App>, Json(body): Json<FileIds>) -> ApiResult<Data<Vec<File>>> {
    auth.require(FILES_READ)?;
    check_batch(&body.file_ids)?;
    let mut conn = app.db.pool().acquire().await?;
    let files = reach_all(&app, &mut conn, &auth, &body.file_ids, FileAction::Read).await?;
    Ok(Data(files.iter().map(FileRow::to_api).collect::<ApiResult<Vec<_>>>()?))
}

/// A change to many files.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBatchUpdate {
    #[schema(min_items = 1, max_items = 100)]
    pub file_ids: Vec<String>,
    /// `private`, `authenticated` or `public`.
    #[schema(pattern = "^(private|authenticated|public)$")]
    pub access: Option<String>,
    #[schema(max_length = 255, pattern = r"^[^\\\u0000-\u001F\u007F-\u009F]*$")]
    pub folder: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Updated {
    /// Files that changed.
    pub updated: i64,
}

/// Batch update file metadata
///
/// Sets `access` and/or `folder` of up to 100 files in one transaction: all or nothing. Emits
/// `file.updated` for each file that changed.
#[utoipa::path(post, path = "/v1/files/batch/update", tag = "Files", security(("bearer" = [])),
    request_body = FileBatchUpdate,
    responses((status = 200, body = crate::http::response::Envelope<Updated>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn batch_update_files(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<FileBatchUpdate>,
) -> ApiResult<Data<Updated>> {
    auth.require(FILES_WRITE)?;
    check_batch(&body.file_ids)?;
    if body.access.is_none() && body.folder.is_none() {
        return Err(ApiError::invalid("access", "give `access`, `folder` or both"));
    }
    let settings = Settings::parse(None, body.access.as_deref(), body.folder.as_deref(), None, None)?;
    let mut tx = app.db.begin_write().await?;
    let files = reach_all(&app, &mut tx, &auth, &body.file_ids, FileAction::Write).await?;
    let mut updated = 0;
    for file in &files {
        if apply(&mut tx, &auth, file, &settings, None).await?.1 {
            updated += 1;
        }
    }
    tx.commit().await?;
    Ok(Data(Updated { updated }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchDeleted {
    pub deleted: Vec<String>,
    pub count: i64,
}

/// Batch delete files
///
/// Moves up to 100 files to the trash in one transaction: all or nothing. Emits `file.deleted`
/// for each.
#[utoipa::path(post, path = "/v1/files/batch/delete", tag = "Files", security(("bearer" = [])),
    request_body = FileIds,
    responses((status = 200, body = crate::http::response::Envelope<BatchDeleted>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn batch_delete_files(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<FileIds>,
) -> ApiResult<Data<BatchDeleted>> {
    auth.require(FILES_DELETE)?;
    check_batch(&body.file_ids)?;
    let mut tx = app.db.begin_write().await?;
    let files = reach_all(&app, &mut tx, &auth, &body.file_ids, FileAction::Write).await?;
    for file in &files {
        trash_one(&mut tx, &auth, file).await?;
    }
    tx.commit().await?;
    let deleted: Vec<String> = files.into_iter().map(|f| f.id).collect();
    Ok(Data(BatchDeleted { count: deleted.len() as i64, deleted }))
}
