//! Idempotency keys: one execution, replayed answers, conflicts, concurrency.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{Resp, TestApp, TestTenant};

async fn keyed(app: &TestApp, method: Method, path: &str, tenant: &TestTenant, key: &str, body: Value) -> Resp {
    let request = app.request(method, path, Some(&tenant.key)).header("idempotency-key", key).json(&body);
    app.send(request).await
}

both_backends! {
    async fn another_credential_never_gets_a_replay(app) {
        let tenant = app.tenant("Replay scope").await;
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        let body = json!({ "label": "secret-bearing" });
        let first = keyed(&app, Method::POST, "/v1/keys", &tenant, "guessable-1", body.clone()).await;
        first.expect(201);
        // The same key and body from a read-only key is its own request: refused, no secret.
        let request = app.request(Method::POST, "/v1/keys", Some(&reader)).header("idempotency-key", "guessable-1").json(&body);
        let other = app.send(request).await;
        other.expect_error(403, "INSUFFICIENT_SCOPE");
        assert!(!other.text.contains(first.data()["token"].as_str().unwrap()));
    }

    async fn a_retry_replays_the_first_answer(app) {
        let tenant = app.tenant("Idem").await;
        let body = json!({ "label": "once" });
        let first = keyed(&app, Method::POST, "/v1/keys", &tenant, "create-once-1", body.clone()).await;
        first.expect(201);
        assert!(first.header("idempotent-replayed").is_none());
        let again = keyed(&app, Method::POST, "/v1/keys", &tenant, "create-once-1", body.clone()).await;
        again.expect(201);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.header("original-request-id"), first.header("x-request-id"));
        assert_eq!(again.body["request_id"].as_str(), again.header("x-request-id"));
        assert_eq!(again.data()["key"]["id"], first.data()["key"]["id"]);
        assert_eq!(again.data()["token"], first.data()["token"]);
        // The kept answer holds the new key's secret: it is stored encrypted.
        let secret = first.data()["token"].as_str().unwrap();
        let (kept,): (String,) = sqlx::query_as("SELECT response_body FROM idempotency_keys WHERE idempotency_key = 'create-once-1'")
            .fetch_one(app.app.db.pool()).await.unwrap();
        assert!(kept.starts_with("v1:") && !kept.contains(secret), "{kept}");
        assert_eq!(app.get("/v1/keys", &tenant.key).await.data()["total"], 2, "one key was created");

        // The same key with another body, or on another route, is a conflict.
        let other = keyed(&app, Method::POST, "/v1/keys", &tenant, "create-once-1", json!({ "label": "twice" })).await;
        other.expect_error(409, "IDEMPOTENCY_CONFLICT");
        let path = format!("/v1/keys/{}", first.data()["key"]["id"].as_str().unwrap());
        keyed(&app, Method::PATCH, &path, &tenant, "create-once-1", body.clone())
            .await
            .expect_error(409, "IDEMPOTENCY_CONFLICT");

        // The query is part of the request.
        keyed(&app, Method::POST, "/v1/keys?x=1", &tenant, "create-once-1", body.clone())
            .await
            .expect_error(409, "IDEMPOTENCY_CONFLICT");

        // A new key runs anew.
        keyed(&app, Method::POST, "/v1/keys", &tenant, "create-once-2", body).await.expect(201);
        assert_eq!(app.get("/v1/keys", &tenant.key).await.data()["total"], 3);
    }

    async fn keys_are_scoped_per_tenant(app) {
        let a = app.tenant("A").await;
        let b = app.tenant("B").await;
        let from_a = keyed(&app, Method::POST, "/v1/keys", &a, "shared-key", json!({})).await;
        let from_b = keyed(&app, Method::POST, "/v1/keys", &b, "shared-key", json!({})).await;
        from_a.expect(201);
        from_b.expect(201);
        assert!(from_b.header("idempotent-replayed").is_none());
        assert_eq!(from_b.data()["key"]["tenant_id"], b.id.as_str());
    }

    async fn deletes_and_refusals_are_replayed_too(app) {
        let tenant = app.tenant("Replays").await;
        let (id, _) = app.key(&tenant, json!({})).await;
        let path = format!("/v1/keys/{id}");
        keyed(&app, Method::DELETE, &path, &tenant, "delete-1", Value::Null).await.expect(200);
        let again = keyed(&app, Method::DELETE, &path, &tenant, "delete-1", Value::Null).await;
        again.expect(200);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        // Without the key, the second delete finds nothing.
        app.delete(&path, &tenant.key).await.expect_error(404, "NOT_FOUND");

        let invalid = json!({ "scopes": ["nope"] });
        keyed(&app, Method::POST, "/v1/keys", &tenant, "bad-1", invalid.clone()).await.expect_error(422, "VALIDATION_FAILED");
        let replayed = keyed(&app, Method::POST, "/v1/keys", &tenant, "bad-1", invalid).await;
        replayed.expect_error(422, "VALIDATION_FAILED");
        assert_eq!(replayed.header("idempotent-replayed"), Some("true"));

        let too_long = "k".repeat(256);
        keyed(&app, Method::POST, "/v1/keys", &tenant, &too_long, json!({})).await.expect_error(400, "BAD_REQUEST");
    }

    async fn concurrent_duplicates_execute_once(app) {
        let tenant = app.tenant("Race").await;
        let mut requests = Vec::new();
        for _ in 0..20 {
            let request = app
                .request(Method::POST, "/v1/keys", Some(&tenant.key))
                .header("idempotency-key", "race-1")
                .json(&json!({ "label": "racer" }));
            requests.push(app.send(request));
        }
        let answers = futures::future::join_all(requests).await;
        let mut ids = std::collections::HashSet::new();
        for answer in &answers {
            match answer.status {
                201 => {
                    ids.insert(answer.data()["key"]["id"].as_str().unwrap().to_string());
                }
                409 => assert_eq!(answer.error_code(), "IDEMPOTENCY_CONFLICT"),
                other => panic!("unexpected {other}: {}", answer.text),
            }
        }
        assert_eq!(ids.len(), 1, "every success names the one key created");
        assert_eq!(app.get("/v1/keys", &tenant.key).await.data()["total"], 2, "one execution");
    }
}
