//! `plinth backup` and `plinth restore` of the embedded mode, run as processes against a
//! server that keeps writing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::common::{Backend, Storage, TestApp};

fn plinth(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .env_remove("PLINTH_DATABASE_URL")
        .env_remove("PLINTH_DATA_DIR")
        .env_remove("PLINTH_FILES_DIR")
        .output()
        .expect("plinth runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into())
}

fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("plinth-{name}-{}-{nanos:x}", std::process::id()))
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_every_answered_write() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let tenant = app.tenant_on("Backed up", "enterprise").await;
    // A stored file too.
    std::fs::create_dir_all(app.storage.data_dir.join("files/tn_x")).unwrap();
    std::fs::write(app.storage.data_dir.join("files/tn_x/image.png"), b"\x89PNG not really").unwrap();

    // Writes go on all along; each answered one is noted.
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, base, key) = (app.client.clone(), app.base.clone(), tenant.key.clone());
        let (answered, stop) = (answered.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let response = client
                    .post(format!("{base}/v1/keys"))
                    .bearer_auth(&key)
                    .json(&json!({ "label": format!("written {n}") }))
                    .send()
                    .await
                    .unwrap();
                if response.status() == 429 {
                    // The tenant's rate limit: a client waits and goes on.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                assert_eq!(response.status(), 201);
                let body: Value = response.json().await.unwrap();
                answered.lock().unwrap().push(body["data"]["key"]["id"].as_str().unwrap().to_string());
            }
        })
    };
    for _ in 0..1000 {
        if answered.lock().unwrap().len() >= 20 || writer.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!writer.is_finished(), "the writer stopped early");
    let before: Vec<String> = answered.lock().unwrap().clone();
    let backup = scratch("backup");
    let data_dir = app.storage.data_dir.display().to_string();
    let to = backup.display().to_string();
    let (ok, stderr) =
        tokio::task::spawn_blocking(move || plinth(&["backup", "--to", &to, "--data-dir", &data_dir])).await.unwrap();
    assert!(ok, "{stderr}");
    for _ in 0..500 {
        if answered.lock().unwrap().len() > before.len() + 5 || writer.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(answered.lock().unwrap().len() > before.len(), "writes went on past the backup's start");

    // The manifest names every file with its checksum; no master key unless asked.
    let listed = manifest(&backup);
    let paths: Vec<&str> = listed["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"plinth.db") && paths.contains(&"files/tn_x/image.png"), "{paths:?}");
    assert!(!paths.contains(&"master.key") && !backup.join("master.key").exists());
    assert_eq!(listed["master_key_included"], false);

    // Restored into a new folder, every write answered before the backup began is there.
    let restored = scratch("restored");
    let (ok, stderr) =
        plinth(&["restore", "--from", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("no master key"), "{stderr}");
    assert_eq!(std::fs::read(restored.join("files/tn_x/image.png")).unwrap(), b"\x89PNG not really");
    let url = format!("sqlite://{}?mode=ro", restored.join("plinth.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    for id in &before {
        let (found,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE id = $1").bind(id).fetch_one(&db).await.unwrap();
        assert_eq!(found, 1, "{id} was answered before the backup began");
    }
    db.close().await;

    // A server on the restored folder, with the original master key, serves the same data.
    let storage = Storage { backend: Backend::Sqlite, data_dir: restored.clone(), database_url: None, files_url: None };
    let config = storage.config();
    let again = TestApp::start(storage, config).await;
    let list = again.get("/v1/keys?limit=1", &tenant.key).await;
    list.expect(200);
    assert!(list.data()["total"].as_i64().unwrap() > before.len() as i64, "{}", list.text);

    // A restore never writes over a folder in use, nor from a damaged backup.
    let (ok, stderr) =
        plinth(&["restore", "--from", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()]);
    assert!(!ok && stderr.contains("is not empty"), "{stderr}");
    std::fs::write(backup.join("files/tn_x/image.png"), b"changed").unwrap();
    let elsewhere = scratch("damaged");
    let (ok, stderr) =
        plinth(&["restore", "--from", backup.to_str().unwrap(), "--data-dir", elsewhere.to_str().unwrap()]);
    assert!(!ok && stderr.contains("does not match its checksum"), "{stderr}");
    assert!(!elsewhere.exists(), "nothing was written");
    // Nor into a backup folder that is not empty.
    let (ok, stderr) = plinth(&[
        "backup",
        "--to",
        backup.to_str().unwrap(),
        "--data-dir",
        &app.storage.data_dir.display().to_string(),
    ]);
    assert!(!ok && stderr.contains("is not empty"), "{stderr}");
    for dir in [&backup, &restored] {
        std::fs::remove_dir_all(dir).ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_is_in_a_backup_only_when_asked_for() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // The test server takes its master key from its settings: a file stands in for one made at
    // a first start.
    std::fs::write(app.storage.data_dir.join("master.key"), "a-master-key-file").unwrap();
    let backup = scratch("with-key");
    let data_dir = app.storage.data_dir.display().to_string();
    let (ok, stderr) =
        plinth(&["backup", "--to", backup.to_str().unwrap(), "--data-dir", &data_dir, "--include-master-key"]);
    assert!(ok, "{stderr}");
    assert_eq!(manifest(&backup)["master_key_included"], true);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(backup.join("master.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let restored = scratch("with-key-restored");
    let (ok, stderr) =
        plinth(&["restore", "--from", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read(restored.join("master.key")).unwrap(),
        std::fs::read(app.storage.data_dir.join("master.key")).unwrap()
    );
    std::fs::remove_dir_all(&backup).ok();
    std::fs::remove_dir_all(&restored).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_server_is_pointed_at_its_own_tools() {
    let storage = Storage::fresh(Backend::Postgres).await;
    let backup = scratch("pg");
    let mut args = vec!["backup".to_string(), "--to".into(), backup.display().to_string()];
    args.extend(storage.cli_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stderr) = plinth(&args);
    assert!(!ok && stderr.contains("pg_dump"), "{stderr}");
    assert!(!backup.exists());
}
