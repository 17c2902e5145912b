//! Group commit on SQLite: writers that queue for the one write turn share one transaction.
//!
//! The first writer of a batch opens the transaction (`BEGIN IMMEDIATE`); each writer works
//! inside a savepoint of it. A writer that finishes releases its savepoint and, when another
//! writer is waiting for the turn, hands the turn on with the transaction still open and waits
//! for the batch's commit; the last writer (none waiting, or the batch full) commits it and tells
//! every writer of the batch the outcome. A writer that fails rolls back to its savepoint, and
//! the others' work stays. So a commit (and its write of the log's pages, which consecutive writes
//! mostly share) serves many writers, and each answers only after the commit that holds its work.
//!
//! Cancellation: the open transaction stays in the batch while a statement on it runs, so a
//! writer dropped mid-statement never drops the batch. A writer dropped without committing has its
//! savepoint rolled back by a task; if that fails the batch is marked broken and rolls back as a
//! whole, and its writers are told so (none is told its work was kept when it was not).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{oneshot, OwnedMutexGuard};

// Each writer works in a savepoint of its own name (`plinth_write_<n>`): one left open by a
// writer dropped mid-statement is never the one a later writer rolls back to.

/// Most writers whose work one commit carries.
const MEMBERS_MAX: usize = 64;
/// How long a writer that handed the turn on waits before a task makes sure the batch commits
/// (the writer it handed to may have been dropped before taking it).
const COMMIT_WATCH: Duration = Duration::from_millis(2);

/// What the writers of a batch learn of its commit.
type Outcome = Result<(), String>;

/// The shared state behind this process's write turn.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The batch's open transaction, between writers' turns.
    tx: Option<Transaction<'static, Any>>,
    /// Writers whose work is in `tx`, waiting for its commit.
    members: Vec<oneshot::Sender<Outcome>>,
    /// Why the batch can no longer commit: a writer's work could not be undone.
    broken: Option<String>,
    /// Batches committed since the start.
    commits_seen: usize,
    /// The last writer opened the next one's savepoint (`current`).
    next_savepoint: bool,
    /// The savepoint of the writer holding the turn.
    current: u64,
    /// The next savepoint's number.
    next_id: u64,
    /// The savepoint a finishing writer is opening for the next one.
    prepared: Option<u64>,
}

/// This process's write turn, for SQLite.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    batch: Arc<tokio::sync::Mutex<Batch>>,
    /// Writers queued for the turn.
    waiting: AtomicUsize,
}

/// A writer's hold on the turn.
pub(crate) type Turn = OwnedMutexGuard<Batch>;

/// Counts a writer as waiting until it has the turn, or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Writer {
    /// Takes the turn and a savepoint in the batch's transaction (opening one if none is open).
    pub(crate) async fn begin(
        self: &Arc<Self>,
        pool: &AnyPool,
    ) -> Result<(Turn, Transaction<'static, Any>), sqlx::Error> {
        let mut turn = {
            let _waiting = Waiting::new(&self.waiting);
            self.batch.clone().lock_owned().await
        };
        if turn.next_savepoint {
            turn.next_savepoint = false;
            if let Some(tx) = turn.tx.take() {
                return Ok((turn, tx));
            }
        }
        turn.current = turn.next_id;
        turn.next_id += 1;
        let savepoint = format!("SAVEPOINT plinth_write_{}", turn.current);
        if let Some(tx) = turn.tx.as_mut() {
            // On the transaction where it lies: a writer dropped here leaves the batch whole.
            if let Err(error) = tx.execute(savepoint.as_str()).await {
                self.hand_on(turn).await;
                return Err(error);
            }
            if let Some(tx) = turn.tx.take() {
                return Ok((turn, tx));
            }
        }
        let tx = pool.begin_with(format!("BEGIN IMMEDIATE; {savepoint}")).await?;
        Ok((turn, tx))
    }

    /// The statement that releases the savepoint of the writer holding `turn`, opening the next
    /// writer's in the same round trip when `open_next`.
    pub(crate) fn release(turn: &mut Turn, open_next: bool) -> String {
        let release = format!("RELEASE plinth_write_{}", turn.current);
        if !open_next {
            return release;
        }
        let next = turn.next_id;
        turn.next_id += 1;
        turn.prepared = Some(next);
        format!("{release}; SAVEPOINT plinth_write_{next}")
    }

    /// Whether a writer is waiting for the turn: then a finishing writer opens its savepoint.
    pub(crate) fn someone_waits(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Ends a writer's turn. `kept`: its savepoint was released, so its work is in the batch and
    /// this waits for the batch's commit; otherwise its work was rolled back already. `opened`:
    /// the next writer's savepoint is open.
    pub(crate) async fn finish(
        self: &Arc<Self>,
        mut turn: Turn,
        tx: Transaction<'static, Any>,
        kept: bool,
        opened: bool,
    ) -> Outcome {
        turn.tx = Some(tx);
        match turn.prepared.take() {
            Some(next) if opened => {
                turn.current = next;
                turn.next_savepoint = true;
            }
            _ => turn.next_savepoint = false,
        }
        let outcome = if kept {
            let (told, hear) = oneshot::channel();
            turn.members.push(told);
            Some(hear)
        } else {
            None
        };
        if turn.members.len() >= MEMBERS_MAX {
            commit(&mut turn).await;
        } else {
            self.hand_on(turn).await;
        }
        match outcome {
            Some(hear) => hear.await.unwrap_or_else(|_| Err("the write batch ended without a commit".into())),
            None => Ok(()),
        }
    }

    /// Gives up the turn: the batch is committed now when no writer waits for it, or left open
    /// for the next (watched, should that one be dropped before it takes the turn).
    async fn hand_on(self: &Arc<Self>, mut turn: Turn) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            commit(&mut turn).await;
        } else {
            drop(turn);
            self.watch();
        }
    }

    /// Rolls a writer's work back to its savepoint and ends its turn.
    pub(crate) async fn abandon(self: &Arc<Self>, mut turn: Turn, mut tx: Transaction<'static, Any>) {
        turn.prepared = None;
        let back = format!("ROLLBACK TO plinth_write_{0}; RELEASE plinth_write_{0}", turn.current);
        if let Err(error) = tx.execute(back.as_str()).await {
            turn.broken.get_or_insert_with(|| format!("a write could not be undone: {error}"));
        }
        let _ = self.finish(turn, tx, false, false).await;
    }

    /// Makes sure, a moment from now, that a batch nobody holds the turn of is committed.
    fn watch(self: &Arc<Self>) {
        let writer = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(COMMIT_WATCH).await;
            // Held: its holder commits or hands on (and watches) in turn.
            if let Ok(mut turn) = writer.batch.clone().try_lock_owned() {
                if writer.waiting.load(Ordering::SeqCst) == 0 {
                    commit(&mut turn).await;
                }
            }
        });
    }
}

/// Commits the open batch (or rolls it back when broken) and tells its writers.
async fn commit(turn: &mut Turn) {
    let Some(tx) = turn.tx.take() else { return };
    turn.commits_seen += 1;
    // A savepoint opened for a next writer ends with the transaction.
    turn.next_savepoint = false;
    turn.prepared = None;
    let members = std::mem::take(&mut turn.members);
    let outcome = match turn.broken.take() {
        Some(reason) => {
            let _ = tx.rollback().await;
            Err(reason)
        }
        None => tx.commit().await.map_err(|error| error.to_string()),
    };
    for member in members {
        let _ = member.send(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::db::Db;

    /// Writers at once, some failing, some dropped mid-work: exactly the committed ones' rows
    /// are stored, and commits carried several writers each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_share_commits_and_a_failing_one_takes_only_its_own_work_back() {
        let folder = std::env::temp_dir().join(format!("plinth-batch-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let url = format!("sqlite://{}?mode=rwc", folder.join("batch.db").display());
        let db = Db::connect(&url, 4).await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)").execute(db.pool()).await.unwrap();
        sqlx::query("INSERT INTO t (n, v) VALUES (-1, 'taken')").execute(db.pool()).await.unwrap();
        let mut writers = Vec::new();
        for n in 0..48i64 {
            let db = db.clone();
            writers.push(tokio::spawn(async move {
                let mut tx = db.begin_write().await.unwrap();
                sqlx::query("INSERT INTO t (n, v) VALUES ($1, $2)")
                    .bind(n)
                    .bind(format!("v{n}"))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                match n % 6 {
                    // Fails on the unique value after writing: rolled back, or dropped.
                    0 | 1 => {
                        let refused = sqlx::query("INSERT INTO t (n, v) VALUES ($1, 'taken')")
                            .bind(n + 1000)
                            .execute(&mut *tx)
                            .await;
                        assert!(refused.is_err());
                        if n % 6 == 0 {
                            tx.rollback().await.unwrap();
                        }
                        None
                    }
                    // Dropped without a word.
                    2 => None,
                    _ => {
                        tx.commit().await.unwrap();
                        Some(n)
                    }
                }
            }));
        }
        let mut committed = BTreeSet::new();
        for writer in writers {
            if let Some(n) = writer.await.unwrap() {
                committed.insert(n);
            }
        }
        // A dropped writer's savepoint is rolled back by a task: wait for the turn to be free.
        drop(db.begin_write().await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let stored: Vec<(i64,)> =
            sqlx::query_as("SELECT n FROM t WHERE n >= 0 ORDER BY n").fetch_all(db.pool()).await.unwrap();
        let stored: BTreeSet<i64> = stored.into_iter().map(|(n,)| n).collect();
        assert_eq!(stored, committed, "exactly the committed writers' rows");
        assert_eq!(committed.len(), 24);
        let commits = db.writer.batch.lock().await.commits_seen;
        assert!(commits < committed.len(), "commits carried several writers: {commits} for {}", committed.len());
        db.close().await;
        std::fs::remove_dir_all(&folder).ok();
    }
}
