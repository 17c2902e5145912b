//! What an answered write survives, and the group sync that makes power-loss durability cheap.
//!
//! SQLite runs its write-ahead log with `synchronous = NORMAL` in both modes: a commit is in the
//! log, in the operating system's cache, when it returns, so a killed process loses nothing (the
//! log is replayed at the next open) and only a power loss or a kernel crash can lose the last
//! commits. In `power-loss` mode a write is answered only after the log has been synced to disk
//! since its commit; writers that commit while one sync runs share the next one, so under
//! concurrency many answers wait for one `fdatasync` instead of one each (`synchronous = FULL`).
//!
//! PostgreSQL syncs and group-commits its own log (`synchronous_commit = on`): both modes are the
//! server's, and `sync` does nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a write that was answered survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A killed process (the default, as PocketBase's WAL with `synchronous=NORMAL`): a power
    /// loss may lose the writes of the last moments, never the database's consistency.
    #[default]
    Process,
    /// A power loss: the log is synced to disk before a write is answered.
    PowerLoss,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Process => "process",
            Durability::PowerLoss => "power-loss",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "process" => Ok(Durability::Process),
            "power-loss" => Ok(Durability::PowerLoss),
            other => Err(format!("durability is `process` or `power-loss`, not `{other}`")),
        }
    }
}

/// Syncs an SQLite database's write-ahead log for everyone waiting: each caller's sync starts
/// after its call began, and one sync serves every caller that arrived while the previous ran.
#[derive(Debug)]
pub(crate) struct GroupSync {
    wal: PathBuf,
    /// Tickets handed out: one per call.
    requested: AtomicU64,
    /// Every ticket up to this one is covered by a completed sync.
    synced: AtomicU64,
    /// Held by the caller running a sync; the log file's identity at the last sync, to sync the
    /// folder too when the log is a new file (SQLite deletes it when the last connection closes).
    running: tokio::sync::Mutex<Option<FileId>>,
}

type FileId = (u64, u64);

impl GroupSync {
    /// For the SQLite database at `database`.
    pub(crate) fn new(database: &Path) -> GroupSync {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        GroupSync {
            wal: PathBuf::from(wal),
            requested: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// Returns once everything committed before this call is on disk.
    pub(crate) async fn sync(&self) -> std::io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            if self.synced.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            let mut last = self.running.lock().await;
            if self.synced.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            // Every call that took a ticket up to here began before this sync does.
            let covered = self.requested.load(Ordering::SeqCst);
            let wal = self.wal.clone();
            let previous = *last;
            let synced = tokio::task::spawn_blocking(move || sync_log(&wal, previous))
                .await
                .map_err(|e| std::io::Error::other(format!("the sync task failed: {e}")))??;
            *last = synced;
            self.synced.fetch_max(covered, Ordering::SeqCst);
        }
    }
}

/// Syncs the log file's data, and its folder when the file is not the one synced last (a new
/// file's name must be on disk too). No log file means nothing is waiting in one: SQLite
/// checkpoints into the database file, synced, before it removes the log.
fn sync_log(wal: &Path, previous: Option<FileId>) -> std::io::Result<Option<FileId>> {
    let file = match std::fs::File::open(wal) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    file.sync_data()?;
    let id = file_id(&file)?;
    if previous != Some(id) {
        if let Some(folder) = wal.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(folder)?.sync_all()?;
        }
    }
    Ok(Some(id))
}

#[cfg(unix)]
fn file_id(file: &std::fs::File) -> std::io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let metadata = file.metadata()?;
    Ok((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn file_id(file: &std::fs::File) -> std::io::Result<FileId> {
    Ok((0, file.metadata()?.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_reads_its_two_names() {
        assert_eq!("process".parse::<Durability>(), Ok(Durability::Process));
        assert_eq!("power-loss".parse::<Durability>(), Ok(Durability::PowerLoss));
        assert!("full".parse::<Durability>().is_err());
        assert_eq!(Durability::default().to_string(), "process");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_syncs_and_each_is_covered() {
        let folder = std::env::temp_dir().join(format!("plinth-group-sync-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let database = folder.join("db");
        std::fs::write(folder.join("db-wal"), b"frames").unwrap();
        let sync = std::sync::Arc::new(GroupSync::new(&database));
        let mut callers = Vec::new();
        for _ in 0..64 {
            let sync = sync.clone();
            callers.push(tokio::spawn(async move { sync.sync().await }));
        }
        for caller in callers {
            caller.await.unwrap().unwrap();
        }
        assert_eq!(sync.synced.load(Ordering::SeqCst), 64, "every ticket is covered");
        // No log file: nothing to sync, and no error.
        std::fs::remove_file(folder.join("db-wal")).unwrap();
        sync.sync().await.unwrap();
        std::fs::remove_dir_all(&folder).ok();
    }
}
