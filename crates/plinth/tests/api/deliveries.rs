//! Webhook delivery against receivers on loopback: signatures, retries, the dead-letter queue,
//! auto-disable, rotation, test and replay sends, the SSRF guard, crashes and several nodes.

use std::collections::HashSet;
use std::time::Duration;

use plinth::config::Config;
use serde_json::{json, Value};

use crate::common::{Backend, TestApp, TestTenant};
use crate::on_both_backends;
use crate::receiver::{verifies, verifies_sha256, Receiver};

/// Outbound calls may reach loopback, and retries come quickly.
fn delivering(config: &mut Config) {
    config.outbound_allow_private = true;
    config.webhooks.retry_schedule = "200ms,200ms".parse().unwrap();
}

async fn endpoint(app: &TestApp, tenant: &TestTenant, body: Value) -> (String, String) {
    let created = app.post("/v1/webhooks", &tenant.key, body).await;
    created.expect(201);
    (created.data()["id"].as_str().unwrap().to_string(), created.data()["secret"].as_str().unwrap().to_string())
}

async fn track(app: &TestApp, tenant: &TestTenant, kind: &str, data: Value) -> String {
    let tracked = app.post("/v1/events", &tenant.key, json!({ "event_type": kind, "data": data })).await;
    tracked.expect(201);
    tracked.data()["id"].as_str().unwrap().to_string()
}

/// Waits (30 s at most) until the delivery's status is `status`; returns the delivery.
async fn settled(app: &TestApp, key: &str, delivery_id: &str, status: &str) -> Value {
    for _ in 0..300 {
        let delivery = app.get(&format!("/v1/webhook-deliveries/{delivery_id}"), key).await;
        delivery.expect(200);
        if delivery.data()["status"] == status {
            return delivery.data().clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("delivery {delivery_id} never became {status}");
}

on_both_backends! {
    async fn deliveries_are_signed_filtered_and_logged(backend) {
        let app = TestApp::spawn_with(backend, delivering).await;
        let receiver = Receiver::start().await;
        let tenant = app.tenant("Hooks").await;
        let (id, secret) = endpoint(&app, &tenant, json!({ "url": receiver.url("/all"), "events": ["object.*"] })).await;
        let (_, _) = endpoint(&app, &tenant, json!({
            "url": receiver.url("/others"), "events": ["*"], "object_types": ["invoices"]
        })).await;

        app.post("/v1/object-types", &tenant.key, json!({ "name": "deals" })).await.expect(201);
        let object = app.post("/v1/objects/deals", &tenant.key, json!({ "properties": {} })).await;
        object.expect(201);
        let object_id = object.data()["id"].as_str().unwrap();

        let got = receiver.wait_for(1).await;
        let hit = &got[0];
        assert_eq!(hit.path, "/all", "the object_types filter keeps `invoices` endpoints out");
        assert!(hit.header("webhook-id").starts_with("msg_"));
        assert!(verifies(&secret, hit), "Standard Webhooks signature: {:?}", hit.headers);
        assert!(verifies_sha256(&secret, hit), "X-Plinth-Signature: {:?}", hit.headers);
        assert!(!verifies("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", hit));
        assert_eq!(hit.header("content-type"), "application/json");
        let body = hit.json();
        assert_eq!(body["type"], "object.created");
        assert_eq!(body["tenant_id"], tenant.id.as_str());
        assert!(body["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(body["data"]["object_type"], "deals");
        assert_eq!(body["data"]["object"]["id"], object_id);

        // The log: the delivery, its attempt, the endpoint's counters.
        let delivery_id = hit.header("webhook-id").to_string();
        let delivery = settled(&app, &tenant.key, &delivery_id, "success").await;
        assert_eq!(delivery["webhook_id"], id.as_str());
        assert_eq!(delivery["event_id"], body["id"]);
        assert_eq!(delivery["event_type"], "object.created");
        assert_eq!(delivery["attempt"], 1);
        assert_eq!(delivery["response_code"], 200);
        assert_eq!(delivery["payload"], body);
        assert!(delivery["delivered_at"].is_string());
        let attempts = delivery["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["status_code"], 200);
        assert!(attempts[0]["response_body"].as_str().unwrap().contains("received"));
        let listed = app.get(&format!("/v1/webhooks/{id}/deliveries?status=success"), &tenant.key).await;
        listed.expect(200);
        assert_eq!(listed.data()["total"], 1);
        assert_eq!(listed.data()["results"][0]["id"], delivery_id.as_str());
        assert_eq!(app.get(&format!("/v1/webhooks/{id}/deliveries?status=failed"), &tenant.key).await.data()["total"], 0);
        app.get(&format!("/v1/webhooks/{id}/deliveries?status=lost"), &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        let all = app.get(&format!("/v1/webhook-deliveries?webhook_id={id}"), &tenant.key).await;
        assert_eq!(all.data()["total"], 1);
        let webhook = app.get(&format!("/v1/webhooks/{id}"), &tenant.key).await;
        assert_eq!(webhook.data()["success_count"], 1);
        assert!(webhook.data()["last_delivery_at"].is_string());

        // A delivered one cannot be retried; another tenant sees none of it.
        app.post(&format!("/v1/webhook-deliveries/{delivery_id}/retry"), &tenant.key, json!({}))
            .await.expect_error(400, "CANNOT_RETRY");
        let other = app.tenant("Other").await;
        app.get(&format!("/v1/webhook-deliveries/{delivery_id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.get(&format!("/v1/webhooks/{id}/deliveries"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.post(&format!("/v1/webhook-deliveries/{delivery_id}/retry"), &other.key, json!({}))
            .await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/webhook-deliveries", &other.key).await.data()["total"], 0);
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["webhooks:read"] })).await;
        app.get("/v1/webhook-deliveries", &reader).await.expect(200);
        app.post(&format!("/v1/webhooks/{id}/test"), &reader, json!({})).await.expect_error(403, "INSUFFICIENT_SCOPE");
        assert_eq!(receiver.got().len(), 1, "one event, one matching endpoint, one request");
    }

    async fn failures_are_retried_with_one_id_then_dead_lettered(backend) {
        let app = TestApp::spawn_with(backend, delivering).await;
        let receiver = Receiver::start().await;
        let tenant = app.tenant("Flaky").await;
        let (id, secret) = endpoint(&app, &tenant, json!({ "url": receiver.url("/in"), "events": ["order.*"] })).await;

        // Two 500s, then a 200: three attempts of one message.
        receiver.answer(&[500, 503]);
        track(&app, &tenant, "order.paid", json!({ "n": 1 })).await;
        let got = receiver.wait_for(3).await;
        let ids: HashSet<&str> = got.iter().map(|g| g.header("webhook-id")).collect();
        assert_eq!(ids.len(), 1, "the same webhook-id on every attempt");
        assert!(got.iter().all(|g| verifies(&secret, g)));
        let delivery_id = got[0].header("webhook-id").to_string();
        let delivery = settled(&app, &tenant.key, &delivery_id, "success").await;
        assert_eq!(delivery["attempt"], 3);
        let codes: Vec<&Value> = delivery["attempts"].as_array().unwrap().iter().map(|a| &a["status_code"]).collect();
        assert_eq!(codes, vec![&json!(500), &json!(503), &json!(200)]);

        // Always failing: three attempts, then the dead-letter queue.
        receiver.always(500);
        track(&app, &tenant, "order.refunded", json!({})).await;
        let got = receiver.wait_for(6).await;
        let dead_id = got[3].header("webhook-id").to_string();
        let dead = settled(&app, &tenant.key, &dead_id, "failed").await;
        assert_eq!(dead["attempt"], 3);
        assert_eq!(dead["max_attempts"], 3);
        assert!(dead["last_error"].as_str().unwrap().contains("500"));
        let dlq = app.get("/v1/dlq", &tenant.key).await;
        dlq.expect(200);
        assert_eq!(dlq.data()["total"], 1);
        let message = &dlq.data()["results"][0];
        assert_eq!(message["kind"], "webhook_delivery");
        assert_eq!(message["reference_id"], dead_id.as_str());
        assert_eq!(message["summary"]["webhook_id"], id.as_str());
        assert_eq!(message["attempts"], 3);
        let msg_id = message["id"].as_str().unwrap().to_string();
        let webhook = app.get(&format!("/v1/webhooks/{id}"), &tenant.key).await;
        assert_eq!(webhook.data()["failure_count"], 5);
        assert_eq!(webhook.data()["consecutive_failures"], 3);
        assert_eq!(app.get("/v1/dlq", &app.tenant("Other").await.key).await.data()["total"], 0);

        // Retried from the queue once the receiver is back: delivered, and out of the queue.
        receiver.always(200);
        let retried = app.post(&format!("/v1/dlq/{msg_id}/retry"), &tenant.key, json!({})).await;
        retried.expect(200);
        assert_eq!(retried.data()["retried"], true);
        let done = settled(&app, &tenant.key, &dead_id, "success").await;
        assert_eq!(done["attempt"], 4);
        assert_eq!(receiver.got().last().unwrap().header("webhook-id"), dead_id);
        assert_eq!(app.get("/v1/dlq", &tenant.key).await.data()["total"], 0);
        app.post(&format!("/v1/dlq/{msg_id}/retry"), &tenant.key, json!({})).await.expect_error(404, "NOT_FOUND");

        // A dead one discarded stays failed; one retried by hand gets one more attempt.
        receiver.always(500);
        track(&app, &tenant, "order.void", json!({})).await;
        let got = receiver.wait_for(10).await;
        let third = got[7].header("webhook-id").to_string();
        settled(&app, &tenant.key, &third, "failed").await;
        receiver.always(200);
        let retried = app.post(&format!("/v1/webhooks/{id}/deliveries/{third}/retry"), &tenant.key, json!({})).await;
        retried.expect(200);
        assert_eq!(retried.data()["status"], "pending");
        assert_eq!(retried.data()["attempt"], 3);
        settled(&app, &tenant.key, &third, "success").await;
        app.post(&format!("/v1/webhooks/wh_01jd8x3k4m5n6p7q8r9s0t1v2w/deliveries/{third}/retry"), &tenant.key, json!({}))
            .await.expect_error(404, "NOT_FOUND");

        receiver.always(500);
        track(&app, &tenant, "order.lost", json!({})).await;
        let got = receiver.wait_for(14).await;
        let fourth = got[11].header("webhook-id").to_string();
        settled(&app, &tenant.key, &fourth, "failed").await;
        let dlq = app.get("/v1/dlq?kind=webhook_delivery", &tenant.key).await;
        let msg_id = dlq.data()["results"][0]["id"].as_str().unwrap().to_string();
        let discarded = app.delete(&format!("/v1/dlq/{msg_id}"), &tenant.key).await;
        discarded.expect(200);
        assert_eq!(discarded.data()["discarded"], true);
        assert_eq!(app.get("/v1/dlq", &tenant.key).await.data()["total"], 0);
        assert_eq!(app.get(&format!("/v1/webhook-deliveries/{fourth}"), &tenant.key).await.data()["status"], "failed");

        // After 30 days the log forgets finished deliveries, except those still dead-lettered.
        track(&app, &tenant, "order.kept", json!({})).await;
        let got = receiver.wait_for(17).await;
        let kept = got[14].header("webhook-id").to_string();
        settled(&app, &tenant.key, &kept, "failed").await;
        sqlx::query("UPDATE webhook_deliveries SET updated_at = '2020-01-01T00:00:00.000000Z'")
            .execute(app.app.db.pool()).await.unwrap();
        assert_eq!(plinth::webhooks::delivery::prune(&app.app).await.unwrap(), 4);
        assert_eq!(app.count("SELECT COUNT(*) FROM webhook_deliveries").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM webhook_attempts WHERE delivery_id NOT IN (SELECT id FROM webhook_deliveries)").await, 0);
        app.get(&format!("/v1/webhook-deliveries/{kept}"), &tenant.key).await.expect(200);
    }

    async fn this_servers_own_failures_never_count_against_an_endpoint(backend) {
        let app = TestApp::spawn_with(backend, |config| {
            delivering(config);
            config.webhooks.disable_after = 1;
        }).await;
        let receiver = Receiver::start().await;
        let tenant = app.tenant("Own fault").await;
        let (id, _) = endpoint(&app, &tenant, json!({ "url": receiver.url("/in"), "events": ["*"] })).await;
        // The endpoint's sealed secret no longer opens: this server cannot sign.
        sqlx::query("UPDATE webhooks SET secret = 'v1:AAAA' WHERE id = $1").bind(&id).execute(app.app.db.pool()).await.unwrap();
        track(&app, &tenant, "own.fault", json!({})).await;
        let failed = "SELECT COUNT(*) FROM webhook_attempts WHERE error LIKE '%signing secret%'";
        for _ in 0..300 {
            if app.count(failed).await >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(app.count(failed).await >= 1, "the failed attempt is logged");
        let webhook = app.get(&format!("/v1/webhooks/{id}"), &tenant.key).await;
        assert_eq!(webhook.data()["status"], "active", "one failure of ours does not disable it: {}", webhook.text);
        assert_eq!(app.count(&format!("SELECT consecutive_failures FROM webhooks WHERE id = '{id}'")).await, 0);
        assert!(receiver.got().is_empty());
    }

    async fn endpoints_that_keep_failing_are_disabled(backend) {
        let app = TestApp::spawn_with(backend, |config| {
            delivering(config);
            config.webhooks.disable_after = 2;
        }).await;
        let failing = Receiver::start().await;
        failing.always(500);
        let watcher = Receiver::start().await;
        let tenant = app.tenant("Down").await;
        let (id, _) = endpoint(&app, &tenant, json!({ "url": failing.url("/in"), "events": ["job.*"] })).await;
        let (_, _) = endpoint(&app, &tenant, json!({ "url": watcher.url("/ops"), "events": ["webhook.disabled"] })).await;

        track(&app, &tenant, "job.one", json!({})).await;
        let got = watcher.wait_for(1).await;
        let body = got[0].json();
        assert_eq!(body["type"], "webhook.disabled");
        assert_eq!(body["data"]["webhook_id"], id.as_str());
        assert_eq!(body["data"]["consecutive_failures"], 2);
        let webhook = app.get(&format!("/v1/webhooks/{id}"), &tenant.key).await;
        assert_eq!(webhook.data()["status"], "disabled");
        assert_eq!(webhook.data()["is_active"], false);
        assert_eq!(app.get("/v1/events/list?type=webhook.disabled", &tenant.key).await.data()["total"], 1);

        // The third attempt waits while the endpoint is disabled (its job, once due, finds it so
        // and leaves the delivery waiting); enabling it sends it.
        let delivery_id = failing.got()[0].header("webhook-id").to_string();
        let jobs_of = format!("SELECT COUNT(*) FROM jobs WHERE reference = '{delivery_id}'");
        for _ in 0..300 {
            if app.count(&jobs_of).await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(app.count(&jobs_of).await, 0, "the delivery waits without a job");
        assert_eq!(failing.got().len(), 2, "no attempt while the endpoint is disabled");
        assert_eq!(app.get(&format!("/v1/webhook-deliveries/{delivery_id}"), &tenant.key).await.data()["status"], "retrying");
        failing.always(200);
        app.patch(&format!("/v1/webhooks/{id}"), &tenant.key, json!({ "status": "active" })).await.expect(200);
        failing.wait_for(3).await;
        settled(&app, &tenant.key, &delivery_id, "success").await;
        let webhook = app.get(&format!("/v1/webhooks/{id}"), &tenant.key).await;
        assert_eq!(webhook.data()["consecutive_failures"], 0);
    }

    async fn a_rotated_secret_signs_beside_the_new_one(backend) {
        let app = TestApp::spawn_with(backend, delivering).await;
        let receiver = Receiver::start().await;
        let tenant = app.tenant("Rotate").await;
        let (id, old) = endpoint(&app, &tenant, json!({ "url": receiver.url("/in"), "events": ["*"] })).await;
        let rotated = app.post(&format!("/v1/webhooks/{id}/rotate-secret"), &tenant.key, json!({})).await;
        rotated.expect(200);
        let new = rotated.data()["secret"].as_str().unwrap().to_string();
        track(&app, &tenant, "a.b", json!({})).await;
        let got = receiver.wait_for(1).await;
        assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
        assert!(verifies(&new, &got[0]) && verifies(&old, &got[0]), "both secrets verify");
        assert!(verifies_sha256(&new, &got[0]) && !verifies_sha256(&old, &got[0]));
    }

    async fn test_sends_and_replays(backend) {
        let app = TestApp::spawn_with(backend, delivering).await;
        let receiver = Receiver::start().await;
        let tenant = app.tenant("Tests").await;
        let (id, secret) = endpoint(&app, &tenant, json!({ "url": receiver.url("/in"), "events": ["sale.*"] })).await;

        let tested = app.post(&format!("/v1/webhooks/{id}/test"), &tenant.key, json!({})).await;
        tested.expect(200);
        assert_eq!(tested.data()["success"], true);
        assert_eq!(tested.data()["status_code"], 200);
        assert!(tested.data()["response_time_ms"].is_i64());
        assert!(tested.data()["response_body"].as_str().unwrap().contains("received"));
        let got = receiver.got();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].json()["type"], "webhook.test");
        assert!(verifies(&secret, &got[0]));
        assert_eq!(got[0].header("webhook-id"), tested.data()["delivery_id"].as_str().unwrap());

        receiver.always(500);
        let failed = app.post(&format!("/v1/webhooks/{id}/test"), &tenant.key, json!({})).await;
        failed.expect(200);
        assert_eq!(failed.data()["success"], false);
        assert_eq!(failed.data()["status_code"], 500);
        assert!(failed.data()["error"].as_str().unwrap().contains("500"));
        let log = app.get(&format!("/v1/webhook-deliveries/{}", failed.data()["delivery_id"].as_str().unwrap()), &tenant.key).await;
        assert_eq!(log.data()["status"], "failed");
        assert_eq!(log.data()["event_type"], "webhook.test");
        assert_eq!(app.get("/v1/dlq", &tenant.key).await.data()["total"], 0, "a failed test is not dead-lettered");
        let webhook = app.get(&format!("/v1/webhooks/{id}"), &tenant.key).await;
        assert_eq!(webhook.data()["failure_count"], 0, "tests do not count against the endpoint");

        // A redirect is not followed: it is a failure.
        receiver.answer(&[302]);
        let redirected = app.post(&format!("/v1/webhooks/{id}/test"), &tenant.key, json!({})).await;
        assert_eq!(redirected.data()["success"], false);
        assert_eq!(redirected.data()["status_code"], 302);
        assert!(redirected.data()["error"].as_str().unwrap().contains("redirects are not followed"));

        // Replays: a past event again (a new webhook-id, the same event), or a payload of one's own.
        receiver.always(200);
        let event_id = track(&app, &tenant, "sale.closed", json!({ "amount": 5 })).await;
        let first = receiver.wait_for(4).await;
        let replayed = app.post(&format!("/v1/webhooks/{id}/replay"), &tenant.key, json!({ "event": event_id })).await;
        replayed.expect(201);
        assert_eq!(replayed.data()["status"], "pending");
        assert_eq!(replayed.data()["event_id"], event_id.as_str());
        let got = receiver.wait_for(5).await;
        assert_ne!(got[4].header("webhook-id"), first[3].header("webhook-id"));
        assert_eq!(got[4].body, first[3].body);
        let own = app.post(&format!("/v1/webhooks/{id}/replay"), &tenant.key, json!({ "payload": { "type": "sale.manual", "x": 1 } })).await;
        own.expect(201);
        assert_eq!(own.data()["event_type"], "sale.manual");
        let got = receiver.wait_for(6).await;
        assert_eq!(got[5].json(), json!({ "type": "sale.manual", "x": 1 }));

        for bad in [json!({}), json!({ "event": event_id, "payload": {} }), json!({ "payload": [1] }), json!({ "payload": {}, "event_type": "Bad" })] {
            let resp = app.post(&format!("/v1/webhooks/{id}/replay"), &tenant.key, bad.clone()).await;
            assert_eq!(resp.status, 422, "{bad}: {}", resp.text);
        }
        app.post(&format!("/v1/webhooks/{id}/replay"), &tenant.key, json!({ "event": "evt_01jd8x3k4m5n6p7q8r9s0t1v2w" }))
            .await.expect_error(404, "NOT_FOUND");
        let other = app.tenant("Other").await;
        app.post(&format!("/v1/webhooks/{id}/replay"), &other.key, json!({ "event": event_id })).await.expect_error(404, "NOT_FOUND");
        app.post(&format!("/v1/webhooks/{id}/test"), &other.key, json!({})).await.expect_error(404, "NOT_FOUND");
    }

    async fn slow_receivers_time_out(backend) {
        let app = TestApp::spawn_with(backend, |config| {
            delivering(config);
            config.webhooks.timeout_secs = 1;
        }).await;
        let receiver = Receiver::start().await;
        receiver.delay(Duration::from_secs(3));
        let tenant = app.tenant("Slow").await;
        let (id, _) = endpoint(&app, &tenant, json!({ "url": receiver.url("/in"), "events": ["*"] })).await;
        let tested = app.post(&format!("/v1/webhooks/{id}/test"), &tenant.key, json!({})).await;
        tested.expect(200);
        assert_eq!(tested.data()["success"], false);
        assert!(tested.data()["status_code"].is_null());
        assert!(tested.data()["error"].as_str().unwrap().contains("timed out"), "{}", tested.text);
    }

    async fn deleting_an_endpoint_with_deliveries_on_their_way_asks_first(backend) {
        let app = TestApp::spawn_with(backend, |config| {
            delivering(config);
            config.webhooks.retry_schedule = "1h".parse().unwrap();
        }).await;
        let receiver = Receiver::start().await;
        receiver.always(500);
        let tenant = app.tenant("Delete").await;
        let (id, _) = endpoint(&app, &tenant, json!({ "url": receiver.url("/in"), "events": ["*"] })).await;
        // Disabled, so the delivery waits.
        app.patch(&format!("/v1/webhooks/{id}"), &tenant.key, json!({ "status": "disabled" })).await.expect(200);
        track(&app, &tenant, "a.b", json!({})).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM webhook_deliveries").await, 0, "disabled endpoints get nothing queued");
        app.patch(&format!("/v1/webhooks/{id}"), &tenant.key, json!({ "status": "active" })).await.expect(200);
        track(&app, &tenant, "a.c", json!({})).await;
        receiver.wait_for(1).await;

        let asked = app.delete(&format!("/v1/webhooks/{id}"), &tenant.key).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        assert_eq!(asked.body["error"]["dependencies"][0]["type"], "webhook_deliveries");
        assert_eq!(asked.body["error"]["dependencies"][0]["count"], 1);
        app.delete_confirmed(&format!("/v1/webhooks/{id}"), &tenant.key).await.expect(200);
        assert_eq!(app.count("SELECT COUNT(*) FROM webhook_deliveries").await, 0);
        assert_eq!(app.count("SELECT COUNT(*) FROM webhook_attempts").await, 0);
        assert_eq!(app.count("SELECT COUNT(*) FROM jobs").await, 0, "nothing is left to send for a deleted endpoint");
        assert_eq!(receiver.got().len(), 1);
    }

    async fn private_targets_are_refused_after_resolution(backend) {
        // Created while private targets were allowed, sent after they no longer are.
        let app = TestApp::spawn_with(backend, delivering).await;
        let receiver = Receiver::start().await;
        let tenant = app.tenant("Ssrf").await;
        let (id, _) = endpoint(&app, &tenant, json!({ "url": receiver.url("/in"), "events": ["*"] })).await;
        let app = app.restart_with(|config| config.webhooks.retry_schedule = "100ms".parse().unwrap()).await;
        track(&app, &tenant, "a.b", json!({})).await;
        let mut listed = None;
        for _ in 0..300 {
            let page = app.get(&format!("/v1/webhooks/{id}/deliveries?status=failed"), &tenant.key).await;
            if page.data()["total"] == 1 {
                listed = Some(page);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let listed = listed.expect("the delivery failed");
        assert!(listed.data()["results"][0]["last_error"].as_str().unwrap().contains("private address"));
        assert!(receiver.got().is_empty());

        // A name that resolves to a private address (this machine's own name, or one of the
        // loopback names of /etc/hosts) passes the URL check and is refused when the connection
        // is made.
        let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        let mut host = None;
        for candidate in [own.as_str(), "ip6-localhost", "ip6-loopback", "localhost.localdomain"] {
            let resolved: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((candidate, 0)).await.map(|a| a.collect()).unwrap_or_default();
            if !candidate.is_empty() && !resolved.is_empty() && resolved.iter().all(|a| plinth::outbound::is_private(a.ip())) {
                host = Some(candidate.to_string());
                break;
            }
        }
        let host = host.expect("a name of this machine resolves to loopback only (the hostname or ip6-localhost)");
        let port = receiver.base.rsplit(':').next().unwrap();
        let (named, _) = endpoint(&app, &tenant, json!({ "url": format!("https://{host}:{port}/in"), "events": ["*"] })).await;
        let tested = app.post(&format!("/v1/webhooks/{named}/test"), &tenant.key, json!({})).await;
        tested.expect(200);
        assert_eq!(tested.data()["success"], false);
        assert!(tested.data()["error"].as_str().unwrap().contains("private address"), "{}", tested.text);
        assert!(receiver.got().is_empty());
    }
}

// A node killed (SIGKILL) while deliveries are in flight: after a restart every one arrives.
on_both_backends! {
    async fn deliveries_survive_a_killed_process(backend) {
        killed_mid_delivery(backend).await;
    }
}

async fn killed_mid_delivery(backend: Backend) {
    let storage = crate::common::Storage::fresh(backend).await;
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_secs(3));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(storage.cli_args())
            .env("PLINTH_ADMIN_KEY", crate::common::ADMIN_KEY)
            .env("PLINTH_MASTER_KEY", crate::common::MASTER_KEY)
            .env("PLINTH_OUTBOUND_ALLOW_PRIVATE", "true")
            .env("PLINTH_WEBHOOK_TIMEOUT_SECS", "4")
            .env("PLINTH_WEBHOOK_RETRY_SCHEDULE", "200ms")
            .env_remove("PLINTH_DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = command.spawn().unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().ok();
        child.wait().ok();
        panic!("the server did not start");
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let post = |path: &str, key: &str, body: Value| {
        let request = client.post(format!("{base}{path}")).bearer_auth(key).json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.json::<Value>().await.unwrap()
        }
    };

    let mut child = start();
    let tenant = post("/v1/tenants", crate::common::ADMIN_KEY, json!({ "name": "Crash" })).await;
    let key = tenant["data"]["api_key"].as_str().unwrap().to_string();
    post("/v1/webhooks", &key, json!({ "url": receiver.url("/in"), "events": ["*"] })).await;
    let mut expected = HashSet::new();
    for n in 0..5 {
        let tracked = post("/v1/events", &key, json!({ "event_type": "crash.test", "data": { "n": n } })).await;
        expected.insert(tracked["data"]["id"].as_str().unwrap().to_string());
    }
    // Killed while the receiver holds the requests, before any is answered.
    for _ in 0..200 {
        if !receiver.arrived().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before: HashSet<String> = receiver.arrived().iter().map(|g| g.header("webhook-id").to_string()).collect();
    assert!(!before.is_empty() && receiver.got().is_empty(), "killed mid-delivery");
    // Answers the dead process never read do not count.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    receiver.clear();
    receiver.delay(Duration::ZERO);

    let mut child = start();
    let mut delivered = HashSet::new();
    for _ in 0..600 {
        delivered = receiver.got().iter().map(|g| g.json()["id"].as_str().unwrap().to_string()).collect();
        if delivered == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(delivered, expected, "every event arrives after the restart");
    let after: HashSet<String> = receiver.got().iter().map(|g| g.header("webhook-id").to_string()).collect();
    assert_eq!(after.len(), 5);
    assert!(before.is_subset(&after), "re-sent deliveries keep their webhook-id");
    std::fs::remove_dir_all(&storage.data_dir).ok();
}

/// Two nodes on one PostgreSQL: each delivery is attempted by one of them, once per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_message_once() {
    let first = TestApp::spawn_with(Backend::Postgres, delivering).await;
    let second = first.another_node(delivering).await;
    let receiver = Receiver::start().await;
    let tenant = first.tenant("Nodes").await;
    endpoint(&first, &tenant, json!({ "url": receiver.url("/in"), "events": ["*"] })).await;
    for n in 0..20 {
        let node = if n % 2 == 0 { &first } else { &second };
        track(node, &tenant, "node.event", json!({ "n": n })).await;
    }
    receiver.wait_for(20).await;
    // Every job settled: nothing is left that could send one twice.
    for _ in 0..300 {
        if first.count("SELECT COUNT(*) FROM jobs").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first.count("SELECT COUNT(*) FROM jobs").await, 0);
    let got = receiver.got();
    let ids: HashSet<&str> = got.iter().map(|g| g.header("webhook-id")).collect();
    assert_eq!(got.len(), 20, "no delivery is sent twice");
    assert_eq!(ids.len(), 20);
}
