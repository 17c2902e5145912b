//! `--jobs`: the jobs engine on its own, on the chosen database: how many no-op jobs are enqueued
//! per second (one per transaction, as a request enqueues its work), and how many are claimed,
//! run and settled per second by one node and by two.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::BoxFuture;
use plinth_core::db::Db;
use plinth_core::jobs::{self, Job, Kind, NewJob, Performed, Registry};
use serde_json::json;

/// A kind that does nothing: what is measured is the engine.
struct Noop(Arc<AtomicUsize>);

impl Kind for Noop {
    type Outcome = ();

    fn name(&self) -> &'static str {
        "bench.noop"
    }

    fn concurrency(&self) -> usize {
        64
    }

    fn perform<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Performed<()>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Performed::done(()) })
    }
}

async fn connect(url: &str) -> anyhow::Result<Db> {
    let db = Db::connect(url, 16).await?;
    db.migrate().await?;
    Ok(db)
}

async fn enqueue(db: &Db, jobs: usize, concurrency: usize) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..concurrency {
        let (db, next) = (db.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                let mut tx = db.begin_write().await?;
                jobs::enqueue(&mut tx, NewJob::new("bench.noop", json!({ "n": 1 }))).await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    Ok(started.elapsed())
}

async fn left(db: &Db) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs").fetch_one(db.pool()).await?;
    Ok(n)
}

/// Runs workers on `nodes` until the table is empty; the time it took.
async fn drain(nodes: &[Db], ran: &Arc<AtomicUsize>) -> anyhow::Result<Duration> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut workers = Vec::new();
    for db in nodes {
        let mut registry = Registry::new();
        registry.register(Noop(ran.clone()));
        workers.push(tokio::spawn(jobs::run(db.clone(), registry, stopped.clone())));
    }
    while left(&nodes[0]).await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    stop.send(true)?;
    for worker in workers {
        worker.await?;
    }
    Ok(elapsed)
}

pub async fn run(database_url: Option<&str>, jobs: usize, concurrency: usize) -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("plinth-bench-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir)?;
    let url = match database_url {
        Some(url) => url.to_string(),
        None => format!("sqlite://{}?mode=rwc", data_dir.join("jobs.db").display()),
    };
    let backend = if database_url.is_some() { "postgres" } else { "sqlite" };
    let first = connect(&url).await.context("connecting")?;
    let second = connect(&url).await?;
    let ran = Arc::new(AtomicUsize::new(0));
    println!("jobs engine, {backend}: {jobs} no-op jobs, {concurrency} enqueuers");
    println!("{:<44} {:>12}", "scenario", "jobs/s");
    for (name, nodes) in [
        ("run and settled, one node", vec![first.clone()]),
        ("run and settled, two nodes", vec![first.clone(), second.clone()]),
    ] {
        let took = enqueue(&first, jobs, concurrency).await?;
        println!("{:<44} {:>12.0}", "enqueued, one per transaction", jobs as f64 / took.as_secs_f64());
        let before = ran.load(Ordering::Relaxed);
        let took = drain(&nodes, &ran).await?;
        let done = ran.load(Ordering::Relaxed) - before;
        println!("{name:<44} {:>12.0}", done as f64 / took.as_secs_f64());
        anyhow::ensure!(done == jobs, "{done} of {jobs} jobs ran");
    }
    // Both at once: requests enqueue while the worker drains.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut registry = Registry::new();
    registry.register(Noop(ran.clone()));
    let worker = tokio::spawn(jobs::run(first.clone(), registry, stopped));
    let started = Instant::now();
    enqueue(&first, jobs, concurrency).await?;
    while left(&first).await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "{:<44} {:>12.0}",
        "enqueued and settled together, one node",
        jobs as f64 / started.elapsed().as_secs_f64()
    );
    stop.send(true)?;
    worker.await?;
    first.close().await;
    second.close().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
