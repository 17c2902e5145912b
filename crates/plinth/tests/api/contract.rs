//! The contract on every failure path: envelope, request ids, status codes.

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::common::ADMIN_KEY;

both_backends! {
    async fn nul_characters_are_refused_alike_on_both_databases(app) {
        let tenant = app.tenant("Nul").await;
        let body = serde_json::json!({ "label": "a\u{0}b" });
        app.post("/v1/keys", &tenant.key, body).await.expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/webhooks/wh_%00", &tenant.key).await.expect_error(400, "BAD_REQUEST");
        app.get("/v1/keys?cursor=%00", &tenant.key).await.expect_error(400, "BAD_REQUEST");
        // An escaped backslash before `u0000` is text, not a NUL.
        let body = serde_json::json!({ "label": "a\\u0000b" });
        let created = app.post("/v1/keys", &tenant.key, body).await;
        created.expect(201);
        assert_eq!(created.data()["key"]["label"], "a\\u0000b");
    }

    async fn unknown_route_is_404_in_the_envelope(app) {
        app.get("/v1/nothing-here", ADMIN_KEY).await.expect_error(404, "NOT_FOUND");
        app.get_public("/nope").await.expect_error(404, "NOT_FOUND");
    }

    async fn wrong_method_is_405_in_the_envelope(app) {
        let resp = app.send(app.request(Method::PUT, "/health", None)).await;
        resp.expect_error(405, "METHOD_NOT_ALLOWED");
        let resp = app.send(app.request(Method::PUT, "/v1/keys", Some(ADMIN_KEY))).await;
        resp.expect_error(405, "METHOD_NOT_ALLOWED");
    }

    async fn malformed_json_is_400(app) {
        let request = app
            .request(Method::POST, "/v1/tenants", Some(ADMIN_KEY))
            .header("content-type", "application/json")
            .body("{\"name\": ");
        app.send(request).await.expect_error(400, "BAD_REQUEST");
    }

    async fn wrong_content_type_is_415(app) {
        let request = app
            .request(Method::POST, "/v1/tenants", Some(ADMIN_KEY))
            .header("content-type", "text/plain")
            .body("{\"name\": \"Acme\"}");
        app.send(request).await.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    }

    async fn body_over_the_limit_is_413_naming_the_limit(app) {
        // A raw request declaring a body over 1 MiB: the answer comes before any body is sent,
        // so the test does not race the server closing the connection.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.base.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/tenants HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 1048577\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
        assert!(body["error"]["message"].as_str().unwrap().contains("1048576"));
        // Nothing was created.
        let list = app.get("/v1/tenants", ADMIN_KEY).await;
        assert_eq!(list.data()["total"], 0);
    }

    async fn wrong_shape_and_unknown_fields_are_422(app) {
        let resp = app.post("/v1/tenants", ADMIN_KEY, json!({ "name": 42 })).await;
        resp.expect_error(422, "VALIDATION_FAILED");
        let resp = app.post("/v1/tenants", ADMIN_KEY, json!({ "name": "Acme", "colour": "red" })).await;
        resp.expect_error(422, "VALIDATION_FAILED");
        assert!(resp.body["error"]["message"].as_str().unwrap().contains("colour"));
    }

    async fn request_ids_are_kept_or_made(app) {
        let request = app.request(Method::GET, "/health", None).header("x-request-id", "client-trace-42");
        let resp = app.send(request).await;
        assert_eq!(resp.header("x-request-id"), Some("client-trace-42"));
        assert_eq!(resp.body["request_id"], "client-trace-42");

        let too_long = "a".repeat(129);
        let request = app.request(Method::GET, "/health", None).header("x-request-id", too_long.as_str());
        let resp = app.send(request).await;
        let id = resp.header("x-request-id").unwrap();
        assert!(id.starts_with("req_"), "an invalid client id is replaced, got {id}");
        assert_eq!(resp.body["request_id"], id);

        let resp = app.get_public("/nope").await;
        assert!(resp.header("x-request-id").unwrap().starts_with("req_"));
    }

    async fn missing_or_bad_credentials_are_401(app) {
        let resp = app.send(app.request(Method::GET, "/v1/keys", None)).await;
        resp.expect_error(401, "UNAUTHORIZED");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
        app.get("/v1/keys", "plk_live_doesnotexist").await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/keys", "garbage").await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/keys", "a.b.c").await.expect_error(401, "UNAUTHORIZED");
        let request = app.request(Method::GET, "/v1/keys", None).header("authorization", "Basic Zm9vOmJhcg==");
        app.send(request).await.expect_error(401, "UNAUTHORIZED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_admin_key_is_refused_at_start() {
    let storage = crate::common::Storage::fresh(crate::common::Backend::Sqlite).await;
    let mut config = storage.config();
    config.admin_key = Some(plinth::config::Secret::new("too-short"));
    let error = plinth::Server::start(config).await.err().expect("start refused");
    assert!(error.to_string().contains("at least 32"), "{error}");
}

both_backends! {
    async fn values_are_checked_as_the_document_states_them(app) {
        let tenant = app.tenant("Shapes").await;
        // Labels: blanks around are trimmed, a control character inside is refused.
        let created = app.post("/v1/keys", &tenant.key, json!({ "label": " \t reporting \n" })).await;
        created.expect(201);
        assert_eq!(created.data()["key"]["label"], "reporting");
        app.post("/v1/keys", &tenant.key, json!({ "label": "a\u{7}b" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/keys", &tenant.key, json!({ "label": "\u{3000}\u{85}" })).await.expect_error(422, "VALIDATION_FAILED");
        // Other values are taken as given: never trimmed.
        let spaced = app.post("/v1/keys", &tenant.key, json!({ "ip_allowlist": [" 10.0.0.0/8"] })).await;
        spaced.expect_error(422, "VALIDATION_FAILED");
        let network = app.post("/v1/keys", &tenant.key, json!({ "ip_allowlist": ["10.1.2.3/8", "::1"] })).await;
        network.expect(201);
        assert_eq!(network.data()["key"]["ip_allowlist"], json!(["10.0.0.0/8", "::1/128"]));
        app.post("/v1/events", &tenant.key, json!({ "event_type": " order.paid" })).await.expect_error(422, "VALIDATION_FAILED");
        // Amounts are plain decimals.
        for bad in ["1_000", "+5", " 25", "1e3", "-1"] {
            let resp = app.send(app.request(Method::PUT, "/v1/ai/budget", Some(&tenant.key)).json(&json!({ "ai_budget_usd": bad }))).await;
            assert_eq!(resp.status, 422, "{bad}: {}", resp.text);
        }
        let budget = app.send(app.request(Method::PUT, "/v1/ai/budget", Some(&tenant.key)).json(&json!({ "ai_budget_usd": "25.50" }))).await;
        budget.expect(200);
        assert_eq!(budget.data()["ai_budget_usd"], "25.5");
        // The stream's `types` are comma-separated without spaces; a `Last-Event-ID` must be text.
        app.get("/v1/events/stream?types=object.*,%20user.*", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/events/stream?types=object.*,,user.*", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        let header = reqwest::header::HeaderValue::from_bytes(b"evt_\xff").unwrap();
        let resp = app.send(app.request(Method::GET, "/v1/events/stream", Some(&tenant.key)).header("last-event-id", header)).await;
        resp.expect_error(422, "VALIDATION_FAILED");
        // With no provider to try, embeddings and images are the tenant's settings, not an outage.
        for (path, body) in [("/v1/ai/embeddings", json!({ "input": "hello" })), ("/v1/ai/image", json!({ "prompt": "a cat" }))] {
            let resp = app.post(path, &tenant.key, body).await;
            resp.expect_error(422, "VALIDATION_FAILED");
            assert!(resp.data().is_null() && resp.text.contains("provider"), "{path}: {}", resp.text);
        }
    }
}
