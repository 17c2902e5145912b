//! Tenants and usage.

use serde_json::json;

use crate::both_backends;
use crate::common::ADMIN_KEY;

both_backends! {
    async fn admin_creates_a_tenant_with_its_first_key(app) {
        let resp = app.post("/v1/tenants", ADMIN_KEY, json!({
            "name": "Acme Corp", "tier": "pro", "settings": { "timezone": "Europe/London", "locale": "en_GB" }
        })).await;
        resp.expect(201);
        let data = resp.data();
        assert!(data["id"].as_str().unwrap().starts_with("tn_"));
        assert_eq!(data["name"], "Acme Corp");
        assert_eq!(data["slug"], "acme-corp");
        assert_eq!(data["tier"], "pro");
        assert_eq!(data["settings"]["timezone"], "Europe/London");
        assert_eq!(data["settings"]["locale"], "en_GB");
        let key = data["api_key"].as_str().unwrap();
        assert!(key.starts_with("plk_live_"));

        // The first key holds every scope and works at once.
        let keys = app.get("/v1/keys", key).await;
        keys.expect(200);
        assert_eq!(keys.data()["results"][0]["scopes"], json!(["*"]));
        assert_eq!(keys.data()["results"][0]["id"], data["api_key_id"]);
        // The secret is never shown again.
        assert!(!keys.text.contains(key));

        let fetched = app.get(&format!("/v1/tenants/{}", data["id"].as_str().unwrap()), ADMIN_KEY).await;
        fetched.expect(200);
        assert_eq!(fetched.data()["slug"], "acme-corp");
        assert!(fetched.data().get("api_key").is_none());
    }

    async fn slugs_are_unique_and_generated(app) {
        let first = app.post("/v1/tenants", ADMIN_KEY, json!({ "name": "Same Name" })).await;
        let second = app.post("/v1/tenants", ADMIN_KEY, json!({ "name": "Same Name" })).await;
        first.expect(201);
        second.expect(201);
        assert_eq!(first.data()["slug"], "same-name");
        let generated = second.data()["slug"].as_str().unwrap();
        assert!(generated.starts_with("same-name-") && generated != "same-name");

        let taken = app.post("/v1/tenants", ADMIN_KEY, json!({ "name": "Other", "slug": "same-name" })).await;
        taken.expect_error(409, "CONFLICT");
        let bad = app.post("/v1/tenants", ADMIN_KEY, json!({ "name": "Other", "slug": "Not A Slug" })).await;
        bad.expect_error(422, "VALIDATION_FAILED");
        assert!(bad.body["error"]["details"]["slug"].is_array());
        assert_eq!(app.get("/v1/tenants", ADMIN_KEY).await.data()["total"], 2);
    }

    async fn tenant_input_is_validated(app) {
        for body in [
            json!({ "name": "" }),
            json!({ "name": "   " }),
            json!({ "name": "x".repeat(256) }),
            json!({ "name": "Acme", "tier": "gold" }),
            json!({ "name": "Acme", "settings": { "timezone": "Mars/Olympus" } }),
            json!({ "name": "Acme", "settings": { "locale": "not a locale" } }),
            json!({ "name": "Acme", "settings": { "theme": "dark" } }),
            json!({}),
        ] {
            app.post("/v1/tenants", ADMIN_KEY, body.clone()).await.expect_error(422, "VALIDATION_FAILED");
        }
        assert_eq!(app.get("/v1/tenants", ADMIN_KEY).await.data()["total"], 0);
    }

    async fn admin_lists_updates_and_deletes_tenants(app) {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(app.tenant(&format!("Tenant {i}")).await.id);
        }
        // Newest first, in pages of two, with a cursor.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/tenants?limit=2&cursor={c}"),
                None => "/v1/tenants?limit=2".to_string(),
            };
            let page = app.get(&path, ADMIN_KEY).await;
            page.expect(200);
            assert_eq!(page.data()["total"], 5);
            for t in page.data()["results"].as_array().unwrap() {
                seen.push(t["id"].as_str().unwrap().to_string());
            }
            match page.data()["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(seen, newest_first);
        app.get("/v1/tenants?limit=0", ADMIN_KEY).await.expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/tenants?limit=101", ADMIN_KEY).await.expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/tenants?cursor=bogus!", ADMIN_KEY).await.expect_error(400, "BAD_REQUEST");

        let path = format!("/v1/tenants/{}", ids[0]);
        let updated = app.patch(&path, ADMIN_KEY, json!({
            "name": "Renamed", "tier": "enterprise", "settings": { "timezone": "Asia/Tokyo" }
        })).await;
        updated.expect(200);
        assert_eq!(updated.data()["name"], "Renamed");
        assert_eq!(updated.data()["tier"], "enterprise");
        assert_eq!(updated.data()["settings"]["timezone"], "Asia/Tokyo");
        assert_eq!(updated.data()["settings"]["locale"], "en", "settings merge field by field");
        let stored = app.get(&path, ADMIN_KEY).await;
        assert_eq!(stored.data()["name"], "Renamed");
        let invalid = app.patch(&path, ADMIN_KEY, json!({ "name": "Fine", "tier": "gold" })).await;
        invalid.expect_error(422, "VALIDATION_FAILED");
        assert_eq!(app.get(&path, ADMIN_KEY).await.data()["name"], "Renamed", "nothing half-applied");
        let other_slug = app.get(&format!("/v1/tenants/{}", ids[1]), ADMIN_KEY).await.data()["slug"].clone();
        app.patch(&path, ADMIN_KEY, json!({ "slug": other_slug })).await.expect_error(409, "CONFLICT");

        let deleted = app.delete_confirmed(&path, ADMIN_KEY).await;
        deleted.expect(200);
        assert_eq!(deleted.data()["id"], ids[0].as_str());
        assert_eq!(deleted.data()["deleted"], true);
        app.get(&path, ADMIN_KEY).await.expect_error(404, "NOT_FOUND");
        app.delete(&path, ADMIN_KEY).await.expect_error(404, "NOT_FOUND");
        app.patch(&path, ADMIN_KEY, json!({ "name": "x" })).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/tenants", ADMIN_KEY).await.data()["total"], 4);
    }

    async fn deleting_a_tenant_removes_its_keys(app) {
        let tenant = app.tenant("Doomed").await;
        app.get("/v1/keys", &tenant.key).await.expect(200);
        app.delete_confirmed(&format!("/v1/tenants/{}", tenant.id), ADMIN_KEY).await.expect(200);
        app.get("/v1/keys", &tenant.key).await.expect_error(401, "UNAUTHORIZED");
    }

    async fn tenant_credentials_cannot_manage_tenants(app) {
        let a = app.tenant("A").await;
        let b = app.tenant("B").await;
        app.get("/v1/tenants", &a.key).await.expect_error(403, "FORBIDDEN");
        app.post("/v1/tenants", &a.key, json!({ "name": "Sneaky" })).await.expect_error(403, "FORBIDDEN");
        app.patch(&format!("/v1/tenants/{}", a.id), &a.key, json!({ "tier": "enterprise" }))
            .await
            .expect_error(403, "FORBIDDEN");
        app.delete(&format!("/v1/tenants/{}", a.id), &a.key).await.expect_error(403, "FORBIDDEN");
        // A tenant sees itself, and another tenant is 404.
        app.get(&format!("/v1/tenants/{}", a.id), &a.key).await.expect(200);
        app.get(&format!("/v1/tenants/{}", b.id), &a.key).await.expect_error(404, "NOT_FOUND");
    }

    async fn workspaces_alias_serves_tenants(app) {
        let resp = app.post("/v1/workspaces", ADMIN_KEY, json!({ "name": "Via Alias" })).await;
        resp.expect(201);
        let id = resp.data()["id"].as_str().unwrap();
        let list = app.get("/v1/workspaces?limit=5", ADMIN_KEY).await;
        list.expect(200);
        assert_eq!(list.data()["results"][0]["id"], id);
        app.get(&format!("/v1/tenants/{id}"), ADMIN_KEY).await.expect(200);
        app.patch(&format!("/v1/workspaces/{id}"), ADMIN_KEY, json!({ "name": "Renamed" })).await.expect(200);
        app.delete_confirmed(&format!("/v1/workspaces/{id}"), ADMIN_KEY).await.expect(200);
        app.get(&format!("/v1/tenants/{id}"), ADMIN_KEY).await.expect_error(404, "NOT_FOUND");
    }

    async fn usage_counts_keys_and_requests(app) {
        let tenant = app.tenant("Counted").await;
        app.key(&tenant, json!({ "label": "second" })).await;
        for _ in 0..3 {
            app.get("/v1/keys", &tenant.key).await.expect(200);
        }
        let usage = app.get("/v1/usage", &tenant.key).await;
        usage.expect(200);
        assert_eq!(usage.data()["tenant_id"], tenant.id.as_str());
        assert_eq!(usage.data()["tier"], "free");
        assert_eq!(usage.data()["api_keys"], 2);
        // The key creation, three lists and this request.
        assert_eq!(usage.data()["requests_today"], 5);
        // The admin without a tenant named is told to name one.
        app.get("/v1/usage", ADMIN_KEY).await.expect_error(400, "BAD_REQUEST");
    }

    async fn usage_survives_a_restart(app) {
        let tenant = app.tenant("Durable").await;
        for _ in 0..4 {
            app.get("/v1/keys", &tenant.key).await.expect(200);
        }
        let app = app.restart().await;
        let usage = app.get("/v1/usage", &tenant.key).await;
        usage.expect(200);
        assert_eq!(usage.data()["requests_today"], 5);
    }

    async fn data_survives_a_restart(app) {
        let tenant = app.tenant("Persistent").await;
        let (key_id, secret) = app.key(&tenant, json!({ "label": "kept", "scopes": ["api-keys:read"] })).await;
        let app = app.restart().await;
        let fetched = app.get(&format!("/v1/keys/{key_id}"), &secret).await;
        fetched.expect(200);
        assert_eq!(fetched.data()["label"], "kept");
        let tenants = app.get("/v1/tenants", ADMIN_KEY).await;
        assert_eq!(tenants.data()["results"][0]["id"], tenant.id.as_str());
    }
}

both_backends! {
    async fn deleting_a_tenant_with_keys_needs_confirmation(app) {
        let tenant = app.tenant("Guarded").await;
        app.key(&tenant, json!({})).await;
        app.post("/v1/keys/public", &tenant.key, json!({ "pem": crate::common::fixture("ec256.pub.pem") })).await.expect(201);
        let path = format!("/v1/tenants/{}", tenant.id);

        let asked = app.delete(&path, ADMIN_KEY).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        let error = &asked.body["error"];
        assert_eq!(error["dependencies"], json!([
            { "type": "api_keys", "count": 2, "label": "API keys" },
            { "type": "public_keys", "count": 1, "label": "Public keys" },
        ]));
        let token = error["confirm_token"].as_str().unwrap().to_string();
        // Nothing was deleted.
        app.get("/v1/keys", &tenant.key).await.expect(200);

        // Forcing needs a valid token for this very tenant; without one it asks again.
        let again = app.delete(&format!("{path}?force=true"), ADMIN_KEY).await;
        again.expect_error(409, "DEPENDENCY_EXISTS");
        assert_ne!(again.body["error"]["confirm_token"], token.as_str());
        app.delete(&format!("{path}?force=true&confirm_token=cfm_guess"), ADMIN_KEY)
            .await
            .expect_error(422, "VALIDATION_FAILED");
        let other = app.tenant("Other").await;
        app.delete(&format!("/v1/tenants/{}?force=true&confirm_token={token}", other.id), ADMIN_KEY)
            .await
            .expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/keys", &other.key).await.expect(200);

        let deleted = app.delete(&format!("{path}?force=true&confirm_token={token}"), ADMIN_KEY).await;
        deleted.expect(200);
        assert_eq!(deleted.data()["deleted"], true);
        app.get("/v1/keys", &tenant.key).await.expect_error(401, "UNAUTHORIZED");
        app.get(&path, ADMIN_KEY).await.expect_error(404, "NOT_FOUND");
        // The token was single-use.
        app.delete(&format!("/v1/tenants/{}?force=true&confirm_token={token}", other.id), ADMIN_KEY)
            .await
            .expect_error(422, "VALIDATION_FAILED");
    }

    async fn a_tenant_without_dependants_is_deleted_at_once(app) {
        let tenant = app.tenant("Bare").await;
        app.delete(&format!("/v1/keys/{}", tenant.key_id), &tenant.key).await.expect(200);
        let deleted = app.delete(&format!("/v1/tenants/{}", tenant.id), ADMIN_KEY).await;
        deleted.expect(200);
    }
}
