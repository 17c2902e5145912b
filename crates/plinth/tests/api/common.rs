//! The test harness: the real server on a random loopback port, over SQLite or PostgreSQL.

use std::path::{Path, PathBuf};

use plinth::config::{Config, Secret};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_KEY: &str = "plk_admin_test_0123456789abcdefghijklmnopqrstuv";
/// base64 of 32 bytes of 0x07: a fixed master key, so tests can sign tokens the server accepts.
pub const MASTER_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs one test body on each backend, as `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $app = $crate::common::TestApp::spawn($crate::common::Backend::Sqlite).await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let $app = $crate::common::TestApp::spawn($crate::common::Backend::Postgres).await;
                    $body
                }
            }
        )*
    };
}

/// Runs one test body on each backend, with `$backend` bound to it, for tests that start their
/// servers themselves (own configuration, several nodes).
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $backend = $crate::common::Backend::Sqlite;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let $backend = $crate::common::Backend::Postgres;
                    $body
                }
            }
        )*
    };
}

/// Runs one test body on each backend, and once more on SQLite with the files in an
/// S3-compatible bucket (the server `PLINTH_TEST_S3_ENDPOINT` names: `bash scripts/test.sh`
/// starts one), as `<name>::sqlite`, `<name>::postgres` and `<name>::s3`.
#[macro_export]
macro_rules! files_backends {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $app = $crate::common::TestApp::spawn($crate::common::Backend::Sqlite).await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let $app = $crate::common::TestApp::spawn($crate::common::Backend::Postgres).await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn s3() {
                    let $app = $crate::common::TestApp::spawn_s3().await;
                    $body
                }
            }
        )*
    };
}

/// Where a test's data lives; kept across restarts.
#[derive(Debug, Clone)]
pub struct Storage {
    pub backend: Backend,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// `s3://bucket/prefix` when the files live in a bucket.
    pub files_url: Option<String>,
}

fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{:x}", nanos, rand_u32())
}

fn rand_u32() -> u32 {
    // Good enough to keep parallel tests apart.
    let x = std::collections::hash_map::RandomState::new();
    use std::hash::{BuildHasher, Hasher};
    let mut h = x.build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() as u32
}

impl Storage {
    /// Fresh storage: a new data folder, and for PostgreSQL a new database.
    pub async fn fresh(backend: Backend) -> Storage {
        let data_dir = std::env::temp_dir().join(format!("plinth-test-{}", random_suffix()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_postgres_database().await),
        };
        Storage { backend, data_dir, database_url, files_url: None }
    }

    /// Fresh SQLite storage whose files live under a prefix of their own in the test bucket.
    pub async fn fresh_s3() -> Storage {
        let endpoint = std::env::var("PLINTH_TEST_S3_ENDPOINT")
            .expect("S3 tests need PLINTH_TEST_S3_ENDPOINT (run `bash scripts/test.sh`, which starts an S3 server)");
        // The bucket is made once; a second PUT answers that it exists.
        let made = reqwest::Client::new()
            .put(format!("{endpoint}/plinth-tests"))
            .send()
            .await
            .expect("reaching the S3 server");
        assert!(made.status().is_success() || made.status().as_u16() == 409, "making the bucket: {}", made.status());
        let mut storage = Storage::fresh(Backend::Sqlite).await;
        storage.files_url = Some(format!("s3://plinth-tests/{}", random_suffix()));
        storage
    }

    pub fn config(&self) -> Config {
        let mut config = Config::for_data_dir(self.data_dir.clone());
        config.storage.database_url = self.database_url.clone();
        config.storage.files_url = self.files_url.clone();
        config.storage.db_max_connections = 5;
        config.admin_key = Some(Secret::new(ADMIN_KEY));
        config.master_key = Some(Secret::new(MASTER_KEY));
        config
    }

    /// The flags that point the command line at this storage.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec!["--data-dir".to_string(), self.data_dir.display().to_string()];
        if let Some(url) = &self.database_url {
            args.push("--database-url".into());
            args.push(url.clone());
        }
        args
    }
}

async fn fresh_postgres_database() -> String {
    let admin_url = std::env::var("PLINTH_TEST_DATABASE_URL")
        .expect("PostgreSQL tests need PLINTH_TEST_DATABASE_URL (run `bash scripts/test.sh`, which starts a server)");
    let name = format!("plinth_t_{}", random_suffix());
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connecting to PLINTH_TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("creating a test database");
    conn.close().await.ok();
    let (base, _) = admin_url.rsplit_once('/').expect("PLINTH_TEST_DATABASE_URL has a database name");
    format!("{base}/{name}")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts an error in the contract's envelope.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.body["success"], false, "{}", self.text);
        assert_eq!(self.error_code(), code, "{}", self.text);
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.text);
        let request_id = self.body["request_id"].as_str().expect("request_id");
        assert_eq!(self.header("x-request-id"), Some(request_id));
        self
    }
}

pub struct TestApp {
    pub base: String,
    /// The server's state, for driving background work (pruning, say) directly.
    pub app: plinth::App,
    pub client: reqwest::Client,
    pub storage: Storage,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    /// False once a restarted server took the storage over.
    owns_storage: bool,
}

/// A tenant made for a test, with its first (all-scopes) key.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: String,
    pub key: String,
    pub key_id: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        let storage = Storage::fresh(backend).await;
        let config = storage.config();
        Self::start(storage, config).await
    }

    /// Starts a server on fresh SQLite storage with its files in the test bucket.
    pub async fn spawn_s3() -> TestApp {
        let storage = Storage::fresh_s3().await;
        let config = storage.config();
        Self::start(storage, config).await
    }

    /// Starts a server on fresh storage, its configuration changed by `change`.
    pub async fn spawn_with(backend: Backend, change: impl FnOnce(&mut Config)) -> TestApp {
        let storage = Storage::fresh(backend).await;
        let mut config = storage.config();
        change(&mut config);
        Self::start(storage, config).await
    }

    /// Starts a server on `storage` with `config`.
    pub async fn start(storage: Storage, config: Config) -> TestApp {
        let server = plinth::Server::start(config).await.expect("server starts");
        let addr = server.local_addr().unwrap();
        let app = server.app();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestApp {
            base: format!("http://{addr}"),
            app,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            storage,
            shutdown: Some(tx),
            handle: Some(handle),
            owns_storage: true,
        }
    }

    /// Stops gracefully and waits until the server has closed.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task").expect("server ran");
        }
    }

    /// Stops and starts again on the same storage.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        self.owns_storage = false;
        let storage = self.storage.clone();
        let config = storage.config();
        Self::start(storage, config).await
    }

    /// Stops and starts again on the same storage, the configuration changed by `change`.
    pub async fn restart_with(mut self, change: impl FnOnce(&mut Config)) -> TestApp {
        self.stop().await;
        self.owns_storage = false;
        let storage = self.storage.clone();
        let mut config = storage.config();
        change(&mut config);
        Self::start(storage, config).await
    }

    /// Another server on the same storage (a second node, on PostgreSQL).
    pub async fn another_node(&self, change: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = self.storage.config();
        change(&mut config);
        let mut node = Self::start(self.storage.clone(), config).await;
        node.owns_storage = false;
        node
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, body, text }
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(self.request(Method::GET, path, Some(token))).await
    }

    pub async fn get_public(&self, path: &str) -> Resp {
        self.send(self.request(Method::GET, path, None)).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(self.request(Method::POST, path, Some(token)).json(&body)).await
    }

    pub async fn post_public(&self, path: &str, body: Value) -> Resp {
        self.send(self.request(Method::POST, path, None).json(&body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(self.request(Method::PATCH, path, Some(token)).json(&body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(self.request(Method::DELETE, path, Some(token))).await
    }

    /// Deletes a parent with dependants: asks, expects 409 `DEPENDENCY_EXISTS`, then forces with
    /// the confirm token.
    pub async fn delete_confirmed(&self, path: &str, token: &str) -> Resp {
        let asked = self.delete(path, token).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        let confirm = asked.body["error"]["confirm_token"].as_str().expect("a confirm token").to_string();
        self.delete(&format!("{path}?force=true&confirm_token={confirm}"), token).await
    }

    /// Creates a tenant through the API as the platform admin.
    pub async fn tenant(&self, name: &str) -> TestTenant {
        self.tenant_on(name, "free").await
    }

    /// Creates a tenant on a plan (`free`, `starter`, `pro`, `agency` or `enterprise`).
    pub async fn tenant_on(&self, name: &str, tier: &str) -> TestTenant {
        let resp = self.post("/v1/tenants", ADMIN_KEY, serde_json::json!({ "name": name, "tier": tier })).await;
        resp.expect(201);
        TestTenant {
            id: resp.data()["id"].as_str().unwrap().to_string(),
            key: resp.data()["api_key"].as_str().unwrap().to_string(),
            key_id: resp.data()["api_key_id"].as_str().unwrap().to_string(),
        }
    }

    /// Creates a key of `tenant` with `body`, returning (id, secret).
    pub async fn key(&self, tenant: &TestTenant, body: Value) -> (String, String) {
        let resp = self.post("/v1/keys", &tenant.key, body).await;
        resp.expect(201);
        (resp.data()["key"]["id"].as_str().unwrap().to_string(), resp.data()["token"].as_str().unwrap().to_string())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if !self.owns_storage {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.storage.data_dir);
        if let Some(url) = self.storage.database_url.clone() {
            // The test's database goes with it (its server's connections are ended by FORCE). On
            // a thread of its own: a destructor cannot wait on the test's runtime.
            let dropped = std::thread::spawn(move || drop_database(&url)).join();
            if let Ok(Err(error)) = dropped {
                eprintln!("dropping the test database failed: {error}");
            }
        }
    }
}

/// Drops the database `url` names, through the admin URL the tests were given.
fn drop_database(url: &str) -> Result<(), String> {
    let admin_url = std::env::var("PLINTH_TEST_DATABASE_URL").map_err(|e| e.to_string())?;
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    if !name.starts_with("plinth_t_") {
        return Err(format!("not a test database: {name}"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let work = async {
            let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
            conn.close().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(20), work).await {
            Ok(done) => done.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    })
}

/// A fixture file's text.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

impl TestApp {
    /// Writes what the server keeps in memory to write in batches (AI calls' usage rows), as it
    /// would a moment later: stored state is checked after it.
    pub async fn written(&self) {
        self.app.ai_meter.flush(&self.app.db).await.expect("writing AI usage");
    }

    /// One number from the server's database, to check stored state.
    pub async fn count(&self, sql: &str) -> i64 {
        self.written().await;
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(self.app.db.pool()).await.expect(sql);
        n
    }

    /// True when `needle` is anywhere in the stored database: the SQLite files, or every row of
    /// every table on PostgreSQL.
    pub async fn stored_anywhere(&self, needle: &str) -> bool {
        match self.storage.backend {
            Backend::Sqlite => ["plinth.db", "plinth.db-wal"].iter().any(|file| {
                std::fs::read(self.storage.data_dir.join(file))
                    .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                    .unwrap_or(false)
            }),
            Backend::Postgres => {
                let tables: Vec<(String,)> = sqlx::query_as(
                    "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                )
                .fetch_all(self.app.db.pool())
                .await
                .unwrap();
                assert!(tables.len() > 20, "the tables are listed");
                for (table,) in tables {
                    let sql =
                        format!("SELECT COUNT(*) FROM \"{table}\" AS r WHERE CAST(r AS TEXT) LIKE '%' || $1 || '%'");
                    let (n,): (i64,) =
                        sqlx::query_as(&sql).bind(needle).fetch_one(self.app.db.pool()).await.expect(&sql);
                    if n > 0 {
                        return true;
                    }
                }
                false
            }
        }
    }
}

impl TestApp {
    /// Lets every signed-in user of `tenant` reach the objects of `type_name` they created, and
    /// only those: the owner recipe (a permission on the built-in role, one policy).
    pub async fn grant_owner_access(&self, tenant: &TestTenant, type_name: &str) {
        let permission = format!("objects.{type_name}:*");
        self.send(
            self.request(Method::PUT, "/v1/roles/authenticated/permissions", Some(&tenant.key))
                .json(&serde_json::json!({ "permissions": [permission] })),
        )
        .await
        .expect(200);
        let policy = serde_json::json!({
            "name": "owners", "action": "all",
            "condition_json": { "property": "created_by", "op": "eq", "value": "$auth.user_id" }
        });
        self.post(&format!("/v1/object-types/{type_name}/policies"), &tenant.key, policy).await.expect(201);
    }
}
