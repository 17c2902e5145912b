//! Inbound webhooks: sources per tenant with each signing scheme, Meta's handshake, and Stripe
//! billing events that move tenants between plans. Requests are signed here the way each sender
//! signs them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{TestApp, ADMIN_KEY};
use crate::{both_backends, on_both_backends};

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A POST as a sender makes it: the raw body and its own headers, no credential.
async fn deliver(app: &TestApp, path: &str, headers: &[(&str, String)], body: &str) -> crate::common::Resp {
    let mut request =
        app.request(Method::POST, path, None).header("content-type", "application/json").body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    app.send(request).await
}

fn standard_headers(secret: &str, id: &str, timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let signature = STANDARD.encode(hmac(&key, format!("{id}.{timestamp}.{body}").as_bytes()));
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", format!("v1,{signature}")),
    ]
}

fn hub_headers(secret: &str, body: &str) -> Vec<(&'static str, String)> {
    vec![("x-hub-signature-256", format!("sha256={}", hex(&hmac(secret.as_bytes(), body.as_bytes()))))]
}

fn stripe_headers(secret: &str, timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
    let v1 = hex(&hmac(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes()));
    vec![("stripe-signature", format!("t={timestamp},v1={v1}"))]
}

both_backends! {
    async fn a_standard_webhooks_source_verifies_stores_and_emits(app) {
        let tenant = app.tenant_on("Inbound", "pro").await;
        let created = app.post("/v1/inbound-sources", &tenant.key, json!({ "name": "billing", "scheme": "standard-webhooks" })).await;
        created.expect(201);
        let id = created.data()["id"].as_str().unwrap().to_string();
        let secret = created.data()["secret"].as_str().unwrap().to_string();
        assert!(id.starts_with("src_") && secret.starts_with("whsec_"));
        assert_eq!(created.data()["path"], format!("/v1/inbound/{id}"));
        assert_eq!(created.data()["event_type"], "inbound.billing.received");
        let read = app.get(&format!("/v1/inbound-sources/{id}"), &tenant.key).await;
        assert!(read.data().get("secret").is_none());
        let (stored,): (String,) = sqlx::query_as("SELECT secret FROM inbound_sources").fetch_one(app.app.db.pool()).await.unwrap();
        assert!(stored.starts_with("v1:") && !stored.contains(&secret));

        let path = format!("/v1/inbound/{id}");
        let body = r#"{"type":"invoice.paid","amount":1200,"password":"hunter2"}"#;
        let got = deliver(&app, &path, &standard_headers(&secret, "msg_1", now(), body), body).await;
        got.expect(200);
        assert_eq!(got.data()["received"], true);
        assert_eq!(got.data()["duplicate"], false);
        let message_id = got.data()["id"].as_str().unwrap().to_string();

        // Stored as sent, emitted with secret-looking fields redacted.
        let messages = app.get(&format!("/v1/inbound-sources/{id}/messages"), &tenant.key).await;
        messages.expect(200);
        assert_eq!(messages.data()["total"], 1);
        let message = &messages.data()["results"][0];
        assert_eq!(message["id"], message_id.as_str());
        assert_eq!(message["external_id"], "msg_1");
        assert_eq!(message["payload"]["amount"], 1200);
        let events = app.get("/v1/events/list?type=inbound.billing.received", &tenant.key).await;
        assert_eq!(events.data()["total"], 1);
        let data = &events.data()["results"][0]["data"];
        assert_eq!(data["message_id"], message_id.as_str());
        assert_eq!(data["payload"]["amount"], 1200);
        assert_eq!(data["payload"]["password"], "[REDACTED]");
        let types = app.get("/v1/events/types", &tenant.key).await;
        assert!(types.data().as_array().unwrap().contains(&json!("inbound.billing.received")));
        assert_eq!(app.get(&format!("/v1/inbound-sources/{id}"), &tenant.key).await.data()["received_count"], 1);

        // The same delivery again is stored once.
        let again = deliver(&app, &path, &standard_headers(&secret, "msg_1", now(), body), body).await;
        again.expect(200);
        assert_eq!(again.data()["duplicate"], true);
        assert_eq!(again.data()["id"], message_id.as_str());

        // Bad signatures, another body, stale or missing headers: 401 and nothing stored.
        let wrong = format!("whsec_{}", STANDARD.encode([9u8; 32]));
        let refused = [
            (standard_headers(&wrong, "msg_2", now(), body), body.to_string()),
            (standard_headers(&secret, "msg_3", now(), body), r#"{"type":"invoice.paid","amount":1}"#.to_string()),
            (standard_headers(&secret, "msg_4", now() - 360, body), body.to_string()),
            (standard_headers(&secret, "msg_5", now() + 360, body), body.to_string()),
            (Vec::new(), body.to_string()),
        ];
        for (headers, sent) in refused {
            deliver(&app, &path, &headers, &sent).await.expect_error(401, "UNAUTHORIZED");
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type LIKE 'inbound.%'").await, 1);
        deliver(&app, "/v1/inbound/src_01jd8x3k4m5n6p7q8r9s0t1v2w", &standard_headers(&secret, "m", now(), body), body)
            .await.expect_error(404, "NOT_FOUND");
    }

    async fn github_stripe_and_meta_sources_verify_their_own_way(app) {
        let tenant = app.tenant_on("Schemes", "pro").await;
        let github = app.post("/v1/inbound-sources", &tenant.key, json!({
            "name": "github", "scheme": "github-sha256", "secret": "It's a Secret to Everybody"
        })).await;
        github.expect(201);
        assert!(github.data().get("secret").is_none(), "a given secret is not echoed");
        let path = format!("/v1/inbound/{}", github.data()["id"].as_str().unwrap());
        let body = r#"{"action":"opened"}"#;
        let mut headers = hub_headers("It's a Secret to Everybody", body);
        headers.push(("x-github-delivery", "d-1".into()));
        deliver(&app, &path, &headers, body).await.expect(200);
        deliver(&app, &path, &hub_headers("another secret!", body), body).await.expect_error(401, "UNAUTHORIZED");

        let stripe = app.post("/v1/inbound-sources", &tenant.key, json!({ "name": "stripe", "scheme": "stripe", "secret": "whsec_stripe_test_123" })).await;
        stripe.expect(201);
        let path = format!("/v1/inbound/{}", stripe.data()["id"].as_str().unwrap());
        let body = r#"{"id":"evt_s1","type":"charge.succeeded"}"#;
        let good = deliver(&app, &path, &stripe_headers("whsec_stripe_test_123", now(), body), body).await;
        good.expect(200);
        deliver(&app, &path, &stripe_headers("whsec_stripe_test_123", now() - 400, body), body).await.expect_error(401, "UNAUTHORIZED");
        deliver(&app, &path, &stripe_headers("whsec_other_secret", now(), body), body).await.expect_error(401, "UNAUTHORIZED");
        let messages = app.get(&format!("{}/messages", path.replace("/v1/inbound/", "/v1/inbound-sources/")), &tenant.key).await;
        assert_eq!(messages.data()["results"][0]["external_id"], "evt_s1");

        let meta = app.post("/v1/inbound-sources", &tenant.key, json!({
            "name": "meta", "scheme": "meta", "secret": "meta-app-secret", "verify_token": "verify-me-please"
        })).await;
        meta.expect(201);
        let path = format!("/v1/inbound/{}", meta.data()["id"].as_str().unwrap());
        let handshake = app.get_public(&format!("{path}?hub.mode=subscribe&hub.verify_token=verify-me-please&hub.challenge=1158201444")).await;
        handshake.expect(200);
        assert_eq!(handshake.text, "1158201444");
        app.get_public(&format!("{path}?hub.mode=subscribe&hub.verify_token=wrong-token&hub.challenge=1"))
            .await.expect_error(403, "FORBIDDEN");
        let body = r#"{"object":"page","entry":[{"id":"1","changes":[{"field":"leadgen"}]}]}"#;
        deliver(&app, &path, &hub_headers("meta-app-secret", body), body).await.expect(200);
        deliver(&app, &path, &hub_headers("not-the-secret", body), body).await.expect_error(401, "UNAUTHORIZED");
        assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 3);
    }

    async fn inbound_sources_are_checked_scoped_and_per_tenant(app) {
        let tenant = app.tenant("Sources").await;
        for bad in [
            json!({ "name": "Bad Name", "scheme": "stripe", "secret": "whsec_12345678" }),
            json!({ "name": "x", "scheme": "carrier-pigeon", "secret": "whsec_12345678" }),
            json!({ "name": "x", "scheme": "stripe" }),
            json!({ "name": "x", "scheme": "stripe", "secret": "short" }),
            json!({ "name": "x", "scheme": "standard-webhooks", "secret": "whsec_bm90YmFzZTY0" }),
            json!({ "name": "x", "scheme": "stripe", "secret": "whsec_12345678", "verify_token": "abcdefghij" }),
            json!({ "name": "x", "scheme": "stripe", "secret": "whsec_12345678", "colour": "red" }),
        ] {
            let resp = app.post("/v1/inbound-sources", &tenant.key, bad.clone()).await;
            assert_eq!(resp.status, 422, "{bad}: {}", resp.text);
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM inbound_sources").await, 0);
        let created = app.post("/v1/inbound-sources", &tenant.key, json!({ "name": "shop", "scheme": "stripe", "secret": "whsec_12345678" })).await;
        created.expect(201);
        let id = created.data()["id"].as_str().unwrap().to_string();
        app.post("/v1/inbound-sources", &tenant.key, json!({ "name": "shop", "scheme": "github-sha256" }))
            .await.expect_error(409, "CONFLICT");

        let patched = app.patch(&format!("/v1/inbound-sources/{id}"), &tenant.key, json!({ "secret": "whsec_87654321", "description": "shop" })).await;
        patched.expect(200);
        assert_eq!(patched.data()["description"], "shop");
        let body = r#"{"id":"evt_1"}"#;
        deliver(&app, &format!("/v1/inbound/{id}"), &stripe_headers("whsec_12345678", now(), body), body)
            .await.expect_error(401, "UNAUTHORIZED");
        deliver(&app, &format!("/v1/inbound/{id}"), &stripe_headers("whsec_87654321", now(), body), body).await.expect(200);

        let other = app.tenant("Other").await;
        app.get(&format!("/v1/inbound-sources/{id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.get(&format!("/v1/inbound-sources/{id}/messages"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.delete(&format!("/v1/inbound-sources/{id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/inbound-sources", &other.key).await.data()["total"], 0);
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["inbound:read"] })).await;
        assert_eq!(app.get("/v1/inbound-sources", &reader).await.data()["total"], 1);
        app.post("/v1/inbound-sources", &reader, json!({ "name": "y", "scheme": "github-sha256" }))
            .await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.get_public("/v1/inbound-sources").await.expect_error(401, "UNAUTHORIZED");

        app.delete(&format!("/v1/inbound-sources/{id}"), &tenant.key).await.expect(200);
        assert_eq!(app.count("SELECT COUNT(*) FROM inbound_messages").await, 0);
        deliver(&app, &format!("/v1/inbound/{id}"), &stripe_headers("whsec_87654321", now(), body), body)
            .await.expect_error(404, "NOT_FOUND");
    }

    async fn platform_webhooks_need_their_secrets(app) {
        let body = r#"{"id":"evt_1","type":"checkout.session.completed","data":{"object":{}}}"#;
        deliver(&app, "/webhooks/stripe", &stripe_headers("whsec_x", now(), body), body).await.expect_error(503, "UPSTREAM_UNAVAILABLE");
        deliver(&app, "/v1/webhooks/inbound/meta-ads", &hub_headers("x", "{}"), "{}").await.expect_error(503, "UPSTREAM_UNAVAILABLE");
        app.get_public("/v1/webhooks/inbound/meta-ads?hub.mode=subscribe&hub.verify_token=&hub.challenge=1")
            .await.expect_error(403, "FORBIDDEN");
    }
}

const STRIPE_SECRET: &str = "whsec_platform_stripe_secret";

fn billing(config: &mut plinth::config::Config) {
    config.inbound.stripe_webhook_secret = Some(plinth::config::Secret::new(STRIPE_SECRET));
    config.inbound.meta_verify_token = Some(plinth::config::Secret::new("meta-verify-token"));
    config.inbound.meta_app_secret = Some(plinth::config::Secret::new("meta-app-secret"));
}

async fn stripe_event(app: &TestApp, event: Value) -> crate::common::Resp {
    let body = event.to_string();
    deliver(app, "/webhooks/stripe", &stripe_headers(STRIPE_SECRET, now(), &body), &body).await
}

async fn tier(app: &TestApp, tenant: &str) -> String {
    app.get(&format!("/v1/tenants/{tenant}"), ADMIN_KEY).await.data()["tier"].as_str().unwrap().to_string()
}

on_both_backends! {
    async fn stripe_billing_events_move_tenants_between_plans(backend) {
        let app = TestApp::spawn_with(backend, billing).await;
        let tenant = app.tenant("Customer").await;
        assert_eq!(tier(&app, &tenant.id).await, "free");

        // A checkout not paid yet changes nothing.
        let unpaid = json!({ "id": "evt_c0", "type": "checkout.session.completed", "created": 50, "data": { "object": {
            "client_reference_id": tenant.id, "customer": "cus_123", "payment_status": "unpaid", "metadata": { "tier": "pro" } } } });
        let ignored = stripe_event(&app, unpaid).await;
        assert!(ignored.data()["outcome"].as_str().unwrap().contains("not paid"), "{}", ignored.text);
        assert_eq!(tier(&app, &tenant.id).await, "free");

        let checkout = json!({ "id": "evt_c1", "type": "checkout.session.completed", "created": 100, "data": { "object": {
            "client_reference_id": tenant.id, "customer": "cus_123", "payment_status": "paid", "metadata": { "tier": "pro" } } } });
        let applied = stripe_event(&app, checkout.clone()).await;
        applied.expect(200);
        assert!(applied.data()["outcome"].as_str().unwrap().starts_with("applied"), "{}", applied.text);
        assert_eq!(tier(&app, &tenant.id).await, "pro");
        // The same event again changes nothing.
        app.patch(&format!("/v1/tenants/{}", tenant.id), ADMIN_KEY, json!({ "tier": "starter" })).await.expect(200);
        let again = stripe_event(&app, checkout).await;
        again.expect(200);
        assert_eq!(again.data()["duplicate"], true);
        assert_eq!(tier(&app, &tenant.id).await, "starter");

        // Later events find the tenant by its customer.
        let updated = json!({ "id": "evt_u1", "type": "customer.subscription.updated", "created": 200, "data": { "object": {
            "customer": "cus_123", "status": "active", "items": { "data": [{ "price": { "lookup_key": "agency" } }] } } } });
        stripe_event(&app, updated).await.expect(200);
        assert_eq!(tier(&app, &tenant.id).await, "agency");
        let past_due = json!({ "id": "evt_u2", "type": "customer.subscription.updated", "created": 250, "data": { "object": {
            "customer": "cus_123", "status": "past_due", "metadata": { "tier": "pro" } } } });
        stripe_event(&app, past_due).await.expect(200);
        assert_eq!(tier(&app, &tenant.id).await, "agency", "a subscription past due keeps its plan");
        let unpaid = json!({ "id": "evt_u3", "type": "customer.subscription.updated", "created": 300, "data": { "object": {
            "customer": "cus_123", "status": "unpaid" } } });
        stripe_event(&app, unpaid).await.expect(200);
        assert_eq!(tier(&app, &tenant.id).await, "free");
        app.patch(&format!("/v1/tenants/{}", tenant.id), ADMIN_KEY, json!({ "tier": "pro" })).await.expect(200);
        let deleted = json!({ "id": "evt_d1", "type": "customer.subscription.deleted", "created": 400, "data": { "object": { "customer": "cus_123" } } });
        stripe_event(&app, deleted).await.expect(200);
        assert_eq!(tier(&app, &tenant.id).await, "free");
        // An older event arriving late changes nothing.
        let late = json!({ "id": "evt_u0", "type": "customer.subscription.updated", "created": 350, "data": { "object": {
            "customer": "cus_123", "status": "active", "metadata": { "tier": "enterprise" } } } });
        let late = stripe_event(&app, late).await;
        assert!(late.data()["outcome"].as_str().unwrap().contains("older"), "{}", late.text);
        assert_eq!(tier(&app, &tenant.id).await, "free");

        // Unknown customers and other events are kept and ignored.
        let stranger = json!({ "id": "evt_x", "type": "customer.subscription.deleted", "data": { "object": { "customer": "cus_nobody" } } });
        let ignored = stripe_event(&app, stranger).await;
        ignored.expect(200);
        assert!(ignored.data()["outcome"].as_str().unwrap().starts_with("ignored"));
        stripe_event(&app, json!({ "id": "evt_i", "type": "invoice.paid", "data": { "object": { "customer": "cus_123" } } })).await.expect(200);
        assert_eq!(app.count("SELECT COUNT(*) FROM platform_webhook_events WHERE provider = 'stripe'").await, 9);

        // The tenant sees its plan changes as events; the audit log names Stripe.
        let events = app.get("/v1/events/list?type=tenant.plan_changed", &tenant.key).await;
        assert_eq!(events.data()["total"], 4);
        assert_eq!(app.count("SELECT COUNT(*) FROM audit_logs WHERE action = 'tenant.plan_changed' AND actor_id = 'stripe'").await, 4);

        // Forged, stale or unsigned events change nothing and are not kept.
        let forged = json!({ "id": "evt_f", "type": "checkout.session.completed", "data": { "object": {
            "client_reference_id": tenant.id, "metadata": { "tier": "enterprise" } } } }).to_string();
        for headers in [stripe_headers("whsec_forged", now(), &forged), stripe_headers(STRIPE_SECRET, now() - 600, &forged), Vec::new()] {
            deliver(&app, "/webhooks/stripe", &headers, &forged).await.expect_error(401, "UNAUTHORIZED");
        }
        assert_eq!(tier(&app, &tenant.id).await, "free");
        assert_eq!(app.count("SELECT COUNT(*) FROM platform_webhook_events WHERE provider = 'stripe'").await, 9);
    }

    async fn metas_app_wide_callback_answers_the_handshake_and_verifies(backend) {
        let app = TestApp::spawn_with(backend, billing).await;
        let ok = app.get_public("/v1/webhooks/inbound/meta-ads?hub.mode=subscribe&hub.verify_token=meta-verify-token&hub.challenge=CHALLENGE_ACCEPTED").await;
        ok.expect(200);
        assert_eq!(ok.text, "CHALLENGE_ACCEPTED");
        app.get_public("/v1/webhooks/inbound/meta-ads?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1")
            .await.expect_error(403, "FORBIDDEN");
        app.get_public("/v1/webhooks/inbound/meta-ads?hub.mode=unsubscribe&hub.verify_token=meta-verify-token&hub.challenge=1")
            .await.expect_error(403, "FORBIDDEN");
        let body = r#"{"object":"page","entry":[{"id":"123","time":1700000000,"changes":[{"field":"leadgen","value":{"leadgen_id":"9"}}]}]}"#;
        let received = deliver(&app, "/v1/webhooks/inbound/meta-ads", &hub_headers("meta-app-secret", body), body).await;
        received.expect(200);
        assert_eq!(received.data()["received"], true);
        deliver(&app, "/v1/webhooks/inbound/meta-ads", &hub_headers("wrong", body), body).await.expect_error(401, "UNAUTHORIZED");
        assert_eq!(app.count("SELECT COUNT(*) FROM platform_webhook_events WHERE provider = 'meta-ads' AND kind = 'page'").await, 1);
    }
}
