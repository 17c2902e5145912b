//! Approval workflows: stages with approvers and required approvals, submit, approve across
//! stages, reject back to draft, locking while in review, the history and events, and who may
//! act.

use reqwest::Method;
use serde_json::{json, Value};

use crate::authz::end_user;
use crate::both_backends;
use crate::common::TestApp;

async fn login(app: &TestApp, tenant_id: &str, email: &str) -> String {
    let body = json!({ "email": email, "password": "granite-otter-harbour-42" });
    let again =
        app.send(app.request(Method::POST, "/v1/auth/login", None).header("x-tenant-id", tenant_id).json(&body)).await;
    again.expect(200);
    again.data()["access_token"].as_str().unwrap().to_string()
}

fn actions(status: &Value) -> Vec<(String, String)> {
    status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap().to_string(), s["action"].as_str().unwrap().to_string()))
        .collect()
}

both_backends! {
    async fn objects_are_reviewed_stage_by_stage(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        app.post("/v1/object-types", &key, json!({ "name": "docs" })).await.expect(201);
        app.post("/v1/object-types/docs/properties", &key, json!({ "name": "title", "data_type": "string" })).await.expect(201);
        let (manager_id, manager) = app.key(&tenant, json!({ "name": "manager", "scopes": ["objects:read"] })).await;
        let (second_id, second) = app.key(&tenant, json!({ "name": "second", "scopes": ["objects:read"] })).await;
        let (_, outsider) = app.key(&tenant, json!({ "name": "outsider", "scopes": ["objects:read"] })).await;
        app.post("/v1/roles", &key, json!({ "name": "legal" })).await.expect(201);
        let rita = end_user(&app, &tenant, "rita@example.com").await;
        app.post("/v1/roles/assign", &key, json!({ "user_id": rita.id, "role_id": "legal" })).await.expect(200);
        crate::authz::put(&app, "/v1/roles/legal/permissions", &key, json!({ "permissions": ["objects.docs:read"] })).await.expect(200);
        app.post("/v1/object-types/docs/policies", &key, json!({ "name": "legal reads", "action": "select", "role": "legal", "condition_json": {} }))
            .await
            .expect(201);
        let rita_token = login(&app, &tenant.id, "rita@example.com").await;

        // Checked: approvers must exist, stages be named once.
        let bad = app.post("/v1/object-types/docs/workflows", &key, json!({ "name": "x", "stages": [
            { "name": "a", "approvers": { "roles": ["nobody"] } },
            { "name": "a", "approvers": {} , "required_approvals": 0 }
        ] })).await;
        bad.expect_error(422, "VALIDATION_FAILED");
        let made = app.post("/v1/object-types/docs/workflows", &key, json!({
            "name": "publishing", "lock_in_review": true, "stages": [
                { "name": "management", "approvers": { "keys": [manager_id, second_id] }, "required_approvals": 2 },
                { "name": "legal", "approvers": { "roles": ["legal"] } }
            ]
        })).await;
        made.expect(201);
        let workflow = made.data()["id"].as_str().unwrap().to_string();
        assert_eq!(made.data()["enabled"], json!(true));
        app.post("/v1/object-types/docs/workflows", &key, json!({ "name": "other", "stages": [
            { "name": "s", "approvers": { "keys": [manager_id] } }
        ] })).await.expect_error(409, "CONFLICT");
        assert_eq!(app.get("/v1/object-types/docs/workflows", &key).await.data().as_array().unwrap().len(), 1);

        let doc = app.post("/v1/objects/docs", &key, json!({ "properties": { "title": "Q3 report" } })).await;
        let doc = doc.data()["id"].as_str().unwrap().to_string();
        let base = format!("/v1/objects/docs/{doc}");
        let status = app.get(&format!("{base}/workflow-status"), &key).await;
        assert_eq!(status.data()["status"], json!("draft"));

        // Submitted: in review at the first stage, locked.
        let submitted = app.post(&format!("{base}/submit-for-review"), &key, json!({})).await;
        submitted.expect(200);
        assert_eq!(submitted.data(), &json!({ "submitted": true, "stage": "management" }));
        app.post(&format!("{base}/submit-for-review"), &key, json!({})).await.expect_error(409, "CONFLICT");
        app.patch(&base, &key, json!({ "properties": { "title": "changed" } })).await.expect_error(409, "CONFLICT");
        app.delete(&base, &key).await.expect_error(409, "CONFLICT");

        // Only the stage's approvers act; each approves once; two approvals move it on.
        app.post(&format!("{base}/approve"), &outsider, json!({})).await.expect_error(403, "FORBIDDEN");
        app.post(&format!("{base}/approve"), &rita_token, json!({})).await.expect_error(403, "FORBIDDEN");
        let first = app.post(&format!("{base}/approve"), &manager, json!({ "comment": "fine" })).await;
        first.expect(200);
        assert_eq!((first.data()["status"].as_str(), first.data()["next_stage"].as_str()), (Some("in_review"), Some("management")));
        app.post(&format!("{base}/approve"), &manager, json!({})).await.expect_error(409, "CONFLICT");
        let mid = app.get(&format!("{base}/workflow-status"), &key).await;
        assert_eq!((mid.data()["approvals"].as_i64(), mid.data()["required_approvals"].as_i64()), (Some(1), Some(2)));
        let second_ok = app.send(app.request(Method::POST, &format!("{base}/approve"), Some(&second))).await;
        second_ok.expect(200);
        assert_eq!(second_ok.data()["next_stage"], json!("legal"));

        // Legal rejects: back to draft with the reason, unlocked.
        app.post(&format!("{base}/reject"), &rita_token, json!({ "reason": "" })).await.expect_error(422, "VALIDATION_FAILED");
        let rejected = app.post(&format!("{base}/reject"), &rita_token, json!({ "reason": "missing disclaimer" })).await;
        rejected.expect(200);
        assert_eq!(rejected.data(), &json!({ "rejected": true, "stage": "legal" }));
        let status = app.get(&format!("{base}/workflow-status"), &key).await;
        assert_eq!(status.data()["status"], json!("draft"));
        assert_eq!(status.data()["rejection_reason"], json!("missing disclaimer"));
        app.patch(&base, &key, json!({ "properties": { "title": "Q3 report, with disclaimer" } })).await.expect(200);

        // Submitted again and approved through both stages.
        app.post(&format!("{base}/submit-for-review"), &key, json!({})).await.expect(200);
        app.post(&format!("{base}/approve"), &manager, json!({})).await.expect(200);
        app.post(&format!("{base}/approve"), &second, json!({})).await.expect(200);
        let done = app.post(&format!("{base}/approve"), &rita_token, json!({ "comment": "ok" })).await;
        done.expect(200);
        assert_eq!((done.data()["status"].as_str(), done.data()["next_stage"].clone()), (Some("approved"), Value::Null));
        let status = app.get(&format!("{base}/workflow-status"), &key).await;
        assert_eq!(status.data()["status"], json!("approved"));
        let expected: Vec<(String, String)> = [
            ("management", "submitted"), ("management", "approved"), ("management", "approved"), ("legal", "rejected"),
            ("management", "submitted"), ("management", "approved"), ("management", "approved"), ("legal", "approved"),
        ].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(actions(status.data()), expected);
        app.post(&format!("{base}/approve"), &rita_token, json!({})).await.expect_error(409, "CONFLICT");
        assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'workflow.completed'").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'workflow.rejected'").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM audit_logs WHERE action LIKE 'workflow.%'").await, 9, "the workflow made, and each of eight steps");

        // Workflows are changed and deleted by schema writers; an active review asks first.
        let (_, data_key) = app.key(&tenant, json!({ "name": "data", "scopes": ["objects:read", "objects:write"] })).await;
        app.patch(&format!("/v1/object-types/docs/workflows/{workflow}"), &data_key, json!({ "enabled": false })).await
            .expect_error(403, "INSUFFICIENT_SCOPE");
        app.post(&format!("{base}/submit-for-review"), &key, json!({})).await.expect(200);
        let asked = app.delete(&format!("/v1/object-types/docs/workflows/{workflow}"), &key).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        let confirm = asked.body["error"]["confirm_token"].as_str().unwrap().to_string();
        app.delete(&format!("/v1/object-types/docs/workflows/{workflow}?force=true&confirm_token={confirm}"), &key).await.expect(200);
        app.patch(&base, &key, json!({ "properties": { "title": "free again" } })).await.expect(200);
        app.post(&format!("{base}/submit-for-review"), &key, json!({})).await.expect_error(409, "CONFLICT");
        let other = app.tenant("other").await;
        app.get(&format!("{base}/workflow-status"), &other.key).await.expect_error(404, "NOT_FOUND");
    }
}
