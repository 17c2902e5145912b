//! The audit log: mutations, sign-ins and refusals, with secrets redacted, per tenant.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::ADMIN_KEY;

fn actions(resp: &crate::common::Resp) -> Vec<String> {
    resp.data()["results"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap().to_string()).collect()
}

fn find<'a>(resp: &'a crate::common::Resp, action: &str) -> &'a Value {
    resp.data()["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == action)
        .unwrap_or_else(|| panic!("no {action} in {}", resp.text))
}

both_backends! {
    async fn every_mutation_is_recorded_with_who_and_where(app) {
        let tenant = app.tenant("Audited").await;
        let request = app
            .request(Method::POST, "/v1/keys", Some(&tenant.key))
            .header("user-agent", "audit-test/1.0")
            .header("x-request-id", "trace-audit-1")
            .json(&json!({ "label": "ci", "scopes": ["read"] }));
        let created = app.send(request).await;
        created.expect(201);
        let key_id = created.data()["key"]["id"].as_str().unwrap().to_string();
        let secret = created.data()["token"].as_str().unwrap().to_string();
        app.patch(&format!("/v1/keys/{key_id}"), &tenant.key, json!({ "label": "ci v2" })).await.expect(200);
        let token = app.post_public("/v1/token", json!({ "api_key": secret })).await;
        app.delete("/v1/token", token.data()["token"].as_str().unwrap()).await.expect(200);
        app.post(&format!("/v1/keys/{key_id}/rotate"), &tenant.key, json!({ "grace_period_hours": 0 })).await.expect(200);

        let log = app.get("/v1/audit-logs?limit=100", &tenant.key).await;
        log.expect(200);
        let seen = actions(&log);
        for action in [
            "tenant.created", "api_key.created", "api_key.updated", "token.issued", "token.revoked", "api_key.rotated",
        ] {
            assert!(seen.iter().any(|a| a == action), "{action} missing from {seen:?}");
        }
        // Newest first.
        assert_eq!(seen[0], "api_key.rotated");

        let entry = log.data()["results"].as_array().unwrap().iter()
            .find(|r| r["action"] == "api_key.created" && r["resource_id"] == key_id.as_str())
            .expect("the key's creation");
        assert_eq!(entry["actor_type"], "api_key");
        assert_eq!(entry["actor_id"], tenant.key_id.as_str());
        assert_eq!(entry["tenant_id"], tenant.id.as_str());
        assert_eq!(entry["resource_type"], "api_key");
        assert_eq!(entry["ip_address"], "127.0.0.1");
        assert_eq!(entry["user_agent"], "audit-test/1.0");
        assert_eq!(entry["request_id"], "trace-audit-1");
        assert_eq!(entry["changes"]["label"], "ci");
        assert_eq!(entry["changes"]["scopes"], json!(["read"]));
        assert_eq!(find(&log, "tenant.created")["actor_type"], "admin");
        assert_eq!(find(&log, "token.issued")["actor_id"], key_id.as_str());
        // No secret is ever stored.
        assert!(!log.text.contains(&secret) && !log.text.contains(&tenant.key));
        assert!(!log.text.contains("plk_live_"));
    }

    async fn audit_logs_filter_and_stay_in_their_tenant(app) {
        let a = app.tenant("A").await;
        let b = app.tenant("B").await;
        app.key(&a, json!({ "label": "one" })).await;
        app.key(&a, json!({ "label": "two" })).await;
        let created = app.get("/v1/audit-logs?action=api_key.created", &a.key).await;
        assert_eq!(created.data()["total"], 3, "the first key and two more");
        assert!(actions(&created).iter().all(|a| a == "api_key.created"));
        let by_actor = app.get(&format!("/v1/audit-logs?actor_id={}", a.key_id), &a.key).await;
        assert_eq!(by_actor.data()["total"], 2);
        let typed = app.get("/v1/audit-logs?resource_type=tenant", &a.key).await;
        assert_eq!(actions(&typed), vec!["tenant.created"]);
        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let none = app.get(&format!("/v1/audit-logs?created_after={future}"), &a.key).await;
        assert_eq!(none.data()["total"], 0);
        let past = app.get(&format!("/v1/audit-logs?created_before={future}&limit=2"), &a.key).await;
        assert_eq!(past.data()["results"].as_array().unwrap().len(), 2);
        assert!(past.data()["next_cursor"].is_string());
        app.get("/v1/audit-logs?created_after=yesterday", &a.key).await.expect_error(400, "BAD_REQUEST");

        // B sees only its own records.
        let b_log = app.get("/v1/audit-logs", &b.key).await;
        assert_eq!(b_log.data()["total"], 2);
        assert!(!b_log.text.contains(&a.id));

        // A tenant's deletion is a platform record, seen by the admin without a tenant.
        app.delete_confirmed(&format!("/v1/tenants/{}", b.id), ADMIN_KEY).await.expect(200);
        let platform = app.get("/v1/audit-logs", ADMIN_KEY).await;
        platform.expect(200);
        let deleted = find(&platform, "tenant.deleted");
        assert_eq!(deleted["resource_id"], b.id.as_str());
        assert_eq!(deleted["tenant_id"], Value::Null);

        let (_, narrow) = app.key(&a, json!({ "scopes": ["api-keys:read"] })).await;
        app.get("/v1/audit-logs", &narrow).await.expect_error(403, "INSUFFICIENT_SCOPE");
    }

    async fn refusals_are_recorded(app) {
        let tenant = app.tenant("Refusals").await;
        let (fenced_id, fenced) = app.key(&tenant, json!({ "ip_allowlist": ["192.0.2.0/24"] })).await;
        app.get("/v1/keys", &fenced).await.expect_error(401, "UNAUTHORIZED");
        let (narrow_id, narrow) = app.key(&tenant, json!({ "scopes": ["usage:read"] })).await;
        app.get("/v1/keys", &narrow).await.expect_error(403, "INSUFFICIENT_SCOPE");

        let log = app.get("/v1/audit-logs", &tenant.key).await;
        let refused = find(&log, "auth.refused");
        assert_eq!(refused["actor_id"], fenced_id.as_str());
        assert!(refused["changes"]["reason"].as_str().unwrap().contains("address"));
        assert_eq!(refused["changes"]["route"], "GET /v1/keys");
        let denied = find(&log, "access.denied");
        assert_eq!(denied["actor_id"], narrow_id.as_str());
        assert_eq!(denied["resource_id"], "GET /v1/keys");
    }
}
