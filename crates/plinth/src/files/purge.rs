//! Files leaving for good. A purge removes the rows and gives the bytes back to the tenant's
//! `storage` in the request's transaction, and enqueues the removal of the bytes (`file.purge`
//! jobs) in it: the bytes go in the background, never in the request, and a crash loses no
//! removal. The sweeper (the server's upkeep) purges what nobody asked to: trash past its
//! retention, uploads never completed, files past their `expires_at`, and bytes that no row names
//! (a tenant deleted, a crash between writing bytes and recording them).

use futures_util::future::BoxFuture;
use serde_json::json;

use super::{file_prefix, FileRow, COLUMNS, STALE_HOURS};
use crate::app::App;
use crate::db::WriteTx;
use crate::entitlements::{self, Entitlement};
use crate::http::{ApiError, ApiResult};
use crate::id::TenantId;
use crate::jobs::{self, Job, NewJob, Performed};
use crate::time;

/// The job kind that removes bytes from the store.
pub const KIND: &str = "file.purge";
/// Rows one sweep takes of each kind.
const SWEEP_BATCH: i64 = 200;
/// Bytes younger than this are never taken for orphans (their row may be about to commit).
pub const ORPHAN_GRACE_HOURS: i64 = 2;

/// Enqueues the removal of everything under `prefix` in the store.
async fn remove_later(tx: &mut WriteTx, prefix: &str) -> ApiResult<()> {
    let job = NewJob::new(KIND, json!({ "prefix": prefix }));
    jobs::enqueue(tx, job).await.map_err(ApiError::from)?;
    Ok(())
}

/// Removes `file`'s rows (its versions with it), gives its bytes back to `storage`, and enqueues
/// the removal of its bytes: in the caller's transaction.
pub async fn purge_rows(tx: &mut WriteTx, file: &FileRow) -> ApiResult<()> {
    let gone = sqlx::query("DELETE FROM files WHERE id = $1").bind(&file.id).execute(&mut **tx).await?.rows_affected();
    if gone == 0 {
        return Ok(());
    }
    // A file in the trash gave its bytes back when it went there.
    if !file.is_deleted() {
        entitlements::release(tx, &file.tenant(), Entitlement::Storage, file.stored_bytes).await?;
    }
    remove_later(tx, &format!("{}/", file_prefix(&file.tenant_id, &file.id))).await
}

/// Purges the files a condition picks (trash past retention, expired ones, stale pending
/// files), each in its own transaction; with `file.deleted` for those that were ready.
async fn purge_where(app: &App, condition: &str, values: &[&str]) -> ApiResult<u64> {
    let sql = format!("SELECT {COLUMNS} FROM files WHERE {condition} ORDER BY id LIMIT {SWEEP_BATCH}");
    let mut query = sqlx::query_as::<_, FileRow>(&sql);
    for value in values {
        query = query.bind(*value);
    }
    let picked = query.fetch_all(app.db.pool()).await?;
    let mut purged = 0;
    for file in picked {
        let mut tx = app.db.begin_write().await?;
        // Locked and read again under the write: a restore or completion may have come meanwhile.
        crate::db::lock_row(&mut tx, app.db.backend(), "files", &file.id, true).await?;
        let sql = format!("SELECT {COLUMNS} FROM files WHERE {condition} AND id = ${}", values.len() + 1);
        let mut query = sqlx::query_as::<_, FileRow>(&sql);
        for value in values {
            query = query.bind(*value);
        }
        let Some(file) = query.bind(&file.id).fetch_optional(&mut *tx).await? else {
            continue;
        };
        purge_rows(&mut tx, &file).await?;
        if file.status == "ready" {
            let shown = file.to_api()?;
            let data = json!({ "file": shown, "folder": shown.folder, "purged": true });
            let event =
                crate::events::Event { kind: "file.deleted", resource_type: "file", resource_id: &file.id, data };
            crate::events::record(&mut tx, &file.tenant(), event).await?;
        }
        tx.commit().await?;
        purged += 1;
    }
    Ok(purged)
}

/// Gives back uploads opened more than 24 hours ago and never completed (of one file, or of
/// every tenant): pending files purged, pending versions of ready files dropped. Returns how
/// many uploads were given back.
pub async fn clean_stale(app: &App, file_id: Option<&str>) -> ApiResult<u64> {
    let cutoff = time::to_db(&(time::now() - chrono::Duration::hours(STALE_HOURS)));
    let one = file_id.unwrap_or_default();
    let mut cleaned = match file_id {
        Some(_) => purge_where(app, "status = 'pending' AND created_at < $1 AND id = $2", &[&cutoff, one]).await?,
        None => purge_where(app, "status = 'pending' AND created_at < $1", &[&cutoff]).await?,
    };
    let only = " AND ($2 = '' OR v.file_id = $2)";
    let versions: Vec<(String, i64, i64, String, String)> = sqlx::query_as(&format!(
        "SELECT v.file_id, v.version, v.size_bytes, v.storage_key, f.tenant_id FROM file_versions v \
         JOIN files f ON f.id = v.file_id WHERE v.status <> 'ready' AND f.status = 'ready' AND v.created_at < $1{only} \
         LIMIT {SWEEP_BATCH}"
    ))
    .bind(&cutoff)
    .bind(one)
    .fetch_all(app.db.pool())
    .await?;
    for (file_id, version, size, key, tenant) in versions {
        let mut tx = app.db.begin_write().await?;
        crate::db::lock_row(&mut tx, app.db.backend(), "files", &file_id, true).await?;
        if drop_pending_version(&mut tx, &TenantId::trusted(tenant), &file_id, version, size, &key).await? {
            cleaned += 1;
        }
        tx.commit().await?;
    }
    Ok(cleaned)
}

/// Gives back a pending version of a ready file (its row locked by the caller): the row gone,
/// its size taken off the file's and, while the file is live, off the tenant's `storage` (the
/// trash gave it back already), its bytes removed later. False when it was gone already.
pub(crate) async fn drop_pending_version(
    tx: &mut WriteTx,
    tenant: &TenantId,
    file_id: &str,
    version: i64,
    size: i64,
    key: &str,
) -> ApiResult<bool> {
    let gone = sqlx::query("DELETE FROM file_versions WHERE file_id = $1 AND version = $2 AND status <> 'ready'")
        .bind(file_id)
        .bind(version)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if gone == 0 {
        return Ok(false);
    }
    let live: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM files WHERE id = $1 AND deleted_at IS NULL")
        .bind(file_id)
        .fetch_optional(&mut **tx)
        .await?;
    sqlx::query("UPDATE files SET stored_bytes = stored_bytes - $1, upload_expires_at = NULL WHERE id = $2")
        .bind(size)
        .bind(file_id)
        .execute(&mut **tx)
        .await?;
    if live.is_some() {
        entitlements::release(tx, tenant, Entitlement::Storage, size).await?;
    }
    remove_later(tx, key).await?;
    Ok(true)
}

/// One round of the sweeper: stale uploads, trash past `retention_days`, expired files; and,
/// with `orphans_older_than`, bytes no row names that were written before it.
pub async fn sweep(app: &App, retention_days: i64, orphans_older_than: Option<chrono::Duration>) -> ApiResult<u64> {
    let mut purged = clean_stale(app, None).await?;
    let cutoff = time::to_db(&(time::now() - chrono::Duration::days(retention_days)));
    purged += purge_where(app, "deleted_at IS NOT NULL AND deleted_at < $1", &[&cutoff]).await?;
    let now = time::to_db(&time::now());
    purged += purge_where(app, "expires_at IS NOT NULL AND expires_at < $1", &[&now]).await?;
    if let Some(grace) = orphans_older_than {
        purged += remove_orphans(app, grace).await?;
    }
    Ok(purged)
}

/// Removes bytes under `files/` whose file has no row, and what is left of the old upload
/// folder, once they are older than the grace period.
async fn remove_orphans(app: &App, grace: chrono::Duration) -> ApiResult<u64> {
    let grace = time::now() - grace;
    let mut removed = 0;
    for (path, _) in app.files.list("ai-uploads").await? {
        app.files.delete(&path).await?;
        removed += 1;
    }
    let mut known: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for (path, written) in app.files.list("files").await? {
        if written > grace {
            continue;
        }
        // files/<tenant>/<file>/<version>-<random>[.variants/<name>]
        let mut parts = path.split('/');
        let (Some("files"), Some(_tenant), Some(file_id)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let stored = match known.get(file_id) {
            Some(found) => *found,
            None => {
                let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM files WHERE id = $1")
                    .bind(file_id)
                    .fetch_optional(app.db.pool())
                    .await?;
                known.insert(file_id.to_string(), row.is_some());
                row.is_some()
            }
        };
        if stored {
            // A version whose row is gone (given up) leaves its key behind.
            let key = path.split(".variants/").next().unwrap_or(&path);
            let named: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM file_versions WHERE storage_key = $1")
                .bind(key)
                .fetch_optional(app.db.pool())
                .await?;
            if named.is_some() {
                continue;
            }
        }
        app.files.delete(&path).await?;
        removed += 1;
    }
    Ok(removed)
}

/// The `file.purge` kind: removes what is under a prefix of the store.
pub struct Purge(pub App);

impl jobs::Kind for Purge {
    type Outcome = ();

    fn name(&self) -> &'static str {
        KIND
    }

    fn concurrency(&self) -> usize {
        2
    }

    fn max_attempts(&self) -> i64 {
        10
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<()>> {
        Box::pin(async move {
            let payload: serde_json::Value = serde_json::from_str(&job.payload).unwrap_or_default();
            let prefix = payload["prefix"].as_str().unwrap_or_default().to_string();
            let result = if prefix.starts_with("files/") {
                self.0.files.delete_prefix(prefix.trim_end_matches('/')).await.map(|_| ()).map_err(|e| e.message)
            } else {
                Err(format!("not a file store prefix: `{prefix}`"))
            };
            if let Err(error) = &result {
                tracing::warn!(attempt = job.attempt, %error, "removing a purged file's bytes failed");
            }
            Performed { outcome: (), result }
        })
    }
}
