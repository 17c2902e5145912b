//! The `plinth` command line, run as a process.

use std::process::Command;

use serde_json::Value;

use crate::common::{Backend, Storage, TestApp};

fn plinth(args: &[&str], storage: &Storage) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .args(storage.cli_args())
        .env_remove("PLINTH_DATABASE_URL")
        .output()
        .expect("plinth runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

async fn tenant_and_key_commands(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let (ok, _, stderr) = plinth(&["migrate"], &storage);
    assert!(ok, "{stderr}");

    let (ok, stdout, stderr) = plinth(&["tenant", "create", "--name", "From CLI", "--tier", "starter"], &storage);
    assert!(ok, "{stderr}");
    let tenant: Value = serde_json::from_str(&stdout).expect("the tenant is printed as JSON");
    assert_eq!(tenant["tier"], "starter");
    let tenant_id = tenant["id"].as_str().unwrap();
    let first_key = tenant["api_key"].as_str().unwrap();

    let (ok, stdout, stderr) = plinth(
        &["key", "create", "--tenant", tenant_id, "--scopes", "read,webhooks:write", "--label", "ops"],
        &storage,
    );
    assert!(ok, "{stderr}");
    let key: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(key["key"]["scopes"], serde_json::json!(["read", "webhooks:write"]));
    let secret = key["token"].as_str().unwrap();

    let (ok, _, stderr) = plinth(&["key", "create", "--tenant", "tn_01h455vb4pex5vsknk084sn02q"], &storage);
    assert!(!ok);
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
    let (ok, _, stderr) = plinth(&["key", "create", "--tenant", tenant_id, "--scopes", "root"], &storage);
    assert!(!ok);
    assert!(stderr.contains("VALIDATION_FAILED"), "{stderr}");

    // The server sees what the command line made.
    let config = storage.config();
    let app = TestApp::start(storage, config).await;
    let keys = app.get("/v1/keys", first_key).await;
    keys.expect(200);
    assert_eq!(keys.data()["total"], 2);
    app.get("/v1/webhooks", secret).await.expect(200);
    app.get("/v1/keys", secret).await.expect_error(403, "INSUFFICIENT_SCOPE");
    app.post("/v1/keys", secret, serde_json::json!({})).await.expect_error(403, "INSUFFICIENT_SCOPE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_key_commands_sqlite() {
    tenant_and_key_commands(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_key_commands_postgres() {
    tenant_and_key_commands(Backend::Postgres).await;
}

#[test]
fn openapi_command_prints_the_document() {
    let output = Command::new(env!("CARGO_BIN_EXE_plinth")).arg("openapi").output().unwrap();
    assert!(output.status.success());
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/v1/keys/{key_id}/rotate"]["post"].is_object());
}

#[test]
fn serve_generates_an_admin_key_once_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("plinth-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let run = || {
        let child = Command::new(env!("CARGO_BIN_EXE_plinth"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", dir.to_str().unwrap()])
            .env_remove("PLINTH_ADMIN_KEY")
            .env_remove("PLINTH_MASTER_KEY")
            .env_remove("PLINTH_DATABASE_URL")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it answers.
        let mut up = false;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(up, "the server did not start");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a clean exit on SIGTERM");
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let first = run();
    assert!(first.contains("plk_admin_"), "the first start shows the generated admin key: {first}");
    assert!(first.contains("stopped"));
    let mode = std::fs::metadata(dir.join("master.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    let second = run();
    assert!(!second.contains("plk_admin_"), "the admin key is shown only once");
    std::fs::remove_dir_all(&dir).ok();
}
