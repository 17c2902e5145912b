//! Access tokens: issue, use, rotate, revoke; revocation of the key behind them.

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;
use sha2::Sha256;

use crate::both_backends;
use crate::common::MASTER_KEY;

/// Signs claims with the server's token key, as derived from the test master key.
fn sign_as_server(claims: &serde_json::Value) -> String {
    use base64::Engine;
    let master = base64::engine::general_purpose::STANDARD.decode(MASTER_KEY).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&master).unwrap();
    mac.update(b"plinth/access-token-hs256");
    let secret = mac.finalize().into_bytes();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&secret)).unwrap()
}

both_backends! {
    async fn token_exchange_and_use(app) {
        let tenant = app.tenant("Tokens").await;
        let (key_id, secret) = app.key(&tenant, json!({ "scopes": ["api-keys:read"] })).await;
        let resp = app.post_public("/v1/token", json!({ "api_key": secret })).await;
        resp.expect(201);
        let data = resp.data();
        assert_eq!(data["token_type"], "Bearer");
        assert_eq!(data["expires_in"], 3600);
        assert!(data["jti"].as_str().unwrap().starts_with("jti_"));
        let token = data["token"].as_str().unwrap();

        // The claims carry the tenant, the key, the scopes and the jti.
        let payload = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let claims: serde_json::Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["tid"], tenant.id.as_str());
        assert_eq!(claims["sub"], key_id.as_str());
        assert_eq!(claims["scopes"], json!(["api-keys:read"]));
        assert_eq!(claims["jti"], data["jti"]);

        let keys = app.get("/v1/keys", token).await;
        keys.expect(200);
        assert_eq!(keys.data()["total"], 2);
        // The token holds the key's scopes, no more.
        app.post("/v1/keys", token, json!({})).await.expect_error(403, "INSUFFICIENT_SCOPE");

        app.post_public("/v1/token", json!({ "api_key": "plk_live_nope" })).await.expect_error(401, "UNAUTHORIZED");
        app.post_public("/v1/token", json!({ "api_key": "not a key" })).await.expect_error(401, "UNAUTHORIZED");
        app.post_public("/v1/token", json!({})).await.expect_error(422, "VALIDATION_FAILED");
    }

    async fn revoked_tokens_are_refused(app) {
        let tenant = app.tenant("Revoke").await;
        let token = app.post_public("/v1/token", json!({ "api_key": tenant.key })).await.data()["token"]
            .as_str().unwrap().to_string();
        app.get("/v1/keys", &token).await.expect(200);
        let resp = app.delete("/v1/token", &token).await;
        resp.expect(200);
        assert_eq!(resp.data()["revoked"], true);
        let refused = app.get("/v1/keys", &token).await;
        refused.expect_error(401, "UNAUTHORIZED");
        assert!(refused.body["error"]["message"].as_str().unwrap().contains("revoked"));
        // The key itself still works.
        app.get("/v1/keys", &tenant.key).await.expect(200);
        // Logging out needs a token, not a key.
        app.delete("/v1/token", &tenant.key).await.expect_error(400, "BAD_REQUEST");
    }

    async fn rotating_a_token_revokes_the_old_one(app) {
        let tenant = app.tenant("Rotate").await;
        let first = app.post_public("/v1/token", json!({ "api_key": tenant.key })).await;
        let old = first.data()["token"].as_str().unwrap().to_string();
        let rotated = app.send(app.request(Method::PATCH, "/v1/token", Some(&old))).await;
        rotated.expect(200);
        let new = rotated.data()["token"].as_str().unwrap();
        assert_ne!(rotated.data()["jti"], first.data()["jti"]);
        app.get("/v1/keys", &old).await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/keys", new).await.expect(200);
        app.send(app.request(Method::PATCH, "/v1/token", Some(&tenant.key))).await.expect_error(400, "BAD_REQUEST");
    }

    async fn revoking_by_jti_needs_the_scope_and_stays_in_the_tenant(app) {
        let a = app.tenant("A").await;
        let b = app.tenant("B").await;
        let a_token = app.post_public("/v1/token", json!({ "api_key": a.key })).await;
        let jti = a_token.data()["jti"].as_str().unwrap();
        let b_token = app.post_public("/v1/token", json!({ "api_key": b.key })).await;
        let b_token = b_token.data()["token"].as_str().unwrap();
        // B cannot revoke A's token: it is not found in B.
        let resp = app.send(app.request(Method::DELETE, "/v1/token", Some(b_token)).json(&json!({ "jti": jti }))).await;
        resp.expect_error(404, "NOT_FOUND");
        app.get("/v1/keys", a_token.data()["token"].as_str().unwrap()).await.expect(200);
        // A key without `tokens:delete` cannot revoke by jti.
        let (_, reader) = app.key(&a, json!({ "scopes": ["read"] })).await;
        let resp = app.send(app.request(Method::DELETE, "/v1/token", Some(&reader)).json(&json!({ "jti": jti }))).await;
        resp.expect_error(403, "INSUFFICIENT_SCOPE");
        let resp = app.send(app.request(Method::DELETE, "/v1/token", Some(&a.key)).json(&json!({ "jti": jti }))).await;
        resp.expect(200);
        app.get("/v1/keys", a_token.data()["token"].as_str().unwrap()).await.expect_error(401, "UNAUTHORIZED");
    }

    async fn revoking_the_key_revokes_its_tokens(app) {
        let tenant = app.tenant("Cascade").await;
        let (key_id, secret) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        let token = app.post_public("/v1/token", json!({ "api_key": secret })).await.data()["token"]
            .as_str().unwrap().to_string();
        app.get("/v1/webhooks", &token).await.expect(200);
        app.delete(&format!("/v1/keys/{key_id}"), &tenant.key).await.expect(200);
        app.get("/v1/webhooks", &token).await.expect_error(401, "UNAUTHORIZED");
    }

    async fn expired_and_forged_tokens_are_refused(app) {
        let tenant = app.tenant("Forged").await;
        let issued = app.post_public("/v1/token", json!({ "api_key": tenant.key })).await;
        let jti = issued.data()["jti"].as_str().unwrap();
        let now = chrono::Utc::now().timestamp();
        let claims = |iat: i64, exp: i64| json!({
            "iss": "plinth", "sub": tenant.key_id, "tid": tenant.id, "scopes": ["*"], "jti": jti, "iat": iat, "exp": exp
        });
        // A correctly signed token for a live jti works ...
        app.get("/v1/keys", &sign_as_server(&claims(now, now + 600))).await.expect(200);
        // ... until it expires.
        let expired = app.get("/v1/keys", &sign_as_server(&claims(now - 7200, now - 3600))).await;
        expired.expect_error(401, "UNAUTHORIZED");
        assert!(expired.body["error"]["message"].as_str().unwrap().contains("expired"));
        // A token signed with another secret is refused.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256), &claims(now, now + 600), &EncodingKey::from_secret(b"guess")).unwrap();
        app.get("/v1/keys", &forged).await.expect_error(401, "UNAUTHORIZED");
        // A jti the server never issued is refused even when signed correctly.
        let mut unknown = claims(now, now + 600);
        unknown["jti"] = json!("jti_01h455vb4pex5vsknk084sn02q");
        app.get("/v1/keys", &sign_as_server(&unknown)).await.expect_error(401, "UNAUTHORIZED");
        // Claims pointing at another tenant are refused.
        let other = app.tenant("Other").await;
        let mut moved = claims(now, now + 600);
        moved["tid"] = json!(other.id);
        app.get("/v1/keys", &sign_as_server(&moved)).await.expect_error(401, "UNAUTHORIZED");
    }

    async fn tokens_survive_a_restart(app) {
        let tenant = app.tenant("Restart").await;
        let token = app.post_public("/v1/token", json!({ "api_key": tenant.key })).await.data()["token"]
            .as_str().unwrap().to_string();
        let app = app.restart().await;
        app.get("/v1/keys", &token).await.expect(200);
        app.delete("/v1/token", &token).await.expect(200);
        let app = app.restart().await;
        app.get("/v1/keys", &token).await.expect_error(401, "UNAUTHORIZED");
    }
}
