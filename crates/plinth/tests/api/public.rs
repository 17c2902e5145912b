//! Public routes: probes, landing page, API reference and the OpenAPI document.

use crate::both_backends;

/// Every route the server serves, as the OpenAPI document must list it.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/docs"),
    ("get", "/docs/openapi.json"),
    ("get", "/docs/assets/swagger-ui-bundle.js"),
    ("get", "/docs/assets/swagger-ui.css"),
    ("get", "/v1/tenants"),
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants/{tenant_id}"),
    ("patch", "/v1/tenants/{tenant_id}"),
    ("delete", "/v1/tenants/{tenant_id}"),
    ("get", "/v1/workspaces"),
    ("post", "/v1/workspaces"),
    ("get", "/v1/workspaces/{tenant_id}"),
    ("patch", "/v1/workspaces/{tenant_id}"),
    ("delete", "/v1/workspaces/{tenant_id}"),
    ("get", "/v1/usage"),
    ("get", "/v1/keys"),
    ("post", "/v1/keys"),
    ("get", "/v1/keys/{key_id}"),
    ("patch", "/v1/keys/{key_id}"),
    ("delete", "/v1/keys/{key_id}"),
    ("post", "/v1/keys/{key_id}/rotate"),
    ("get", "/v1/api-keys"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys/{key_id}"),
    ("patch", "/v1/api-keys/{key_id}"),
    ("delete", "/v1/api-keys/{key_id}"),
    ("post", "/v1/api-keys/{key_id}/rotate"),
    ("get", "/v1/keys/public"),
    ("post", "/v1/keys/public"),
    ("get", "/v1/keys/public/{public_key_id}"),
    ("delete", "/v1/keys/public/{public_key_id}"),
    ("get", "/v1/audit-logs"),
    ("get", "/v1/governance"),
    ("get", "/v1/object-types"),
    ("post", "/v1/object-types"),
    ("get", "/v1/object-types/{object_type_id}"),
    ("patch", "/v1/object-types/{object_type_id}"),
    ("delete", "/v1/object-types/{object_type_id}"),
    ("get", "/v1/object-types/{object_type_id}/properties"),
    ("post", "/v1/object-types/{object_type_id}/properties"),
    ("get", "/v1/object-types/{object_type_id}/properties/{property_id}"),
    ("patch", "/v1/object-types/{object_type_id}/properties/{property_id}"),
    ("delete", "/v1/object-types/{object_type_id}/properties/{property_id}"),
    ("post", "/v1/objects/{object_type_id}"),
    ("get", "/v1/objects/{object_type_id}/{object_id}"),
    ("patch", "/v1/objects/{object_type_id}/{object_id}"),
    ("delete", "/v1/objects/{object_type_id}/{object_id}"),
    ("post", "/v1/objects/{object_type_id}/{object_id}/restore"),
    ("get", "/v1/objects/{object_type_id}/{object_id}/versions"),
    ("put", "/v1/objects/{object_type_id}/{object_id}/associations/{association_type}/{to_type}/{to_id}"),
    ("delete", "/v1/objects/{object_type_id}/{object_id}/associations/{association_type}/{to_type}/{to_id}"),
    ("get", "/v1/objects/{object_type_id}/{object_id}/associations"),
    ("post", "/v1/reports/funnel"),
    ("post", "/v1/reports/leaderboard"),
    ("post", "/v1/reports/pipeline"),
    ("post", "/v1/reports/timeseries"),
    ("post", "/v1/sql"),
    ("post", "/v1/data/import"),
    ("get", "/v1/data/import/{import_id}"),
    ("post", "/v1/data/export"),
    ("get", "/v1/data/export/{export_id}"),
    ("post", "/v1/errors/report"),
    ("get", "/v1/errors"),
    ("get", "/v1/errors/{error_id}"),
    ("get", "/v1/analytics"),
    ("get", "/v1/analytics/engine"),
    ("get", "/v1/object-types/{object_type_id}/workflows"),
    ("post", "/v1/object-types/{object_type_id}/workflows"),
    ("patch", "/v1/object-types/{object_type_id}/workflows/{workflow_id}"),
    ("delete", "/v1/object-types/{object_type_id}/workflows/{workflow_id}"),
    ("post", "/v1/objects/{object_type_id}/{object_id}/submit-for-review"),
    ("post", "/v1/objects/{object_type_id}/{object_id}/approve"),
    ("post", "/v1/objects/{object_type_id}/{object_id}/reject"),
    ("get", "/v1/objects/{object_type_id}/{object_id}/workflow-status"),
    ("get", "/v1/objects/{object_type_id}/{object_id}/comments"),
    ("post", "/v1/objects/{object_type_id}/{object_id}/comments"),
    ("patch", "/v1/objects/{object_type_id}/{object_id}/comments/{comment_id}"),
    ("delete", "/v1/objects/{object_type_id}/{object_id}/comments/{comment_id}"),
    ("get", "/v1/object-types/{object_type_id}/views"),
    ("post", "/v1/object-types/{object_type_id}/views"),
    ("patch", "/v1/object-types/{object_type_id}/views/{view_id}"),
    ("delete", "/v1/object-types/{object_type_id}/views/{view_id}"),
    ("post", "/v1/objects/{object_type_id}/batch/create"),
    ("post", "/v1/objects/{object_type_id}/batch/read"),
    ("post", "/v1/objects/{object_type_id}/batch/update"),
    ("get", "/v1/objects/{object_type_id}/list"),
    ("get", "/v1/objects/{object_type_id}/trash"),
    ("post", "/v1/objects/{object_type_id}/search"),
    ("get", "/events/types"),
    ("get", "/v1/events/types"),
    ("post", "/v1/events"),
    ("get", "/v1/events/list"),
    ("get", "/v1/webhooks"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks/{webhook_id}"),
    ("patch", "/v1/webhooks/{webhook_id}"),
    ("delete", "/v1/webhooks/{webhook_id}"),
    ("post", "/v1/webhooks/{webhook_id}/rotate-secret"),
    ("get", "/v1/webhooks/{webhook_id}/deliveries"),
    ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"),
    ("post", "/v1/webhooks/{webhook_id}/test"),
    ("post", "/v1/webhooks/{webhook_id}/replay"),
    ("get", "/v1/webhook-deliveries"),
    ("get", "/v1/webhook-deliveries/{delivery_id}"),
    ("post", "/v1/webhook-deliveries/{delivery_id}/retry"),
    ("get", "/v1/inbound-sources"),
    ("post", "/v1/inbound-sources"),
    ("get", "/v1/inbound-sources/{source_id}"),
    ("patch", "/v1/inbound-sources/{source_id}"),
    ("delete", "/v1/inbound-sources/{source_id}"),
    ("get", "/v1/inbound-sources/{source_id}/messages"),
    ("get", "/v1/inbound/{source_id}"),
    ("post", "/v1/inbound/{source_id}"),
    ("get", "/v1/webhooks/inbound/meta-ads"),
    ("post", "/v1/webhooks/inbound/meta-ads"),
    ("post", "/webhooks/stripe"),
    ("get", "/v1/realtime"),
    ("get", "/v1/realtime/stats"),
    ("get", "/events/stream"),
    ("get", "/v1/events/stream"),
    ("get", "/v1/credentials"),
    ("get", "/v1/credentials/{service}"),
    ("put", "/v1/credentials/{service}"),
    ("delete", "/v1/credentials/{service}"),
    ("get", "/v1/ai-providers"),
    ("post", "/v1/ai-providers"),
    ("get", "/v1/ai-providers/{provider_id}"),
    ("patch", "/v1/ai-providers/{provider_id}"),
    ("delete", "/v1/ai-providers/{provider_id}"),
    ("get", "/v1/ai/provider-priority"),
    ("put", "/v1/ai/provider-priority"),
    ("post", "/v1/chat/completions"),
    ("post", "/v1/ai/completions"),
    ("post", "/v1/embeddings"),
    ("get", "/v1/ai-usage"),
    ("post", "/v1/ai/chat"),
    ("post", "/v1/ai/generate"),
    ("post", "/v1/ai/stream"),
    ("post", "/v1/ai/vision"),
    ("post", "/v1/ai/image"),
    ("post", "/v1/ai/upload"),
    ("post", "/v1/ai/describe"),
    ("post", "/v1/files/upload"),
    ("post", "/v1/files/upload-url"),
    ("post", "/v1/files/{file_id}/upload-put"),
    ("post", "/v1/files/{file_id}/upload-complete"),
    ("get", "/v1/files/{file_id}"),
    ("patch", "/v1/files/{file_id}"),
    ("delete", "/v1/files/{file_id}"),
    ("get", "/v1/files/{file_id}/content"),
    ("post", "/v1/files/{file_id}/signed-url"),
    ("get", "/v1/files/{file_id}/variants/{variant}"),
    ("get", "/v1/files/stats"),
    ("get", "/v1/files/trash"),
    ("post", "/v1/files/{file_id}/restore"),
    ("get", "/v1/files/{file_id}/versions"),
    ("get", "/v1/files/folders"),
    ("post", "/v1/files/search"),
    ("post", "/v1/files/{file_id}/stale-cleanup"),
    ("post", "/v1/files/batch/read"),
    ("post", "/v1/files/batch/update"),
    ("post", "/v1/files/batch/delete"),
    ("get", "/v1/users"),
    ("post", "/v1/users"),
    ("get", "/v1/users/{user_id}"),
    ("patch", "/v1/users/{user_id}"),
    ("delete", "/v1/users/{user_id}"),
    ("post", "/v1/auth/signup"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/anonymous"),
    ("get", "/v1/auth/user"),
    ("get", "/v1/auth/verify"),
    ("post", "/v1/auth/verify"),
    ("post", "/v1/auth/forgot-password"),
    ("post", "/v1/auth/reset-password"),
    ("post", "/v1/auth/magic-link"),
    ("post", "/v1/auth/magic-link/verify"),
    ("post", "/v1/auth/otp/send"),
    ("post", "/v1/auth/otp/verify"),
    ("post", "/v1/auth/mfa/enroll"),
    ("post", "/v1/auth/mfa/verify"),
    ("post", "/v1/auth/mfa/challenge"),
    ("post", "/v1/auth/mfa/complete"),
    ("post", "/v1/auth/mfa/recover"),
    ("get", "/v1/auth/mfa/factors"),
    ("delete", "/v1/auth/mfa/{factor_id}"),
    ("get", "/v1/users/{user_id}/mfa"),
    ("get", "/v1/roles"),
    ("post", "/v1/roles"),
    ("get", "/v1/roles/{role_id}"),
    ("patch", "/v1/roles/{role_id}"),
    ("delete", "/v1/roles/{role_id}"),
    ("put", "/v1/roles/{role_id}/permissions"),
    ("post", "/v1/roles/assign"),
    ("get", "/v1/users/{user_id}/roles"),
    ("delete", "/v1/roles/{role_id}/users/{user_id}"),
    ("get", "/v1/object-types/{object_type_id}/policies"),
    ("post", "/v1/object-types/{object_type_id}/policies"),
    ("patch", "/v1/object-types/{object_type_id}/policies/{policy_id}"),
    ("delete", "/v1/object-types/{object_type_id}/policies/{policy_id}"),
    ("post", "/v1/policies/simulate"),
    ("post", "/v1/auth/portal-signup"),
    ("post", "/v1/auth/portal-login"),
    ("post", "/v1/auth/portal-forgot-password"),
    ("post", "/v1/auth/portal-reset-password"),
    ("post", "/v1/auth/portal-magic-link"),
    ("post", "/v1/auth/portal-magic-link-verify"),
    ("post", "/v1/auth/portal-otp-send"),
    ("post", "/v1/auth/portal-otp-verify"),
    ("post", "/v1/auth/portal-verify-email"),
    ("post", "/v1/auth/portal-identify"),
    ("post", "/v1/tenants/lookup"),
    ("post", "/v1/workspaces/lookup"),
    ("get", "/v1/auth/me/export"),
    ("patch", "/v1/auth/user"),
    ("get", "/v1/auth/sessions"),
    ("delete", "/v1/auth/sessions"),
    ("delete", "/v1/auth/sessions/{session_id}"),
    ("get", "/v1/auth-config"),
    ("post", "/v1/auth-config"),
    ("get", "/v1/tenant-config"),
    ("get", "/v1/ai/conversations"),
    ("post", "/v1/ai/conversations"),
    ("get", "/v1/ai/conversations/{conversation_id}"),
    ("patch", "/v1/ai/conversations/{conversation_id}"),
    ("delete", "/v1/ai/conversations/{conversation_id}"),
    ("post", "/v1/ai/conversations/{conversation_id}/chat"),
    ("post", "/v1/ai/conversation"),
    ("post", "/v1/ai/embeddings"),
    ("get", "/v1/models"),
    ("get", "/v1/ai/models"),
    ("get", "/v1/ai/budget"),
    ("put", "/v1/ai/budget"),
    ("get", "/v1/dlq"),
    ("post", "/v1/dlq/{msg_id}/retry"),
    ("delete", "/v1/dlq/{msg_id}"),
    ("get", "/v1/entitlements/check"),
    ("post", "/v1/entitlements/usage"),
    ("get", "/v1/entitlements/summary"),
    ("get", "/v1/tenants/{tenant_id}/entitlements"),
    ("patch", "/v1/tenants/{tenant_id}/entitlements"),
    ("get", "/v1/workspaces/{tenant_id}/entitlements"),
    ("patch", "/v1/workspaces/{tenant_id}/entitlements"),
    ("patch", "/v1/governance"),
    ("post", "/v1/token"),
    ("patch", "/v1/token"),
    ("delete", "/v1/token"),
];

both_backends! {
    async fn health_reports_service_and_version(app) {
        let resp = app.get_public("/health").await;
        resp.expect(200);
        assert_eq!(resp.body["success"], true);
        let data = resp.data();
        assert_eq!(data["status"], "ok");
        assert_eq!(data["service"], "plinth");
        assert_eq!(data["version"], env!("CARGO_PKG_VERSION"));
        assert!(data["uptime"].is_string());
        assert!(data["uptime_seconds"].is_u64());
        assert!(data["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(resp.header("x-request-id"), resp.body["request_id"].as_str());
    }

    async fn ready_checks_the_database(app) {
        let resp = app.get_public("/ready").await;
        resp.expect(200);
        assert_eq!(resp.data()["status"], "ready");
        let expected = match app.storage.backend {
            crate::common::Backend::Sqlite => "sqlite",
            crate::common::Backend::Postgres => "postgres",
        };
        assert_eq!(resp.data()["database"], expected);
    }

    async fn landing_and_docs_pages_are_served_without_a_cdn(app) {
        let landing = app.get_public("/").await;
        landing.expect(200);
        assert!(landing.header("content-type").unwrap().starts_with("text/html"));
        assert!(landing.text.contains("/docs"));

        let docs = app.get_public("/docs").await;
        docs.expect(200);
        assert!(docs.text.contains("/docs/assets/swagger-ui-bundle.js"));
        assert!(!docs.text.contains("https://"), "the reference page must not load anything from elsewhere");

        let script = app.get_public("/docs/assets/swagger-ui-bundle.js").await;
        script.expect(200);
        assert!(script.header("content-type").unwrap().starts_with("text/javascript"));
        assert!(script.text.len() > 100_000);
        let css = app.get_public("/docs/assets/swagger-ui.css").await;
        css.expect(200);
        assert!(css.header("content-type").unwrap().starts_with("text/css"));
    }

    async fn openapi_document_lists_every_route(app) {
        let resp = app.get_public("/docs/openapi.json").await;
        resp.expect(200);
        let doc = &resp.body;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for (method, path) in ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} is missing from the OpenAPI document");
        }
        let mut operation_ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let listed = ROUTES.iter().any(|(m, p)| m == method && p == path);
                assert!(listed, "{method} {path} is served but the test's route list lacks it");
                let id = operation["operationId"].as_str().unwrap().to_string();
                assert!(operation_ids.insert(id.clone()), "duplicate operationId {id}");
                assert!(operation["responses"]["500"].is_object(), "{method} {path} lacks its 500 answer");
                if operation["security"].is_array() {
                    assert!(operation["responses"]["401"].is_object(), "{method} {path} lacks its 401 answer");
                }
            }
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    }
}
