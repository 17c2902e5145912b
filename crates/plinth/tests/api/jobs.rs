//! The jobs engine on its own: enqueued with a transaction, run once, retried, dead, leased,
//! renewed, limited per kind, on one node or several.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use plinth::db::Db;
use plinth::jobs::{self, Fate, Job, JobError, Kind, NewJob, Performed, Registry};
use serde_json::json;
use tokio::sync::watch;

use crate::common::Storage;
use crate::on_both_backends;

async fn database(storage: &Storage) -> Db {
    let url = match &storage.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}?mode=rwc", storage.data_dir.join("jobs.db").display()),
    };
    let db = Db::connect(&url, 5).await.unwrap();
    db.migrate().await.unwrap();
    // The test kinds' own records.
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS job_marks (job_id TEXT NOT NULL, attempt BIGINT NOT NULL, fate TEXT NOT NULL)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    db
}

/// What the test kinds saw.
#[derive(Default)]
struct Seen {
    runs: AtomicUsize,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    settled: Mutex<Vec<(String, i64, String)>>,
}

/// A kind that fails while `payload.fail_until` exceeds the attempt, sleeps `payload.sleep_ms`,
/// and records how it settled.
struct Test {
    name: &'static str,
    seen: Arc<Seen>,
    lease: Duration,
    concurrency: usize,
}

impl Test {
    fn new(name: &'static str, seen: &Arc<Seen>) -> Test {
        Test { name, seen: seen.clone(), lease: Duration::from_secs(30), concurrency: 4 }
    }
}

impl Kind for Test {
    type Outcome = i64;

    fn name(&self) -> &'static str {
        self.name
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn max_attempts(&self) -> i64 {
        3
    }

    fn backoff(&self, _attempts: i64) -> Duration {
        Duration::ZERO
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Performed<i64>> {
        Box::pin(async move {
            let payload: serde_json::Value = job.payload().unwrap();
            self.seen.runs.fetch_add(1, Ordering::SeqCst);
            let now = self.seen.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.seen.most_at_once.fetch_max(now, Ordering::SeqCst);
            if let Some(ms) = payload["sleep_ms"].as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            self.seen.running.fetch_sub(1, Ordering::SeqCst);
            if payload["fail_until"].as_i64().is_some_and(|n| job.attempt < n) {
                Performed::failed(job.attempt, format!("attempt {} failed on purpose", job.attempt))
            } else {
                Performed::done(job.attempt)
            }
        })
    }

    fn settle<'a>(
        &'a self,
        tx: &'a mut plinth::db::WriteTx,
        job: &'a Job,
        outcome: Option<&'a i64>,
        fate: &'a Fate,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            // The kind's own record, in the settling transaction.
            let fate = match fate {
                Fate::Done => "done",
                Fate::Retry { .. } => "retry",
                Fate::Dead { .. } => "dead",
            };
            sqlx::query("INSERT INTO job_marks (job_id, attempt, fate) VALUES ($1, $2, $3)")
                .bind(&job.id)
                .bind(job.attempt)
                .bind(fate)
                .execute(&mut **tx)
                .await?;
            self.seen.settled.lock().unwrap().push((job.id.clone(), outcome.copied().unwrap_or(-1), fate.into()));
            Ok(())
        })
    }
}

fn worker(db: &Db, kinds: Vec<Test>) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let mut registry = Registry::new();
    for kind in kinds {
        registry.register(kind);
    }
    let (stop, stopped) = watch::channel(false);
    (stop, tokio::spawn(jobs::run(db.clone(), registry, stopped)))
}

async fn enqueue(db: &Db, kind: &str, payload: serde_json::Value) -> String {
    let mut tx = db.begin_write().await.unwrap();
    let id = jobs::enqueue(&mut tx, NewJob::new(kind, payload)).await.unwrap();
    tx.commit().await.unwrap();
    id
}

async fn count(db: &Db, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db.pool()).await.unwrap();
    n
}

/// Waits until `sql` counts `expected`, at most 30 seconds.
async fn until_count(db: &Db, sql: &str, expected: i64) {
    for _ in 0..600 {
        if count(db, sql).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("`{sql}` never counted {expected}: it counts {}", count(db, sql).await);
}

on_both_backends! {
    async fn jobs_run_once_retry_and_die(backend) {
        let storage = Storage::fresh(backend).await;
        let db = database(&storage).await;
        let seen = Arc::new(Seen::default());

        // A job enqueued in a transaction that rolls back never exists.
        let mut tx = db.begin_write().await.unwrap();
        jobs::enqueue(&mut tx, NewJob::new("test.work", json!({}))).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(count(&db, "SELECT COUNT(*) FROM jobs").await, 0);

        let ok = enqueue(&db, "test.work", json!({})).await;
        let flaky = enqueue(&db, "test.work", json!({ "fail_until": 2 })).await;
        let doomed = enqueue(&db, "test.work", json!({ "fail_until": 99 })).await;
        let (stop, running) = worker(&db, vec![Test::new("test.work", &seen)]);
        until_count(&db, "SELECT COUNT(*) FROM jobs WHERE status <> 'dead'", 0).await;
        until_count(&db, "SELECT COUNT(*) FROM jobs WHERE status = 'dead'", 1).await;
        stop.send(true).unwrap();
        running.await.unwrap();

        let settled = seen.settled.lock().unwrap().clone();
        let of = |id: &str| settled.iter().filter(|(job, ..)| job == id).map(|(_, n, fate)| (*n, fate.clone())).collect::<Vec<_>>();
        assert_eq!(of(&ok), vec![(1, "done".to_string())]);
        assert_eq!(of(&flaky), vec![(1, "retry".to_string()), (2, "done".to_string())]);
        assert_eq!(of(&doomed), vec![(1, "retry".into()), (2, "retry".into()), (3, "dead".into())]);
        assert_eq!(seen.runs.load(Ordering::SeqCst), 6);
        // The dead one stays, with its last error; the kind's records were written as it settled.
        let (attempts, error): (i64, String) = sqlx::query_as("SELECT attempts, last_error FROM jobs WHERE id = $1")
            .bind(&doomed).fetch_one(db.pool()).await.unwrap();
        assert_eq!((attempts, error.as_str()), (3, "attempt 3 failed on purpose"));
        assert_eq!(count(&db, "SELECT COUNT(*) FROM job_marks").await, 6);
        assert_eq!(count(&db, &format!("SELECT COUNT(*) FROM job_marks WHERE job_id = '{doomed}' AND fate = 'dead'")).await, 1);
        db.close().await;
    }

    async fn each_kind_runs_within_its_concurrency(backend) {
        let storage = Storage::fresh(backend).await;
        let db = database(&storage).await;
        let seen = Arc::new(Seen::default());
        for _ in 0..8 {
            enqueue(&db, "test.narrow", json!({ "sleep_ms": 100 })).await;
        }
        let narrow = Test { concurrency: 2, ..Test::new("test.narrow", &seen) };
        let (stop, running) = worker(&db, vec![narrow]);
        until_count(&db, "SELECT COUNT(*) FROM jobs", 0).await;
        stop.send(true).unwrap();
        running.await.unwrap();
        assert_eq!(seen.runs.load(Ordering::SeqCst), 8);
        assert_eq!(seen.most_at_once.load(Ordering::SeqCst), 2, "two at once, never more");
        db.close().await;
    }

    async fn nodes_share_the_work_and_a_dead_node_loses_nothing(backend) {
        let storage = Storage::fresh(backend).await;
        let first = database(&storage).await;
        let second = database(&storage).await;
        let seen = Arc::new(Seen::default());

        // Two nodes, 200 jobs: each runs exactly once.
        for _ in 0..200 {
            enqueue(&first, "test.shared", json!({})).await;
        }
        let (stop_a, a) = worker(&first, vec![Test::new("test.shared", &seen)]);
        let (stop_b, b) = worker(&second, vec![Test::new("test.shared", &seen)]);
        until_count(&first, "SELECT COUNT(*) FROM jobs", 0).await;
        assert_eq!(seen.runs.load(Ordering::SeqCst), 200, "no job ran twice");
        stop_b.send(true).unwrap();
        b.await.unwrap();

        // A node that dies holding a job (its worker ends without settling) loses it only
        // until the lease runs out; then the other node runs it, as attempt 2.
        stop_a.send(true).unwrap();
        a.await.unwrap();
        let seen_dead = Arc::new(Seen::default());
        let held = enqueue(&first, "test.lease", json!({ "sleep_ms": 600_000 })).await;
        let dying = Test { lease: Duration::from_secs(2), ..Test::new("test.lease", &seen_dead) };
        let (_keep, killed) = worker(&first, vec![dying]);
        until_count(&first, "SELECT COUNT(*) FROM jobs WHERE status = 'running'", 1).await;
        killed.abort();
        let _ = killed.await;
        sqlx::query("UPDATE jobs SET payload = '{}' WHERE id = $1").bind(&held).execute(first.pool()).await.unwrap();
        let seen_after = Arc::new(Seen::default());
        let taker = Test { lease: Duration::from_secs(2), ..Test::new("test.lease", &seen_after) };
        let (stop_c, c) = worker(&second, vec![taker]);
        until_count(&second, "SELECT COUNT(*) FROM jobs", 0).await;
        stop_c.send(true).unwrap();
        c.await.unwrap();
        assert_eq!(seen_after.settled.lock().unwrap().clone(), vec![(held, 2, "done".to_string())]);
        first.close().await;
        second.close().await;
    }

    async fn a_long_job_keeps_its_lease(backend) {
        let storage = Storage::fresh(backend).await;
        let first = database(&storage).await;
        let second = database(&storage).await;
        let seen = Arc::new(Seen::default());
        // Runs for more than two leases; the second node, looking all along, never takes it. The
        // lease is long enough that a renewal whose commit waits seconds for a busy disk still
        // lands in time.
        enqueue(&first, "test.long", json!({ "sleep_ms": 12_000 })).await;
        let long = |seen: &Arc<Seen>| Test { lease: Duration::from_secs(5), ..Test::new("test.long", seen) };
        let (stop_a, a) = worker(&first, vec![long(&seen)]);
        until_count(&first, "SELECT COUNT(*) FROM jobs WHERE status = 'running'", 1).await;
        let (stop_b, b) = worker(&second, vec![long(&seen)]);
        until_count(&first, "SELECT COUNT(*) FROM jobs", 0).await;
        for (stop, worker) in [(stop_a, a), (stop_b, b)] {
            stop.send(true).unwrap();
            worker.await.unwrap();
        }
        assert_eq!(seen.runs.load(Ordering::SeqCst), 1, "taken once");
        let settled = seen.settled.lock().unwrap().clone();
        assert_eq!(settled.len(), 1);
        assert_eq!((settled[0].1, settled[0].2.as_str()), (1, "done"));
        first.close().await;
        second.close().await;
    }
}
