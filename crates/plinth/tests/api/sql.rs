//! Read-only SQL: object types as tables, joins, aggregates, CTEs and window functions answered
//! alike on both databases and checked against what the test wrote; everything else refused
//! before it runs; end users read only their rows; a runaway query is stopped.

use serde_json::{json, Value};

use crate::associations::owners_of;
use crate::authz::end_user;
use crate::both_backends;
use crate::common::{TestApp, TestTenant};

const OWNERS: [&str; 3] = ["acme", "globex", "initech"];

async fn setup(app: &TestApp, tenant: &TestTenant) {
    app.post("/v1/object-types", &tenant.key, json!({ "name": "deals" })).await.expect(201);
    for body in [
        json!({ "name": "stage", "data_type": "enum", "enum_values": ["open", "won", "lost"] }),
        json!({ "name": "owner", "data_type": "string" }),
        json!({ "name": "amount", "data_type": "integer" }),
        json!({ "name": "won", "data_type": "boolean" }),
    ] {
        app.post("/v1/object-types/deals/properties", &tenant.key, body).await.expect(201);
    }
    app.post("/v1/object-types", &tenant.key, json!({ "name": "companies" })).await.expect(201);
    app.post("/v1/object-types/companies/properties", &tenant.key, json!({ "name": "name", "data_type": "string" }))
        .await
        .expect(201);
    for name in OWNERS.iter().chain(["umbrella"].iter()) {
        app.post("/v1/objects/companies", &tenant.key, json!({ "properties": { "name": name } })).await.expect(201);
    }
}

/// (stage, owner, amount) of deal `i`.
fn deal(i: i64) -> (&'static str, &'static str, i64) {
    (["open", "won", "lost"][(i % 3) as usize], OWNERS[((i * 7) % 3) as usize], 10 * ((i * 37) % 29 + 1))
}

async fn write_deals(app: &TestApp, token: &str, range: std::ops::Range<i64>) {
    let objects: Vec<Value> = range
        .map(|i| {
            let (stage, owner, amount) = deal(i);
            json!({ "properties": { "stage": stage, "owner": owner, "amount": amount, "won": stage == "won" } })
        })
        .collect();
    app.post("/v1/objects/deals/batch/create", token, json!({ "objects": objects })).await.expect(201);
}

async fn sql(app: &TestApp, token: &str, sql: &str, params: Value) -> crate::common::Resp {
    app.post("/v1/sql", token, json!({ "sql": sql, "params": params })).await
}

both_backends! {
    async fn selects_answer_over_object_types(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        setup(&app, &tenant).await;
        write_deals(&app, &key, 0..60).await;
        let deals: Vec<(&str, &str, i64)> = (0..60).map(deal).collect();

        let grouped = sql(&app, &key, "SELECT stage, COUNT(*) AS n, SUM(amount) AS total FROM deals GROUP BY stage ORDER BY stage", json!([])).await;
        grouped.expect(200);
        assert_eq!(grouped.data()["columns"], json!(["stage", "n", "total"]));
        let mut expected = Vec::new();
        for stage in ["lost", "open", "won"] {
            let n = deals.iter().filter(|d| d.0 == stage).count() as i64;
            let total: i64 = deals.iter().filter(|d| d.0 == stage).map(|d| d.2).sum();
            expected.push(json!([stage, n, total]));
        }
        assert_eq!(grouped.data()["rows"], json!(expected));
        assert_eq!(grouped.data()["row_count"], json!(3));
        assert!(grouped.data()["duration_ms"].is_number());

        // A join of two types, with a company that has no deals.
        let joined = sql(&app, &key, "SELECT c.name, COUNT(d.id) AS deals FROM companies c LEFT JOIN deals d ON d.owner = c.name GROUP BY c.name ORDER BY c.name", json!([])).await;
        joined.expect(200);
        let mut expected: Vec<Value> = OWNERS.iter().map(|o| json!([o, deals.iter().filter(|d| d.1 == *o).count()])).collect();
        expected.push(json!(["umbrella", 0]));
        assert_eq!(joined.data()["rows"], json!(expected));

        // A CTE and a window function: each owner's largest deal.
        let ranked = sql(&app, &key, "WITH ranked AS (SELECT owner, amount, ROW_NUMBER() OVER (PARTITION BY owner ORDER BY amount DESC, id) AS r FROM deals) SELECT owner, amount FROM ranked WHERE r = 1 ORDER BY owner", json!([])).await;
        ranked.expect(200);
        let expected: Vec<Value> = OWNERS.iter().map(|o| json!([o, deals.iter().filter(|d| d.1 == *o).map(|d| d.2).max().unwrap()])).collect();
        assert_eq!(ranked.data()["rows"], json!(expected));

        // Parameters, booleans as 1 and 0, and an empty answer that still names its columns.
        let counted = sql(&app, &key, "SELECT COUNT(*) AS n FROM deals WHERE amount > $1 AND stage = $2", json!([100, "won"])).await;
        counted.expect(200);
        let n = deals.iter().filter(|d| d.2 > 100 && d.0 == "won").count();
        assert_eq!(counted.data()["rows"], json!([[n]]));
        let flags = sql(&app, &key, "SELECT won, COUNT(*) FROM deals GROUP BY won ORDER BY won", json!([])).await;
        assert_eq!(flags.data()["rows"], json!([[0, 40], [1, 20]]));
        let none = sql(&app, &key, "SELECT id, amount FROM deals WHERE amount < 0", json!([])).await;
        none.expect(200);
        assert_eq!(none.data()["columns"], json!(["id", "amount"]));
        assert_eq!(none.data()["rows"], json!([]));

        // Refused before running: 422 naming `sql`, nothing written.
        for refused in [
            "DELETE FROM deals",
            "UPDATE deals SET amount = 0",
            "DROP TABLE deals",
            "PRAGMA table_info(objects)",
            "SELECT * FROM objects",
            "SELECT * FROM tenants",
            "SELECT * FROM api_keys",
            "SELECT * FROM sqlite_master",
            "SELECT * FROM pg_class",
            "SELECT * FROM information_schema.tables",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT load_extension('x')",
            "WITH tenants AS (SELECT * FROM tenants) SELECT * FROM tenants",
            "SELECT * FROM deals FOR UPDATE",
            "SELECT 1; DELETE FROM deals",
            "SELECT * FROM nonsense",
        ] {
            let answer = sql(&app, &key, refused, json!([])).await;
            assert_eq!(answer.status, 422, "{refused}: {}", answer.body);
            assert!(answer.body["error"]["details"]["sql"].is_array(), "{refused}: {}", answer.body);
        }
        sql(&app, &key, "SELECT $1", json!([[1]])).await.expect_error(422, "VALIDATION_FAILED");
        sql(&app, &key, "SELECT $2", json!([1])).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/sql", &key, json!({ "sql": "x".repeat(10_001) })).await.expect_error(422, "VALIDATION_FAILED");
        assert_eq!(app.count("SELECT COUNT(*) FROM objects WHERE deleted_at IS NULL").await, 64);

        // Another tenant has no such tables; a key without `objects` reading may not query them.
        let other = app.tenant("other").await;
        sql(&app, &other.key, "SELECT COUNT(*) FROM deals", json!([])).await.expect_error(422, "VALIDATION_FAILED");
        let (_, files) = app.key(&tenant, json!({ "name": "files", "scopes": ["files:read"] })).await;
        sql(&app, &files, "SELECT COUNT(*) FROM deals", json!([])).await.expect_error(403, "INSUFFICIENT_SCOPE");

        // A query that would run for hours is stopped at the limit.
        let runaway = sql(&app, &key, "SELECT COUNT(*) FROM deals a, deals b, deals c, deals d, deals e, deals f", json!([])).await;
        runaway.expect_error(504, "TIMEOUT");
    }

    async fn an_end_users_tables_hold_their_rows(app) {
        let tenant = app.tenant("acme").await;
        setup(&app, &tenant).await;
        owners_of(&app, &tenant, &["deals"]).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        write_deals(&app, &ann.token, 0..12).await;
        write_deals(&app, &tenant.key, 12..40).await;
        let mine = sql(&app, &ann.token, "SELECT COUNT(*), SUM(amount) FROM deals", json!([])).await;
        mine.expect(200);
        let total: i64 = (0..12).map(|i| deal(i).2).sum();
        assert_eq!(mine.data()["rows"], json!([[12, total]]));
        // A subquery and a CTE see the same rows.
        let nested = sql(&app, &ann.token, "WITH d AS (SELECT * FROM deals) SELECT (SELECT COUNT(*) FROM deals), COUNT(*) FROM d", json!([])).await;
        assert_eq!(nested.data()["rows"], json!([[12, 12]]));
        // Ann may not read companies at all.
        sql(&app, &ann.token, "SELECT COUNT(*) FROM companies", json!([])).await.expect_error(404, "NOT_FOUND");
    }
}
