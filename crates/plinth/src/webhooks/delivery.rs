//! Durable, at-least-once webhook delivery. Recording an event queues one delivery row per
//! matching endpoint and one `webhook.deliver` job for it, in the same transaction. The jobs
//! engine runs the job on whichever node claims it: the delivery is sent signed (Standard
//! Webhooks and `X-Plinth-Signature`) and its outcome written back as the job settles: success,
//! a retry after the configured back-off with jitter, or, when the attempts run out, the
//! dead-letter queue. A node killed mid-delivery loses nothing: the job's lease runs out and it
//! is claimed again, with the same `webhook-id`. Deliveries of a disabled endpoint wait, without
//! a job, until it is enabled again.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::app::App;
use crate::db::WriteTx;
use crate::events::{self, Event};
use crate::http::ApiError;
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::jobs::{self, Fate, Job, JobError, NewJob, Performed};
use crate::outbox::OutboxError;
use crate::secrets;
use crate::time;

/// The event an endpoint test sends.
pub const TEST_EVENT: &str = "webhook.test";
/// The job kind that sends a delivery; its reference is the delivery's id.
pub const KIND: &str = "webhook.deliver";
/// How much longer than one attempt's timeout a lease lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
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

/// What went wrong queueing, loading or settling a delivery; an `ApiError` only at the edge.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a stored endpoint does not read back: {0}")]
    Stored(#[from] serde_json::Error),
    #[error("jobs: {0}")]
    Job(#[from] JobError),
    #[error("recording an event: {0}")]
    Outbox(#[from] OutboxError),
}

impl From<DeliveryError> for ApiError {
    fn from(error: DeliveryError) -> Self {
        match error {
            // A saturated database stays 503, whichever step met it.
            DeliveryError::Database(error) | DeliveryError::Job(JobError::Database(error)) => error.into(),
            DeliveryError::Outbox(error) => error.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<DeliveryError> for JobError {
    fn from(error: DeliveryError) -> Self {
        match error {
            DeliveryError::Database(error) => JobError::Database(error),
            DeliveryError::Job(error) => error,
            other => JobError::Failed(other.to_string()),
        }
    }
}

impl From<DeliveryError> for OutboxError {
    fn from(error: DeliveryError) -> Self {
        match error {
            DeliveryError::Database(error) => OutboxError::Database(error),
            DeliveryError::Outbox(error) => error,
            other => OutboxError::Subscriber { subscriber: "webhook fan-out", reason: other.to_string() },
        }
    }
}

/// Queues each event's deliveries as it is recorded: the outbox's subscriber.
pub struct FanOut;

impl crate::outbox::Subscriber for FanOut {
    fn recorded<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        tenant: &'a TenantId,
        event: &'a Value,
    ) -> futures_util::future::BoxFuture<'a, Result<(), OutboxError>> {
        Box::pin(async move { Ok(fan_out(tx, tenant, event).await?) })
    }
}

/// Queues, in the recording transaction, a delivery of the event `payload` to each of the
/// tenant's active endpoints that subscribe to it.
pub async fn fan_out(tx: &mut WriteTx, tenant: &TenantId, payload: &Value) -> Result<(), DeliveryError> {
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
    tenant: &TenantId,
    webhook_id: &str,
    event_id: Option<&str>,
    kind: &str,
    body: &str,
    max_attempts: Option<i64>,
) -> Result<String, DeliveryError> {
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
    enqueue(tx, tenant, &id, 0, max_attempts).await?;
    Ok(id)
}

/// The job that sends delivery `id`, `attempts_made` attempts into it.
pub async fn enqueue(
    tx: &mut WriteTx,
    tenant: &TenantId,
    id: &str,
    attempts_made: i64,
    max_attempts: Option<i64>,
) -> Result<(), DeliveryError> {
    let job = NewJob { max_attempts, attempts_made, ..NewJob::new(KIND, json!({})).tenant(tenant).reference(id) };
    jobs::enqueue(tx, job).await?;
    Ok(())
}

/// Queues again the deliveries of `webhook_id` that waited while it was disabled.
pub async fn resume(tx: &mut WriteTx, tenant: &TenantId, webhook_id: &str) -> Result<(), DeliveryError> {
    let waiting: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT d.id, d.attempt, d.max_attempts FROM webhook_deliveries d WHERE d.webhook_id = $1          AND d.tenant_id = $2 AND d.status IN ('pending', 'retrying')          AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.reference = d.id AND j.kind = $3)",
    )
    .bind(webhook_id)
    .bind(tenant)
    .bind(KIND)
    .fetch_all(&mut **tx)
    .await?;
    for (id, attempt, max_attempts) in waiting {
        enqueue(tx, tenant, &id, attempt, max_attempts).await?;
    }
    Ok(())
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

/// The `webhook.deliver` kind: sends one delivery.
pub struct Deliver(pub App);

/// What one run of a delivery job came to.
pub enum Delivered {
    /// Sent once; the receiver's answer.
    Sent(Outcome),
    /// The delivery or its endpoint is gone, or the endpoint is disabled: nothing to write.
    Nothing,
    /// This server failed before sending (its database, an endpoint secret that does not open):
    /// logged and retried, never counted against the endpoint's health.
    Local(Outcome),
}

/// A delivery as its job sends it.
#[derive(Debug)]
struct Due {
    tenant_id: TenantId,
    webhook_id: String,
    url: String,
    status: String,
    payload: String,
}

impl jobs::Kind for Deliver {
    type Outcome = Delivered;

    fn name(&self) -> &'static str {
        KIND
    }

    fn concurrency(&self) -> usize {
        self.0.config.webhooks.concurrency as usize
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.0.config.webhooks.timeout_secs) + LEASE_MARGIN
    }

    fn max_attempts(&self) -> i64 {
        default_max_attempts(&self.0)
    }

    fn backoff(&self, attempts: i64) -> Duration {
        jobs::scheduled(&self.0.config.webhooks.retry_schedule.0, attempts)
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<Delivered>> {
        Box::pin(async move {
            let app = &self.0;
            let id = job.reference.as_deref().unwrap_or_default();
            let due = match load(app, id).await {
                Ok(Some(due)) if due.status == "active" => due,
                // Deleted meanwhile, or disabled: it waits for the endpoint to be enabled.
                Ok(_) => return Performed::done(Delivered::Nothing),
                Err(error) => {
                    tracing::warn!(?error, delivery = %id, "loading a webhook delivery failed");
                    let outcome =
                        Outcome::failed(Instant::now(), "the endpoint could not be loaded; will retry".into());
                    let error = outcome.error.clone().unwrap_or_default();
                    return Performed::failed(Delivered::Sent(outcome), error);
                }
            };
            let outcome = match super::signing_secrets(app, &due.tenant_id, &due.webhook_id).await {
                Ok(secrets) => send(app, &due.url, &secrets, id, &due.payload).await,
                Err(error) => {
                    tracing::warn!(?error, delivery = %id, "opening a webhook's secrets failed");
                    let outcome =
                        Outcome::failed(Instant::now(), "the endpoint's signing secret could not be opened".into());
                    let error = outcome.error.clone().unwrap_or_default();
                    return Performed::failed(Delivered::Local(outcome), error);
                }
            };
            match outcome.error.clone() {
                None => Performed::done(Delivered::Sent(outcome)),
                Some(error) => Performed::failed(Delivered::Sent(outcome), error),
            }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        job: &'a Job,
        outcome: Option<&'a Delivered>,
        fate: &'a Fate,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let lost;
            let (outcome, reached) = match outcome {
                Some(Delivered::Nothing) => {
                    // The endpoint may have been enabled since the run found it disabled (its
                    // resume saw this job and skipped the delivery): then it goes out again.
                    if let (Some(id), Some(tenant)) = (job.reference.as_deref(), job.tenant_id.as_ref()) {
                        requeue_if_active(tx, tenant, id).await?;
                    }
                    return Ok(());
                }
                Some(Delivered::Sent(outcome)) => (outcome, true),
                Some(Delivered::Local(outcome)) => (outcome, false),
                None => {
                    lost = Outcome::failed(
                        Instant::now(),
                        "no attempts left: the outcome of the last one was not recorded".into(),
                    );
                    // Cut short on this side (the node died): not the endpoint's doing.
                    (&lost, false)
                }
            };
            settle_delivery(&self.0, tx, job, outcome, fate, reached).await?;
            Ok(())
        })
    }
}

/// Queues delivery `id` again when it still waits and its endpoint is active.
async fn requeue_if_active(tx: &mut WriteTx, tenant: &TenantId, id: &str) -> Result<(), DeliveryError> {
    let waiting: Option<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT d.attempt, d.max_attempts FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.id = $1 AND w.status = 'active' AND d.status IN ('pending', 'retrying')",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((attempt, max_attempts)) = waiting {
        enqueue(tx, tenant, id, attempt, max_attempts).await?;
    }
    Ok(())
}

/// The delivery `id` with its endpoint, or `None` when either is gone.
async fn load(app: &App, id: &str) -> Result<Option<Due>, DeliveryError> {
    let row: Option<(TenantId, String, String, String, String)> = sqlx::query_as(
        "SELECT d.tenant_id, d.webhook_id, w.url, w.status, d.payload FROM webhook_deliveries d          JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(app.db.pool())
    .await?;
    Ok(row.map(|(tenant_id, webhook_id, url, status, payload)| Due { tenant_id, webhook_id, url, status, payload }))
}

/// Records an attempt's log row.
pub async fn record_attempt(
    conn: &mut sqlx::AnyConnection,
    tenant: &TenantId,
    delivery_id: &str,
    attempt: i64,
    outcome: &Outcome,
) -> Result<(), DeliveryError> {
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

/// Writes an attempt's outcome as its job settles: the log row, the delivery's new state (done,
/// retrying, or dead and in the dead-letter queue), and the endpoint's health, disabling it after
/// too many failures in a row.
/// `reached`: the attempt went to the endpoint, so it counts for the endpoint's health.
async fn settle_delivery(
    app: &App,
    tx: &mut WriteTx,
    job: &Job,
    outcome: &Outcome,
    fate: &Fate,
    reached: bool,
) -> Result<(), DeliveryError> {
    let Some(id) = job.reference.as_deref() else { return Ok(()) };
    let Some(tenant) = job.tenant_id.as_ref() else { return Ok(()) };
    let now = time::now();
    let attempts = job.attempt.min(job.max_attempts);
    let (status, next) = match fate {
        Fate::Done => ("success", None),
        Fate::Retry { at, .. } => ("retrying", Some(*at)),
        Fate::Dead { .. } => ("failed", None),
    };
    let webhook: Option<(String,)> = sqlx::query_as(
        "UPDATE webhook_deliveries SET status = $1, attempt = $2, next_attempt_at = $3, response_code = $4,          last_error = $5, delivered_at = COALESCE($6, delivered_at), updated_at = $7 WHERE id = $8 RETURNING webhook_id",
    )
    .bind(status)
    .bind(attempts)
    .bind(next.as_ref().map(time::to_db))
    .bind(outcome.status_code.map(i64::from))
    .bind(&outcome.error)
    .bind(outcome.success.then(|| time::to_db(&now)))
    .bind(time::to_db(&now))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    // Deleted meanwhile, with its endpoint.
    let Some((webhook_id,)) = webhook else { return Ok(()) };
    record_attempt(tx, tenant, id, attempts, outcome).await?;
    if status == "failed" {
        crate::dlq::add_delivery(tx, tenant, id, attempts, outcome.error.as_deref()).await?;
    }
    if !reached {
        return Ok(());
    }
    endpoint_health(app, tx, tenant, &webhook_id, outcome.success).await
}

/// Counts an attempt on the endpoint; disables it, and records `webhook.disabled`, when it has
/// failed the configured number of times in a row.
async fn endpoint_health(
    app: &App,
    tx: &mut WriteTx,
    tenant: &TenantId,
    webhook_id: &str,
    success: bool,
) -> Result<(), DeliveryError> {
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
    fn delivery_errors_keep_their_cause_up_to_the_edge() {
        use crate::http::error::ErrorCode;
        // A saturated database is 503 however deep it was met, and stays a database error for
        // the jobs engine and the outbox.
        let saturated = || sqlx::Error::PoolTimedOut;
        for error in [
            DeliveryError::Database(saturated()),
            DeliveryError::Job(JobError::Database(saturated())),
            DeliveryError::Outbox(OutboxError::Database(saturated())),
        ] {
            assert_eq!(ApiError::from(error).code, ErrorCode::Unavailable);
        }
        assert!(matches!(JobError::from(DeliveryError::Database(saturated())), JobError::Database(_)));
        assert!(matches!(OutboxError::from(DeliveryError::Database(saturated())), OutboxError::Database(_)));
        // Anything else keeps its reason where it is written (a job's last error), and is 500
        // without it at the edge.
        let unreadable = || DeliveryError::Stored(serde_json::from_str::<Value>("{").unwrap_err());
        let JobError::Failed(reason) = JobError::from(unreadable()) else { panic!("not a failure") };
        assert!(reason.starts_with("a stored endpoint does not read back"), "{reason}");
        let OutboxError::Subscriber { subscriber, .. } = OutboxError::from(unreadable()) else {
            panic!("not the subscriber's")
        };
        assert_eq!(subscriber, "webhook fan-out");
        let edge = ApiError::from(unreadable());
        assert_eq!((edge.code, edge.message.as_str()), (ErrorCode::Internal, "internal error"));
    }

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
}
