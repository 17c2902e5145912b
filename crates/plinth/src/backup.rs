//! Backup and restore of the embedded mode.
//!
//! `plinth backup --to DIR` copies a running (or stopped) server's data folder consistently:
//! the database through SQLite's `VACUUM INTO` (one snapshot, taken while writers go on), then
//! the files folder, then a `manifest.json` with each file's size and SHA-256, written last so
//! that a backup without one is known to be unfinished. The master key is left out unless
//! `--include-master-key` says otherwise: a backup that holds it opens every stored secret, so it
//! must be kept as carefully as the key itself.
//!
//! `plinth restore --from DIR --data-dir NEW` checks every file against the manifest before it
//! writes anything, and refuses a target folder that is not empty.
//!
//! On PostgreSQL the database is backed up with its own tools (`pg_dump`); see `docs/operations.md`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Connection;

use crate::config::StorageArgs;

/// The manifest's format.
const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "plinth.db";
const MASTER_KEY: &str = "master.key";
const FILES: &str = "files";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backups of a PostgreSQL database are made with its own tools: {0}")]
    Postgres(&'static str),
    #[error("{0} is not empty: back up to (or restore into) a new folder")]
    NotEmpty(PathBuf),
    #[error("there is no database at {0}")]
    NoDatabase(PathBuf),
    #[error("--include-master-key: there is no master key file at {0} (a key given as PLINTH_MASTER_KEY is kept where it is set)")]
    NoMasterKey(PathBuf),
    #[error("the backup has no readable manifest.json (it is unfinished or not a backup): {0}")]
    Manifest(String),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const PG_RECIPE: &str = "`pg_dump --format=custom --file=plinth.dump \"$PLINTH_DATABASE_URL\"`, restored with \
                         `pg_restore --dbname=<new database> plinth.dump`; copy the files folder beside it";

/// What a backup holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    pub plinth_version: String,
    pub master_key_included: bool,
    /// Every file of the backup but the manifest, by its path inside the backup.
    pub files: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

fn is_empty_or_missing(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(error),
    }
}

fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        bytes += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok((bytes, crate::secrets::hex(&hasher.finalize())))
}

/// Every file under `root`, as paths relative to it, in a stable order.
fn files_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = match std::fs::read_dir(root.join(&relative)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn path_text(path: &Path) -> String {
    path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

fn copy_private(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::copy(from, to)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Backs up the embedded data folder of `storage` into the new folder `to`.
pub async fn backup(storage: &StorageArgs, to: &Path, include_master_key: bool) -> Result<Manifest, BackupError> {
    if storage.database_url.as_deref().is_some_and(|url| !url.trim().is_empty()) {
        return Err(BackupError::Postgres(PG_RECIPE));
    }
    if !is_empty_or_missing(to)? {
        return Err(BackupError::NotEmpty(to.to_path_buf()));
    }
    let database = storage.data_dir.join(DATABASE);
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database));
    }
    let master_key = storage.data_dir.join(MASTER_KEY);
    if include_master_key && !master_key.is_file() {
        return Err(BackupError::NoMasterKey(master_key));
    }
    std::fs::create_dir_all(to)?;
    let mut files = Vec::new();

    // One consistent snapshot of the database, however many writers the server has meanwhile.
    let target = to.join(DATABASE);
    let url = format!("sqlite://{}?mode=ro", database.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut conn).await?;
    sqlx::query("VACUUM INTO $1").bind(target.to_string_lossy().into_owned()).execute(&mut conn).await?;
    conn.close().await?;
    let (bytes, sha256) = digest(&target)?;
    files.push(Entry { path: DATABASE.into(), bytes, sha256 });

    // The stored files, after the snapshot: every file a row of it names is already written.
    let files_dir = storage.files_dir.clone().unwrap_or_else(|| storage.data_dir.join(FILES));
    for relative in files_under(&files_dir)? {
        let destination = to.join(FILES).join(&relative);
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(files_dir.join(&relative), &destination)?;
        let (bytes, sha256) = digest(&destination)?;
        files.push(Entry { path: format!("{FILES}/{}", path_text(&relative)), bytes, sha256 });
    }

    if include_master_key {
        let destination = to.join(MASTER_KEY);
        copy_private(&master_key, &destination)?;
        let (bytes, sha256) = digest(&destination)?;
        files.push(Entry { path: MASTER_KEY.into(), bytes, sha256 });
    }

    let manifest = Manifest {
        format: FORMAT,
        created_at: crate::time::to_db(&crate::time::now()),
        plinth_version: env!("CARGO_PKG_VERSION").into(),
        master_key_included: include_master_key,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Manifest(e.to_string()))?;
    // Written last, and whole: a folder without it is an unfinished backup.
    let partial = to.join(format!("{MANIFEST}.partial"));
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, to.join(MANIFEST))?;
    Ok(manifest)
}

/// Restores the backup in `from` into the new data folder `data_dir` (and its `files` folder).
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest, BackupError> {
    let text = std::fs::read(from.join(MANIFEST)).map_err(|e| BackupError::Manifest(e.to_string()))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| BackupError::Manifest(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Manifest(format!("format {} is not one this server reads", manifest.format)));
    }
    if !is_empty_or_missing(data_dir)? {
        return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
    }
    // Everything is checked before anything is written.
    for entry in &manifest.files {
        let inside = Path::new(&entry.path);
        let safe = inside.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(BackupError::Damaged(format!("`{}` is not a path inside the backup", entry.path)));
        }
        let (bytes, sha256) = digest(&from.join(inside))
            .map_err(|e| BackupError::Damaged(format!("`{}` cannot be read: {e}", entry.path)))?;
        if bytes != entry.bytes || sha256 != entry.sha256 {
            return Err(BackupError::Damaged(format!("`{}` does not match its checksum", entry.path)));
        }
    }
    if !manifest.files.iter().any(|entry| entry.path == DATABASE) {
        return Err(BackupError::Damaged("it holds no database".into()));
    }
    std::fs::create_dir_all(data_dir)?;
    let copied = manifest.files.iter().try_for_each(|entry| -> std::io::Result<()> {
        let destination = data_dir.join(&entry.path);
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if entry.path == MASTER_KEY {
            copy_private(&from.join(&entry.path), &destination)
        } else {
            std::fs::copy(from.join(&entry.path), &destination).map(|_| ())
        }
    });
    if let Err(error) = copied {
        // Nothing half-restored is left behind.
        let _ = std::fs::remove_dir_all(data_dir);
        return Err(error.into());
    }
    Ok(manifest)
}
