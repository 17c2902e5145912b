//! Rate limits (seed 001's tiers): a token bucket per credential, refilled at the tier's rate per
//! minute and holding the tier's burst on top. In the embedded mode the buckets live in memory;
//! with PostgreSQL they live in one table, so that every node shares the same counts.
//!
//! Credentialed requests are limited by their credential. Public routes listed in
//! `PUBLIC_ROUTES`, and requests whose credential is refused, are limited by client address
//! through the same buckets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::auth::{client_ip, Auth};
use crate::db::{Backend, Db};
use crate::http::{ApiError, ErrorCode};
use crate::tenants::model::Tier;

/// Public routes limited by client address: (method, route, requests per minute).
pub const PUBLIC_ROUTES: &[(Method, &str, u64)] = &[(Method::POST, "/v1/token", 60)];

/// Requests per minute one client address may make with credentials the server refuses.
pub const REFUSED_PER_ADDRESS: u64 = 120;

/// A bucket unused this long has refilled whatever its rate: it is forgotten.
const IDLE_SECS: u64 = 3600;

/// Requests per minute and burst (percent on top) of a tier.
pub fn tier_plan(tier: Tier) -> (u64, u64) {
    match tier {
        Tier::Free => (60, 0),
        Tier::Starter => (1_000, 20),
        Tier::Pro => (5_000, 30),
        Tier::Agency => (20_000, 50),
        Tier::Enterprise => (100_000, 100),
    }
}

/// The bucket a request draws from.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub bucket: String,
    /// Requests per minute: the refill rate, and what `X-RateLimit-Limit` says.
    pub per_minute: u64,
    /// Most requests the bucket holds: the rate plus the burst.
    pub capacity: u64,
}

impl RateLimit {
    /// The limit of a credential: the tier's, or the credential's own per-minute override.
    pub fn for_credential(bucket: String, tier: Tier, override_per_minute: Option<i64>) -> Self {
        let (tier_rate, burst_pct) = tier_plan(tier);
        let per_minute =
            override_per_minute.and_then(|n| u64::try_from(n).ok()).filter(|&n| n > 0).unwrap_or(tier_rate);
        RateLimit { bucket, per_minute, capacity: per_minute + per_minute * burst_pct / 100 }
    }

    /// The limit of a public route for one client address.
    pub fn for_address(route: &str, ip: IpAddr, per_minute: u64) -> Self {
        RateLimit { bucket: format!("ip:{route}:{ip}"), per_minute, capacity: per_minute }
    }

    fn refill_per_sec(&self) -> f64 {
        self.per_minute as f64 / 60.0
    }
}

/// The outcome of drawing one request from a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Unix seconds when the bucket is full again.
    pub reset_at: u64,
    /// Seconds until one request is allowed again (0 when allowed now).
    pub retry_after: u64,
}

impl Decision {
    fn new(limit: &RateLimit, tokens_after: f64, allowed: bool, now: f64) -> Self {
        let rate = limit.refill_per_sec();
        let tokens = tokens_after.max(0.0);
        let full_in = ((limit.capacity as f64 - tokens) / rate).max(0.0).ceil();
        let retry_after = if allowed { 0 } else { ((1.0 - tokens) / rate).ceil().max(1.0) as u64 };
        Decision {
            allowed,
            limit: limit.per_minute,
            remaining: tokens.floor() as u64,
            reset_at: (now + full_in).ceil() as u64,
            retry_after,
        }
    }

    fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset_at));
        if !self.allowed {
            headers.insert("retry-after", HeaderValue::from(self.retry_after));
        }
    }

    /// The 429 `RATE_LIMITED` answer, with `retry_after`, `limit`, `remaining` and `reset_at`.
    pub fn refusal(&self) -> ApiError {
        let mut error = ApiError::new(
            ErrorCode::RateLimited,
            format!("too many requests: {} per minute allowed; retry after {} s", self.limit, self.retry_after),
        );
        let reset_at = chrono::DateTime::from_timestamp(self.reset_at as i64, 0).unwrap_or_default();
        for (field, value) in [
            ("retry_after", json!(self.retry_after)),
            ("limit", json!(self.limit)),
            ("remaining", json!(self.remaining)),
            ("reset_at", json!(crate::time::to_db(&reset_at))),
        ] {
            error.extra.insert(field.into(), value);
        }
        error
    }
}

#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Where buckets live.
#[derive(Debug)]
pub enum Limiter {
    /// In this process (the embedded mode: one process serves everything).
    Memory(Mutex<HashMap<String, Bucket>>),
    /// In the shared database (several nodes on one PostgreSQL), drawn from in leases.
    Shared(Db, Mutex<HashMap<String, Lease>>),
}

/// Tokens this node took from a shared bucket and has not spent yet.
#[derive(Debug)]
pub struct Lease {
    tokens: u64,
    /// The bucket's capacity when leased (a changed limit starts a new lease).
    capacity: u64,
    /// Tokens the shared bucket held after the lease was taken.
    shared_after: f64,
    at: Instant,
}

/// The share of a bucket's capacity one node leases at a time (1 %, at least one token): one
/// round trip to the shared bucket per lease rather than per request. A node never spends more
/// than it leased, so all nodes together never exceed the limit; what one node holds unspent is
/// not another's to spend, so a bucket may refuse up to a lease per node early.
const LEASE_DIVISOR: u64 = 100;

fn lease_size(capacity: u64) -> u64 {
    (capacity / LEASE_DIVISOR).max(1)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// The PostgreSQL token bucket: refill by elapsed database time, then take up to `$4` whole
/// tokens (a lease); `allowed` keeps how many the draw took. Its commit does not wait for the
/// log's sync (`synchronous_commit` off for this statement's own transaction): a bucket is not a
/// record, and what a crash of the database could lose of it is the last moment's draws, while
/// a synced commit on every draw cost every read a disk sync.
const TAKE_SHARED: &str = "\
INSERT INTO rate_buckets AS b (bucket, tokens, allowed, updated_at) \
SELECT $1, $2 - LEAST($4, $2), LEAST($4, $2)::bigint, EXTRACT(EPOCH FROM clock_timestamp())::float8 \
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS unsynced \
ON CONFLICT (bucket) DO UPDATE SET \
  tokens = LEAST($2, b.tokens + (excluded.updated_at - b.updated_at) * $3) \
           - LEAST($4, FLOOR(LEAST($2, b.tokens + (excluded.updated_at - b.updated_at) * $3))), \
  allowed = LEAST($4, FLOOR(LEAST($2, b.tokens + (excluded.updated_at - b.updated_at) * $3)))::bigint, \
  updated_at = excluded.updated_at \
RETURNING tokens, allowed, updated_at";

impl Limiter {
    /// Forgets buckets idle for an hour (they are full again, so nothing is lost), and leases
    /// unspent as long.
    pub async fn forget_idle(&self) -> Result<u64, sqlx::Error> {
        match self {
            Limiter::Memory(buckets) => {
                let mut buckets = buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let before = buckets.len();
                buckets.retain(|_, bucket| bucket.at.elapsed().as_secs() < IDLE_SECS);
                Ok((before - buckets.len()) as u64)
            }
            Limiter::Shared(db, leases) => {
                leases
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .retain(|_, lease| lease.at.elapsed().as_secs() < IDLE_SECS);
                let done = sqlx::query(
                    "DELETE FROM rate_buckets WHERE updated_at < EXTRACT(EPOCH FROM clock_timestamp())::float8 - $1",
                )
                .bind(IDLE_SECS as f64)
                .execute(db.pool())
                .await?;
                Ok(done.rows_affected())
            }
        }
    }

    pub fn for_backend(db: &Db) -> Limiter {
        match db.backend() {
            Backend::Sqlite => Limiter::Memory(Mutex::new(HashMap::new())),
            Backend::Postgres => Limiter::Shared(db.clone(), Mutex::new(HashMap::new())),
        }
    }

    /// Draws one request from `limit`'s bucket.
    pub async fn take(&self, limit: &RateLimit) -> Result<Decision, sqlx::Error> {
        let capacity = limit.capacity as f64;
        let rate = limit.refill_per_sec();
        match self {
            Limiter::Memory(buckets) => {
                let mut buckets = buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let now = Instant::now();
                let bucket = buckets.entry(limit.bucket.clone()).or_insert(Bucket { tokens: capacity, at: now });
                let refilled = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(capacity);
                let allowed = refilled >= 1.0;
                bucket.tokens = if allowed { refilled - 1.0 } else { refilled };
                bucket.at = now;
                Ok(Decision::new(limit, bucket.tokens, allowed, unix_now()))
            }
            Limiter::Shared(db, leases) => {
                if let Some(decision) = spend_lease(leases, limit) {
                    return Ok(decision);
                }
                let (shared_after, taken, now): (f64, i64, f64) = sqlx::query_as(TAKE_SHARED)
                    .bind(&limit.bucket)
                    .bind(capacity)
                    .bind(rate)
                    .bind(lease_size(limit.capacity) as f64)
                    .fetch_one(db.pool())
                    .await?;
                let Some(left) = u64::try_from(taken).ok().and_then(|taken| taken.checked_sub(1)) else {
                    return Ok(Decision::new(limit, shared_after, false, now));
                };
                let mut leases = leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let lease = leases.entry(limit.bucket.clone()).or_insert(Lease {
                    tokens: 0,
                    capacity: limit.capacity,
                    shared_after,
                    at: Instant::now(),
                });
                if lease.capacity != limit.capacity {
                    lease.tokens = 0;
                    lease.capacity = limit.capacity;
                }
                lease.tokens += left;
                lease.shared_after = shared_after;
                lease.at = Instant::now();
                Ok(Decision::new(limit, shared_after + lease.tokens as f64, true, now))
            }
        }
    }
}

/// Spends one token of this node's lease on `limit`'s bucket, if it holds one.
fn spend_lease(leases: &Mutex<HashMap<String, Lease>>, limit: &RateLimit) -> Option<Decision> {
    let mut leases = leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let lease = leases.get_mut(&limit.bucket)?;
    if lease.tokens == 0 || lease.capacity != limit.capacity {
        return None;
    }
    lease.tokens -= 1;
    lease.at = Instant::now();
    Some(Decision::new(limit, lease.shared_after + lease.tokens as f64, true, unix_now()))
}

/// The bucket this request draws from, if any: its credential's, or its client address's on a
/// listed public route.
fn limit_for(request: &Request, app: &App) -> Option<RateLimit> {
    if let Some(auth) = request.extensions().get::<Auth>() {
        return auth.rate.clone();
    }
    let ip = client_ip(request.headers(), request.extensions(), &app.config.trusted_proxies);
    if request.extensions().get::<crate::auth::CredentialRefused>().is_some() {
        return Some(RateLimit::for_address("refused", ip, REFUSED_PER_ADDRESS));
    }
    let route = request.extensions().get::<MatchedPath>()?.as_str();
    let (_, _, per_minute) = PUBLIC_ROUTES.iter().find(|(m, r, _)| m == request.method() && *r == route)?;
    Some(RateLimit::for_address(route, ip, *per_minute))
}

/// Middleware: refuses a request over its limit with 429, and sets the `X-RateLimit-*` headers.
pub async fn enforce(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(limit) = limit_for(&request, &app) else {
        return next.run(request).await;
    };
    let decision = match app.limiter.take(&limit).await {
        Ok(decision) => decision,
        Err(error) => {
            // Fail open: a limiter outage must not take the API down with it.
            tracing::warn!(%error, "rate limiter unavailable; request let through");
            return next.run(request).await;
        }
    };
    let mut response = if decision.allowed { next.run(request).await } else { decision.refusal().into_response() };
    decision.write_headers(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_contract() {
        assert_eq!(RateLimit::for_credential("k".into(), Tier::Free, None).capacity, 60);
        assert_eq!(RateLimit::for_credential("k".into(), Tier::Starter, None).capacity, 1_200);
        assert_eq!(RateLimit::for_credential("k".into(), Tier::Pro, None).capacity, 6_500);
        assert_eq!(RateLimit::for_credential("k".into(), Tier::Agency, None).capacity, 30_000);
        assert_eq!(RateLimit::for_credential("k".into(), Tier::Enterprise, None).capacity, 200_000);
        let custom = RateLimit::for_credential("k".into(), Tier::Pro, Some(100));
        assert_eq!((custom.per_minute, custom.capacity), (100, 130));
    }

    #[tokio::test]
    async fn memory_bucket_allows_capacity_then_refuses() {
        let limiter = Limiter::Memory(Mutex::new(HashMap::new()));
        let limit = RateLimit::for_credential("k".into(), Tier::Free, Some(3));
        for remaining in [2, 1, 0] {
            let decision = limiter.take(&limit).await.unwrap();
            assert!(decision.allowed);
            assert_eq!(decision.remaining, remaining);
        }
        let refused = limiter.take(&limit).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 3);
        assert!(refused.retry_after >= 1 && refused.retry_after <= 20, "{refused:?}");
    }
}
