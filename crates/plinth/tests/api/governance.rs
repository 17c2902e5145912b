//! Governance: policies, their validation, the tenant-wide IP allowlist and audit retention.

use serde_json::json;

use crate::both_backends;
use crate::common::ADMIN_KEY;

both_backends! {
    async fn policies_have_defaults_and_are_validated(app) {
        let tenant = app.tenant("Governed").await;
        let resp = app.get("/v1/governance", &tenant.key).await;
        resp.expect(200);
        assert_eq!(resp.data()["audit_retention_days"], 90);
        assert_eq!(resp.data()["session_duration_secs"], 86_400);
        assert_eq!(resp.data()["password_min_length"], 8);
        assert_eq!(resp.data()["ip_allowlist"], json!([]));

        let updated = app.patch("/v1/governance", &tenant.key, json!({ "audit_retention_days": 30, "password_min_length": 12 })).await;
        updated.expect(200);
        assert_eq!(updated.data()["audit_retention_days"], 30);
        assert_eq!(updated.data()["session_duration_secs"], 86_400);
        assert_eq!(app.get("/v1/governance", &tenant.key).await.data()["password_min_length"], 12);

        for body in [
            json!({ "audit_retention_days": 0 }),
            json!({ "session_duration_secs": 10 }),
            json!({ "password_min_length": 4096 }),
            json!({ "ip_allowlist": ["not-a-network"] }),
            json!({ "audit_retention_days": 10, "unknown": true }),
        ] {
            app.patch("/v1/governance", &tenant.key, body).await.expect_error(422, "VALIDATION_FAILED");
        }
        assert_eq!(app.get("/v1/governance", &tenant.key).await.data()["audit_retention_days"], 30, "nothing half-applied");

        // Governance is of the admin group: the broad `read` and `write` do not reach it.
        let (_, data_key) = app.key(&tenant, json!({ "scopes": ["read", "write"] })).await;
        app.get("/v1/governance", &data_key).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.patch("/v1/governance", &data_key, json!({ "audit_retention_days": 1 })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["governance:read"] })).await;
        app.get("/v1/governance", &reader).await.expect(200);
        app.patch("/v1/governance", &reader, json!({ "audit_retention_days": 5 })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let log = app.get("/v1/audit-logs?action=governance.updated", &tenant.key).await;
        assert_eq!(log.data()["total"], 1);
    }

    async fn the_tenant_allowlist_binds_every_credential(app) {
        let tenant = app.tenant("Fenced").await;
        let other = app.tenant("Open").await;
        let token = app.post_public("/v1/token", json!({ "api_key": tenant.key })).await;
        let token = token.data()["token"].as_str().unwrap().to_string();
        app.get("/v1/keys", &token).await.expect(200);
        app.patch("/v1/governance", &tenant.key, json!({ "ip_allowlist": ["192.0.2.0/24"] })).await.expect(200);
        let refused = app.get("/v1/keys", &tenant.key).await;
        refused.expect_error(401, "UNAUTHORIZED");
        assert!(refused.body["error"]["message"].as_str().unwrap().contains("tenant"));
        app.get("/v1/keys", &token).await.expect_error(401, "UNAUTHORIZED");
        // Other tenants are untouched; the platform admin can still lift the fence.
        app.get("/v1/keys", &other.key).await.expect(200);
        let request = app
            .request(reqwest::Method::PATCH, "/v1/governance", Some(ADMIN_KEY))
            .header("x-tenant-id", tenant.id.as_str())
            .json(&json!({ "ip_allowlist": ["127.0.0.0/8"] }));
        app.send(request).await.expect(200);
        app.get("/v1/keys", &tenant.key).await.expect(200);
    }

    async fn audit_records_are_pruned_by_the_tenants_retention(app) {
        let short = app.tenant("Short memory").await;
        let long = app.tenant("Long memory").await;
        app.patch("/v1/governance", &short.key, json!({ "audit_retention_days": 30 })).await.expect(200);
        let pool = app.app.db.pool();
        for (tenant, days_ago, marker) in [
            (&short.id, 40, "short-old"), (&short.id, 10, "short-recent"), (&long.id, 40, "long-old"), (&long.id, 100, "long-ancient"),
        ] {
            let at = chrono::Utc::now() - chrono::Duration::days(days_ago);
            sqlx::query(
                "INSERT INTO audit_logs (id, tenant_id, actor_type, action, resource_type, resource_id, changes, created_at) \
                 VALUES ($1, $2, 'admin', 'test.marker', 'test', $3, '{}', $4)",
            )
            .bind(format!("aud_{marker}"))
            .bind(tenant.as_str())
            .bind(marker)
            .bind(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .execute(pool)
            .await
            .unwrap();
        }
        let removed = plinth::audit::prune(&app.app).await.unwrap();
        assert_eq!(removed, 2);
        let short_log = app.get("/v1/audit-logs?action=test.marker", &short.key).await;
        assert_eq!(short_log.data()["results"][0]["resource_id"], "short-recent");
        assert_eq!(short_log.data()["total"], 1);
        let long_log = app.get("/v1/audit-logs?action=test.marker", &long.key).await;
        assert_eq!(long_log.data()["results"][0]["resource_id"], "long-old");
        assert_eq!(long_log.data()["total"], 1);
    }
}
