//! Outbound webhook endpoints: CRUD, secrets shown once and stored encrypted, rotation, limits.

use serde_json::json;

use crate::both_backends;

both_backends! {
    async fn webhook_endpoints_keep_their_secret_sealed(app) {
        let tenant = app.tenant("Hooks").await;
        let created = app.post("/v1/webhooks", &tenant.key, json!({
            "url": "https://hooks.example.com/in", "events": ["object.*", "object.*", "webhook.test"],
            "object_types": ["deals"], "description": "CRM"
        })).await;
        created.expect(201);
        let id = created.data()["id"].as_str().unwrap().to_string();
        let secret = created.data()["secret"].as_str().unwrap().to_string();
        assert!(id.starts_with("wh_") && secret.starts_with("whsec_"));
        assert_eq!(created.data()["events"], json!(["object.*", "webhook.test"]));
        assert_eq!(created.data()["status"], "active");
        assert_eq!(created.data()["is_active"], true);
        assert_eq!(created.data()["success_count"], 0);

        // Shown once: never in a read, a list, the audit log or the database.
        let read = app.get(&format!("/v1/webhooks/{id}"), &tenant.key).await;
        read.expect(200);
        assert!(read.data().get("secret").is_none());
        assert!(!app.get("/v1/webhooks", &tenant.key).await.text.contains(&secret));
        assert!(!app.get("/v1/audit-logs", &tenant.key).await.text.contains(&secret));
        let (stored,): (String,) = sqlx::query_as("SELECT secret FROM webhooks").fetch_one(app.app.db.pool()).await.unwrap();
        assert!(stored.starts_with("v1:") && !stored.contains(&secret));
        assert_eq!(plinth::webhooks::signing_secrets(&app.app, &plinth::id::TenantId::trusted(tenant.id.clone()), &id).await.unwrap(), vec![secret.clone()]);

        // Rotation: a new secret, the old one still signing for a day.
        let rotated = app.post(&format!("/v1/webhooks/{id}/rotate-secret"), &tenant.key, json!({})).await;
        rotated.expect(200);
        let new_secret = rotated.data()["secret"].as_str().unwrap().to_string();
        assert_ne!(new_secret, secret);
        assert!(rotated.data()["previous_secret_expires_at"].is_string());
        assert_eq!(plinth::webhooks::signing_secrets(&app.app, &plinth::id::TenantId::trusted(tenant.id.clone()), &id).await.unwrap(), vec![new_secret, secret]);

        let patched = app.patch(&format!("/v1/webhooks/{id}"), &tenant.key, json!({ "is_active": false, "events": ["*"] })).await;
        patched.expect(200);
        assert_eq!(patched.data()["status"], "disabled");
        assert_eq!(patched.data()["events"], json!(["*"]));
        assert_eq!(patched.data()["url"], "https://hooks.example.com/in");
        assert_eq!(patched.data()["description"], "CRM");

        // A caller's own secret is taken as given.
        let own = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let mine = app.post("/v1/webhooks", &tenant.key, json!({ "url": "https://b.example.com/", "events": ["*"], "secret": own })).await;
        mine.expect(201);
        assert_eq!(mine.data()["secret"], own);

        // The free plan allows two endpoints; deleting one frees its place.
        app.post("/v1/webhooks", &tenant.key, json!({ "url": "https://c.example.com/", "events": ["*"] }))
            .await.expect_error(403, "FEATURE_LIMIT_REACHED");
        app.delete(&format!("/v1/webhooks/{id}"), &tenant.key).await.expect(200);
        app.get(&format!("/v1/webhooks/{id}"), &tenant.key).await.expect_error(404, "NOT_FOUND");
        app.post("/v1/webhooks", &tenant.key, json!({ "url": "https://c.example.com/", "events": ["*"] })).await.expect(201);
    }

    async fn webhook_urls_and_events_are_checked(app) {
        let tenant = app.tenant("Checks").await;
        for body in [
            json!({ "url": "http://hooks.example.com/", "events": ["*"] }),
            json!({ "url": "https://127.0.0.1/", "events": ["*"] }),
            json!({ "url": "https://169.254.169.254/latest/meta-data", "events": ["*"] }),
            json!({ "url": "https://localhost:8080/", "events": ["*"] }),
            json!({ "url": "https://example.com/", "events": [] }),
            json!({ "url": "https://example.com/", "events": ["Object.Created"] }),
            json!({ "url": "https://example.com/", "events": ["*"], "status": "paused" }),
            json!({ "url": "https://example.com/", "events": ["*"], "secret": "plain" }),
            json!({ "url": "https://example.com/", "events": ["*"], "object_types": ["Bad Type"] }),
        ] {
            let resp = app.post("/v1/webhooks", &tenant.key, body.clone()).await;
            assert_eq!(resp.status, 422, "{body}: {}", resp.text);
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM webhooks").await, 0);
    }

    async fn webhooks_are_per_tenant_and_scoped(app) {
        let a = app.tenant("A").await;
        let b = app.tenant("B").await;
        let created = app.post("/v1/webhooks", &a.key, json!({ "url": "https://a.example.com/", "events": ["*"] })).await;
        let path = format!("/v1/webhooks/{}", created.data()["id"].as_str().unwrap());
        app.get(&path, &b.key).await.expect_error(404, "NOT_FOUND");
        app.patch(&path, &b.key, json!({ "is_active": false })).await.expect_error(404, "NOT_FOUND");
        app.delete(&path, &b.key).await.expect_error(404, "NOT_FOUND");
        app.post(&format!("{path}/rotate-secret"), &b.key, json!({})).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/webhooks", &b.key).await.data()["total"], 0);
        let (_, reader) = app.key(&a, json!({ "scopes": ["webhooks:read"] })).await;
        app.get(&path, &reader).await.expect(200);
        app.patch(&path, &reader, json!({ "is_active": false })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.post("/v1/webhooks", &reader, json!({ "url": "https://x.example.com/", "events": ["*"] })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.delete(&path, &reader).await.expect_error(403, "INSUFFICIENT_SCOPE");
    }
}
