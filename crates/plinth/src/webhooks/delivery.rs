//! Durable, at-least-once webhook delivery. Recording an event queues one delivery row per
//! matching endpoint in the same transaction; the row is the job. Workers on every node claim due
//! rows with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), send them signed (Standard
//! Webhooks and `X-Plinth-Signature`), and write the outcome back: success, a retry after the
//! configured back-off with jitter, or, when the attempts run out, the dead-letter queue. A node
//! killed mid-delivery loses nothing: its lease runs out and the row is claimed again, with the
//! same `webhook-id`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use sqlx::FromRow;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::app::App;
use crate::db::WriteTx;
use crate::events::{self, Event};
use crate::http::ApiResult;
use crate::id::{self, prefix};
use crate::secrets;
use crate::time;

/// The event an endpoint test sends.
pub const TEST_EVENT: &str = "webhook.test";
/// Most rows one claim takes.
const CLAIM_BATCH: usize = 32;
/// How often idle workers look for due retries (and for work queued on other nodes).
const POLL: Duration = Duration::from_secs(1);
/// How much longer than one attempt's timeout a lease lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// Most outcomes written in one transaction.
const SETTLE_BATCH: usize = 64;
/// Outcomes waiting to be written, at most; attempts wait past it.
const SETTLE_QUEUE: usize = 1024;
/// Most of a receiver's answer that is read.
const RESPONSE_READ_MAX: usize = 64 * 1024;
/// Most of a receiver's answer that is kept in the delivery log.
pub const RESPONSE_KEEP_CHARS: usize = 1024;

/// True when the event type `kind` matches one of an endpoint's `patterns`.
pub fn matches(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|pattern| {
        pattern == "*"
            || pattern == kind
            || pattern.strip_suffix(".*").is_some_and(|stem| {
                kind.len() > stem.len() && kind.starts_with(stem) && kind[stem.len()..].starts_with('.')
            })
    })
}

/// Queues each event's deliveries as it is recorded: the outbox's subscriber.
pub struct FanOut;

impl crate::outbox::Subscriber for FanOut {
    fn recorded<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        tenant: &'a str,
        event: &'a Value,
    ) -> futures_util::future::BoxFuture<'a, ApiResult<()>> {
        Box::pin(fan_out(tx, tenant, event))
    }
}

/// Queues, in the recording transaction, a delivery of the event `payload` to each of the
/// tenant's active endpoints that subscribe to it.
pub async fn fan_out(tx: &mut WriteTx, tenant: &str, payload: &Value) -> ApiResult<()> {
    let kind = payload["type"].as_str().unwrap_or_default();
    let object_type = payload["data"]["object_type"].as_str();
    let endpoints: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, events, object_types FROM webhooks WHERE tenant_id = $1 AND status = 'active'")
            .bind(tenant)
            .fetch_all(&mut **tx)
            .await?;
    let mut body: Option<String> = None;
    for (webhook_id, patterns, object_types) in endpoints {
        let patterns: Vec<String> = serde_json::from_str(&patterns)?;
        let object_types: Vec<String> = serde_json::from_str(&object_types)?;
        let wanted_type = object_types.is_empty() || object_type.is_some_and(|t| object_types.iter().any(|o| o == t));
        if !matches(&patterns, kind) || !wanted_type {
            continue;
        }
        let body = body.get_or_insert_with(|| payload.to_string());
        let event_id = payload["id"].as_str();
        queue(tx, tenant, &webhook_id, event_id, kind, body, None).await?;
    }
    Ok(())
}

/// Queues one delivery of `body` to an endpoint, due now; its id is the `webhook-id` it is sent
/// with. `max_attempts` overrides the configured schedule's.
pub async fn queue(
    tx: &mut WriteTx,
    tenant: &str,
    webhook_id: &str,
    event_id: Option<&str>,
    kind: &str,
    body: &str,
    max_attempts: Option<i64>,
) -> ApiResult<String> {
    let id = id::new_id(prefix::DELIVERY);
    let now = time::to_db(&time::now());
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type, payload, status, attempt, \
         max_attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $8, $8)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(webhook_id)
    .bind(event_id)
    .bind(kind)
    .bind(body)
    .bind(max_attempts)
    .bind(&now)
    .execute(&mut **tx)
    .await?;
    tx.queued_work();
    Ok(id)
}

/// How long finished deliveries stay in the log.
const LOG_DAYS: i64 = 30;

/// Forgets deliveries finished more than 30 days ago, with their attempts; failed ones still in
/// the dead-letter queue stay until it is dealt with.
pub async fn prune(app: &App) -> Result<u64, sqlx::Error> {
    let cutoff = time::to_db(&(time::now() - chrono::Duration::days(LOG_DAYS)));
    let done = sqlx::query(
        "DELETE FROM webhook_deliveries WHERE updated_at < $1 AND status IN ('success', 'failed') \
         AND NOT EXISTS (SELECT 1 FROM dlq_messages m WHERE m.reference_id = webhook_deliveries.id)",
    )
    .bind(cutoff)
    .execute(app.db.pool())
    .await?;
    Ok(done.rows_affected())
}

/// The attempts a delivery gets when it has no override: one, and one per retry wait.
pub fn default_max_attempts(app: &App) -> i64 {
    1 + app.config.webhooks.retry_schedule.0.len() as i64
}

/// The wait before the next attempt after `attempts` failed ones: the schedule's entry, plus up
/// to a tenth more at random so that retries of many deliveries spread out.
fn backoff(schedule: &[Duration], attempts: i64) -> Duration {
    let Some(last) = schedule.last() else { return Duration::ZERO };
    let wait = schedule.get((attempts.max(1) - 1) as usize).unwrap_or(last);
    let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0.0..0.1);
    wait.mul_f64(1.0 + jitter)
}

/// The `webhook-signature` header (one `v1,` signature per secret, space-separated) and the
/// `X-Plinth-Signature` header (hex HMAC of the body keyed with the whole current secret).
pub fn sign(msg_id: &str, timestamp: i64, body: &[u8], secrets: &[String]) -> (String, String) {
    let signed = format!("{msg_id}.{timestamp}.");
    let standard: Vec<String> = secrets
        .iter()
        .filter_map(|secret| STANDARD.decode(secret.strip_prefix("whsec_")?).ok())
        .map(|key| format!("v1,{}", STANDARD.encode(secrets::hmac_sha256(&key, &[signed.as_bytes(), body]))))
        .collect();
    let current = secrets.first().map(String::as_bytes).unwrap_or_default();
    let github = format!("sha256={}", secrets::hex(&secrets::hmac_sha256(current, &[body])));
    (standard.join(" "), github)
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub success: bool,
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    /// The start of the receiver's answer.
    pub response_body: Option<String>,
    pub error: Option<String>,
}

impl Outcome {
    fn failed(started: Instant, error: String) -> Outcome {
        Outcome {
            success: false,
            status_code: None,
            duration_ms: started.elapsed().as_millis() as i64,
            response_body: None,
            error: Some(error),
        }
    }
}

/// Sends `body` to `url` once, signed with `secrets` (the current one first).
pub async fn send(app: &App, url: &str, secrets: &[String], msg_id: &str, body: &str) -> Outcome {
    let started = Instant::now();
    let url = match reqwest::Url::parse(url) {
        Ok(url) => url,
        Err(_) => return Outcome::failed(started, "the endpoint URL does not parse".into()),
    };
    if let Err(problem) = crate::outbound::check_target(&url, app.config.outbound_allow_private) {
        return Outcome::failed(started, problem);
    }
    let timestamp = time::now().timestamp();
    let (signature, github) = sign(msg_id, timestamp, body.as_bytes(), secrets);
    let request = app
        .outbound
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("x-plinth-signature", github)
        .body(body.to_owned());
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Outcome::failed(started, crate::outbound::describe(&error)),
    };
    let status = response.status();
    let mut read = Vec::new();
    let mut read_error = None;
    while read.len() < RESPONSE_READ_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => read.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(error) => {
                read_error = Some(crate::outbound::describe(&error));
                break;
            }
        }
    }
    // Kept as text: PostgreSQL's holds no NUL, so it becomes U+FFFD like any byte that is not UTF-8.
    let text: String = String::from_utf8_lossy(&read)
        .chars()
        .take(RESPONSE_KEEP_CHARS)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    let success = status.is_success() && read_error.is_none();
    let error = if success {
        None
    } else if let Some(error) = read_error {
        Some(error)
    } else if status.is_redirection() {
        Some(format!("the receiver answered {status}; redirects are not followed"))
    } else {
        Some(format!("the receiver answered {status}"))
    };
    Outcome {
        success,
        status_code: Some(status.as_u16()),
        duration_ms: started.elapsed().as_millis() as i64,
        response_body: Some(text),
        error,
    }
}

/// A claimed delivery.
#[derive(Debug, FromRow)]
struct Claimed {
    id: String,
    tenant_id: String,
    webhook_id: String,
    payload: String,
    /// This attempt's number: counted when claimed, so that an attempt whose outcome is never
    /// written (the node died) still counts.
    attempt: i64,
    max_attempts: Option<i64>,
    #[sqlx(skip)]
    lease_token: String,
}

/// Starts this node's delivery workers; they stop when `stop` turns true.
pub fn spawn(app: App, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(app, stop))
}

async fn run(app: App, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(app.config.webhooks.concurrency as usize));
    let mut wake = app.db.outbox().work();
    let mut running = JoinSet::new();
    let (outcomes, settling) = mpsc::channel::<(Claimed, Outcome)>(SETTLE_QUEUE);
    let settler = tokio::spawn(settle_all(app.clone(), settling));
    loop {
        if *stop.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let free = permits.available_permits().min(CLAIM_BATCH);
        let claimed = if free == 0 {
            Vec::new()
        } else {
            claim(&app, free).await.unwrap_or_else(|error| {
                tracing::warn!(?error, "claiming webhook deliveries failed; will retry");
                Vec::new()
            })
        };
        let more = free > 0 && claimed.len() == free;
        for delivery in claimed {
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            let (app, outcomes) = (app.clone(), outcomes.clone());
            running.spawn(async move {
                if let Some(done) = attempt(&app, delivery).await {
                    let _ = outcomes.send(done).await;
                }
                drop(permit);
            });
        }
        if more {
            continue;
        }
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(POLL).await;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
            _ = running.join_next(), if free == 0 => {}
            _ = stop.changed() => break,
        }
    }
    // In-flight attempts get a moment to finish; any cut short is sent again when its lease ends.
    let finish = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), finish).await.is_err() {
        running.abort_all();
    }
    // The outcomes gathered so far are written before the database closes.
    drop(outcomes);
    let _ = settler.await;
}

/// Writes outcomes as they come, up to `SETTLE_BATCH` in one transaction: one commit (and on
/// SQLite one sync) for many deliveries.
async fn settle_all(app: App, mut settling: mpsc::Receiver<(Claimed, Outcome)>) {
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    while settling.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
        if let Err(error) = settle(&app, &batch).await {
            tracing::warn!(?error, "recording webhook attempts together failed; recording them one by one");
            for done in &batch {
                if let Err(error) = settle(&app, std::slice::from_ref(done)).await {
                    tracing::warn!(?error, delivery = %done.0.id, "recording a webhook attempt failed; it will be sent again");
                }
            }
        }
        batch.clear();
    }
}

/// Leases up to `limit` due deliveries of active endpoints to this worker.
async fn claim(app: &App, limit: usize) -> ApiResult<Vec<Claimed>> {
    let now = time::now();
    // A read first, so that an idle node does not take the write lock to find nothing.
    let due: Option<(String,)> = sqlx::query_as(
        "SELECT d.id FROM webhook_deliveries d WHERE d.next_attempt_at <= $1 \
         AND (d.lease_until IS NULL OR d.lease_until < $1) \
         AND EXISTS (SELECT 1 FROM webhooks w WHERE w.id = d.webhook_id AND w.status = 'active') LIMIT 1",
    )
    .bind(time::to_db(&now))
    .fetch_optional(app.db.pool())
    .await?;
    if due.is_none() {
        return Ok(Vec::new());
    }
    let lease = Duration::from_secs(app.config.webhooks.timeout_secs) + LEASE_MARGIN;
    let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
    let token = secrets::random_alphanumeric(24);
    let lock = crate::db::dialect::skip_locked(app.db.backend(), Some("d"));
    let mut tx = app.db.begin_write().await?;
    let mut claimed: Vec<Claimed> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries SET lease_until = $1, lease_token = $2, attempt = attempt + 1 WHERE id IN (\
         SELECT d.id FROM webhook_deliveries d WHERE d.next_attempt_at <= $3 \
         AND (d.lease_until IS NULL OR d.lease_until < $3) \
         AND EXISTS (SELECT 1 FROM webhooks w WHERE w.id = d.webhook_id AND w.status = 'active') \
         ORDER BY d.next_attempt_at LIMIT {limit}{lock}) \
         RETURNING id, tenant_id, webhook_id, payload, attempt, max_attempts"
    ))
    .bind(time::to_db(&until))
    .bind(&token)
    .bind(time::to_db(&now))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    for delivery in &mut claimed {
        delivery.lease_token = token.clone();
    }
    Ok(claimed)
}

/// One attempt of a claimed delivery; its outcome, to be written back.
async fn attempt(app: &App, delivery: Claimed) -> Option<(Claimed, Outcome)> {
    let limit = delivery.max_attempts.unwrap_or_else(|| default_max_attempts(app));
    let outcome = if delivery.attempt > limit {
        // The last attempt was made but its outcome never written: no attempt is left.
        Outcome::failed(Instant::now(), "no attempts left: the outcome of the last one was not recorded".into())
    } else {
        match target(app, &delivery).await {
            Ok(Some((url, secrets))) => send(app, &url, &secrets, &delivery.id, &delivery.payload).await,
            // Deleted meanwhile: its deliveries went with it.
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(?error, delivery = %delivery.id, "loading a webhook endpoint failed");
                Outcome::failed(Instant::now(), "the endpoint could not be loaded; will retry".into())
            }
        }
    };
    Some((delivery, outcome))
}

/// The endpoint's URL and signing secrets, or `None` when it is gone.
async fn target(app: &App, delivery: &Claimed) -> ApiResult<Option<(String, Vec<String>)>> {
    let url: Option<(String,)> = sqlx::query_as("SELECT url FROM webhooks WHERE id = $1")
        .bind(&delivery.webhook_id)
        .fetch_optional(app.db.pool())
        .await?;
    let Some((url,)) = url else { return Ok(None) };
    let secrets = super::signing_secrets(app, &delivery.tenant_id, &delivery.webhook_id).await?;
    Ok(Some((url, secrets)))
}

/// Records an attempt's log row.
pub async fn record_attempt(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    delivery_id: &str,
    attempt: i64,
    outcome: &Outcome,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO webhook_attempts (id, delivery_id, tenant_id, attempt, status_code, duration_ms, response_body, \
         error, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id::new_id(prefix::ATTEMPT))
    .bind(delivery_id)
    .bind(tenant)
    .bind(attempt)
    .bind(outcome.status_code.map(i64::from))
    .bind(outcome.duration_ms)
    .bind(&outcome.response_body)
    .bind(&outcome.error)
    .bind(time::to_db(&time::now()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes an attempt's outcome: the log row, the delivery's new state (done, retrying, or dead
/// and in the dead-letter queue), and the endpoint's health, disabling it after too many
/// failures in a row.
async fn settle(app: &App, done: &[(Claimed, Outcome)]) -> ApiResult<()> {
    let mut tx = app.db.begin_write().await?;
    for (delivery, outcome) in done {
        settle_one(app, &mut tx, delivery, outcome).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn settle_one(app: &App, tx: &mut WriteTx, delivery: &Claimed, outcome: &Outcome) -> ApiResult<()> {
    let now = time::now();
    let attempts = delivery.attempt;
    let limit = delivery.max_attempts.unwrap_or_else(|| default_max_attempts(app));
    let schedule = &app.config.webhooks.retry_schedule.0;
    let (status, next) = if outcome.success {
        ("success", None)
    } else if attempts < limit {
        let wait = chrono::Duration::from_std(backoff(schedule, attempts)).unwrap_or_default();
        ("retrying", Some(now + wait))
    } else {
        ("failed", None)
    };
    let updated = sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, attempt = $2, next_attempt_at = $3, lease_until = NULL, \
         lease_token = NULL, response_code = $4, last_error = $5, delivered_at = COALESCE($6, delivered_at), \
         updated_at = $7 WHERE id = $8 AND lease_token = $9",
    )
    .bind(status)
    .bind(attempts.min(limit))
    .bind(next.as_ref().map(time::to_db))
    .bind(outcome.status_code.map(i64::from))
    .bind(&outcome.error)
    .bind(outcome.success.then(|| time::to_db(&now)))
    .bind(time::to_db(&now))
    .bind(&delivery.id)
    .bind(&delivery.lease_token)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        // The lease was lost (it ran out, or the delivery was deleted): whoever holds the
        // delivery now records its own attempt.
        return Ok(());
    }
    record_attempt(tx, &delivery.tenant_id, &delivery.id, attempts, outcome).await?;
    if status == "failed" {
        crate::dlq::add_delivery(tx, &delivery.tenant_id, &delivery.id, attempts.min(limit), outcome.error.as_deref())
            .await?;
    }
    tx.queued_work();
    endpoint_health(app, tx, &delivery.tenant_id, &delivery.webhook_id, outcome.success).await
}

/// Counts an attempt on the endpoint; disables it, and records `webhook.disabled`, when it has
/// failed the configured number of times in a row.
async fn endpoint_health(app: &App, tx: &mut WriteTx, tenant: &str, webhook_id: &str, success: bool) -> ApiResult<()> {
    let now = time::to_db(&time::now());
    let sql = if success {
        "UPDATE webhooks SET success_count = success_count + 1, consecutive_failures = 0, last_delivery_at = $1 \
         WHERE id = $2"
    } else {
        "UPDATE webhooks SET failure_count = failure_count + 1, consecutive_failures = consecutive_failures + 1, \
         last_delivery_at = $1 WHERE id = $2"
    };
    sqlx::query(sql).bind(&now).bind(webhook_id).execute(&mut **tx).await?;
    let threshold = i64::from(app.config.webhooks.disable_after);
    if success || threshold == 0 {
        return Ok(());
    }
    let disabled: Option<(String, i64)> = sqlx::query_as(
        "UPDATE webhooks SET status = 'disabled', updated_at = $1 WHERE id = $2 AND status = 'active' \
         AND consecutive_failures >= $3 RETURNING url, consecutive_failures",
    )
    .bind(&now)
    .bind(webhook_id)
    .bind(threshold)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((url, failures)) = disabled {
        tracing::warn!(webhook = %webhook_id, failures, "disabling a webhook endpoint that keeps failing");
        let data = json!({
            "webhook_id": webhook_id,
            "url": url,
            "consecutive_failures": failures,
            "reason": format!("{failures} delivery attempts in a row failed"),
        });
        let event = Event { kind: "webhook.disabled", resource_type: "webhook", resource_id: webhook_id, data };
        events::record(tx, tenant, event).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_wildcards_and_prefixes_only_at_dots() {
        let p = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&p(&["*"]), "object.created"));
        assert!(matches(&p(&["object.*"]), "object.created"));
        assert!(matches(&p(&["inbound.*"]), "inbound.github.received"));
        assert!(!matches(&p(&["object.*"]), "objects.created"));
        assert!(!matches(&p(&["object.*"]), "object"));
        assert!(matches(&p(&["object.created"]), "object.created"));
        assert!(!matches(&p(&["object.created"]), "object.updated"));
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks specification's example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let body = br#"{"test": 2432232314}"#;
        let (standard, github) = sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, std::slice::from_ref(&secret));
        assert_eq!(standard, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let expected = secrets::hex(&secrets::hmac_sha256(secret.as_bytes(), &[body]));
        assert_eq!(github, format!("sha256={expected}"));
        let two = sign("m", 1, b"{}", &[new(), new()]).0;
        assert_eq!(two.split(' ').count(), 2);
    }

    fn new() -> String {
        format!("whsec_{}", STANDARD.encode([7u8; 32]))
    }

    #[test]
    fn backoff_follows_the_schedule_with_a_little_jitter() {
        let schedule = vec![Duration::from_secs(5), Duration::from_secs(300)];
        let first = backoff(&schedule, 1);
        assert!(first >= Duration::from_secs(5) && first < Duration::from_millis(5500));
        let later = backoff(&schedule, 7);
        assert!(later >= Duration::from_secs(300) && later < Duration::from_secs(330));
    }
}
