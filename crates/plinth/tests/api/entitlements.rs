//! Entitlements: plan limits, admin overrides, atomic check-and-record, usage summary.

use serde_json::json;

use crate::both_backends;
use crate::common::ADMIN_KEY;

both_backends! {
    async fn plans_set_limits_and_usage_counts_against_them(app) {
        let tenant = app.tenant("Metered").await;
        let summary = app.get("/v1/entitlements/summary", &tenant.key).await;
        summary.expect(200);
        let e = &summary.data()["entitlements"];
        assert_eq!(summary.data()["tier"], "free");
        assert_eq!(e["api_calls"]["limit"], 10_000);
        assert_eq!(e["api_calls"]["used"], 1, "this very request");
        assert!(e["api_calls"]["reset_at"].as_str().unwrap().ends_with("01T00:00:00Z"));
        assert_eq!(e["objects"]["limit"], 1_000);
        assert_eq!(e["storage"]["unit"], "bytes");

        let check = app.get("/v1/entitlements/check?feature=objects&quantity=10", &tenant.key).await;
        check.expect(200);
        assert_eq!(check.data()["allowed"], true);
        assert_eq!(check.data()["available"], 1_000);

        let recorded = app.post("/v1/entitlements/usage", &tenant.key, json!({
            "feature": "objects", "quantity": 3, "metadata": { "endpoint": "/v1/objects", "token": "hidden" }
        })).await;
        recorded.expect(200);
        assert_eq!(recorded.data(), &json!({ "recorded": true, "feature": "objects", "current_usage": 3, "limit": 1000 }));
        let metadata: (String,) = sqlx::query_as("SELECT metadata FROM usage_events WHERE tenant_id = $1")
            .bind(&tenant.id)
            .fetch_one(app.app.db.pool())
            .await
            .unwrap();
        let metadata: serde_json::Value = serde_json::from_str(&metadata.0).unwrap();
        assert_eq!(metadata["endpoint"], "/v1/objects");
        assert_eq!(metadata["token"], "[REDACTED]");

        app.get("/v1/entitlements/check?feature=unicorns", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/entitlements/check?feature=objects&quantity=0", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/entitlements/usage", &tenant.key, json!({ "feature": "objects", "quantity": -5 }))
            .await
            .expect_error(422, "VALIDATION_FAILED");
    }

    async fn the_limit_is_enforced_atomically(app) {
        let tenant = app.tenant("Capped").await;
        let path = format!("/v1/tenants/{}/entitlements", tenant.id);
        let overridden = app.patch(&path, ADMIN_KEY, json!({ "limits": { "webhooks": 5 } })).await;
        overridden.expect(200);
        assert_eq!(overridden.data()["entitlements"]["webhooks"]["limit"], 5);

        let attempts = (0..10).map(|_| app.post("/v1/entitlements/usage", &tenant.key, json!({ "feature": "webhooks" })));
        let answers = futures::future::join_all(attempts).await;
        let allowed = answers.iter().filter(|a| a.status == 200).count();
        assert_eq!(allowed, 5, "exactly the limit passes");
        let refused = answers.iter().find(|a| a.status == 403).unwrap();
        refused.expect_error(403, "FEATURE_LIMIT_REACHED");
        assert_eq!(refused.body["error"]["feature"], "webhooks");
        assert!(refused.body["error"].get("upgrade_url").is_some());

        let check = app.get("/v1/entitlements/check?feature=webhooks", &tenant.key).await;
        assert_eq!(check.data()["allowed"], false);
        assert_eq!(check.data()["reason"], "LIMIT_EXCEEDED");
        assert_eq!(check.data()["current_usage"], 5);
        assert_eq!(check.data()["available"], 0);

        // Lifting the limit, then returning to the plan's.
        app.patch(&path, ADMIN_KEY, json!({ "limits": { "webhooks": "unlimited" } })).await.expect(200);
        app.post("/v1/entitlements/usage", &tenant.key, json!({ "feature": "webhooks" })).await.expect(200);
        let back = app.patch(&path, ADMIN_KEY, json!({ "limits": { "webhooks": null } })).await;
        assert_eq!(back.data()["entitlements"]["webhooks"]["limit"], 2);
        assert_eq!(app.get(&path, ADMIN_KEY).await.data()["entitlements"]["webhooks"]["used"], 6);
    }

    async fn only_the_platform_admin_overrides_limits(app) {
        let tenant = app.tenant("Plan").await;
        let path = format!("/v1/tenants/{}/entitlements", tenant.id);
        app.patch(&path, &tenant.key, json!({ "limits": { "objects": 1_000_000 } })).await.expect_error(403, "FORBIDDEN");
        app.get(&path, &tenant.key).await.expect_error(403, "FORBIDDEN");
        app.patch(&path, ADMIN_KEY, json!({ "limits": { "unicorns": 1 } })).await.expect_error(422, "VALIDATION_FAILED");
        app.patch(&path, ADMIN_KEY, json!({ "limits": { "objects": -1 } })).await.expect_error(422, "VALIDATION_FAILED");
        app.patch("/v1/tenants/tn_01h455vb4pex5vsknk084sn02q/entitlements", ADMIN_KEY, json!({ "limits": {} }))
            .await
            .expect_error(404, "NOT_FOUND");
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        app.get("/v1/entitlements/summary", &reader).await.expect(200);
        app.post("/v1/entitlements/usage", &reader, json!({ "feature": "objects" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
    }
}

both_backends! {
    async fn api_calls_past_the_monthly_limit_are_refused(app) {
        let tenant = app.tenant("Quota").await;
        let path = format!("/v1/tenants/{}/entitlements", tenant.id);
        app.patch(&path, ADMIN_KEY, json!({ "limits": { "api_calls": 3 } })).await.expect(200);
        for _ in 0..3 {
            app.get("/v1/keys", &tenant.key).await.expect(200);
        }
        let refused = app.get("/v1/keys", &tenant.key).await;
        refused.expect_error(403, "FEATURE_LIMIT_REACHED");
        assert_eq!(refused.body["error"]["feature"], "api_calls");
        // The count survives a restart: written at shutdown, read back at start.
        let app = app.restart().await;
        app.get("/v1/keys", &tenant.key).await.expect_error(403, "FEATURE_LIMIT_REACHED");
        // The admin still reaches the tenant, and can raise the limit.
        let summary = app.get(&path, ADMIN_KEY).await;
        assert_eq!(summary.data()["entitlements"]["api_calls"]["used"], 3);
        app.patch(&path, ADMIN_KEY, json!({ "limits": { "api_calls": 10 } })).await.expect(200);
        app.get("/v1/keys", &tenant.key).await.expect(200);
    }
}

async fn a_plans_file_sets_the_limits(backend: crate::common::Backend) {
    use crate::common::{Storage, TestApp};
    let storage = Storage::fresh(backend).await;
    let path = storage.data_dir.join("plans.json");
    std::fs::write(&path, r#"{"free": {"webhooks": 7, "objects": "unlimited"}}"#).unwrap();
    let mut config = storage.config();
    config.plans_file = Some(path.clone());
    let app = TestApp::start(storage.clone(), config).await;
    let tenant = app.tenant("Configured").await;
    let summary = app.get("/v1/entitlements/summary", &tenant.key).await;
    assert_eq!(summary.data()["entitlements"]["webhooks"]["limit"], 7);
    assert_eq!(summary.data()["entitlements"]["objects"]["limit"], serde_json::Value::Null);
    assert_eq!(summary.data()["entitlements"]["api_calls"]["limit"], 10_000);

    std::fs::write(&path, r#"{"free": {"unicorns": 1}}"#).unwrap();
    let mut config = storage.config();
    config.plans_file = Some(path);
    let error = plinth::Server::start(config).await.err().expect("a bad plans file stops the start");
    assert!(error.to_string().contains("unicorns"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_file_sets_the_limits_sqlite() {
    a_plans_file_sets_the_limits(crate::common::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_file_sets_the_limits_postgres() {
    a_plans_file_sets_the_limits(crate::common::Backend::Postgres).await;
}
