//! Reports: funnel, leaderboard, pipeline and time series, each checked against numbers the test
//! computes itself from the objects it wrote; time zones across a daylight saving change; end
//! users counted only over their own rows; bad requests refused.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::associations::owners_of;
use crate::authz::end_user;
use crate::both_backends;
use crate::common::{TestApp, TestTenant};

const STAGES: [&str; 5] = ["lead", "qualified", "won", "lost", "archived"];
const OWNERS: [&str; 4] = ["ana", "bo", "cy", "di"];

#[derive(Debug, Clone)]
struct Deal {
    stage: &'static str,
    owner: &'static str,
    amount: i64,
    closed_at: DateTime<Utc>,
}

/// 80 deals, spread pseudo-randomly (fixed seed) over stages but `archived`, owners, amounts and
/// 20 days around the end of daylight saving time in New York (2026-11-01).
fn deals() -> Vec<Deal> {
    let mut state: u64 = 0x5eed;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let start = Utc.with_ymd_and_hms(2026, 10, 22, 0, 0, 0).unwrap();
    (0..80)
        .map(|_| Deal {
            stage: STAGES[next(4) as usize],
            owner: OWNERS[next(4) as usize],
            amount: 10 * (1 + next(50) as i64),
            closed_at: start + Duration::minutes(next(20 * 24 * 60) as i64),
        })
        .collect()
}

async fn deals_type(app: &TestApp, tenant: &TestTenant) {
    app.post("/v1/object-types", &tenant.key, json!({ "name": "deals" })).await.expect(201);
    let properties = [
        json!({ "name": "stage", "data_type": "enum", "enum_values": STAGES }),
        json!({ "name": "owner", "data_type": "string", "is_indexed": true }),
        json!({ "name": "amount", "data_type": "integer" }),
        json!({ "name": "closed_at", "data_type": "datetime" }),
        json!({ "name": "closed_on", "data_type": "date" }),
        json!({ "name": "note", "data_type": "text" }),
    ];
    for body in properties {
        app.post("/v1/object-types/deals/properties", &tenant.key, body).await.expect(201);
    }
}

fn properties(deal: &Deal) -> Value {
    json!({
        "stage": deal.stage, "owner": deal.owner, "amount": deal.amount,
        "closed_at": deal.closed_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "closed_on": deal.closed_at.format("%Y-%m-%d").to_string(),
        "note": "n",
    })
}

async fn write(app: &TestApp, token: &str, deals: &[Deal]) {
    for chunk in deals.chunks(100) {
        let objects: Vec<Value> = chunk.iter().map(|d| json!({ "properties": properties(d) })).collect();
        app.post("/v1/objects/deals/batch/create", token, json!({ "objects": objects })).await.expect(201);
    }
}

both_backends! {
    async fn reports_match_what_the_objects_hold(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        deals_type(&app, &tenant).await;
        let deals = deals();
        write(&app, &key, &deals).await;

        // Pipeline: each enum stage in order (archived holds none), counts and summed amounts.
        let pipeline = app.post("/v1/reports/pipeline", &key, json!({
            "object_type_id": "deals", "stage_property": "stage", "value_property": "amount"
        })).await;
        pipeline.expect(200);
        let stages = pipeline.data()["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 5);
        for (stage, got) in STAGES.iter().zip(stages) {
            let count = deals.iter().filter(|d| d.stage == *stage).count() as i64;
            let sum: i64 = deals.iter().filter(|d| d.stage == *stage).map(|d| d.amount).sum();
            assert_eq!(got["stage"], json!(stage));
            assert_eq!(got["count"], json!(count), "{stage}");
            assert_eq!(got["value"].as_f64().unwrap(), sum as f64, "{stage}");
        }
        assert_eq!(pipeline.data()["total"], json!(80));

        // Leaderboard: owners by summed amount over the won and lost deals, top 3.
        let filters = json!([{ "property": "stage", "op": "in", "value": ["won", "lost"] }]);
        let board = app.post("/v1/reports/leaderboard", &key, json!({
            "object_type_id": "deals", "group_by": "owner", "aggregation": "sum",
            "value_property": "amount", "limit": 3, "filters": filters
        })).await;
        board.expect(200);
        let mut sums: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for deal in deals.iter().filter(|d| d.stage == "won" || d.stage == "lost") {
            let entry = sums.entry(deal.owner).or_default();
            entry.0 += deal.amount;
            entry.1 += 1;
        }
        let mut expected: Vec<(&str, (i64, i64))> = sums.into_iter().collect();
        expected.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
        let entries = board.data()["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        for (rank, ((owner, (sum, count)), got)) in expected.iter().zip(entries).enumerate() {
            assert_eq!(got["rank"], json!(rank + 1));
            assert_eq!(got["key"], json!(owner));
            assert_eq!(got["value"].as_f64().unwrap(), *sum as f64);
            assert_eq!(got["count"], json!(count));
        }
        let counts = app.post("/v1/reports/leaderboard", &key, json!({ "object_type_id": "deals", "group_by": "stage" })).await;
        let top = &counts.data()["entries"][0];
        let most = STAGES.iter().map(|s| deals.iter().filter(|d| d.stage == *s).count()).max().unwrap();
        assert_eq!(top["count"], json!(most));
        assert_eq!(top["value"].as_f64().unwrap(), most as f64);

        // Funnel: every deal, then those of 200 or more, then those also won.
        let funnel = app.post("/v1/reports/funnel", &key, json!({
            "object_type_id": "deals",
            "steps": [
                { "name": "all" },
                { "name": "big", "filters": [{ "property": "amount", "op": "gte", "value": 200 }] },
                { "name": "won", "filters": [{ "property": "stage", "op": "eq", "value": "won" }] }
            ]
        })).await;
        funnel.expect(200);
        let big = deals.iter().filter(|d| d.amount >= 200).count() as i64;
        let won = deals.iter().filter(|d| d.amount >= 200 && d.stage == "won").count() as i64;
        let steps = funnel.data()["steps"].as_array().unwrap();
        assert_eq!(steps.iter().map(|s| s["count"].as_i64().unwrap()).collect::<Vec<_>>(), vec![80, big, won]);
        let rate = |part: i64, whole: i64| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0;
        assert_eq!(steps[1]["conversion_rate"].as_f64().unwrap(), rate(big, 80));
        assert_eq!(steps[2]["conversion_rate"].as_f64().unwrap(), rate(won, big));
        assert_eq!(steps[2]["overall_rate"].as_f64().unwrap(), rate(won, 80));

        // Time series: New York days across the change of 2026-11-01 (a 25-hour day), from
        // 2026-10-20 (no deals yet: zeros) to 2026-11-12.
        let series = app.post("/v1/reports/timeseries", &key, json!({
            "object_type_id": "deals", "date_property": "closed_at", "interval": "day",
            "aggregation": "sum", "value_property": "amount", "timezone": "America/New_York",
            "start_date": "2026-10-20", "end_date": "2026-11-12"
        })).await;
        series.expect(200);
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let mut by_day: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let end = tz.with_ymd_and_hms(2026, 11, 12, 0, 0, 0).unwrap().with_timezone(&Utc);
        for deal in deals.iter().filter(|d| d.closed_at < end) {
            let day = deal.closed_at.with_timezone(&tz).format("%Y-%m-%d").to_string();
            let entry = by_day.entry(day).or_default();
            entry.0 += 1;
            entry.1 += deal.amount;
        }
        let points = series.data()["series"].as_array().unwrap();
        assert_eq!(points.len(), 23);
        assert_eq!(points[0]["period_start"], json!("2026-10-20T00:00:00-04:00"));
        assert_eq!(points[0]["count"], json!(0));
        let change = points.iter().find(|p| p["period_start"] == json!("2026-11-01T00:00:00-04:00")).unwrap();
        assert_eq!(change["period_end"], json!("2026-11-02T00:00:00-05:00"));
        for point in points {
            let day = &point["period_start"].as_str().unwrap()[..10];
            let (count, sum) = by_day.get(day).copied().unwrap_or_default();
            assert_eq!(point["count"], json!(count), "{day}");
            assert_eq!(point["value"].as_f64().unwrap(), sum as f64, "{day}");
        }
        let total: i64 = points.iter().map(|p| p["count"].as_i64().unwrap()).sum();
        assert_eq!(total, by_day.values().map(|v| v.0).sum::<i64>());

        // By week over the date property (weeks start on Monday), counting.
        let weekly = app.post("/v1/reports/timeseries", &key, json!({
            "object_type_id": "deals", "date_property": "closed_on", "interval": "week",
            "start_date": "2026-10-19", "end_date": "2026-11-16", "timezone": "UTC"
        })).await;
        weekly.expect(200);
        let weeks = weekly.data()["series"].as_array().unwrap();
        assert_eq!(weeks.len(), 4);
        for week in weeks {
            let from = week["period_start"].as_str().unwrap()[..10].to_string();
            let to = week["period_end"].as_str().unwrap()[..10].to_string();
            let count = deals.iter().filter(|d| {
                let day = d.closed_at.format("%Y-%m-%d").to_string();
                day >= from && day < to
            }).count();
            assert_eq!(week["count"], json!(count), "{from}");
        }

        // Bad requests: 422 naming the field; unknown types 404; scopes 403.
        for (path, body, field) in [
            ("leaderboard", json!({ "object_type_id": "deals", "group_by": "note" }), "group_by"),
            ("leaderboard", json!({ "object_type_id": "deals", "group_by": "owner", "aggregation": "sum" }), "value_property"),
            ("leaderboard", json!({ "object_type_id": "deals", "group_by": "owner", "aggregation": "avg", "value_property": "owner" }), "value_property"),
            ("pipeline", json!({ "object_type_id": "deals", "stage_property": "nope" }), "stage_property"),
            ("funnel", json!({ "object_type_id": "deals", "steps": [] }), "steps"),
            ("funnel", json!({ "object_type_id": "deals", "steps": [{ "name": "x", "filters": [{ "property": "nope", "op": "eq", "value": 1 }] }] }), "steps[0].filters"),
            ("timeseries", json!({ "object_type_id": "deals", "interval": "hour", "start_date": "2020-01-01", "end_date": "2026-01-01" }), "start_date"),
            ("timeseries", json!({ "object_type_id": "deals", "interval": "hour", "date_property": "closed_on" }), "interval"),
            ("timeseries", json!({ "object_type_id": "deals", "interval": "day", "timezone": "Mars/Olympus" }), "timezone"),
        ] {
            let refused = app.post(&format!("/v1/reports/{path}"), &key, body).await;
            refused.expect_error(422, "VALIDATION_FAILED");
            assert!(refused.body["error"]["details"].get(field).is_some(), "{path}: {}", refused.body);
        }
        app.post("/v1/reports/pipeline", &key, json!({ "object_type_id": "nope", "stage_property": "stage" })).await
            .expect_error(404, "NOT_FOUND");
        let (_, files_only) = app.key(&tenant, json!({ "name": "files", "scopes": ["files:read"] })).await;
        app.post("/v1/reports/pipeline", &files_only, json!({ "object_type_id": "deals", "stage_property": "stage" })).await
            .expect_error(403, "INSUFFICIENT_SCOPE");
        let other = app.tenant("other").await;
        app.post("/v1/reports/pipeline", &other.key, json!({ "object_type_id": "deals", "stage_property": "stage" })).await
            .expect_error(404, "NOT_FOUND");
    }

    async fn end_users_report_over_their_own_rows(app) {
        let tenant = app.tenant("acme").await;
        deals_type(&app, &tenant).await;
        owners_of(&app, &tenant, &["deals"]).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        let all = deals();
        let (hers, theirs) = all.split_at(30);
        write(&app, &ann.token, hers).await;
        write(&app, &tenant.key, theirs).await;
        let pipeline = app.post("/v1/reports/pipeline", &ann.token, json!({ "object_type_id": "deals", "stage_property": "stage" })).await;
        pipeline.expect(200);
        assert_eq!(pipeline.data()["total"], json!(30));
        for got in pipeline.data()["stages"].as_array().unwrap() {
            let count = hers.iter().filter(|d| json!(d.stage) == got["stage"]).count();
            assert_eq!(got["count"], json!(count));
        }
        let series = app.post("/v1/reports/timeseries", &ann.token, json!({
            "object_type_id": "deals", "date_property": "closed_at", "interval": "month",
            "start_date": "2026-10-01T00:00:00Z", "end_date": "2026-12-01T00:00:00Z", "timezone": "UTC"
        })).await;
        let counted: i64 = series.data()["series"].as_array().unwrap().iter().map(|p| p["count"].as_i64().unwrap()).sum();
        assert_eq!(counted, 30);
        let key_series = app.post("/v1/reports/timeseries", &tenant.key, json!({
            "object_type_id": "deals", "interval": "month", "start_date": "2026-01-01", "timezone": "UTC"
        })).await;
        key_series.expect(200);
        let counted: i64 = key_series.data()["series"].as_array().unwrap().iter().map(|p| p["count"].as_i64().unwrap()).sum();
        assert_eq!(counted, 80, "by created_at, every deal was made today");
    }
}
