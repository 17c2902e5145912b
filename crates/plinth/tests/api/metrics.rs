//! `GET /metrics`: off without a token, refused without the right one, and with it the
//! requests by route template, the pool, the jobs, deliveries and realtime connections, with no
//! tenant's data in any label.

use reqwest::Method;
use serde_json::json;

use crate::common::TestApp;
use crate::on_both_backends;

const TOKEN: &str = "metrics-token-for-the-tests-0123456789";

on_both_backends! {
    async fn metrics_are_off_by_default(backend) {
        let app = TestApp::spawn(backend).await;
        let tenant = app.tenant("Quiet").await;
        app.get_public("/metrics").await.expect_error(404, "NOT_FOUND");
        // An API key is not the metrics token.
        app.get("/metrics", &tenant.key).await.expect_error(404, "NOT_FOUND");
    }
}

on_both_backends! {
    async fn metrics_count_requests_jobs_and_connections_without_tenant_data(backend) {
        let app = TestApp::spawn_with(backend, |config| {
            config.metrics_token = Some(plinth::config::Secret::new(TOKEN));
            config.outbound_allow_private = true;
        })
        .await;
        let tenant = app.tenant("Measured").await;
        app.get_public("/metrics").await.expect_error(401, "UNAUTHORIZED");
        app.get("/metrics", &tenant.key).await.expect_error(401, "UNAUTHORIZED");

        app.post("/v1/object-types", &tenant.key, json!({ "name": "orders" })).await.expect(201);
        for _ in 0..3 {
            app.post("/v1/objects/orders", &tenant.key, json!({ "properties": {} })).await.expect(201);
        }
        app.get("/v1/objects/orders/obj_nothing", &tenant.key).await.expect(404);
        app.get("/v1/no-such-route", &tenant.key).await.expect(404);
        // An endpoint nobody listens on: its deliveries wait in the jobs table.
        let hook = app.post("/v1/webhooks", &tenant.key, json!({ "url": "http://127.0.0.1:9/hook", "events": ["custom.*"] })).await;
        hook.expect(201);
        app.post("/v1/events", &tenant.key, json!({ "event_type": "custom.measured" })).await.expect(201);
        let stream = app.request(Method::GET, "/v1/events/stream", Some(&tenant.key)).send().await.unwrap();
        assert_eq!(stream.status(), 200);

        let scraped = app.send(app.request(Method::GET, "/metrics", Some(TOKEN))).await;
        scraped.expect(200);
        assert!(scraped.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
        let text = &scraped.text;
        for line in [
            "plinth_http_requests_total{method=\"POST\",route=\"/v1/objects/{object_type_id}\",status=\"201\"} 3",
            "plinth_http_requests_total{method=\"POST\",route=\"/v1/object-types\",status=\"201\"} 1",
            "plinth_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
            "plinth_db_pool_max_connections 5",
            "plinth_realtime_connections{kind=\"sse\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(text.contains("plinth_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/objects/{object_type_id}\",le=\"0.005\"}"), "{text}");
        assert!(text.contains("plinth_jobs{kind=\"webhook.deliver\",state="), "{text}");
        assert!(text.contains("plinth_jobs_oldest_age_seconds{kind=\"webhook.deliver\"}"), "{text}");
        assert!(text.contains("plinth_webhook_deliveries{outcome="), "{text}");
        assert!(text.contains("# TYPE plinth_ai_calls gauge") && text.contains("# TYPE plinth_db_pool_connections gauge"), "{text}");
        // No tenant's id, key, object id or event name in any label.
        assert!(!text.contains(tenant.id.as_str()) && !text.contains("tn_") && !text.contains("obj_"), "{text}");
        assert!(!text.contains("custom.measured") && !text.contains(&tenant.key), "{text}");
        drop(stream);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_metrics_token_is_refused_at_start() {
    let storage = crate::common::Storage::fresh(crate::common::Backend::Sqlite).await;
    let mut config = storage.config();
    config.metrics_token = Some(plinth::config::Secret::new("short-token"));
    let error = plinth::Server::start(config).await.err().expect("start refused");
    assert!(error.to_string().contains("PLINTH_METRICS_TOKEN must be at least 32"), "{error}");
}
