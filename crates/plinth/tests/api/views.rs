//! Saved views: made, checked against the type, listed, changed and deleted; applied to a list
//! beside its own parameters; scoped to the tenant and to what an end user may read.

use serde_json::{json, Value};

use crate::associations::owners_of;
use crate::authz::end_user;
use crate::both_backends;
use crate::common::{TestApp, TestTenant};

async fn products(app: &TestApp, tenant: &TestTenant) {
    app.post("/v1/object-types", &tenant.key, json!({ "name": "products" })).await.expect(201);
    for (name, data_type) in [("name", "string"), ("price", "integer")] {
        let body = json!({ "name": name, "data_type": data_type, "is_indexed": true, "is_sortable": true });
        app.post("/v1/object-types/products/properties", &tenant.key, body).await.expect(201);
    }
    app.post("/v1/object-types/products/properties", &tenant.key, json!({ "name": "notes", "data_type": "text" }))
        .await
        .expect(201);
}

async fn product(app: &TestApp, token: &str, name: &str, price: i64) {
    let body = json!({ "properties": { "name": name, "price": price, "notes": "n" } });
    app.post("/v1/objects/products", token, body).await.expect(201);
}

fn names(page: &Value) -> Vec<String> {
    page["results"].as_array().unwrap().iter().map(|o| o["properties"]["name"].as_str().unwrap().to_string()).collect()
}

both_backends! {
    async fn views_are_saved_checked_and_applied(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        products(&app, &tenant).await;
        for (name, price) in [("pen", 2), ("cup", 8), ("lamp", 30), ("ink", 5)] {
            product(&app, &key, name, price).await;
        }
        let cheap = json!({
            "name": "Cheap",
            "filters": [{ "property": "price", "op": "lt", "value": 10 }],
            "sort": { "property": "price", "direction": "desc" },
            "columns": ["name"]
        });
        let made = app.post("/v1/object-types/products/views", &key, cheap.clone()).await;
        made.expect(201);
        let view = made.data()["id"].as_str().unwrap().to_string();
        assert!(view.starts_with("view_"));
        assert_eq!(made.data()["sort"], json!({ "property": "price", "direction": "desc" }));
        assert_eq!(made.data()["columns"], json!(["name"]));

        // Checked like a list query, each problem named by field; nothing written.
        app.post("/v1/object-types/products/views", &key, cheap.clone()).await.expect_error(409, "CONFLICT");
        let bad = app.post("/v1/object-types/products/views", &key, json!({
            "name": "Bad",
            "filters": [{ "property": "colour", "op": "eq", "value": "red" }],
            "sort": { "property": "notes" },
            "columns": ["name", "nope"]
        })).await;
        bad.expect_error(422, "VALIDATION_FAILED");
        let details = &bad.body["error"]["details"];
        assert!(details["filters"].is_array() && details["sort"].is_array() && details["columns"].is_array(), "{details}");
        app.post("/v1/object-types/products/views", &key, json!({ "name": "" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/object-types/products/views", &key, json!({ "name": "X", "filters": [{ "property": "price", "op": "lt", "value": "ten" }] }))
            .await
            .expect_error(422, "VALIDATION_FAILED");
        let listed = app.get("/v1/object-types/products/views", &key).await;
        listed.expect(200);
        assert_eq!(listed.data().as_array().unwrap().len(), 1);

        // Applied: its filters, sort and columns; the query's own parameters win or add.
        let page = app.get(&format!("/v1/objects/products/list?view={view}"), &key).await;
        page.expect(200);
        assert_eq!(names(page.data()), vec!["cup", "ink", "pen"]);
        assert_eq!(page.data()["total"], json!(3));
        let first = &page.data()["results"][0];
        assert!(first["properties"].get("price").is_none() && first.get("created_at").is_none(), "{first}");
        let resorted = app.get(&format!("/v1/objects/products/list?view={view}&sort=price"), &key).await;
        assert_eq!(names(resorted.data()), vec!["pen", "ink", "cup"]);
        let narrowed = app.get(&format!("/v1/objects/products/list?view={view}&filter[price][gte]=5"), &key).await;
        assert_eq!(names(narrowed.data()), vec!["cup", "ink"]);
        let all_fields = app.get(&format!("/v1/objects/products/list?view={view}&fields=name,price"), &key).await;
        assert_eq!(all_fields.data()["results"][0]["properties"]["price"], json!(8));
        app.get("/v1/objects/products/list?view=view_01jd8x3k4m5n6p7q8r9s0t1v2w", &key).await.expect_error(404, "NOT_FOUND");

        // Changed: the sort removed, the name kept unique.
        let changed = app.patch(&format!("/v1/object-types/products/views/{view}"), &key, json!({ "sort": null, "name": "Under 10" })).await;
        changed.expect(200);
        assert_eq!(changed.data()["sort"], Value::Null);
        assert_eq!(changed.data()["name"], json!("Under 10"));
        let by_id = app.get(&format!("/v1/objects/products/list?view={view}"), &key).await;
        assert_eq!(names(by_id.data()), vec!["ink", "cup", "pen"]);
        app.post("/v1/object-types/products/views", &key, json!({ "name": "Other" })).await.expect(201);
        app.patch(&format!("/v1/object-types/products/views/{view}"), &key, json!({ "name": "Other" })).await
            .expect_error(409, "CONFLICT");
        app.patch(&format!("/v1/object-types/products/views/{view}"), &key, json!({ "columns": ["nope"] })).await
            .expect_error(422, "VALIDATION_FAILED");

        // Scopes: reading views needs reading the objects; changing them `object-types:write`.
        let (_, data_key) = app.key(&tenant, json!({ "name": "data", "scopes": ["objects:read", "objects:write"] })).await;
        app.get("/v1/object-types/products/views", &data_key).await.expect(200);
        app.get(&format!("/v1/objects/products/list?view={view}"), &data_key).await.expect(200);
        app.post("/v1/object-types/products/views", &data_key, json!({ "name": "Mine" })).await
            .expect_error(403, "INSUFFICIENT_SCOPE");
        app.delete(&format!("/v1/object-types/products/views/{view}"), &data_key).await
            .expect_error(403, "INSUFFICIENT_SCOPE");

        // Another tenant reaches none of it, even through a type of the same name.
        let other = app.tenant("other").await;
        products(&app, &other).await;
        app.get(&format!("/v1/objects/products/list?view={view}"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.patch(&format!("/v1/object-types/products/views/{view}"), &other.key, json!({ "name": "Mine" })).await
            .expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/object-types/products/views", &other.key).await.data().as_array().unwrap().len(), 0);

        // Deleted: 200, then gone.
        app.delete(&format!("/v1/object-types/products/views/{view}"), &key).await.expect(200);
        app.delete(&format!("/v1/object-types/products/views/{view}"), &key).await.expect_error(404, "NOT_FOUND");
        app.get(&format!("/v1/objects/products/list?view={view}"), &key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.count("SELECT COUNT(*) FROM object_views").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM audit_logs WHERE action LIKE 'view.%'").await, 4);
    }

    async fn a_view_shows_an_end_user_only_their_rows(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        products(&app, &tenant).await;
        owners_of(&app, &tenant, &["products"]).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        product(&app, &ann.token, "anns-pen", 3).await;
        product(&app, &ann.token, "anns-lamp", 40).await;
        product(&app, &key, "shop-ink", 4).await;
        let made = app.post("/v1/object-types/products/views", &key, json!({
            "name": "Cheap", "filters": [{ "property": "price", "op": "lt", "value": 10 }]
        })).await;
        let view = made.data()["id"].as_str().unwrap().to_string();
        // An end user reads the views of a type they may read, but may not make one.
        app.get("/v1/object-types/products/views", &ann.token).await.expect(200);
        app.post("/v1/object-types/products/views", &ann.token, json!({ "name": "Mine" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let page = app.get(&format!("/v1/objects/products/list?view={view}"), &ann.token).await;
        page.expect(200);
        assert_eq!(names(page.data()), vec!["anns-pen"]);
        assert_eq!(page.data()["total"], json!(1));
    }
}
