//! Analytics: a tenant's use by UTC day, each figure checked against what the test wrote (through
//! the API, or backdated rows for earlier days) and against the stored rows; the engine's
//! buckets, dimensions and filters; distinct users over a period; scopes and tenants.

use std::time::Duration;

use chrono::{Duration as Days, Utc};
use serde_json::{json, Value};

use crate::authz::end_user;
use crate::common::{TestApp, TestTenant};
use crate::on_both_backends;
use crate::receiver::Receiver;

/// The UTC day `offset` days before the test began (read once: a test running across midnight
/// still speaks of the same days).
fn day(offset: i64) -> String {
    static TODAY: std::sync::OnceLock<chrono::NaiveDate> = std::sync::OnceLock::new();
    (*TODAY.get_or_init(|| Utc::now().date_naive()) - Days::days(offset)).to_string()
}

async fn exec(app: &TestApp, sql: &str, binds: &[&str]) {
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    query.execute(app.app.db.pool()).await.expect(sql);
}

/// The entry of `days` for `date`.
fn on<'a>(days: &'a Value, date: &str) -> &'a Value {
    days.as_array().unwrap().iter().find(|d| d["date"] == date).unwrap_or_else(|| panic!("no day {date}"))
}

/// AI calls kept for earlier days: (days ago, provider, model, input, output, nano dollars).
const AI_CALLS: [(i64, &str, &str, i64, i64, i64); 3] = [
    (3, "openai", "gpt-4o", 100, 50, 1_500_000_000),
    (3, "anthropic", "claude", 10, 5, 500_000_000),
    (0, "openai", "gpt-4o", 7, 3, 250_000_000),
];

async fn ai_calls(app: &TestApp, tenant: &TestTenant) {
    for (n, (ago, provider, model, input, output, cost)) in AI_CALLS.iter().enumerate() {
        let at = format!("{}T12:00:00.000000Z", day(*ago));
        sqlx::query(
            "INSERT INTO ai_usage (id, tenant_id, key_id, provider, model, operation, input_tokens, output_tokens, \
             cost_nano_usd, latency_ms, status, created_at) VALUES ($1, $2, NULL, $3, $4, 'chat', $5, $6, $7, 20, 200, $8)",
        )
        .bind(format!("aiu_test{n}"))
        .bind(&tenant.id)
        .bind(*provider)
        .bind(*model)
        .bind(*input)
        .bind(*output)
        .bind(*cost)
        .bind(at)
        .execute(app.app.db.pool())
        .await
        .unwrap();
    }
}

on_both_backends! {
    async fn analytics_count_a_tenants_use_by_day(backend) {
        let app = TestApp::spawn_with(backend, |config| config.outbound_allow_private = true).await;
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        let receiver = Receiver::start().await;
        receiver.always(200);
        app.post("/v1/webhooks", &key, json!({ "url": receiver.url("/in"), "events": ["checkout.*"] })).await.expect(201);

        // Today: 3 objects created, 1 updated, 1 deleted; 3 events tracked; 2 end users active.
        app.post("/v1/object-types", &key, json!({ "name": "notes" })).await.expect(201);
        app.post("/v1/object-types/notes/properties", &key, json!({ "name": "title", "data_type": "string" })).await.expect(201);
        let mut ids = Vec::new();
        for title in ["a", "b", "c"] {
            let created = app.post("/v1/objects/notes", &key, json!({ "properties": { "title": title } })).await;
            created.expect(201);
            ids.push(created.data()["id"].as_str().unwrap().to_string());
        }
        app.patch(&format!("/v1/objects/notes/{}", ids[0]), &key, json!({ "properties": { "title": "a2" } })).await.expect(200);
        app.delete(&format!("/v1/objects/notes/{}", ids[1]), &key).await.expect(200);
        for kind in ["checkout.started", "checkout.completed", "signup.started"] {
            app.post("/v1/events", &key, json!({ "event_type": kind, "data": {} })).await.expect(201);
        }
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        let bob = end_user(&app, &tenant, "bob@example.com").await;
        for token in [&ann.token, &bob.token, &ann.token] {
            app.get("/v1/auth/user", token).await.expect(200);
        }
        // The two checkout events reach the receiver.
        for _ in 0..300 {
            if app.count("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'success'").await == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(receiver.arrived().len(), 2);

        // Earlier days, kept as the platform keeps them: 1,234 calls yesterday, ann active two
        // days ago, one delivery failed two days ago, AI calls three days ago and today.
        exec(&app, "INSERT INTO usage_counters (tenant_id, metric, period, count) VALUES ($1, 'requests', $2, 1234)", &[&tenant.id, &day(1)]).await;
        exec(&app, "INSERT INTO active_users (tenant_id, day, user_id) VALUES ($1, $2, $3)", &[&tenant.id, &day(2), &ann.id]).await;
        let failed_at = format!("{}T08:00:00.000000Z", day(2));
        exec(
            &app,
            "UPDATE webhook_deliveries SET status = 'failed', created_at = $1 WHERE id = \
             (SELECT MIN(id) FROM webhook_deliveries WHERE tenant_id = $2)",
            &[&failed_at, &tenant.id],
        )
        .await;
        ai_calls(&app, &tenant).await;
        // Another tenant's use counts only for it.
        let other = app.tenant("other").await;
        app.post("/v1/events", &other.key, json!({ "event_type": "checkout.started", "data": {} })).await.expect(201);

        let overview = app.get("/v1/analytics?period=7d", &key).await;
        overview.expect(200);
        let data = overview.data();
        assert_eq!(data["from"], json!(day(6)));
        assert_eq!(data["to"], json!(day(0)));
        assert_eq!(data["timezone"], json!("UTC"));
        let days = &data["days"];
        assert_eq!(days.as_array().unwrap().len(), 7);
        let today = on(days, &day(0));
        // Every request so far is written before the read: the stored count is the answer.
        let calls_today = app
            .count(&format!("SELECT count FROM usage_counters WHERE tenant_id = '{}' AND metric = 'requests' AND period = '{}'", tenant.id, day(0)))
            .await;
        // 14 authenticated requests above (sign-ups and sign-ins carry no credential) and this one.
        assert_eq!(calls_today, 15);
        assert_eq!(today["api_calls"], json!(calls_today));
        assert_eq!(on(days, &day(1))["api_calls"], json!(1234));
        assert_eq!(data["totals"]["api_calls"], json!(calls_today + 1234));
        assert_eq!(today["objects_written"], json!(5));
        let events_today = app.count(&format!("SELECT COUNT(*) FROM events WHERE tenant_id = '{}'", tenant.id)).await;
        assert!(events_today >= 8, "5 object events, 3 tracked, the users': {events_today}");
        assert_eq!(today["events"], json!(events_today));
        assert_eq!(today["active_users"], json!(2));
        assert_eq!(on(days, &day(2))["active_users"], json!(1));
        assert_eq!(data["totals"]["active_users"], json!(2), "distinct over the period, not 3");
        assert_eq!(today["deliveries"], json!(1));
        assert_eq!(on(days, &day(2))["deliveries"], json!(1));
        assert_eq!(on(days, &day(2))["deliveries_failed"], json!(1));
        assert_eq!(data["totals"]["deliveries"], json!(2));
        assert_eq!(data["totals"]["deliveries_failed"], json!(1));
        assert_eq!(on(days, &day(3))["ai_requests"], json!(2));
        assert_eq!(on(days, &day(3))["ai_tokens"], json!(165));
        assert_eq!(on(days, &day(3))["ai_spend_usd"], json!("2"));
        assert_eq!(today["ai_spend_usd"], json!("0.25"));
        assert_eq!(on(days, &day(5))["ai_spend_usd"], json!("0"), "money is a decimal string");
        assert_eq!(data["totals"]["ai_spend_usd"], json!("2.25"));
        assert_eq!(data["totals"]["ai_requests"], json!(3));
        assert_eq!(on(days, &day(5))["api_calls"], json!(0), "quiet days are zeros");
        assert_eq!(data["totals"]["files"], json!(0));

        // A period that does not reach back two days leaves those out.
        let short = app.get("/v1/analytics?period=today", &key).await;
        short.expect(200);
        assert_eq!(short.data()["days"].as_array().unwrap().len(), 1);
        assert_eq!(short.data()["totals"]["deliveries_failed"], json!(0));
        assert_eq!(short.data()["totals"]["ai_spend_usd"], json!("0.25"));
        let range = app.get(&format!("/v1/analytics?from={}&to={}", day(3), day(2)), &key).await;
        range.expect(200);
        assert_eq!(range.data()["totals"]["ai_requests"], json!(2));
        assert_eq!(range.data()["totals"]["active_users"], json!(1));

        // The other tenant sees only its own.
        let theirs = app.get("/v1/analytics?period=7d", &other.key).await;
        assert_eq!(theirs.data()["totals"]["objects_written"], json!(0));
        assert_eq!(theirs.data()["totals"]["ai_requests"], json!(0));
        assert_eq!(theirs.data()["totals"]["events"], json!(1));
    }

    async fn the_engine_buckets_groups_and_filters(backend) {
        let app = TestApp::spawn(backend).await;
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        app.post("/v1/object-types", &key, json!({ "name": "notes" })).await.expect(201);
        app.post("/v1/object-types", &key, json!({ "name": "tasks" })).await.expect(201);
        for (kind, n) in [("notes", 3), ("tasks", 2)] {
            for _ in 0..n {
                app.post(&format!("/v1/objects/{kind}"), &key, json!({ "properties": {} })).await.expect(201);
            }
        }
        for kind in ["checkout.started", "checkout.started", "checkout.completed", "signup.started"] {
            app.post("/v1/events", &key, json!({ "event_type": kind, "data": {} })).await.expect(201);
        }
        ai_calls(&app, &tenant).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        let bob = end_user(&app, &tenant, "bob@example.com").await;
        app.get("/v1/auth/user", &ann.token).await.expect(200);
        app.get("/v1/auth/user", &bob.token).await.expect(200);
        for ago in [1, 2, 8] {
            exec(&app, "INSERT INTO active_users (tenant_id, day, user_id) VALUES ($1, $2, $3)", &[&tenant.id, &day(ago), &ann.id]).await;
        }

        // By object type, one bucket for the period.
        let by_type = app.get("/v1/analytics/engine?metric=objects_written&group_by=total,object_type&period=7d", &key).await;
        by_type.expect(200);
        let rows = by_type.data()["rows"].as_array().unwrap().clone();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], json!({ "bucket": "total", "dimension": "object_type", "key": "notes", "value": 3 }));
        assert_eq!(rows[1]["key"], json!("tasks"));
        assert_eq!(rows[1]["value"], json!(2));
        assert_eq!(by_type.data()["total"], json!(5));
        assert_eq!(by_type.data()["group_by"], json!(["total", "object_type"]));
        let tasks = app.get("/v1/analytics/engine?metric=objects_written&object_type=tasks&action=created&group_by=total", &key).await;
        assert_eq!(tasks.data()["total"], json!(2));
        assert_eq!(tasks.data()["filters"], json!({ "action": "created", "object_type": "tasks" }));

        // Tracked events by type, a prefix filter; empty days filled.
        let events = app.get("/v1/analytics/engine?metric=events&event_type=checkout.*&group_by=day,event_type&period=3d", &key).await;
        events.expect(200);
        let rows = events.data()["rows"].as_array().unwrap().clone();
        assert_eq!(rows.len(), 6, "3 days x 2 event types: {rows:?}");
        let today: Vec<_> = rows.iter().filter(|r| r["bucket"] == day(0)).collect();
        assert_eq!(today[0]["key"], json!("checkout.completed"));
        assert_eq!(today[0]["value"], json!(1));
        assert_eq!(today[1]["key"], json!("checkout.started"));
        assert_eq!(today[1]["value"], json!(2));
        assert!(rows.iter().filter(|r| r["bucket"] == day(2)).all(|r| r["value"] == 0));
        assert_eq!(events.data()["total"], json!(3));
        // `%` and `_` are no wildcards.
        let literal = app.get("/v1/analytics/engine?metric=events&event_type=check%25.*&group_by=total", &key).await;
        assert_eq!(literal.data()["total"], json!(0));

        // AI spend by model; tokens by month.
        let spend = app.get("/v1/analytics/engine?metric=ai_spend_usd&group_by=total,model", &key).await;
        spend.expect(200);
        let rows = spend.data()["rows"].as_array().unwrap().clone();
        assert_eq!(rows[0]["key"], json!("claude"));
        assert_eq!(rows[0]["value"], json!("0.5"));
        assert_eq!(rows[1]["key"], json!("gpt-4o"));
        assert_eq!(rows[1]["value"], json!("1.75"));
        let openai = app.get("/v1/analytics/engine?metric=ai_tokens&provider=openai&group_by=total", &key).await;
        assert_eq!(openai.data()["total"], json!(160));

        // Active users: a week's distinct users, not the sum of its days.
        let weekly = app.get("/v1/analytics/engine?metric=active_users&group_by=total&period=7d", &key).await;
        weekly.expect(200);
        assert_eq!(weekly.data()["total"], json!(2));
        assert_eq!(weekly.data()["rows"][0]["value"], json!(2));
        let daily = app.get("/v1/analytics/engine?metric=active_users&period=9d", &key).await;
        let values: Vec<i64> = daily.data()["rows"].as_array().unwrap().iter().map(|r| r["value"].as_i64().unwrap()).collect();
        assert_eq!(values, vec![1, 0, 0, 0, 0, 0, 1, 1, 2]);
        let months = app.get("/v1/analytics/engine?metric=active_users&group_by=month&period=60d", &key).await;
        months.expect(200);
        let rows = months.data()["rows"].as_array().unwrap().clone();
        assert!(rows.len() == 2 || rows.len() == 3, "60 days span 2 or 3 months: {rows:?}");
        assert_eq!(rows.last().unwrap()["bucket"], json!(day(0)[..7]));
        let weeks = app.get("/v1/analytics/engine?metric=objects_written&group_by=week&period=14d", &key).await;
        let rows = weeks.data()["rows"].as_array().unwrap().clone();
        assert!(rows.len() == 2 || rows.len() == 3);
        assert_eq!(rows.last().unwrap()["value"], json!(5));
        assert_eq!(rows[0]["bucket"], json!(day(13)), "the first bucket starts with the period");

        // Refused: what the metric does not know, bad periods, two buckets; scopes; tenants.
        for (query, field) in [
            ("metric=visits", "metric"),
            ("metric=api_calls&group_by=model", "group_by"),
            ("metric=events&group_by=day,week", "group_by"),
            ("metric=events&model=x", "model"),
            ("metric=events&period=400d", "period"),
            ("metric=events&period=0d", "period"),
            ("metric=events&from=2026-01-02&to=2026-01-01", "from"),
            ("metric=events&from=2026-01-01", "to"),
            ("metric=events&period=7d&from=2026-01-01&to=2026-01-02", "period"),
            ("metric=events&from=%2B262143-12-31&to=%2B262143-12-31", "from"),
            ("metric=events&from=1969-12-31&to=1970-01-01", "from"),
        ] {
            let refused = app.get(&format!("/v1/analytics/engine?{query}"), &key).await;
            refused.expect_error(422, "VALIDATION_FAILED");
            assert!(refused.body["error"]["details"][field].is_array(), "{query}: {}", refused.body);
        }
        app.get("/v1/analytics?period=1y", &key).await.expect_error(422, "VALIDATION_FAILED");
        let (_, reader) = app.key(&tenant, json!({ "name": "r", "scopes": ["read"] })).await;
        app.get("/v1/analytics", &reader).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, analyst) = app.key(&tenant, json!({ "name": "a", "scopes": ["analytics:read"] })).await;
        app.get("/v1/analytics/engine?metric=events", &analyst).await.expect(200);
        // Analytics are the tenant's staff's: no role opens them to end users.
        app.get("/v1/analytics", &ann.token).await.expect_error(403, "FORBIDDEN");
        crate::authz::put(&app, "/v1/roles/authenticated/permissions", &key, json!({ "permissions": ["analytics:read"] })).await;
        app.get("/v1/analytics/engine?metric=events", &ann.token).await.expect_error(403, "FORBIDDEN");
        let other = app.tenant("other").await;
        let theirs = app.get("/v1/analytics/engine?metric=objects_written&group_by=total", &other.key).await;
        assert_eq!(theirs.data()["total"], json!(0));
    }
}
