//! The credentials vault, AI provider instances and the provider priority list.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::TestApp;

const OPENAI_KEY: &str = "sk-proj-VAULTSECRET0123456789a1b2";
const ANTHROPIC_KEY: &str = "sk-ant-api03-VAULTSECRET9876543210c3d4";

async fn put(app: &TestApp, path: &str, key: &str, body: Value) -> crate::common::Resp {
    app.send(app.request(Method::PUT, path, Some(key)).json(&body)).await
}

both_backends! {
    async fn credentials_are_sealed_and_shown_masked(app) {
        let tenant = app.tenant("Vault").await;
        let stored = put(&app, "/v1/credentials/openai", &tenant.key, json!({ "api_key": OPENAI_KEY, "organization": "org-123" })).await;
        stored.expect(201);
        assert_eq!(stored.data()["service"], "openai");
        assert_eq!(stored.data()["fields"], json!({ "api_key": "sk-...a1b2", "organization": "org-123" }));
        let replaced = put(&app, "/v1/credentials/openai", &tenant.key, json!({ "api_key": OPENAI_KEY })).await;
        replaced.expect(200);
        assert_eq!(replaced.data()["fields"], json!({ "api_key": "sk-...a1b2" }), "PUT replaces the whole entry");
        put(&app, "/v1/credentials/anthropic", &tenant.key, json!({ "api_key": ANTHROPIC_KEY })).await.expect(201);
        let meta = put(&app, "/v1/credentials/meta-ads", &tenant.key, json!({
            "access_token": "EAAG-access-token-0123456789", "app_id": "1234", "app_secret": "meta-app-secret-012345"
        })).await;
        meta.expect(201);
        assert_eq!(meta.data()["fields"]["api_version"], "v24.0", "the default is stored");
        let custom = put(&app, "/v1/credentials/custom:crm", &tenant.key, json!({ "token": "crm-token-0123456789", "region": "eu" })).await;
        custom.expect(201);
        assert_eq!(custom.data()["fields"]["token"], "crm...6789");

        let listed = app.get("/v1/credentials", &tenant.key).await;
        listed.expect(200);
        let services: Vec<&str> = listed.data().as_array().unwrap().iter().map(|c| c["service"].as_str().unwrap()).collect();
        assert_eq!(services, vec!["anthropic", "custom:crm", "meta-ads", "openai"]);
        let one = app.get("/v1/credentials/anthropic", &tenant.key).await;
        one.expect(200);
        assert_eq!(one.data()["fields"]["api_key"], "sk-...c3d4");
        for response in [&listed.text, &one.text] {
            assert!(!response.contains(OPENAI_KEY) && !response.contains(ANTHROPIC_KEY));
        }

        // Nothing secret at rest, in the audit log or in events.
        for secret in [OPENAI_KEY, ANTHROPIC_KEY, "crm-token-0123456789", "meta-app-secret-012345"] {
            assert!(!app.stored_anywhere(secret).await, "{secret} is stored in the clear");
        }
        assert!(app.stored_anywhere("v24.0").await, "the check finds what is stored in the clear");
        let opened =
            plinth::vault::open(&app.app, &plinth::id::TenantId::trusted(tenant.id.clone()), "anthropic").await.unwrap().unwrap();
        assert_eq!(opened["api_key"], ANTHROPIC_KEY);

        // Credentials for AI providers join the priority list in the order they came.
        let priority = app.get("/v1/ai/provider-priority", &tenant.key).await;
        priority.expect(200);
        assert_eq!(priority.data()["providers"], json!(["openai", "anthropic"]));
        assert_eq!(priority.data()["configured"], json!(["openai", "anthropic"]));

        app.delete("/v1/credentials/openai", &tenant.key).await.expect(200);
        app.get("/v1/credentials/openai", &tenant.key).await.expect_error(404, "NOT_FOUND");
        app.delete("/v1/credentials/openai", &tenant.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/ai/provider-priority", &tenant.key).await.data()["configured"], json!(["anthropic"]));

        // Another tenant sees none of it; a read key sees hints but cannot write.
        let other = app.tenant("Other").await;
        app.get("/v1/credentials/anthropic", &other.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/credentials", &other.key).await.data(), &json!([]));
        assert!(plinth::vault::open(&app.app, &plinth::id::TenantId::trusted(other.id.clone()), "anthropic").await.unwrap().is_none());
        let (_, broad) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        app.get("/v1/credentials/anthropic", &broad).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["credentials:read"] })).await;
        app.get("/v1/credentials/anthropic", &reader).await.expect(200);
        put(&app, "/v1/credentials/stripe", &reader, json!({ "api_key": "sk_live_0123456789abcdef" }))
            .await.expect_error(403, "INSUFFICIENT_SCOPE");
    }

    async fn credentials_are_checked_against_the_services_fields(app) {
        let tenant = app.tenant("Fields").await;
        put(&app, "/v1/credentials/carrier-pigeon", &tenant.key, json!({ "api_key": "x" })).await.expect_error(404, "NOT_FOUND");
        put(&app, "/v1/credentials/custom:Bad Name", &tenant.key, json!({ "a": "b" })).await.expect_error(404, "NOT_FOUND");
        for (service, body, field) in [
            ("openai", json!({}), "api_key"),
            ("openai", json!({ "api_key": OPENAI_KEY, "colour": "red" }), "colour"),
            ("openai", json!({ "api_key": 12 }), "api_key"),
            ("openai", json!({ "api_key": "   " }), "api_key"),
            ("dinero", json!({ "client_id": "c", "client_secret": "s0123456789abc" }), "organization_id"),
            ("mailchimp", json!({ "api_key": "0123456789abcdef" }), "api_key"),
            ("google", json!({ "client_id": "c", "client_secret": "s", "refresh_token": "r\u{0}" }), "refresh_token"),
            ("custom:crm", json!({}), "body"),
            ("custom:crm", json!({ "Token": "x" }), "Token"),
        ] {
            let resp = put(&app, &format!("/v1/credentials/{service}"), &tenant.key, body.clone()).await;
            resp.expect_error(422, "VALIDATION_FAILED");
            assert!(resp.text.contains(field), "{service} {body}: {}", resp.text);
        }
        put(&app, "/v1/credentials/openai", &tenant.key, json!([OPENAI_KEY])).await.expect_error(422, "VALIDATION_FAILED");
        put(&app, "/v1/credentials/mailchimp", &tenant.key, json!({ "api_key": "0123456789abcdef-us21" })).await.expect(201);
        assert_eq!(app.count("SELECT COUNT(*) FROM service_credentials").await, 1);
    }

    async fn ai_provider_instances_and_the_priority_list(app) {
        let tenant = app.tenant("Providers").await;
        let created = app.post("/v1/ai-providers", &tenant.key, json!({
            "name": "local-vllm", "provider_type": "openai-compatible", "base_url": "https://vllm.example.com/v1/",
            "config_json": { "default_models": { "chat": "llama-3.1-8b" } }
        })).await;
        created.expect(201);
        let id = created.data()["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("aip_"));
        assert_eq!(created.data()["base_url"], "https://vllm.example.com/v1");
        assert_eq!(created.data()["config_json"]["default_models"]["chat"], "llama-3.1-8b");
        assert_eq!(created.data()["has_api_key"], false);
        let keyed = app.post("/v1/ai-providers", &tenant.key, json!({
            "name": "team-claude", "provider_type": "anthropic", "api_key": ANTHROPIC_KEY
        })).await;
        keyed.expect(201);
        assert_eq!(keyed.data()["api_key_hint"], "sk-...c3d4");
        assert!(!keyed.text.contains(ANTHROPIC_KEY));
        assert!(!app.stored_anywhere(ANTHROPIC_KEY).await);
        let keyed_id = keyed.data()["id"].as_str().unwrap().to_string();
        let (kind, key, _) = plinth::ai::providers::open(&app.app, &plinth::id::TenantId::trusted(tenant.id.clone()), "team-claude").await.unwrap().unwrap();
        assert_eq!((kind.as_str(), key.as_deref()), ("anthropic", Some(ANTHROPIC_KEY)));

        for bad in [
            json!({ "name": "x", "provider_type": "openai-compatible" }),
            json!({ "name": "x", "provider_type": "openai-compatible", "base_url": "http://127.0.0.1:8000/v1" }),
            json!({ "name": "x", "provider_type": "openai-compatible", "base_url": "https://10.0.0.5/v1" }),
            json!({ "name": "x", "provider_type": "anthropic" }),
            json!({ "name": "openai", "provider_type": "openai", "api_key": OPENAI_KEY }),
            json!({ "name": "Bad", "provider_type": "openai", "api_key": OPENAI_KEY }),
            json!({ "name": "x", "provider_type": "gemini", "api_key": OPENAI_KEY }),
            json!({ "name": "x", "provider_type": "openai", "api_key": OPENAI_KEY, "config_json": [1] }),
        ] {
            let resp = app.post("/v1/ai-providers", &tenant.key, bad.clone()).await;
            assert_eq!(resp.status, 422, "{bad}: {}", resp.text);
        }
        app.post("/v1/ai-providers", &tenant.key, json!({ "name": "team-claude", "provider_type": "openai", "api_key": OPENAI_KEY }))
            .await.expect_error(409, "CONFLICT");

        // Instances join the priority list; it can be reordered with built-in providers.
        let priority = app.get("/v1/ai/provider-priority", &tenant.key).await;
        assert_eq!(priority.data()["providers"], json!(["local-vllm", "team-claude"]));
        let set = put(&app, "/v1/ai/provider-priority", &tenant.key, json!({ "providers": ["team-claude", "openai", "local-vllm"] })).await;
        set.expect(200);
        assert_eq!(set.data()["configured"], json!(["team-claude", "local-vllm"]));
        for bad in [json!({ "providers": ["gemini"] }), json!({ "providers": ["openai", "openai"] }), json!({ "providers": "openai" })] {
            let resp = put(&app, "/v1/ai/provider-priority", &tenant.key, bad.clone()).await;
            assert_eq!(resp.status, 422, "{bad}: {}", resp.text);
        }

        // Renaming keeps its place; deleting takes it out.
        let renamed = app.patch(&format!("/v1/ai-providers/{keyed_id}"), &tenant.key, json!({ "name": "claude-team", "config_json": { "prices": {} } })).await;
        renamed.expect(200);
        assert_eq!(renamed.data()["api_key_hint"], "sk-...c3d4");
        assert_eq!(app.get("/v1/ai/provider-priority", &tenant.key).await.data()["providers"], json!(["claude-team", "openai", "local-vllm"]));
        app.patch(&format!("/v1/ai-providers/{id}"), &tenant.key, json!({ "base_url": "https://169.254.169.254/latest" }))
            .await.expect_error(422, "VALIDATION_FAILED");
        app.delete(&format!("/v1/ai-providers/{id}"), &tenant.key).await.expect(200);
        assert_eq!(app.get("/v1/ai/provider-priority", &tenant.key).await.data()["providers"], json!(["claude-team", "openai"]));
        assert_eq!(app.get("/v1/ai-providers", &tenant.key).await.data()["total"], 1);

        let other = app.tenant("Other").await;
        app.get(&format!("/v1/ai-providers/{keyed_id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.delete(&format!("/v1/ai-providers/{keyed_id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/ai-providers", &other.key).await.data()["total"], 0);
        assert_eq!(app.get("/v1/ai/provider-priority", &other.key).await.data()["providers"], json!([]));
    }
}
