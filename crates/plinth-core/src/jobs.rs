//! The one durable jobs engine: every piece of background work is a row of `jobs`, enqueued in
//! the transaction of the request that caused it, and run by the worker of whichever node claims
//! it.
//!
//! - **Claim**: due rows of a kind, up to the kind's free concurrency, leased to this node with a
//!   fresh token (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's one writer makes the claim
//!   atomic in-process). A lease is the row's `run_at` pushed past now: when it runs out the row
//!   is due again, so a node killed mid-job loses nothing (at least once).
//! - **Renew**: a running job has its lease pushed on every third of it, so that it is never
//!   taken twice while it runs, even when one renewal's commit is slow.
//! - **Settle**: only the holder of the lease token settles a row: done (deleted), retried after
//!   exponential back-off with jitter, or dead (kept as `dead`: the engine's dead-letter queue)
//!   when its attempts run out. The kind writes its own records in the same transaction.
//!   Outcomes are settled in batches: one commit for many jobs.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::FromRow;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::db::{dialect, Db, WriteTx};
use crate::id::{self, TenantId};
use crate::secrets;
use crate::time::{self, Timestamp};

/// Most rows one claim takes.
const CLAIM_BATCH: usize = 64;
/// How often an idle worker looks for due jobs (retries, and work queued on other nodes).
const POLL: Duration = Duration::from_secs(1);
/// Most outcomes written in one transaction.
const SETTLE_BATCH: usize = 128;
/// Outcomes waiting to be written, at most; jobs wait past it.
const SETTLE_QUEUE: usize = 2048;
/// How long in-flight jobs get to finish at shutdown; any cut short runs again elsewhere.
const DRAIN: Duration = Duration::from_secs(5);
/// Longest error kept on a row.
const ERROR_MAX_CHARS: usize = 1000;
/// How long dead jobs stay.
const DEAD_DAYS: i64 = 30;

/// What went wrong inside the engine or a kind's settling.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("{0}")]
    Failed(String),
}

impl From<JobError> for crate::http::ApiError {
    fn from(error: JobError) -> Self {
        match error {
            // A saturated database stays 503.
            JobError::Database(error) => error.into(),
            other => crate::http::ApiError::internal(other),
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub tenant: Option<&'a TenantId>,
    /// What the job is about (a delivery's id): one live job per kind and reference.
    pub reference: Option<&'a str>,
    pub payload: Value,
    /// When it is due; now when `None`.
    pub run_at: Option<Timestamp>,
    /// Attempts before it is dead; the kind's default when `None`.
    pub max_attempts: Option<i64>,
    /// Attempts already made elsewhere (a retried delivery's count goes on).
    pub attempts_made: i64,
}

impl<'a> NewJob<'a> {
    pub fn new(kind: &'a str, payload: Value) -> Self {
        NewJob { kind, tenant: None, reference: None, payload, run_at: None, max_attempts: None, attempts_made: 0 }
    }

    pub fn tenant(mut self, tenant: &'a TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    pub fn reference(mut self, reference: &'a str) -> Self {
        self.reference = Some(reference);
        self
    }
}

/// Enqueues `job` in the caller's transaction: it runs once that commits, never before, and
/// never if it rolls back. Wakes this node's worker at commit.
pub async fn enqueue(tx: &mut WriteTx, job: NewJob<'_>) -> Result<String, JobError> {
    let id = id::new_id(id::prefix::JOB);
    let now = time::now();
    sqlx::query(
        "INSERT INTO jobs (id, kind, tenant_id, reference, payload, status, run_at, attempts, max_attempts, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $9)",
    )
    .bind(&id)
    .bind(job.kind)
    .bind(job.tenant)
    .bind(job.reference)
    .bind(job.payload.to_string())
    .bind(time::to_db(&job.run_at.unwrap_or(now)))
    .bind(job.attempts_made)
    .bind(job.max_attempts)
    .bind(time::to_db(&now))
    .execute(&mut **tx)
    .await?;
    tx.queued_work();
    Ok(id)
}

/// Whether a live job of `kind` about `reference` is running under a lease now.
pub async fn is_running(conn: &mut sqlx::AnyConnection, kind: &str, reference: &str) -> Result<bool, JobError> {
    let running: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM jobs WHERE kind = $1 AND reference = $2 AND status = 'running' AND run_at > $3 LIMIT 1",
    )
    .bind(kind)
    .bind(reference)
    .bind(time::to_db(&time::now()))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(running.is_some())
}

/// Forgets every job of `kind` about `reference` that is not running: to enqueue it afresh.
pub async fn forget(tx: &mut WriteTx, kind: &str, reference: &str) -> Result<(), JobError> {
    sqlx::query("DELETE FROM jobs WHERE kind = $1 AND reference = $2 AND (status <> 'running' OR run_at <= $3)")
        .bind(kind)
        .bind(reference)
        .bind(time::to_db(&time::now()))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Forgets dead jobs older than 30 days.
pub async fn prune(db: &Db) -> Result<u64, JobError> {
    let cutoff = time::to_db(&(time::now() - chrono::Duration::days(DEAD_DAYS)));
    let done = sqlx::query("DELETE FROM jobs WHERE status = 'dead' AND updated_at < $1")
        .bind(cutoff)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

/// A claimed job, as its kind sees it.
#[derive(Debug, Clone, FromRow)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub tenant_id: Option<TenantId>,
    pub reference: Option<String>,
    pub payload: String,
    /// This attempt's number: counted when claimed, so an attempt whose outcome is never
    /// written (the node died) still counts.
    #[sqlx(rename = "attempts")]
    pub attempt: i64,
    #[sqlx(rename = "max_attempts")]
    stored_max_attempts: Option<i64>,
    #[sqlx(skip)]
    pub max_attempts: i64,
    #[sqlx(skip)]
    lease_token: String,
}

impl Job {
    /// The payload, parsed.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        Ok(serde_json::from_str(&self.payload)?)
    }
}

/// What becomes of a job once its outcome is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Done: the row is gone.
    Done,
    /// Failed; runs again at `at`.
    Retry { at: Timestamp, error: String },
    /// Failed with no attempt left: kept as `dead`.
    Dead { error: String },
}

/// What one run of a job came to: what the kind keeps of it, and whether it succeeded.
#[derive(Debug)]
pub struct Performed<O> {
    pub outcome: O,
    pub result: Result<(), String>,
}

impl<O> Performed<O> {
    pub fn done(outcome: O) -> Self {
        Performed { outcome, result: Ok(()) }
    }

    pub fn failed(outcome: O, error: impl Into<String>) -> Self {
        Performed { outcome, result: Err(error.into()) }
    }
}

/// A kind of job: how it runs, how often at once, and what it writes when it settles.
pub trait Kind: Send + Sync + 'static {
    /// What a run hands to `settle`.
    type Outcome: Send + Sync + 'static;

    /// The `kind` column: `<capability>.<verb>`, such as `webhook.deliver`.
    fn name(&self) -> &'static str;

    /// Most jobs of this kind running at once on one node.
    fn concurrency(&self) -> usize {
        4
    }

    /// How long a claim holds before another node may take the job; renewed while it runs.
    fn lease(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// Attempts when a job has no number of its own.
    fn max_attempts(&self) -> i64 {
        5
    }

    /// The wait before the next attempt after `attempts` failed ones.
    fn backoff(&self, attempts: i64) -> Duration {
        exponential(attempts, Duration::from_secs(5), Duration::from_secs(3600))
    }

    /// Does the work. It writes nothing that must agree with the job's fate: that is `settle`'s.
    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<Self::Outcome>>;

    /// Writes the kind's own records of an outcome, in the transaction that settles the job.
    /// `outcome` is `None` when the job ran out of attempts without a run (its last one was cut
    /// short).
    fn settle<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        job: &'a Job,
        outcome: Option<&'a Self::Outcome>,
        fate: &'a Fate,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        let _ = (tx, job, outcome, fate);
        Box::pin(async { Ok(()) })
    }
}

/// `base` doubled for each attempt after the first, at most `cap`, plus up to a tenth at random
/// so that retries of many jobs spread out.
pub fn exponential(attempts: i64, base: Duration, cap: Duration) -> Duration {
    let doublings = attempts.clamp(1, 31) as u32 - 1;
    let wait = base.saturating_mul(1u32 << doublings.min(20)).min(cap);
    with_jitter(wait)
}

/// The `attempts`-th wait of `schedule` (its last for any later one), with up to a tenth more.
pub fn scheduled(schedule: &[Duration], attempts: i64) -> Duration {
    let Some(last) = schedule.last() else { return Duration::ZERO };
    let index = usize::try_from(attempts.max(1) - 1).unwrap_or(usize::MAX);
    with_jitter(*schedule.get(index).unwrap_or(last))
}

fn with_jitter(wait: Duration) -> Duration {
    let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0.0..0.1);
    wait.mul_f64(1.0 + jitter)
}

type ErasedOutcome = Box<dyn Any + Send + Sync>;

/// A kind with its outcome type hidden, so that the worker holds kinds of every type.
trait Erased: Send + Sync {
    fn name(&self) -> &'static str;
    fn concurrency(&self) -> usize;
    fn lease(&self) -> Duration;
    fn max_attempts(&self) -> i64;
    fn backoff(&self, attempts: i64) -> Duration;
    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<ErasedOutcome>>;
    fn settle<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        job: &'a Job,
        outcome: Option<&'a ErasedOutcome>,
        fate: &'a Fate,
    ) -> BoxFuture<'a, Result<(), JobError>>;
}

impl<K: Kind> Erased for K {
    fn name(&self) -> &'static str {
        Kind::name(self)
    }

    fn concurrency(&self) -> usize {
        Kind::concurrency(self).max(1)
    }

    fn lease(&self) -> Duration {
        Kind::lease(self).max(Duration::from_secs(2))
    }

    fn max_attempts(&self) -> i64 {
        Kind::max_attempts(self).max(1)
    }

    fn backoff(&self, attempts: i64) -> Duration {
        Kind::backoff(self, attempts)
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<ErasedOutcome>> {
        Box::pin(async move {
            let done = Kind::perform(self, job).await;
            Performed { outcome: Box::new(done.outcome) as ErasedOutcome, result: done.result }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        job: &'a Job,
        outcome: Option<&'a ErasedOutcome>,
        fate: &'a Fate,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        let outcome = outcome.and_then(|o| o.downcast_ref::<K::Outcome>());
        Kind::settle(self, tx, job, outcome, fate)
    }
}

/// The kinds this node runs.
#[derive(Default)]
pub struct Registry {
    kinds: HashMap<&'static str, Arc<dyn Erased>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a kind; a second kind of the same name replaces the first.
    pub fn register<K: Kind>(&mut self, kind: K) -> &mut Self {
        self.kinds.insert(Kind::name(&kind), Arc::new(kind));
        self
    }
}

/// A run's outcome on its way to be written.
struct Ran {
    job: Job,
    performed: Option<Performed<ErasedOutcome>>,
}

/// Runs this node's jobs until `stop` turns true; then lets in-flight jobs finish for a moment
/// and writes the outcomes gathered.
pub async fn run(db: Db, registry: Registry, mut stop: watch::Receiver<bool>) {
    let kinds: Vec<(Arc<dyn Erased>, Arc<Semaphore>)> = registry
        .kinds
        .into_values()
        .map(|kind| {
            let permits = Arc::new(Semaphore::new(kind.concurrency()));
            (kind, permits)
        })
        .collect();
    let by_name: Arc<HashMap<&'static str, Arc<dyn Erased>>> =
        Arc::new(kinds.iter().map(|(kind, _)| (kind.name(), kind.clone())).collect());
    let mut wake = db.outbox().work();
    let mut running = JoinSet::new();
    let (outcomes, settling) = mpsc::channel::<Ran>(SETTLE_QUEUE);
    let settler = tokio::spawn(settle_all(db.clone(), by_name, settling));
    loop {
        if *stop.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let mut more = false;
        let mut any_free = false;
        {
            for (kind, permits) in &kinds {
                let free = permits.available_permits().min(CLAIM_BATCH);
                if free == 0 {
                    continue;
                }
                any_free = true;
                if !due(&db, kind.name()).await {
                    continue;
                }
                let claimed = claim(&db, kind.as_ref(), free).await.unwrap_or_else(|error| {
                    tracing::warn!(%error, kind = kind.name(), "claiming jobs failed; will retry");
                    Vec::new()
                });
                more |= claimed.len() == free;
                for job in claimed {
                    let Ok(permit) = permits.clone().try_acquire_owned() else { break };
                    let (db, kind, outcomes) = (db.clone(), kind.clone(), outcomes.clone());
                    running.spawn(async move {
                        let ran = attempt(&db, kind.as_ref(), job).await;
                        // The room is given back once the outcome is queued for settling, so
                        // that a slow settler holds claims back instead of piling up outcomes.
                        let _ = outcomes.send(ran).await;
                        drop(permit);
                    });
                }
            }
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
            _ = running.join_next(), if !any_free => {}
            _ = stop.changed() => break,
        }
    }
    let finish = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, finish).await.is_err() {
        running.abort_all();
    }
    drop(outcomes);
    let _ = settler.await;
}

/// Whether a job of `kind` is due: one indexed read, so that a node takes the write lock only
/// to claim what it will find.
async fn due(db: &Db, kind: &str) -> bool {
    let found: Result<Option<(String,)>, _> =
        sqlx::query_as("SELECT id FROM jobs WHERE kind = $1 AND status <> 'dead' AND run_at <= $2 LIMIT 1")
            .bind(kind)
            .bind(time::to_db(&time::now()))
            .fetch_optional(db.pool())
            .await;
    match found {
        Ok(found) => found.is_some(),
        Err(error) => {
            tracing::warn!(%error, kind, "looking for due jobs failed; will retry");
            false
        }
    }
}

fn lease_end(lease: Duration) -> Timestamp {
    time::now() + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::seconds(60))
}

/// Leases up to `limit` due jobs of `kind` to this node.
async fn claim(db: &Db, kind: &dyn Erased, limit: usize) -> Result<Vec<Job>, JobError> {
    let now = time::now();
    let token = secrets::random_alphanumeric(24);
    let lock = dialect::skip_locked(db.backend(), None);
    let mut tx = db.begin_write().await?;
    let mut claimed: Vec<Job> = sqlx::query_as(&format!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $1, lease_token = $2, \
         run_at = $3, updated_at = $4 WHERE id IN (SELECT id FROM jobs WHERE kind = $5 AND status <> 'dead' \
         AND run_at <= $4 ORDER BY run_at LIMIT {limit}{lock}) \
         RETURNING id, kind, tenant_id, reference, payload, attempts, max_attempts"
    ))
    .bind(db.node())
    .bind(&token)
    .bind(time::to_db(&lease_end(kind.lease())))
    .bind(time::to_db(&now))
    .bind(kind.name())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    for job in &mut claimed {
        job.lease_token = token.clone();
        job.max_attempts = job.stored_max_attempts.unwrap_or_else(|| kind.max_attempts());
    }
    Ok(claimed)
}

/// One run of a claimed job, its lease renewed while it lasts.
async fn attempt(db: &Db, kind: &dyn Erased, job: Job) -> Ran {
    if job.attempt > job.max_attempts {
        // The last attempt was made but its outcome never written: none is left.
        return Ran { job, performed: None };
    }
    let lease = kind.lease();
    // The lease is renewed beside the work, never instead of it: the work goes on being polled
    // while a renewal waits for the database. Every third of the lease, so that a renewal whose
    // commit is slow (a busy disk's sync) or fails once still leaves another before it runs out.
    let every = lease / 3;
    let renewing = async {
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            renew.tick().await;
            if let Err(error) = renew_lease(db, &job, lease).await {
                tracing::warn!(%error, job = %job.id, "renewing a job's lease failed");
            }
        }
    };
    let performed = tokio::select! {
        performed = kind.perform(&job) => performed,
        // The renewal loop never ends; were it to, the run is written off as failed.
        () = renewing => Performed::failed(Box::new(()) as ErasedOutcome, "the lease renewal stopped"),
    };
    Ran { job, performed: Some(performed) }
}

async fn renew_lease(db: &Db, job: &Job, lease: Duration) -> Result<(), JobError> {
    let mut tx = db.begin_write().await?;
    let renewed = sqlx::query("UPDATE jobs SET run_at = $1 WHERE id = $2 AND lease_token = $3 AND status = 'running'")
        .bind(time::to_db(&lease_end(lease)))
        .bind(&job.id)
        .bind(&job.lease_token)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if renewed.rows_affected() == 0 {
        tracing::warn!(job = %job.id, "a running job's lease was lost; its outcome will not be written");
    }
    Ok(())
}

/// Writes outcomes as they come, many in one transaction: one commit (and on SQLite one sync)
/// for many jobs. A batch that fails is written again one by one.
async fn settle_all(db: Db, kinds: Arc<HashMap<&'static str, Arc<dyn Erased>>>, mut settling: mpsc::Receiver<Ran>) {
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    while settling.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
        if let Err(error) = settle(&db, &kinds, &batch).await {
            tracing::warn!(%error, "settling jobs together failed; settling them one by one");
            for ran in &batch {
                if let Err(error) = settle(&db, &kinds, std::slice::from_ref(ran)).await {
                    // The kind's records cannot be written: the job's own fate still is, so that
                    // it backs off (or dies) instead of running again at every lease.
                    tracing::warn!(%error, job = %ran.job.id, "settling a job failed; writing its fate alone");
                    let failed = Ran {
                        job: ran.job.clone(),
                        performed: Some(Performed::failed(
                            Box::new(()) as ErasedOutcome,
                            format!("settling failed: {error}"),
                        )),
                    };
                    if let Err(error) = settle_fate(&db, &kinds, &failed).await {
                        tracing::warn!(%error, job = %ran.job.id, "writing a job's fate failed; it will run again");
                    }
                }
            }
        }
        batch.clear();
    }
}

async fn settle(db: &Db, kinds: &HashMap<&'static str, Arc<dyn Erased>>, batch: &[Ran]) -> Result<(), JobError> {
    let mut tx = db.begin_write().await?;
    for ran in batch {
        let Some(kind) = kinds.get(ran.job.kind.as_str()) else { continue };
        settle_one(&mut tx, kind.as_ref(), ran).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The fate of a run: done, retried, or dead when no attempt is left.
fn fate(kind: &dyn Erased, job: &Job, result: Result<(), &str>) -> Fate {
    match result {
        Ok(()) => Fate::Done,
        Err(error) if job.attempt < job.max_attempts => {
            let wait =
                chrono::Duration::from_std(kind.backoff(job.attempt)).unwrap_or_else(|_| chrono::Duration::hours(1));
            Fate::Retry { at: time::now() + wait, error: error.to_string() }
        }
        Err(error) => Fate::Dead { error: error.to_string() },
    }
}

async fn settle_one(tx: &mut WriteTx, kind: &dyn Erased, ran: &Ran) -> Result<(), JobError> {
    let Some(fate) = write_fate(tx, kind, ran).await? else { return Ok(()) };
    kind.settle(tx, &ran.job, ran.performed.as_ref().map(|p| &p.outcome), &fate).await
}

/// Writes the job row's fate; `None` when the lease was lost (whoever holds it now writes its
/// own).
async fn write_fate(tx: &mut WriteTx, kind: &dyn Erased, ran: &Ran) -> Result<Option<Fate>, JobError> {
    let job = &ran.job;
    let result = match &ran.performed {
        Some(performed) => performed.result.as_ref().map(|_| ()).map_err(String::as_str),
        None => Err("no attempts left: the outcome of the last one was not recorded"),
    };
    let fate = fate(kind, job, result);
    let now = time::to_db(&time::now());
    let held = match &fate {
        Fate::Done => {
            sqlx::query("DELETE FROM jobs WHERE id = $1 AND lease_token = $2")
                .bind(&job.id)
                .bind(&job.lease_token)
                .execute(&mut **tx)
                .await?
        }
        Fate::Retry { at, error } => sqlx::query(
            "UPDATE jobs SET status = 'queued', run_at = $1, last_error = $2, lease_owner = NULL, lease_token = NULL, \
             updated_at = $3 WHERE id = $4 AND lease_token = $5",
        )
        .bind(time::to_db(at))
        .bind(truncate(error))
        .bind(&now)
        .bind(&job.id)
        .bind(&job.lease_token)
        .execute(&mut **tx)
        .await?,
        Fate::Dead { error } => sqlx::query(
            "UPDATE jobs SET status = 'dead', attempts = $1, last_error = $2, lease_owner = NULL, lease_token = NULL, \
             updated_at = $3 WHERE id = $4 AND lease_token = $5",
        )
        .bind(job.attempt.min(job.max_attempts))
        .bind(truncate(error))
        .bind(&now)
        .bind(&job.id)
        .bind(&job.lease_token)
        .execute(&mut **tx)
        .await?,
    };
    if held.rows_affected() == 0 {
        // The lease was lost (it ran out, or the job was forgotten): whoever holds it now
        // writes its own outcome.
        return Ok(None);
    }
    if let Fate::Dead { error } = &fate {
        tracing::warn!(job = %job.id, kind = %job.kind, attempts = job.attempt, %error, "a job ran out of attempts");
    }
    tx.queued_work();
    Ok(Some(fate))
}

/// Holds the live jobs of `kind` about `reference` until the transaction ends (PostgreSQL), so
/// that no claim takes one while the caller decides about them.
pub async fn lock_reference(tx: &mut WriteTx, kind: &str, reference: &str) -> Result<(), JobError> {
    if tx.backend() == crate::db::Backend::Postgres {
        sqlx::query("SELECT id FROM jobs WHERE kind = $1 AND reference = $2 FOR UPDATE")
            .bind(kind)
            .bind(reference)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Writes only the engine's fate of a run, without the kind's records.
async fn settle_fate(db: &Db, kinds: &HashMap<&'static str, Arc<dyn Erased>>, ran: &Ran) -> Result<(), JobError> {
    let Some(kind) = kinds.get(ran.job.kind.as_str()) else { return Ok(()) };
    let mut tx = db.begin_write().await?;
    write_fate(&mut tx, kind.as_ref(), ran).await?;
    tx.commit().await?;
    Ok(())
}

fn truncate(error: &str) -> String {
    error.chars().take(ERROR_MAX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_the_cap_with_a_little_jitter() {
        let base = Duration::from_secs(5);
        let cap = Duration::from_secs(3600);
        let first = exponential(1, base, cap);
        assert!(first >= base && first < Duration::from_millis(5500), "{first:?}");
        let third = exponential(3, base, cap);
        assert!(third >= Duration::from_secs(20) && third < Duration::from_secs(22), "{third:?}");
        let late = exponential(40, base, cap);
        assert!(late >= cap && late < Duration::from_secs(3960), "{late:?}");
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        assert!(scheduled(&schedule, 1) < Duration::from_millis(5500));
        assert!(scheduled(&schedule, 9) >= Duration::from_secs(300));
        assert_eq!(scheduled(&[], 1), Duration::ZERO);
    }
}
