//! Usage counting without a database write per request: requests per tenant per day and each
//! key's last use are gathered in memory and written in batches (and on shutdown).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sqlx::AnyPool;

use crate::auth::TenantId;
use crate::db::Db;
use crate::http::ApiResult;
use crate::keys;
use crate::time::{self, Timestamp};

const REQUESTS: &str = "requests";
/// The entitlement feature counting requests per month.
const API_CALLS: &str = "api_calls";

#[derive(Debug, Default)]
struct Pending {
    /// (tenant, day) -> requests not yet written.
    requests: HashMap<(String, String), i64>,
    /// (tenant, month) -> requests not yet written, for the `api_calls` entitlement.
    api_calls: HashMap<(String, String), i64>,
    /// key -> latest use not yet written.
    last_used: HashMap<String, Timestamp>,
    /// (tenant, day, end user) seen making a request, not yet written.
    active: HashSet<(String, String, String)>,
}

/// What a node knows of a tenant's monthly `api_calls`: the written count and the limit.
#[derive(Debug, Clone, Copy)]
struct Quota {
    stored: i64,
    limit: Option<i64>,
    loaded: std::time::Instant,
}

/// How long a loaded quota is trusted before it is read again (other nodes count too).
const QUOTA_TTL: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct UsageRecorder {
    pending: Mutex<Pending>,
    /// (tenant, month) -> quota, so that a request needs no database read to be checked.
    quotas: Mutex<HashMap<(String, String), Quota>>,
    /// Held for a whole flush, and by readers, so that a reader never sees a batch that has
    /// left memory but is not yet in the database.
    flushing: tokio::sync::Mutex<()>,
    /// (tenant, day, end user) already written today, so that a user's every request does not
    /// write again; cleared when the day changes (or when it grows past `ACTIVE_REMEMBERED`).
    active_written: Mutex<(String, HashSet<(String, String)>)>,
}

/// How many of today's active users a node remembers as written before it starts over.
const ACTIVE_REMEMBERED: usize = 200_000;

impl UsageRecorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one authenticated request of `tenant`, made with `key_id` if any, or by the end
    /// user `user_id`.
    pub fn record_request(&self, tenant: &TenantId, key_id: Option<&str>, user_id: Option<&str>) {
        let now = time::now();
        let day = now.format("%Y-%m-%d").to_string();
        let month = day[..7].to_string();
        if let Some(user_id) = user_id {
            self.record_active(tenant, &day, user_id);
        }
        let mut pending = self.lock();
        *pending.requests.entry((tenant.to_string(), day)).or_insert(0) += 1;
        *pending.api_calls.entry((tenant.to_string(), month)).or_insert(0) += 1;
        if let Some(key_id) = key_id {
            pending.last_used.insert(key_id.to_string(), now);
        }
    }

    fn record_active(&self, tenant: &TenantId, day: &str, user_id: &str) {
        {
            let mut written = self.active_written.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if written.0 != day || written.1.len() >= ACTIVE_REMEMBERED {
                *written = (day.to_string(), HashSet::new());
            }
            if !written.1.insert((tenant.to_string(), user_id.to_string())) {
                return;
            }
        }
        self.lock().active.insert((tenant.to_string(), day.to_string(), user_id.to_string()));
    }

    /// The latest use of `key_id` not yet written.
    pub fn pending_last_used(&self, key_id: &str) -> Option<Timestamp> {
        self.lock().last_used.get(key_id).copied()
    }

    fn quotas(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Quota>> {
        self.quotas.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `tenant` may make one more request this month under its `api_calls` limit.
    /// Reads the written count and the limit at most every few seconds.
    pub async fn allows_api_call(&self, app: &crate::app::App, tenant: &TenantId) -> ApiResult<Result<(), (i64, i64)>> {
        let month = time::today()[..7].to_string();
        let key = (tenant.as_str().to_string(), month.clone());
        let cached = self.quotas().get(&key).copied().filter(|q| q.loaded.elapsed() < QUOTA_TTL);
        let quota = match cached {
            Some(quota) => quota,
            None => {
                let (stored, limit) = crate::entitlements::api_calls_quota(app, tenant).await?;
                let quota = Quota { stored, limit, loaded: std::time::Instant::now() };
                self.quotas().insert(key.clone(), quota);
                quota
            }
        };
        let Some(limit) = quota.limit else { return Ok(Ok(())) };
        let used = quota.stored + self.pending_api_calls(tenant, &month);
        Ok(if used < limit { Ok(()) } else { Err((used, limit)) })
    }

    /// Forgets loaded quotas (a limit or tier changed).
    pub fn forget_quotas(&self) {
        self.quotas().clear();
    }

    /// Requests of `tenant` in `month` (`YYYY-MM`) not yet written.
    pub fn pending_api_calls(&self, tenant: &TenantId, month: &str) -> i64 {
        self.lock().api_calls.get(&(tenant.to_string(), month.to_string())).copied().unwrap_or(0)
    }

    /// Requests of `tenant` on `day`: written plus pending.
    pub async fn requests(&self, db: &AnyPool, tenant: &TenantId, day: &str) -> ApiResult<i64> {
        let _consistent = self.flushing.lock().await;
        let stored: Option<(i64,)> =
            sqlx::query_as("SELECT count FROM usage_counters WHERE tenant_id = $1 AND metric = $2 AND period = $3")
                .bind(tenant.as_str())
                .bind(REQUESTS)
                .bind(day)
                .fetch_optional(db)
                .await?;
        let pending = self.lock().requests.get(&(tenant.as_str().to_string(), day.to_string())).copied();
        Ok(stored.map_or(0, |(n,)| n) + pending.unwrap_or(0))
    }

    /// Writes what is pending in one transaction; on failure it is kept for the next flush.
    pub async fn flush(&self, db: &Db) -> Result<(), sqlx::Error> {
        let _exclusive = self.flushing.lock().await;
        let batch = std::mem::take(&mut *self.lock());
        if batch.requests.is_empty()
            && batch.last_used.is_empty()
            && batch.api_calls.is_empty()
            && batch.active.is_empty()
        {
            return Ok(());
        }
        match write(db, &batch).await {
            Ok(()) => {
                // What was just written now counts as written for the loaded quotas.
                let mut quotas = self.quotas();
                for (key, n) in &batch.api_calls {
                    if let Some(quota) = quotas.get_mut(key) {
                        quota.stored += n;
                    }
                }
                Ok(())
            }
            Err(error) => {
                let mut pending = self.lock();
                for (key, n) in batch.requests {
                    *pending.requests.entry(key).or_insert(0) += n;
                }
                for (key, n) in batch.api_calls {
                    *pending.api_calls.entry(key).or_insert(0) += n;
                }
                for (key, at) in batch.last_used {
                    let slot = pending.last_used.entry(key).or_insert(at);
                    *slot = (*slot).max(at);
                }
                pending.active.extend(batch.active);
                Err(error)
            }
        }
    }
}

async fn write(db: &Db, batch: &Pending) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    // In key order, so that nodes flushing the same rows lock them in the same order.
    let mut counts: Vec<_> = batch
        .requests
        .iter()
        .map(|((tenant, day), n)| (tenant, REQUESTS, day, n))
        .chain(batch.api_calls.iter().map(|((tenant, month), n)| (tenant, API_CALLS, month, n)))
        .collect();
    counts.sort();
    for (tenant, metric, period, n) in counts {
        // A tenant deleted meanwhile has no row to count against: skipped.
        crate::entitlements::count_if_tenant(&mut tx, tenant, metric, period, *n).await?;
    }
    let mut last_used: Vec<_> = batch.last_used.iter().collect();
    last_used.sort();
    for (key_id, at) in last_used {
        keys::store::touch_last_used(&mut *tx, key_id, at).await?;
    }
    let mut active: Vec<_> = batch.active.iter().collect();
    active.sort();
    for (tenant, day, user_id) in active {
        // A user (or tenant) deleted meanwhile has no row to count: skipped.
        sqlx::query(
            "INSERT INTO active_users (tenant_id, day, user_id) \
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM users WHERE id = $3 AND tenant_id = $1) \
             ON CONFLICT (tenant_id, day, user_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(day)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
