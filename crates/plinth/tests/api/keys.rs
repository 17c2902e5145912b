//! API keys: lifecycle, scopes, tenant isolation, expiry, IP allowlists and rotation.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::common::ADMIN_KEY;

both_backends! {
    async fn key_lifecycle(app) {
        let tenant = app.tenant("Keys").await;
        let resp = app.post("/v1/keys", &tenant.key, json!({
            "label": "CI", "scopes": ["read", "webhooks:write"], "ip_allowlist": ["127.0.0.1", "10.0.0.0/8"],
            "rate_limit_tier": "free", "rate_limit": 50
        })).await;
        resp.expect(201);
        let key = &resp.data()["key"];
        let secret = resp.data()["token"].as_str().unwrap();
        assert!(secret.starts_with("plk_live_"));
        assert!(secret.starts_with(key["prefix"].as_str().unwrap()));
        assert!(key["id"].as_str().unwrap().starts_with("key_"));
        assert_eq!(key["label"], "CI");
        assert_eq!(key["scopes"], json!(["read", "webhooks:write"]));
        assert_eq!(key["ip_allowlist"], json!(["127.0.0.1/32", "10.0.0.0/8"]));
        assert_eq!(key["rate_limit_tier"], "free");
        assert_eq!(key["rate_limit"], 50);
        assert_eq!(key["status"], "active");
        assert_eq!(key["last_used_at"], serde_json::Value::Null);
        let id = key["id"].as_str().unwrap();
        let path = format!("/v1/keys/{id}");

        // Use the new key; its last use shows.
        app.get("/v1/webhooks", secret).await.expect(200);
        let fetched = app.get(&path, &tenant.key).await;
        fetched.expect(200);
        assert!(fetched.data()["last_used_at"].is_string());
        assert!(!fetched.text.contains(secret), "the secret is never shown again");

        let updated = app.patch(&path, &tenant.key, json!({ "label": "CI v2", "rate_limit": null, "ip_allowlist": [] })).await;
        updated.expect(200);
        assert_eq!(updated.data()["label"], "CI v2");
        assert_eq!(updated.data()["rate_limit"], serde_json::Value::Null);
        assert_eq!(updated.data()["rate_limit_tier"], "free", "absent fields keep their value");
        assert_eq!(updated.data()["ip_allowlist"], json!([]));

        let list = app.get("/v1/keys", &tenant.key).await;
        assert_eq!(list.data()["total"], 2);
        assert_eq!(list.data()["results"][0]["id"], id, "newest first");

        let deleted = app.delete(&path, &tenant.key).await;
        deleted.expect(200);
        assert_eq!(deleted.data(), &json!({ "id": id, "deleted": true }));
        app.get("/v1/keys", secret).await.expect_error(401, "UNAUTHORIZED");
        app.get(&path, &tenant.key).await.expect_error(404, "NOT_FOUND");
        app.delete(&path, &tenant.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/keys", &tenant.key).await.data()["total"], 1);
    }

    async fn key_input_is_validated(app) {
        let tenant = app.tenant("Strict").await;
        for body in [
            json!({ "scopes": [] }),
            json!({ "scopes": ["superuser"] }),
            json!({ "scopes": ["Webhooks:Read"] }),
            json!({ "ip_allowlist": ["not-an-ip"] }),
            json!({ "ip_allowlist": ["10.0.0.0/33"] }),
            json!({ "expires_at": "2001-01-01T00:00:00Z" }),
            json!({ "expires_at": "tomorrow" }),
            json!({ "rate_limit_tier": "platinum" }),
            json!({ "rate_limit": 0 }),
            json!({ "label": "" }),
            json!({ "secret": "mine" }),
        ] {
            let resp = app.post("/v1/keys", &tenant.key, body.clone()).await;
            resp.expect_error(422, "VALIDATION_FAILED");
        }
        assert_eq!(app.get("/v1/keys", &tenant.key).await.data()["total"], 1, "nothing was created");
        let defaults = app.post("/v1/keys", &tenant.key, json!({})).await;
        defaults.expect(201);
        assert_eq!(defaults.data()["key"]["scopes"], json!(["read", "write"]));
        let test_key = app.post("/v1/keys", &tenant.key, json!({ "mode": "test" })).await;
        assert!(test_key.data()["token"].as_str().unwrap().starts_with("plk_test_"));
        app.get("/v1/webhooks", test_key.data()["token"].as_str().unwrap()).await.expect(200);
    }

    async fn scopes_are_enforced(app) {
        let tenant = app.tenant("Scoped").await;
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["api-keys:read"] })).await;
        app.get("/v1/keys", &reader).await.expect(200);
        let refused = app.post("/v1/keys", &reader, json!({ "label": "x" })).await;
        refused.expect_error(403, "INSUFFICIENT_SCOPE");
        assert!(refused.body["error"]["message"].as_str().unwrap().contains("api-keys:write"));
        app.get("/v1/usage", &reader).await.expect_error(403, "INSUFFICIENT_SCOPE");

        // The broad `read` covers the data groups, not the admin group (keys, usage, ...).
        let (broad_id, broad_reader) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        app.get("/v1/webhooks", &broad_reader).await.expect(200);
        app.get("/v1/keys", &broad_reader).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.get("/v1/usage", &broad_reader).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.delete(&format!("/v1/keys/{}", tenant.key_id), &broad_reader).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, data_writer) = app.key(&tenant, json!({ "scopes": ["read", "write"] })).await;
        app.post("/v1/keys", &data_writer, json!({})).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.patch("/v1/governance", &data_writer, json!({ "audit_retention_days": 1 })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.post("/v1/auth-config", &data_writer, json!({ "signup": "open" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.post("/v1/roles", &data_writer, json!({ "name": "x" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, admin_key) = app.key(&tenant, json!({ "scopes": ["admin"] })).await;
        app.get("/v1/keys", &admin_key).await.expect(200);
        app.get("/v1/governance", &admin_key).await.expect(200);

        // Narrowing a key's scopes holds from the next request on.
        app.patch(&format!("/v1/keys/{broad_id}"), &tenant.key, json!({ "scopes": ["usage:read"] })).await.expect(200);
        app.get("/v1/keys", &broad_reader).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.get("/v1/usage", &broad_reader).await.expect(200);

        let (_, wildcard) = app.key(&tenant, json!({ "scopes": ["api-keys:*"] })).await;
        let (victim, _) = app.key(&tenant, json!({ "scopes": ["api-keys:read"] })).await;
        app.delete(&format!("/v1/keys/{victim}"), &wildcard).await.expect(200);
        // A broad `read` key is wider than `api-keys:*`: that one it may not revoke.
        let (wider, _) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        app.delete(&format!("/v1/keys/{wider}"), &wildcard).await.expect_error(403, "FORBIDDEN");
    }

    async fn no_key_can_mint_a_wider_one(app) {
        let tenant = app.tenant("Escalation").await;
        let (_, limited) = app.key(&tenant, json!({ "scopes": ["read", "write", "api-keys:*"] })).await;
        let resp = app.post("/v1/keys", &limited, json!({ "scopes": ["*"] })).await;
        resp.expect_error(422, "VALIDATION_FAILED");
        let resp = app.post("/v1/keys", &limited, json!({ "scopes": ["admin"] })).await;
        resp.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/keys", &limited, json!({ "scopes": ["read", "webhooks:write"] })).await.expect(201);
        let (id, _) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        app.patch(&format!("/v1/keys/{id}"), &limited, json!({ "scopes": ["*"] }))
            .await
            .expect_error(422, "VALIDATION_FAILED");
        // Nor can it loosen or take over a wider key by changing or rotating it.
        let (keys_writer_id, keys_writer) = app.key(&tenant, json!({ "scopes": ["api-keys:write", "api-keys:read"] })).await;
        let wide = format!("/v1/keys/{}", tenant.key_id);
        app.patch(&wide, &keys_writer, json!({ "ip_allowlist": [] })).await.expect_error(403, "FORBIDDEN");
        app.post(&format!("{wide}/rotate"), &keys_writer, json!({})).await.expect_error(403, "FORBIDDEN");
        app.get("/v1/keys", &tenant.key).await.expect(200);
        // Its own key, or narrower ones, it may rotate.
        app.post(&format!("/v1/keys/{keys_writer_id}/rotate"), &keys_writer, json!({})).await.expect(200);
    }

    async fn another_tenants_keys_are_404(app) {
        let a = app.tenant("A").await;
        let b = app.tenant("B").await;
        let (b_key, _) = app.key(&b, json!({ "label": "b's" })).await;
        let path = format!("/v1/keys/{b_key}");
        app.get(&path, &a.key).await.expect_error(404, "NOT_FOUND");
        app.patch(&path, &a.key, json!({ "label": "mine now" })).await.expect_error(404, "NOT_FOUND");
        app.delete(&path, &a.key).await.expect_error(404, "NOT_FOUND");
        app.post(&format!("{path}/rotate"), &a.key, json!({})).await.expect_error(404, "NOT_FOUND");
        let a_list = app.get("/v1/keys", &a.key).await;
        assert_eq!(a_list.data()["total"], 1);
        // B's key is untouched.
        let b_view = app.get(&path, &b.key).await;
        b_view.expect(200);
        assert_eq!(b_view.data()["label"], "b's");
    }

    async fn admin_acts_on_one_tenant_with_a_header(app) {
        let tenant = app.tenant("Managed").await;
        app.get("/v1/keys", ADMIN_KEY).await.expect_error(400, "BAD_REQUEST");
        for header in ["x-tenant-id", "x-workspace-id"] {
            let request = app.request(Method::GET, "/v1/keys", Some(ADMIN_KEY)).header(header, tenant.id.as_str());
            let resp = app.send(request).await;
            resp.expect(200);
            assert_eq!(resp.data()["results"][0]["id"], tenant.key_id.as_str());
        }
        let request = app
            .request(Method::POST, "/v1/keys", Some(ADMIN_KEY))
            .header("x-tenant-id", tenant.id.as_str())
            .json(&json!({ "scopes": ["admin"] }));
        app.send(request).await.expect(201);
        let request = app.request(Method::GET, "/v1/keys", Some(ADMIN_KEY)).header("x-tenant-id", "tn_01h455vb4pex5vsknk084sn02q");
        app.send(request).await.expect_error(404, "NOT_FOUND");
    }

    async fn expired_keys_are_refused(app) {
        let tenant = app.tenant("Expiring").await;
        let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
        let (id, secret) = app.key(&tenant, json!({ "expires_at": expires_at })).await;
        app.get("/v1/webhooks", &secret).await.expect(200);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let resp = app.get("/v1/webhooks", &secret).await;
        resp.expect_error(401, "UNAUTHORIZED");
        assert!(resp.body["error"]["message"].as_str().unwrap().contains("expired"));
        let listed = app.get(&format!("/v1/keys/{id}"), &tenant.key).await;
        assert_eq!(listed.data()["status"], "expired");
        let exchange = app.post_public("/v1/token", json!({ "api_key": secret })).await;
        exchange.expect_error(401, "UNAUTHORIZED");
    }

    async fn ip_allowlists_are_enforced(app) {
        let tenant = app.tenant("Fenced").await;
        let (_, elsewhere) = app.key(&tenant, json!({ "ip_allowlist": ["10.0.0.0/8", "2001:db8::/32"] })).await;
        let (fenced_id, here) = app.key(&tenant, json!({ "ip_allowlist": ["127.0.0.0/8"] })).await;
        let resp = app.get("/v1/webhooks", &elsewhere).await;
        resp.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/webhooks", &here).await.expect(200);
        // Tokens from a fenced key are fenced too, and the exchange itself is refused from elsewhere.
        app.post_public("/v1/token", json!({ "api_key": elsewhere })).await.expect_error(401, "UNAUTHORIZED");
        // Moving the fence takes effect at once.
        app.patch(&format!("/v1/keys/{fenced_id}"), &tenant.key, json!({ "ip_allowlist": ["192.0.2.0/24"] }))
            .await
            .expect(200);
        app.get("/v1/webhooks", &here).await.expect_error(401, "UNAUTHORIZED");
    }

    async fn rotation_keeps_the_old_key_for_the_grace_period(app) {
        let tenant = app.tenant("Rotating").await;
        let (id, old_secret) = app.key(&tenant, json!({ "label": "svc", "scopes": ["read"] })).await;
        let resp = app.post(&format!("/v1/keys/{id}/rotate"), &tenant.key, json!({ "grace_period_hours": 24 })).await;
        resp.expect(200);
        let data = resp.data();
        let new_secret = data["token"].as_str().unwrap();
        assert_ne!(new_secret, old_secret);
        assert_eq!(data["old_key"]["id"], id.as_str());
        assert_eq!(data["old_key"]["status"], "rotating");
        assert_eq!(data["new_key"]["label"], "svc");
        assert_eq!(data["new_key"]["scopes"], json!(["read"]));
        assert_eq!(data["old_key"]["replaced_by"], data["new_key"]["id"]);
        let ends = chrono::DateTime::parse_from_rfc3339(data["grace_period_ends_at"].as_str().unwrap()).unwrap();
        let hours = (ends.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes() as f64 / 60.0;
        assert!((23.9..=24.0).contains(&hours), "grace ends in {hours} hours");

        // Both work during the grace period.
        app.get("/v1/webhooks", &old_secret).await.expect(200);
        app.get("/v1/webhooks", new_secret).await.expect(200);
        // A rotated key's grace period cannot be stretched, and it is not rotated again.
        app.patch(&format!("/v1/keys/{id}"), &tenant.key, json!({ "expires_at": null }))
            .await
            .expect_error(409, "CONFLICT");
        app.post(&format!("/v1/keys/{id}/rotate"), &tenant.key, json!({})).await.expect_error(409, "CONFLICT");

        // Without a grace period the old key stops at once.
        let new_id = data["new_key"]["id"].as_str().unwrap();
        let again = app.post(&format!("/v1/keys/{new_id}/rotate"), &tenant.key, json!({ "grace_period_hours": 0 })).await;
        again.expect(200);
        app.get("/v1/webhooks", new_secret).await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/webhooks", again.data()["token"].as_str().unwrap()).await.expect(200);

        app.post(&format!("/v1/keys/{id}/rotate"), &tenant.key, json!({ "grace_period_hours": 721 }))
            .await
            .expect_error(422, "VALIDATION_FAILED");
    }

    async fn rotation_accepts_an_empty_body(app) {
        let tenant = app.tenant("Empty").await;
        let (id, _) = app.key(&tenant, json!({})).await;
        let resp = app.send(app.request(Method::POST, &format!("/v1/keys/{id}/rotate"), Some(&tenant.key))).await;
        resp.expect(200);
        assert!(resp.data()["token"].as_str().unwrap().starts_with("plk_live_"));
    }

    async fn api_keys_alias_serves_keys(app) {
        let tenant = app.tenant("Alias").await;
        let created = app.post("/v1/api-keys", &tenant.key, json!({ "name": "Mobile App Key", "scopes": ["read"] })).await;
        created.expect(201);
        assert_eq!(created.data()["key"]["label"], "Mobile App Key");
        let id = created.data()["key"]["id"].as_str().unwrap();
        app.get(&format!("/v1/api-keys/{id}"), &tenant.key).await.expect(200);
        let list = app.get("/v1/api-keys?limit=1", &tenant.key).await;
        assert_eq!(list.data()["results"].as_array().unwrap().len(), 1);
        assert!(list.data()["next_cursor"].is_string());
        app.post(&format!("/v1/api-keys/{id}/rotate"), &tenant.key, json!({ "grace_period_hours": 1 })).await.expect(200);
        app.delete(&format!("/v1/api-keys/{id}"), &tenant.key).await.expect(200);
    }
}

async fn forwarded_for_is_believed_only_from_trusted_proxies(backend: crate::common::Backend) {
    use crate::common::{Storage, TestApp};
    let storage = Storage::fresh(backend).await;
    let mut config = storage.config();
    config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let app = TestApp::start(storage, config).await;
    let tenant = app.tenant("Proxied").await;
    let (_, key) = app.key(&tenant, json!({ "ip_allowlist": ["203.0.113.0/24"] })).await;
    let via_proxy = |chain: &str| app.request(Method::GET, "/v1/webhooks", Some(&key)).header("x-forwarded-for", chain);
    // The proxy's own address is not in the allowlist.
    app.get("/v1/webhooks", &key).await.expect_error(401, "UNAUTHORIZED");
    app.send(via_proxy("203.0.113.7")).await.expect(200);
    // A client cannot spoof its way in: the hop the proxy saw is the one that counts.
    app.send(via_proxy("203.0.113.7, 198.51.100.1")).await.expect_error(401, "UNAUTHORIZED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies_sqlite() {
    forwarded_for_is_believed_only_from_trusted_proxies(crate::common::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies_postgres() {
    forwarded_for_is_believed_only_from_trusted_proxies(crate::common::Backend::Postgres).await;
}

both_backends! {
    async fn forwarded_for_is_ignored_without_trusted_proxies(app) {
        let tenant = app.tenant("Direct").await;
        let (_, key) = app.key(&tenant, json!({ "ip_allowlist": ["203.0.113.0/24"] })).await;
        let request = app.request(Method::GET, "/v1/keys", Some(&key)).header("x-forwarded-for", "203.0.113.7");
        app.send(request).await.expect_error(401, "UNAUTHORIZED");
    }
}

both_backends! {
    async fn no_tenant_credential_raises_its_own_plan(app) {
        let tenant = app.tenant("Free plan").await;
        app.post("/v1/keys", &tenant.key, json!({ "rate_limit_tier": "enterprise" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/keys", &tenant.key, json!({ "rate_limit": 61 })).await.expect_error(422, "VALIDATION_FAILED");
        app.patch(&format!("/v1/keys/{}", tenant.key_id), &tenant.key, json!({ "rate_limit": 10_000_000 }))
            .await
            .expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/keys", &tenant.key, json!({ "rate_limit": 30 })).await.expect(201);
        // The platform admin may.
        let request = app
            .request(Method::PATCH, &format!("/v1/keys/{}", tenant.key_id), Some(ADMIN_KEY))
            .header("x-tenant-id", tenant.id.as_str())
            .json(&json!({ "rate_limit": 10_000 }));
        app.send(request).await.expect(200);
        let resp = app.get("/v1/keys", &tenant.key).await;
        assert_eq!(resp.header("x-ratelimit-limit"), Some("10000"));
    }

    async fn a_narrow_key_cannot_revoke_a_wider_one_but_can_revoke_itself(app) {
        let tenant = app.tenant("Revocations").await;
        let (own_id, narrow) = app.key(&tenant, json!({ "scopes": ["read", "write", "api-keys:*"] })).await;
        app.delete(&format!("/v1/keys/{}", tenant.key_id), &narrow).await.expect_error(403, "FORBIDDEN");
        app.get("/v1/keys", &tenant.key).await.expect(200);
        let (other_id, _) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        app.delete(&format!("/v1/keys/{other_id}"), &narrow).await.expect(200);
        app.delete(&format!("/v1/keys/{own_id}"), &narrow).await.expect(200);
        app.get("/v1/keys", &narrow).await.expect_error(401, "UNAUTHORIZED");
    }
}

both_backends! {
    async fn concurrent_changes_to_one_key_keep_each_other(app) {
        let tenant = app.tenant("Races").await;
        let (id, _) = app.key(&tenant, json!({ "label": "start", "scopes": ["read"] })).await;
        let path = format!("/v1/keys/{id}");
        for round in 0..8 {
            let label = format!("label-{round}");
            let scopes = if round % 2 == 0 { json!(["read", "write"]) } else { json!(["read"]) };
            let (a, b) = tokio::join!(
                app.patch(&path, &tenant.key, json!({ "label": label })),
                app.patch(&path, &tenant.key, json!({ "scopes": scopes })),
            );
            a.expect(200);
            b.expect(200);
            let now = app.get(&path, &tenant.key).await;
            assert_eq!(now.data()["label"], label.as_str(), "round {round}");
            assert_eq!(now.data()["scopes"], scopes, "round {round}");
        }
    }
}

/// Two nodes on one PostgreSQL cache keys while they listen to each other's changes: a key
/// revoked on one is refused by the other once it hears of it, and at once by the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_node_is_refused_by_the_other() {
    let first = crate::common::TestApp::spawn(crate::common::Backend::Postgres).await;
    let second = first.another_node(|_| {}).await;
    let tenant = first.tenant("Cached across").await;
    let (key_id, key) = first.key(&tenant, json!({ "scopes": ["webhooks:read"] })).await;
    // The second node caches the key once it listens.
    for _ in 0..100 {
        if second.app.credentials.is_enabled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(second.app.credentials.is_enabled(), "the second node listens and caches");
    second.get("/v1/webhooks", &key).await.expect(200);
    second.get("/v1/webhooks", &key).await.expect(200);
    first.delete(&format!("/v1/keys/{key_id}"), &tenant.key).await.expect(200);
    first.get("/v1/webhooks", &key).await.expect_error(401, "UNAUTHORIZED");
    let mut refused = false;
    for _ in 0..100 {
        let resp = second.get("/v1/webhooks", &key).await;
        if resp.status == 401 {
            assert_eq!(resp.error_code(), "UNAUTHORIZED");
            refused = true;
            break;
        }
        resp.expect(200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the other node refuses the revoked key once told");
}
