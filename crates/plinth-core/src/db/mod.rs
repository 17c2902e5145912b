//! The database: one pool for SQLite or PostgreSQL through sqlx's `Any` driver, migrations for
//! both, and the few places where the two dialects differ.

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};
use tokio::sync::{broadcast, watch};

mod batch;
mod deferred;
pub mod dialect;
pub mod durability;

pub use deferred::Deferred;
pub use durability::Durability;

/// Which database the pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The shared pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time: writers of this process queue here, in order, instead of
    /// polling the database lock with SQLite's busy-wait back-off, and share transactions
    /// (`batch`).
    writer: Arc<batch::Writer>,
    outbox: Arc<Outbox>,
    /// This process among the nodes sharing the database.
    node: Arc<str>,
    /// SQLite in `power-loss` mode: the log synced for writes before they are answered.
    group_sync: Option<Arc<durability::GroupSync>>,
    /// The SQLite database file, for connections of their own (`read_only_sqlite`).
    sqlite_file: Option<Arc<std::path::Path>>,
}

/// What this process hears when a transaction that queued work or recorded events commits.
#[derive(Debug)]
pub struct Outbox {
    /// Bumped after each commit that queued background work: wakes this node's workers.
    work: watch::Sender<u64>,
    /// The events committed by this process, as delivered to realtime subscribers.
    events: broadcast::Sender<Arc<Value>>,
    /// What other parts of the core attach to every write transaction (the outbox's
    /// subscribers), kept opaque here so that the database knows nothing of them.
    attached: RwLock<Vec<Attached>>,
}

/// Something attached to the outbox, opaque to the database.
pub type Attached = Arc<dyn std::any::Any + Send + Sync>;

/// How many committed events a slow realtime listener may fall behind before it misses some.
pub const OUTBOX_EVENTS_BUFFER: usize = 4096;

impl Outbox {
    fn new(events_buffer: usize) -> Self {
        Outbox {
            work: watch::channel(0).0,
            events: broadcast::channel(events_buffer.max(1)).0,
            attached: RwLock::new(Vec::new()),
        }
    }

    /// Attaches `thing` to every write transaction from now on.
    pub fn attach(&self, thing: Attached) {
        self.attached.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(thing);
    }

    fn attached(&self) -> Vec<Attached> {
        self.attached.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Changes after every commit that queued background work.
    pub fn work(&self) -> watch::Receiver<u64> {
        self.work.subscribe()
    }

    /// Every event this process commits, from now on.
    pub fn events(&self) -> broadcast::Receiver<Arc<Value>> {
        self.events.subscribe()
    }

    /// Tells this process's listeners of an event committed elsewhere (another node).
    pub fn publish(&self, event: Arc<Value>) {
        let _ = self.events.send(event);
    }

    /// Wakes this node's workers.
    pub fn wake(&self) {
        self.work.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A transaction that writes. On SQLite it holds this process's write turn until it ends, and
/// works in a savepoint of a transaction that writers queued at the same time share (`batch`):
/// its commit returns once the shared transaction has committed.
#[derive(Debug)]
pub struct WriteTx {
    /// `None` only once `commit` or `rollback` took it.
    tx: Option<Transaction<'static, Any>>,
    /// SQLite: the write turn, and whose it is.
    turn: Option<(batch::Turn, Arc<batch::Writer>)>,
    outbox: Arc<Outbox>,
    queued_work: bool,
    events: Vec<Arc<Value>>,
    backend: Backend,
    node: Arc<str>,
    held: deferred::Held,
}

impl Drop for WriteTx {
    /// Dropped without `commit` or `rollback`: on PostgreSQL the transaction rolls back; on
    /// SQLite a task rolls its savepoint back and ends its turn.
    fn drop(&mut self) {
        if let (Some(tx), Some((turn, writer))) = (self.tx.take(), self.turn.take()) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move { writer.abandon(turn, tx).await });
                }
                Err(_) => tracing::error!("a write transaction was dropped outside the runtime"),
            }
        }
    }
}

impl WriteTx {
    /// Sends the held writes, then commits; then wakes the workers if work was queued, and hands
    /// the recorded events to this process's realtime listeners.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match self.turn.take() {
            None => {
                self.flush().await?;
                if let Some(tx) = self.tx.take() {
                    tx.commit().await?;
                }
            }
            Some((mut turn, writer)) => {
                // A writer waiting gets its savepoint in this round trip.
                let opened = writer.someone_waits();
                let release = batch::Writer::release(&mut turn, opened);
                if let Err(error) = self.send_held(Some(&release)).await {
                    if let Some(tx) = self.tx.take() {
                        writer.abandon(turn, tx).await;
                    }
                    return Err(error);
                }
                if let Some(tx) = self.tx.take() {
                    writer.finish(turn, tx, true, opened).await.map_err(sqlx::Error::Protocol)?;
                }
            }
        }
        if self.queued_work {
            self.outbox.wake();
        }
        for event in std::mem::take(&mut self.events) {
            self.outbox.publish(event);
        }
        Ok(())
    }

    /// Holds `statement` until the next `flush` or the commit, to send with the others in one
    /// round trip. Its rows are not visible to this transaction before then.
    pub fn defer(&mut self, statement: Deferred) {
        self.held.push(statement);
    }

    /// Sends the held writes now: before a statement that reads or references their rows.
    pub async fn flush(&mut self) -> Result<(), sqlx::Error> {
        self.send_held(None).await
    }

    /// Sends the held writes, with `then` (SQLite) in the last round trip.
    async fn send_held(&mut self, then: Option<&str>) -> Result<(), sqlx::Error> {
        let mut trips = self.held.take(self.backend)?;
        if let Some(then) = then {
            match trips.last_mut() {
                Some((sql, _)) => {
                    sql.push_str(";\n");
                    sql.push_str(then);
                }
                None => trips.push((then.to_string(), Default::default())),
            }
        }
        // A round trip that names a writer's savepoint is never sent twice: not kept prepared.
        let keep = then.is_none();
        for (sql, arguments) in trips {
            sqlx::query_with(&sql, arguments).persistent(keep).execute(&mut **self).await?;
        }
        Ok(())
    }

    /// Notes that this transaction queued background work, to wake the workers after commit.
    pub fn queued_work(&mut self) {
        self.queued_work = true;
    }

    /// What is attached to the outbox, for an event recorded in this transaction.
    pub fn attached(&self) -> Vec<Attached> {
        self.outbox.attached()
    }

    /// Notes an event recorded in this transaction, for realtime listeners after commit.
    pub fn recorded_event(&mut self, event: Arc<Value>) {
        self.events.push(event);
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This process's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        match (self.tx.take(), self.turn.take()) {
            (Some(tx), Some((turn, writer))) => {
                writer.abandon(turn, tx).await;
                Ok(())
            }
            (Some(tx), None) => tx.rollback().await,
            _ => Ok(()),
        }
    }
}

// `tx` is `None` only inside `commit`, `rollback` and `drop`, which take the transaction by
// value: no statement can reach it then.
impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;

    #[allow(clippy::expect_used)]
    fn deref(&self) -> &AnyConnection {
        self.tx.as_deref().expect("a write transaction is open until it is committed or rolled back")
    }
}

impl std::ops::DerefMut for WriteTx {
    #[allow(clippy::expect_used)]
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.tx.as_deref_mut().expect("a write transaction is open until it is committed or rolled back")
    }
}

/// How much of the database file a read-only connection maps.
const READ_ONLY_MMAP_BYTES: u64 = 256 * 1024 * 1024;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// SQLite settings applied to every connection: write-ahead log, a busy timeout instead of
/// instant `SQLITE_BUSY`, foreign keys enforced, and commits that are in the log (the operating
/// system's cache) when they return, so that a killed process loses none; syncs to disk are
/// `Durability`'s (see `durability`).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
     PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;";

/// How the pool behaves under load.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a free connection before it is 503 `UNAVAILABLE`.
    pub acquire_timeout: Duration,
    /// Longest one statement may run on PostgreSQL (`statement_timeout`); SQLite's writers are
    /// bounded by its busy timeout and the request timeout.
    pub statement_timeout: Duration,
    /// What an answered write survives.
    pub durability: Durability,
}

impl PoolSettings {
    pub fn new(max_connections: u32) -> PoolSettings {
        PoolSettings {
            max_connections,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            durability: Durability::default(),
        }
    }
}

impl Db {
    /// Connects to `url` (`sqlite://...` or `postgres://...`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, sqlx::Error> {
        Db::connect_with(url, PoolSettings::new(max_connections)).await
    }

    /// Connects with `settings`.
    pub async fn connect_with(url: &str, settings: PoolSettings) -> Result<Db, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(sqlx::Error::Configuration("the database URL must start with sqlite:// or postgres://".into()));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let statement_ms = settings.statement_timeout.as_millis().max(1);
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            // No ping before each use: on PostgreSQL it was a round trip more for every statement
            // (an embedded database's connection does not drop at all). A connection that died
            // while idle fails its next statement instead, and is dropped from the pool.
            .test_before_acquire(false)
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => conn.execute(SQLITE_PRAGMAS).await?,
                        Backend::Postgres => {
                            conn.execute(format!("SET statement_timeout = {statement_ms}").as_str()).await?
                        }
                    };
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let node = crate::secrets::random_alphanumeric(12).into();
        let group_sync = match (backend, settings.durability) {
            (Backend::Sqlite, Durability::PowerLoss) => {
                sqlite_file(url).map(|file| Arc::new(durability::GroupSync::new(std::path::Path::new(file))))
            }
            _ => None,
        };
        let sqlite_file = sqlite_file(url).map(|file| Arc::from(std::path::Path::new(file)));
        Ok(Db {
            pool,
            backend,
            writer: Arc::new(batch::Writer::default()),
            outbox: Arc::new(Outbox::new(OUTBOX_EVENTS_BUFFER)),
            node,
            group_sync,
            sqlite_file,
        })
    }

    /// A connection of its own to the SQLite file, opened read-only, whose statements stop
    /// (`interrupted`) once `deadline` passes: for queries the caller writes, which may run long
    /// and must never write. `None` on PostgreSQL (use a read-only transaction with a
    /// `statement_timeout` there) or for a database in memory.
    pub async fn read_only_sqlite(
        &self,
        deadline: std::time::Instant,
    ) -> Result<Option<sqlx::SqliteConnection>, sqlx::Error> {
        use sqlx::ConnectOptions;
        let Some(file) = &self.sqlite_file else { return Ok(None) };
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(file.as_ref())
            .read_only(true)
            .busy_timeout(Duration::from_secs(5))
            // Pages read straight from the mapped file, not copied into a cache a fresh
            // connection has cold: a scan of a large type runs about a fifth faster.
            .pragma("mmap_size", READ_ONLY_MMAP_BYTES.to_string());
        let mut conn = options.connect().await?;
        conn.lock_handle().await?.set_progress_handler(10_000, move || std::time::Instant::now() < deadline);
        Ok(Some(conn))
    }

    /// Returns once every write committed before the call survives a power loss: in
    /// `power-loss` mode on SQLite, a sync of the log shared with every caller waiting at the
    /// same time; otherwise at once (PostgreSQL syncs its own commits).
    pub async fn sync(&self) -> std::io::Result<()> {
        match &self.group_sync {
            Some(group) => group.sync().await,
            None => Ok(()),
        }
    }

    /// Applies every pending migration of this backend.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write. On SQLite it waits for this process's writer turn,
    /// then takes the database's write lock up front (`BEGIN IMMEDIATE`), so that writers queue
    /// instead of failing or polling.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let (turn, tx) = self.writer.begin(&self.pool).await?;
                Ok(self.write_tx(tx, Some((turn, self.writer.clone()))))
            }
            Backend::Postgres => Ok(self.write_tx(self.pool.begin().await?, None)),
        }
    }

    fn write_tx(&self, tx: Transaction<'static, Any>, turn: Option<(batch::Turn, Arc<batch::Writer>)>) -> WriteTx {
        WriteTx {
            tx: Some(tx),
            turn,
            outbox: self.outbox.clone(),
            queued_work: false,
            events: Vec::new(),
            backend: self.backend,
            node: self.node.clone(),
            held: deferred::Held::default(),
        }
    }

    /// Sets how far a realtime listener may fall behind; before anything listens.
    pub fn with_events_buffer(mut self, events: usize) -> Db {
        self.outbox = Arc::new(Outbox::new(events));
        self
    }

    /// This process's node id, random at each start.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This process's signals of committed work and events.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The file of an SQLite URL (`sqlite://path?mode=rwc`); none for an in-memory database.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let file = rest.split('?').next().unwrap_or_default();
    (!file.is_empty() && file != ":memory:").then_some(file)
}

pub use dialect::{is_unique_violation, lock_row};
