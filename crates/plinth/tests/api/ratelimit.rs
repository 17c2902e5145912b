//! Rate limits: headers on every credentialed answer, 429 past the limit, tiers and overrides,
//! public routes by client address, and one shared count across nodes on PostgreSQL.

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, Resp, Storage, TestApp, ADMIN_KEY};

fn header_u64(resp: &Resp, name: &str) -> u64 {
    resp.header(name).unwrap_or_else(|| panic!("missing {name}: {}", resp.text)).parse().unwrap()
}

both_backends! {
    async fn answers_carry_the_limit_and_429_follows_it(app) {
        let tenant = app.tenant("Limited").await;
        let (_, key) = app.key(&tenant, json!({ "rate_limit": 5 })).await;
        let now = chrono::Utc::now().timestamp() as u64;
        for expected_remaining in (0..5).rev() {
            let resp = app.get("/v1/webhooks", &key).await;
            resp.expect(200);
            assert_eq!(header_u64(&resp, "x-ratelimit-limit"), 5);
            assert_eq!(header_u64(&resp, "x-ratelimit-remaining"), expected_remaining);
            let reset = header_u64(&resp, "x-ratelimit-reset");
            assert!(reset >= now && reset <= now + 120, "reset {reset} is a unix time within the window");
        }
        let refused = app.get("/v1/keys", &key).await;
        refused.expect_error(429, "RATE_LIMITED");
        let retry_after = header_u64(&refused, "retry-after");
        assert!((1..=60).contains(&retry_after));
        let error = &refused.body["error"];
        assert_eq!(error["retry_after"], retry_after);
        assert_eq!(error["limit"], 5);
        assert_eq!(error["remaining"], 0);
        assert!(error["reset_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(header_u64(&refused, "x-ratelimit-remaining"), 0);
        // Errors count too, and carry the headers.
        let denied = app.post("/v1/keys", &key, json!({ "scopes": ["nope"] })).await;
        denied.expect_error(429, "RATE_LIMITED");
        // Another key of the tenant has its own bucket.
        let other = app.get("/v1/keys", &tenant.key).await;
        other.expect(200);
        assert_eq!(header_u64(&other, "x-ratelimit-limit"), 60);
    }

    async fn tier_comes_from_the_key_else_the_tenant(app) {
        let resp = app.post("/v1/tenants", ADMIN_KEY, json!({ "name": "Pro", "tier": "pro" })).await;
        let key = resp.data()["api_key"].as_str().unwrap().to_string();
        let first = app.get("/v1/keys", &key).await;
        assert_eq!(header_u64(&first, "x-ratelimit-limit"), 5_000);
        // The pro tier's 30% burst is on top of the rate.
        assert_eq!(header_u64(&first, "x-ratelimit-remaining"), 6_499);
        // A new tier holds from the next request on.
        let tenant_id = resp.data()["id"].as_str().unwrap();
        app.patch(&format!("/v1/tenants/{tenant_id}"), ADMIN_KEY, json!({ "tier": "agency" })).await.expect(200);
        assert_eq!(header_u64(&app.get("/v1/keys", &key).await, "x-ratelimit-limit"), 20_000);
        let created = app.post("/v1/keys", &key, json!({ "rate_limit_tier": "starter" })).await;
        let starter = created.data()["token"].as_str().unwrap();
        let resp = app.get("/v1/keys", starter).await;
        assert_eq!(header_u64(&resp, "x-ratelimit-limit"), 1_000);
        // Tokens draw from their key's bucket (a slow one, so that nothing refills meanwhile).
        let created = app.post("/v1/keys", &key, json!({ "rate_limit": 3 })).await;
        let slow = created.data()["token"].as_str().unwrap();
        // 3 per minute plus the agency tier's 50% burst: a bucket of 4.
        assert_eq!(header_u64(&app.get("/v1/keys", slow).await, "x-ratelimit-remaining"), 3);
        let token = app.post_public("/v1/token", json!({ "api_key": slow })).await;
        let resp = app.get("/v1/keys", token.data()["token"].as_str().unwrap()).await;
        assert_eq!(header_u64(&resp, "x-ratelimit-limit"), 3);
        assert_eq!(header_u64(&resp, "x-ratelimit-remaining"), 2);
        // The platform admin is not limited.
        let admin = app.get("/v1/tenants", ADMIN_KEY).await;
        assert!(admin.header("x-ratelimit-limit").is_none());
    }

    async fn refused_credentials_are_limited_by_client_address(app) {
        let tenant = app.tenant("Refused").await;
        let (_, fenced) = app.key(&tenant, json!({ "ip_allowlist": ["192.0.2.0/24"] })).await;
        let mut last = None;
        for _ in 0..121 {
            last = Some(app.get("/v1/keys", &fenced).await);
        }
        let last = last.unwrap();
        last.expect_error(429, "RATE_LIMITED");
        assert_eq!(header_u64(&last, "x-ratelimit-limit"), 120);
        // Each refusal was audited until the limit, then no more.
        let log = app.get("/v1/audit-logs?action=auth.refused", &tenant.key).await;
        assert_eq!(log.data()["total"], 120);
    }

    async fn token_exchange_is_limited_by_client_address(app) {
        let mut last = None;
        for _ in 0..61 {
            last = Some(app.post_public("/v1/token", json!({ "api_key": "plk_live_guessing" })).await);
        }
        let last = last.unwrap();
        last.expect_error(429, "RATE_LIMITED");
        assert_eq!(header_u64(&last, "x-ratelimit-limit"), 60);
        // Public probes are not limited.
        let health = app.get_public("/health").await;
        health.expect(200);
        assert!(health.header("x-ratelimit-limit").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_share_one_limit() {
    let storage = Storage::fresh(Backend::Postgres).await;
    let first = TestApp::start(storage.clone(), storage.config()).await;
    let second = TestApp::start(storage.clone(), storage.config()).await;
    let tenant = first.tenant("Shared").await;
    let (_, key) = first.key(&tenant, json!({ "rate_limit": 10 })).await;
    let mut allowed = 0;
    for i in 0..16 {
        let node = if i % 2 == 0 { &first } else { &second };
        let resp = node.send(node.request(Method::GET, "/v1/webhooks", Some(&key))).await;
        match resp.status {
            200 => allowed += 1,
            429 => assert_eq!(resp.error_code(), "RATE_LIMITED"),
            other => panic!("unexpected {other}: {}", resp.text),
        }
    }
    assert_eq!(allowed, 10, "both nodes draw from one bucket of 10");
}

/// On PostgreSQL a node draws a lease of 1% of a bucket from the shared row and spends it from
/// memory: one draw per lease, and the other node's draws come out of the same row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_spends_a_lease_of_the_shared_bucket() {
    let storage = Storage::fresh(Backend::Postgres).await;
    let first = TestApp::start(storage.clone(), storage.config()).await;
    let second = TestApp::start(storage.clone(), storage.config()).await;
    let tenant = first.tenant_on("Leased", "starter").await;
    // 300 a minute and the starter tier's 20% burst: a bucket of 360, leases of 3.
    let (key_id, key) = first.key(&tenant, json!({ "rate_limit": 300 })).await;
    let row = || async {
        let row: (f64, i64, f64) =
            sqlx::query_as("SELECT tokens, allowed, updated_at FROM rate_buckets WHERE bucket = $1")
                .bind(format!("key:{key_id}"))
                .fetch_one(first.app.db.pool())
                .await
                .unwrap();
        row
    };
    let remaining = |resp: &crate::common::Resp| header_u64(resp, "x-ratelimit-remaining");
    let one = first.get("/v1/webhooks", &key).await;
    one.expect(200);
    let (tokens, taken, drawn_at) = row().await;
    assert_eq!(taken, 3, "the first draw leased 3 tokens");
    assert!((357.0..358.0).contains(&tokens), "{tokens}");
    assert_eq!(remaining(&one), 359);
    // The lease's other two tokens are spent without touching the row.
    for expected in [358, 357] {
        let resp = first.get("/v1/webhooks", &key).await;
        resp.expect(200);
        assert_eq!(remaining(&resp), expected);
    }
    assert_eq!(row().await.2, drawn_at, "spent from the lease, not drawn");
    // The other node leases from the same row.
    // The other node leases from the same row: what the first left, refilled at 5 a second
    // since, less 3.
    let refilled = |tokens: f64, from: f64, to: f64| (tokens + (to - from) * 5.0).min(360.0);
    second.get("/v1/webhooks", &key).await.expect(200);
    let (after_second, taken, second_draw) = row().await;
    assert_eq!(taken, 3);
    assert!((after_second - (refilled(tokens, drawn_at, second_draw) - 3.0)).abs() < 1e-6, "{after_second}");
    // A spent lease draws again.
    first.get("/v1/webhooks", &key).await.expect(200);
    let (after_third, taken, third_draw) = row().await;
    assert_eq!(taken, 3);
    assert!((after_third - (refilled(after_second, second_draw, third_draw) - 3.0)).abs() < 1e-6, "{after_third}");
}
