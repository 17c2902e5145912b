//! Client error reports: grouped by fingerprint, counted, listed by last seen, checked, scoped
//! and kept per tenant.

use serde_json::json;

use crate::authz::{end_user, put};
use crate::both_backends;

both_backends! {
    async fn reports_are_grouped_counted_and_listed(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        let report = |message: &str, line: u32| json!({
            "message": message, "source": "web", "level": "error", "path": "/checkout",
            "stack": format!("TypeError: boom\n    at pay (checkout.js:{line}:3)"),
            "metadata": { "browser": "firefox", "line": line }
        });
        let first = app.post("/v1/errors/report", &key, report("Cannot read 'total' of undefined (order 41)", 10)).await;
        first.expect(201);
        let group = first.data()["error_id"].as_str().unwrap().to_string();
        assert!(group.starts_with("err_"));
        assert_eq!(first.data()["count"], json!(1));
        // The same error with other numbers and quoted values joins the group.
        let again = app.post("/v1/errors/report", &key, report("Cannot read 'items' of undefined (order 977)", 12)).await;
        again.expect(201);
        assert_eq!(again.data()["error_id"], json!(group));
        assert_eq!(again.data()["count"], json!(2));
        // Another error is another group; a warning of its own level.
        app.post("/v1/errors/report", &key, json!({ "message": "Network request failed", "source": "mobile", "level": "warning" })).await.expect(201);

        let listed = app.get("/v1/errors", &key).await;
        listed.expect(200);
        assert_eq!(listed.data()["total"], json!(2));
        assert_eq!(listed.data()["results"][0]["message"], json!("Network request failed"));
        let errors = app.get("/v1/errors?level=error", &key).await;
        assert_eq!(errors.data()["total"], json!(1));
        let page = app.get("/v1/errors?limit=1", &key).await;
        let cursor = page.data()["next_cursor"].as_str().unwrap().to_string();
        let next = app.get(&format!("/v1/errors?limit=1&cursor={cursor}"), &key).await;
        assert_eq!(next.data()["results"][0]["id"], json!(group));
        let one = app.get(&format!("/v1/errors/{group}"), &key).await;
        one.expect(200);
        assert_eq!(one.data()["count"], json!(2));
        assert_eq!(one.data()["metadata"]["line"], json!(12), "the last report's details");
        assert!(one.data()["first_seen"].as_str().unwrap() <= one.data()["last_seen"].as_str().unwrap());

        // Checked, scoped, per tenant.
        app.post("/v1/errors/report", &key, json!({ "message": "" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/errors/report", &key, json!({ "message": "x", "level": "panic" })).await.expect(422);
        app.post("/v1/errors/report", &key, json!({ "message": "x", "stack": "s".repeat(17_000) })).await.expect_error(422, "VALIDATION_FAILED");
        let big = "m".repeat(9_000);
        app.post("/v1/errors/report", &key, json!({ "message": "x", "metadata": { "m": big } })).await.expect_error(422, "VALIDATION_FAILED");
        let (_, reader) = app.key(&tenant, json!({ "name": "r", "scopes": ["read"] })).await;
        app.post("/v1/errors/report", &reader, json!({ "message": "x" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.get("/v1/errors", &reader).await.expect(200);
        let other = app.tenant("other").await;
        app.get(&format!("/v1/errors/{group}"), &other.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/errors", &other.key).await.data()["total"], json!(0));
        assert_eq!(app.count("SELECT COUNT(*) FROM error_groups").await, 2);

        // An end user reports once their roles grant it, and cannot read the reports.
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        app.post("/v1/errors/report", &ann.token, json!({ "message": "x" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        put(&app, "/v1/roles/authenticated/permissions", &key, json!({ "permissions": ["errors:write"] })).await.expect(200);
        app.post("/v1/errors/report", &ann.token, json!({ "message": "from a user" })).await.expect(201);
        app.get("/v1/errors", &ann.token).await.expect_error(403, "INSUFFICIENT_SCOPE");
    }
}
