//! Saturation answers in the contract's shape: a database that cannot take the work now is 503
//! `UNAVAILABLE` with `Retry-After`; a request not answered in time is 504 `TIMEOUT`, and
//! nothing it began is kept.

use serde_json::json;
use sqlx::Connection;

use crate::common::{Backend, TestApp};
use crate::on_both_backends;

/// Holds what a webhook write needs, from outside the server: SQLite's write lock (another
/// connection, as another process would), or the webhooks table on PostgreSQL.
enum Hold {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

async fn hold_webhooks(app: &TestApp) -> Hold {
    match app.storage.backend {
        Backend::Sqlite => {
            let path = app.storage.data_dir.join("plinth.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
            Hold::Sqlite(conn)
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(app.storage.database_url.as_ref().unwrap()).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("LOCK TABLE webhooks IN ACCESS EXCLUSIVE MODE").execute(&mut conn).await.unwrap();
            Hold::Postgres(conn)
        }
    }
}

async fn release(hold: Hold) {
    match hold {
        Hold::Sqlite(mut conn) => sqlx::query("ROLLBACK").execute(&mut conn).await.map(|_| ()).unwrap(),
        Hold::Postgres(mut conn) => sqlx::query("ROLLBACK").execute(&mut conn).await.map(|_| ()).unwrap(),
    }
}

fn endpoint() -> serde_json::Value {
    json!({ "url": "https://hooks.example.com/in", "events": ["*"] })
}

on_both_backends! {
    async fn no_free_connection_is_503_with_retry_after(backend) {
        let app = TestApp::spawn_with(backend, |config| {
            config.storage.db_max_connections = 1;
            config.storage.db_acquire_timeout_ms = 300;
        }).await;
        let tenant = app.tenant("Busy").await;
        app.get("/v1/webhooks", &tenant.key).await.expect(200);
        // The pool's only connection is taken.
        let held = app.app.db.pool().acquire().await.unwrap();
        let busy = app.get("/v1/webhooks", &tenant.key).await;
        busy.expect_error(503, "UNAVAILABLE");
        assert_eq!(busy.header("retry-after"), Some("1"));
        assert_eq!(busy.body["error"]["retry_after"], 1);
        drop(held);
        app.get("/v1/webhooks", &tenant.key).await.expect(200);
    }

    async fn a_request_not_answered_in_time_is_504_and_keeps_nothing(backend) {
        let app = TestApp::spawn_with(backend, |config| config.request_timeout_secs = 1).await;
        let tenant = app.tenant("Slow").await;
        let hold = hold_webhooks(&app).await;
        let keyed = || app.request(reqwest::Method::POST, "/v1/webhooks", Some(&tenant.key)).header("idempotency-key", "slow-1").json(&endpoint());
        let slow = app.send(keyed()).await;
        slow.expect_error(504, "TIMEOUT");
        release(hold).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM webhooks").await, 0, "nothing of it was kept");
        // Its Idempotency-Key was let go with it: the retry runs (not 409 "still running").
        for _ in 0..100 {
            if app.count("SELECT COUNT(*) FROM idempotency_keys WHERE idempotency_key = 'slow-1'").await == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        app.send(keyed()).await.expect(201);
        assert_eq!(app.count("SELECT COUNT(*) FROM webhooks").await, 1);
    }

    async fn a_statement_held_up_too_long_is_503(backend) {
        // PostgreSQL's statement timeout; on SQLite, its busy timeout for a lock another
        // process holds.
        let app = TestApp::spawn_with(backend, |config| {
            config.storage.db_statement_timeout_ms = 300;
            config.request_timeout_secs = 60;
        }).await;
        let tenant = app.tenant("Held").await;
        let hold = hold_webhooks(&app).await;
        let held = app.post("/v1/webhooks", &tenant.key, endpoint()).await;
        held.expect_error(503, "UNAVAILABLE");
        assert_eq!(held.header("retry-after"), Some("1"));
        release(hold).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM webhooks").await, 0);
        app.post("/v1/webhooks", &tenant.key, endpoint()).await.expect(201);
    }
}
