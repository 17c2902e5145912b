//! Tenant public keys and the JWTs tenants sign with them.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::both_backends;
use crate::common::fixture;

fn sign(alg: Algorithm, private_pem: &str, claims: &serde_json::Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
}

fn claims(sub: &str, lifetime_secs: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({ "sub": sub, "iat": now, "exp": now + lifetime_secs })
}

both_backends! {
    async fn tokens_with_an_id_are_accepted_once_and_keys_may_demand_an_audience(app) {
        let tenant = app.tenant("Replays").await;
        let private = fixture("rsa2048.key.pem");
        let uploaded = app.post("/v1/keys/public", &tenant.key, json!({
            "pem": fixture("rsa2048.pub.pem"), "audience": "https://api.example.com", "issuer": "billing-service"
        })).await;
        uploaded.expect(201);
        assert_eq!(uploaded.data()["audience"], "https://api.example.com");
        let now = chrono::Utc::now().timestamp();
        let with = |extra: serde_json::Value| {
            let mut body = json!({ "sub": tenant.id, "iat": now, "exp": now + 600 });
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            sign(Algorithm::RS256, &private, &body)
        };
        let good = json!({ "aud": "https://api.example.com", "iss": "billing-service" });
        // Audience and issuer are demanded: absent or other values are refused.
        app.get("/v1/keys", &with(json!({}))).await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/keys", &with(json!({ "aud": "https://other.example.com", "iss": "billing-service" }))).await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/keys", &with(json!({ "aud": "https://api.example.com", "iss": "someone-else" }))).await.expect_error(401, "UNAUTHORIZED");
        let reusable = with(good.clone());
        app.get("/v1/keys", &reusable).await.expect(200);
        app.get("/v1/keys", &reusable).await.expect(200);
        // A token with a `jti` works once.
        let mut once = good.clone();
        once["jti"] = json!("req-0001");
        let token = with(once);
        app.get("/v1/keys", &token).await.expect(200);
        let replayed = app.get("/v1/keys", &token).await;
        replayed.expect_error(401, "UNAUTHORIZED");
        assert!(replayed.text.contains("used already"), "{}", replayed.text);
        let mut next = good;
        next["jti"] = json!("req-0002");
        app.get("/v1/keys", &with(next)).await.expect(200);
        app.post("/v1/keys/public", &tenant.key, json!({ "pem": fixture("ec256.pub.pem"), "audience": "" }))
            .await.expect_error(422, "VALIDATION_FAILED");
    }

    async fn rsa_signed_tokens_are_accepted(app) {
        let tenant = app.tenant("Signer").await;
        let resp = app.post("/v1/keys/public", &tenant.key, json!({ "pem": fixture("rsa2048.pub.pem"), "label": "laptop" })).await;
        resp.expect(201);
        assert_eq!(resp.data()["algorithm"], "RS256");
        assert_eq!(resp.data()["key_bits"], 2048);
        assert_eq!(resp.data()["fingerprint"].as_str().unwrap().len(), 64);
        let id = resp.data()["id"].as_str().unwrap();
        assert!(id.starts_with("pubkey_"));

        let private = fixture("rsa2048.key.pem");
        let token = sign(Algorithm::RS256, &private, &claims(&tenant.id, 600));
        let keys = app.get("/v1/keys", &token).await;
        keys.expect(200);
        assert_eq!(keys.data()["total"], 1);

        // `exp` more than an hour ahead is refused; so is an expired token and another subject.
        app.get("/v1/keys", &sign(Algorithm::RS256, &private, &claims(&tenant.id, 7200)))
            .await
            .expect_error(401, "UNAUTHORIZED");
        app.get("/v1/keys", &sign(Algorithm::RS256, &private, &claims(&tenant.id, -600)))
            .await
            .expect_error(401, "UNAUTHORIZED");
        let other = app.tenant("Other").await;
        app.get("/v1/keys", &sign(Algorithm::RS256, &private, &claims(&other.id, 600)))
            .await
            .expect_error(401, "UNAUTHORIZED");
        let no_exp = json!({ "sub": tenant.id });
        app.get("/v1/keys", &sign(Algorithm::RS256, &private, &no_exp)).await.expect_error(401, "UNAUTHORIZED");

        // Listing and fetching.
        let list = app.get("/v1/keys/public", &tenant.key).await;
        list.expect(200);
        assert_eq!(list.data()["total"], 1);
        app.get(&format!("/v1/keys/public/{id}"), &tenant.key).await.expect(200);
        app.get(&format!("/v1/keys/public/{id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.delete(&format!("/v1/keys/public/{id}"), &other.key).await.expect_error(404, "NOT_FOUND");

        // The same key twice is a conflict.
        app.post("/v1/keys/public", &tenant.key, json!({ "pem": fixture("rsa2048.pub.pem") }))
            .await
            .expect_error(409, "CONFLICT");

        // Deleting the key stops its tokens at once.
        app.delete(&format!("/v1/keys/public/{id}"), &tenant.key).await.expect(200);
        app.get("/v1/keys", &token).await.expect_error(401, "UNAUTHORIZED");
    }

    async fn ec_p256_signed_tokens_are_accepted_with_their_scopes(app) {
        let tenant = app.tenant("EC").await;
        let resp = app.post("/v1/keys/public", &tenant.key, json!({
            "pem": fixture("ec256.pub.pem"), "scopes": ["api-keys:read"]
        })).await;
        resp.expect(201);
        assert_eq!(resp.data()["algorithm"], "ES256");
        let token = sign(Algorithm::ES256, &fixture("ec256.key.pem"), &claims(&tenant.id, 300));
        app.get("/v1/keys", &token).await.expect(200);
        app.post("/v1/keys", &token, json!({})).await.expect_error(403, "INSUFFICIENT_SCOPE");
        // A token signed by a key the tenant never uploaded is refused.
        let rsa = sign(Algorithm::RS256, &fixture("rsa2048.key.pem"), &claims(&tenant.id, 300));
        app.get("/v1/keys", &rsa).await.expect_error(401, "UNAUTHORIZED");
    }

    async fn weak_or_wrong_keys_are_refused(app) {
        let tenant = app.tenant("Picky").await;
        for (pem, hint) in [
            (fixture("rsa1024.pub.pem"), "2048"),
            (fixture("ec384.pub.pem"), "P-256"),
            (fixture("rsa2048.key.pem"), "private"),
            ("not a pem".to_string(), "PEM"),
            (fixture("rsa2048.pub.pem").replace("PUBLIC KEY", "CERTIFICATE"), "label"),
        ] {
            let resp = app.post("/v1/keys/public", &tenant.key, json!({ "pem": pem })).await;
            resp.expect_error(422, "VALIDATION_FAILED");
            assert!(resp.body["error"]["message"].as_str().unwrap().contains(hint), "{}", resp.text);
        }
        let (_, limited) = app.key(&tenant, json!({ "scopes": ["public-keys:write"] })).await;
        let resp = app.post("/v1/keys/public", &limited, json!({ "pem": fixture("rsa2048.pub.pem") })).await;
        resp.expect_error(422, "VALIDATION_FAILED");
        assert_eq!(app.get("/v1/keys/public", &tenant.key).await.data()["total"], 0);
    }
}
