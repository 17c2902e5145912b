//! The typed data store: properties, objects, versions, trash, batches, filters and search.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{TestApp, TestTenant};

async fn schema(app: &TestApp, tenant: &TestTenant, type_name: &str, properties: Value) {
    app.post("/v1/object-types", &tenant.key, json!({ "name": type_name })).await.expect(201);
    for property in properties.as_array().unwrap() {
        let resp = app.post(&format!("/v1/object-types/{type_name}/properties"), &tenant.key, property.clone()).await;
        assert_eq!(resp.status, 201, "{property}: {}", resp.text);
        let name = property["name"].as_str().unwrap();
        if resp.data()["index_status"] == "building" {
            index_settles(app, tenant, type_name, name, "ready").await;
        }
    }
}

/// Waits until the property's index has been built (or dropped) by the background job, and
/// answers the property.
async fn index_settles(app: &TestApp, tenant: &TestTenant, type_name: &str, name: &str, status: &str) -> Value {
    let path = format!("/v1/object-types/{type_name}/properties/{name}");
    let id = app.get(&path, &tenant.key).await.data()["id"].as_str().expect("the property's id").to_string();
    // Watched in the database, so that the tenant's rate limit is not spent on it.
    let settled = format!("SELECT COUNT(*) FROM object_properties WHERE id = '{id}' AND index_status <> 'building'");
    for _ in 0..600 {
        if app.count(&settled).await == 1 {
            let resp = app.get(&path, &tenant.key).await;
            assert_eq!(resp.data()["index_status"], status, "{}", resp.text);
            return resp.data().clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the index of {type_name}.{name} did not become {status}");
}

/// Whether the database holds an index of that name.
async fn index_exists(app: &TestApp, name: &str) -> bool {
    let sql = match app.storage.backend {
        crate::common::Backend::Sqlite => {
            format!("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = '{name}'")
        }
        crate::common::Backend::Postgres => format!("SELECT COUNT(*) FROM pg_indexes WHERE indexname = '{name}'"),
    };
    app.count(&sql).await == 1
}

/// Waits until the index of that name is gone (its drop is background work too).
async fn index_goes(app: &TestApp, name: &str) {
    for _ in 0..600 {
        if !index_exists(app, name).await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the index {name} was not dropped");
}

async fn create(app: &TestApp, tenant: &TestTenant, type_name: &str, properties: Value) -> Value {
    let resp = app.post(&format!("/v1/objects/{type_name}"), &tenant.key, json!({ "properties": properties })).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    resp.data().clone()
}

fn ids(resp: &crate::common::Resp) -> Vec<String> {
    resp.data()["results"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
}

fn names(resp: &crate::common::Resp) -> Vec<Value> {
    resp.data()["results"].as_array().unwrap().iter().map(|o| o["properties"]["name"].clone()).collect()
}

both_backends! {
    async fn properties_describe_a_type(app) {
        let tenant = app.tenant("Props").await;
        app.post("/v1/object-types", &tenant.key, json!({ "name": "contacts" })).await.expect(201);
        let path = "/v1/object-types/contacts/properties";
        let created = app.post(path, &tenant.key, json!({
            "name": "email", "data_type": "email", "is_unique": true, "is_required": true, "description": "Work email"
        })).await;
        created.expect(201);
        let property_id = created.data()["id"].as_str().unwrap().to_string();
        assert!(property_id.starts_with("prop_"));
        assert_eq!(created.data()["data_type"], "email");
        assert_eq!(created.data()["is_unique"], true);

        for bad in [
            json!({ "name": "x", "data_type": "colour" }),
            json!({ "name": "Bad", "data_type": "string" }),
            json!({ "name": "stage", "data_type": "enum" }),
            json!({ "name": "stage", "data_type": "enum", "enum_values": ["a", "a"] }),
            json!({ "name": "notes", "data_type": "text", "is_indexed": true }),
            json!({ "name": "tags", "data_type": "multi_enum", "enum_values": ["a"], "is_unique": true }),
            json!({ "name": "owner", "data_type": "reference" }),
            json!({ "name": "owner", "data_type": "reference", "reference_type": "nothing" }),
            json!({ "name": "age", "data_type": "integer", "default_value": "ten" }),
            json!({ "name": "age", "data_type": "integer", "enum_values": ["a"] }),
        ] {
            let resp = app.post(path, &tenant.key, bad.clone()).await;
            assert_eq!(resp.status, 422, "{bad}: {}", resp.text);
        }
        app.post(path, &tenant.key, json!({ "name": "email", "data_type": "string" })).await.expect_error(409, "CONFLICT");
        app.post(path, &tenant.key, json!({ "name": "stage", "data_type": "enum", "enum_values": ["lead", "won"], "default_value": "lead" })).await.expect(201);
        app.post(path, &tenant.key, json!({ "name": "manager", "data_type": "reference", "reference_type": "contacts" })).await.expect(201);

        let list = app.get(path, &tenant.key).await;
        list.expect(200);
        let listed: Vec<&str> = list.data().as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(listed, ["email", "manager", "stage"]);
        let by_name = app.get(&format!("{path}/email"), &tenant.key).await;
        assert_eq!(by_name.data()["id"], property_id.as_str());

        // Name, type and target cannot change; flags can.
        app.patch(&format!("{path}/email"), &tenant.key, json!({ "name": "mail" })).await.expect_error(422, "VALIDATION_FAILED");
        app.patch(&format!("{path}/email"), &tenant.key, json!({ "data_type": "string" })).await.expect_error(422, "VALIDATION_FAILED");
        let patched = app.patch(&format!("{path}/{property_id}"), &tenant.key, json!({ "is_sortable": true, "description": null })).await;
        patched.expect(200);
        assert_eq!(patched.data()["is_sortable"], true);
        assert_eq!(patched.data()["description"], Value::Null);

        // Properties need the schema scope to change, read to read.
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        let (_, writer) = app.key(&tenant, json!({ "scopes": ["objects:write", "objects:delete"] })).await;
        app.get(path, &reader).await.expect(200);
        app.post(path, &writer, json!({ "name": "n", "data_type": "string" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.delete(&format!("{path}/stage"), &writer).await.expect_error(403, "INSUFFICIENT_SCOPE");

        // Another tenant sees none of it.
        let other = app.tenant("Other").await;
        app.get(path, &other.key).await.expect_error(404, "NOT_FOUND");
        app.post("/v1/object-types", &other.key, json!({ "name": "contacts" })).await.expect(201);
        app.get(&format!("/v1/object-types/contacts/properties/{property_id}"), &other.key).await.expect_error(404, "NOT_FOUND");

        // Deleting a property leaves the values, untyped.
        let object = create(&app, &tenant, "contacts", json!({ "email": "a@example.com", "stage": "won" })).await;
        app.delete(&format!("{path}/stage"), &tenant.key).await.expect(200);
        let read = app.get(&format!("/v1/objects/contacts/{}", object["id"].as_str().unwrap()), &tenant.key).await;
        assert_eq!(read.data()["properties"]["stage"], "won");
        // A new property must describe the values already there.
        let refused = app.post(path, &tenant.key, json!({ "name": "stage", "data_type": "integer" })).await;
        refused.expect_error(409, "CONFLICT");
        assert_eq!(refused.body["error"]["objects"], json!([object["id"]]));
        app.post(path, &tenant.key, json!({ "name": "stage", "data_type": "string" })).await.expect(201);
        let log = app.get("/v1/audit-logs?resource_type=property", &tenant.key).await;
        assert_eq!(log.data()["total"], 6);
    }

    async fn objects_are_validated_versioned_and_trashed(app) {
        let tenant = app.tenant("Objects").await;
        schema(&app, &tenant, "deals", json!([
            { "name": "name", "data_type": "string", "is_required": true },
            { "name": "amount", "data_type": "decimal" },
            { "name": "stage", "data_type": "enum", "enum_values": ["open", "won", "lost"], "default_value": "open" },
            { "name": "closes_on", "data_type": "date" },
        ])).await;
        let created = create(&app, &tenant, "deals", json!({ "name": "Acme", "amount": "1200.50", "closes_on": null })).await;
        let id = created["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("obj_"));
        assert_eq!(created["version"], 1);
        assert_eq!(created["is_deleted"], false);
        assert_eq!(created["tenant_id"], tenant.id.as_str());
        assert_eq!(created["created_by"], tenant.key_id.as_str());
        assert_eq!(created["properties"], json!({ "name": "Acme", "amount": "1200.50", "stage": "open" }));
        let path = format!("/v1/objects/deals/{id}");
        let read = app.get(&path, &tenant.key).await;
        assert_eq!(read.data(), &created);

        // Unknown properties, a missing required one, wrong values: 422 per property, nothing written.
        let bad = app.post("/v1/objects/deals", &tenant.key, json!({ "properties": { "amount": "lots", "colour": "red" } })).await;
        bad.expect_error(422, "VALIDATION_FAILED");
        let details = &bad.body["error"]["details"];
        assert!(details["properties.amount"].is_array(), "{details}");
        assert!(details["properties.colour"].is_array());
        assert!(details["properties.name"].is_array());
        assert_eq!(app.count("SELECT COUNT(*) FROM objects").await, 1);

        // PATCH merges; null removes an optional property; If-Match guards.
        let updated = app.patch(&path, &tenant.key, json!({ "properties": { "stage": "won", "amount": null } })).await;
        updated.expect(200);
        assert_eq!(updated.data()["version"], 2);
        assert_eq!(updated.data()["properties"], json!({ "name": "Acme", "stage": "won" }));
        app.patch(&path, &tenant.key, json!({ "properties": { "name": null } })).await.expect_error(422, "VALIDATION_FAILED");
        let stale = app.send(app.request(Method::PATCH, &path, Some(&tenant.key)).header("if-match", "\"1\"")
            .json(&json!({ "properties": { "name": "Stale" } }))).await;
        stale.expect_error(409, "CONFLICT");
        assert_eq!(stale.body["error"]["current_version"], 2);
        let fresh = app.send(app.request(Method::PATCH, &path, Some(&tenant.key)).header("if-match", "2")
            .json(&json!({ "properties": { "name": "Acme Corp" } }))).await;
        fresh.expect(200);
        assert_eq!(fresh.data()["version"], 3);
        // A change that changes nothing writes nothing.
        let same = app.patch(&path, &tenant.key, json!({ "properties": { "name": "Acme Corp" } })).await;
        assert_eq!(same.data()["version"], 3);

        let versions = app.get(&format!("{path}/versions"), &tenant.key).await;
        versions.expect(200);
        let list = versions.data()["results"].as_array().unwrap();
        assert_eq!(list.iter().map(|v| v["version"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(list[0]["changed"], json!(["amount", "stage"]));
        assert_eq!(list[0]["properties"], json!({ "name": "Acme", "stage": "won" }));
        assert_eq!(list[1]["action"], "created");
        assert_eq!(list[0]["actor_id"], tenant.key_id.as_str());
        let page = app.get(&format!("{path}/versions?limit=1"), &tenant.key).await;
        let cursor = page.data()["next_cursor"].as_str().unwrap().to_string();
        let next = app.get(&format!("{path}/versions?limit=1&cursor={cursor}"), &tenant.key).await;
        assert_eq!(next.data()["results"][0]["version"], 1);

        // Trash, restore, purge.
        app.delete(&path, &tenant.key).await.expect(200);
        let trashed = app.get(&path, &tenant.key).await;
        assert_eq!(trashed.data()["is_deleted"], true);
        assert_eq!(trashed.data()["version"], 4);
        assert_eq!(app.get("/v1/objects/deals/list", &tenant.key).await.data()["total"], 0);
        let trash = app.get("/v1/objects/deals/trash", &tenant.key).await;
        assert_eq!(ids(&trash), vec![id.clone()]);
        app.patch(&path, &tenant.key, json!({ "properties": { "name": "x" } })).await.expect_error(409, "CONFLICT");
        let restored = app.post(&format!("{path}/restore"), &tenant.key, json!({})).await;
        restored.expect(200);
        assert_eq!(restored.data()["is_deleted"], false);
        assert_eq!(restored.data()["version"], 5);
        app.post(&format!("{path}/restore"), &tenant.key, json!({})).await.expect_error(409, "CONFLICT");
        app.delete(&format!("{path}?force=true"), &tenant.key).await.expect(200);
        app.get(&path, &tenant.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.count("SELECT COUNT(*) FROM object_versions").await, 0);

        // Every write left an event in the outbox and an audit record.
        let events: Vec<(String,)> = sqlx::query_as("SELECT type FROM events ORDER BY id").fetch_all(app.app.db.pool()).await.unwrap();
        let events: Vec<&str> = events.iter().map(|(t,)| t.as_str()).collect();
        assert_eq!(events, ["object.created", "object.updated", "object.updated", "object.deleted", "object.restored", "object.deleted"]);
        let (data,): (String,) = sqlx::query_as("SELECT data FROM events WHERE type = 'object.updated' ORDER BY id LIMIT 1")
            .fetch_one(app.app.db.pool()).await.unwrap();
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["object_type"], "deals");
        assert_eq!(data["changed"], json!(["amount", "stage"]));
        assert_eq!(data["object"]["id"], id.as_str());
        // Secret-looking fields are redacted from event payloads.
        schema(&app, &tenant, "logins", json!([{ "name": "password", "data_type": "string" }])).await;
        create(&app, &tenant, "logins", json!({ "password": "hunter2" })).await;
        let (data,): (String,) = sqlx::query_as("SELECT data FROM events ORDER BY id DESC LIMIT 1")
            .fetch_one(app.app.db.pool()).await.unwrap();
        assert!(!data.contains("hunter2") && data.contains("[REDACTED]"), "{data}");
        let log = app.get("/v1/audit-logs?resource_type=object", &tenant.key).await;
        assert_eq!(log.data()["total"], 7, "six writes of the deal, one login");
    }

    async fn objects_are_per_tenant_and_scoped(app) {
        let a = app.tenant("A").await;
        let b = app.tenant("B").await;
        schema(&app, &a, "notes", json!([{ "name": "title", "data_type": "string" }])).await;
        schema(&app, &b, "notes", json!([{ "name": "title", "data_type": "string" }])).await;
        let note = create(&app, &a, "notes", json!({ "title": "secret" })).await;
        let path = format!("/v1/objects/notes/{}", note["id"].as_str().unwrap());
        app.get(&path, &b.key).await.expect_error(404, "NOT_FOUND");
        app.patch(&path, &b.key, json!({ "properties": { "title": "mine" } })).await.expect_error(404, "NOT_FOUND");
        app.delete(&path, &b.key).await.expect_error(404, "NOT_FOUND");
        app.post(&format!("{path}/restore"), &b.key, json!({})).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/objects/notes/list", &b.key).await.data()["total"], 0);
        let batch = app.post("/v1/objects/notes/batch/read", &b.key, json!({ "object_ids": [note["id"]] })).await;
        assert_eq!(batch.data(), &json!([]));

        let (_, reader) = app.key(&a, json!({ "scopes": ["read"] })).await;
        let (_, schema_only) = app.key(&a, json!({ "scopes": ["schema"] })).await;
        app.get(&path, &reader).await.expect(200);
        app.get("/v1/objects/notes/list", &reader).await.expect(200);
        app.post("/v1/objects/notes/search", &reader, json!({})).await.expect(200);
        // Empty groups count against the 50 conditions too.
        let empties: Vec<serde_json::Value> = (0..51).map(|_| json!({ "and": [] })).collect();
        app.post("/v1/objects/notes/search", &reader, json!({ "filters": { "or": empties } })).await.expect_error(422, "VALIDATION_FAILED");
        let empties: Vec<serde_json::Value> = (0..50).map(|_| json!({ "and": [] })).collect();
        app.post("/v1/objects/notes/search", &reader, json!({ "filters": { "or": empties } })).await.expect(200);
        app.post("/v1/objects/notes", &reader, json!({ "properties": {} })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.patch(&path, &reader, json!({ "properties": {} })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.delete(&path, &reader).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.post("/v1/objects/notes", &schema_only, json!({ "properties": {} })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.get(&path, &schema_only).await.expect_error(403, "INSUFFICIENT_SCOPE");
    }

    async fn every_type_is_validated_and_stored_canonically(app) {
        let tenant = app.tenant("Types").await;
        schema(&app, &tenant, "all_types", json!([
            { "name": "s", "data_type": "string" }, { "name": "t", "data_type": "text" },
            { "name": "rt", "data_type": "rich_text" }, { "name": "i", "data_type": "integer" },
            { "name": "n", "data_type": "number" }, { "name": "d", "data_type": "decimal" },
            { "name": "b", "data_type": "boolean" }, { "name": "da", "data_type": "date" },
            { "name": "dt", "data_type": "datetime" }, { "name": "ti", "data_type": "time" },
            { "name": "em", "data_type": "email" }, { "name": "u", "data_type": "url" },
            { "name": "ph", "data_type": "phone" },
            { "name": "en", "data_type": "enum", "enum_values": ["a", "b"] },
            { "name": "me", "data_type": "multi_enum", "enum_values": ["x", "y", "z"] },
            { "name": "j", "data_type": "json" }, { "name": "uu", "data_type": "uuid" },
            { "name": "c", "data_type": "currency" }, { "name": "p", "data_type": "percent" },
            { "name": "co", "data_type": "color" }, { "name": "f", "data_type": "file" },
            { "name": "r", "data_type": "reference", "reference_type": "all_types" },
        ])).await;
        let target = create(&app, &tenant, "all_types", json!({})).await;
        let target_id = target["id"].as_str().unwrap();
        let file_id = "file_01h455vb4pex5vsknk084sn02q";
        let input = json!({
            "s": "plain", "t": "long text", "rt": "<p onclick=\"x()\">Hi<script>bad()</script></p>",
            "i": -42, "n": 2.5, "d": "0010.10", "b": true, "da": "2026-02-28",
            "dt": "2026-01-15T13:00:00+01:00", "ti": "09:30", "em": "Ada@Example.com",
            "u": "https://example.com", "ph": "+44 20 7946 0958", "en": "b", "me": ["z", "x"],
            "j": { "any": ["thing", 1] }, "uu": "67E55044-10B1-426F-9247-BB680E5FE0C8",
            "c": { "amount": "9.99", "code": "usd" }, "p": 12.5, "co": "#a1b2c3", "f": file_id, "r": target_id,
        });
        let stored = create(&app, &tenant, "all_types", input).await;
        assert_eq!(stored["properties"], json!({
            "s": "plain", "t": "long text", "rt": "<p>Hi</p>", "i": -42, "n": 2.5, "d": "10.10", "b": true,
            "da": "2026-02-28", "dt": "2026-01-15T12:00:00.000Z", "ti": "09:30:00", "em": "ada@example.com",
            "u": "https://example.com/", "ph": "+442079460958", "en": "b", "me": ["x", "z"],
            "j": { "any": ["thing", 1] }, "uu": "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "c": { "amount": "9.99", "code": "USD" }, "p": 12.5, "co": "#A1B2C3", "f": file_id, "r": target_id,
        }));
        // The canonical form is a fixed point: writing it back changes nothing.
        let again = app.patch(&format!("/v1/objects/all_types/{}", stored["id"].as_str().unwrap()), &tenant.key,
            json!({ "properties": stored["properties"] })).await;
        assert_eq!(again.data()["version"], 1);

        let before = app.count("SELECT COUNT(*) FROM objects").await;
        for (name, value) in [
            ("s", json!("x".repeat(1025))), ("s", json!(1)), ("s", json!("nul\u{0}")), ("j", json!({ "k": "\u{0}" })), ("i", json!(1.5)), ("i", json!("1")),
            ("i", json!(9_223_372_036_854_775_808u64)), ("n", json!("2")), ("d", json!("1.2.3")), ("b", json!("yes")),
            ("da", json!("2026-02-30")), ("dt", json!("yesterday")), ("ti", json!("25:00")), ("em", json!("nope")),
            ("u", json!("ftp://example.com")), ("ph", json!("12345")), ("en", json!("c")), ("me", json!(["x", "x"])),
            ("uu", json!("123")), ("c", json!({ "amount": "1", "code": "ABC" })), ("p", json!("5%")),
            ("co", json!("#abc")), ("f", json!("obj_01h455vb4pex5vsknk084sn02q")),
            ("r", json!("obj_01h455vb4pex5vsknk084sn02q")), ("r", json!(file_id)),
        ] {
            let resp = app.post("/v1/objects/all_types", &tenant.key, json!({ "properties": { name: value } })).await;
            assert_eq!(resp.status, 422, "{name} = {value}: {}", resp.text);
            assert!(resp.body["error"]["details"][format!("properties.{name}")].is_array(), "{}", resp.text);
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM objects").await, before, "refused objects write nothing");
    }

    async fn pages_of_few_and_of_many_matches_agree(app) {
        // On PostgreSQL a page of few matches gathers them, then orders them; SQLite walks the
        // order (as PostgreSQL does for many matches): both must page alike, words included.
        let tenant = app.tenant_on("Pages", "enterprise").await;
        schema(&app, &tenant, "logs", json!([
            { "name": "n", "data_type": "integer", "is_indexed": true, "is_sortable": true },
            { "name": "word", "data_type": "string" },
        ])).await;
        let objects: Vec<Value> = (0..40)
            .map(|n| json!({ "properties": { "n": n, "word": if n % 10 == 3 { "rare" } else { "common" } } }))
            .collect();
        app.post("/v1/objects/logs/batch/create", &tenant.key, json!({ "objects": objects })).await.expect(201);
        let walk = |first: &str| {
            let first = first.to_string();
            let app = &app;
            let key = tenant.key.clone();
            async move {
                let mut seen = Vec::new();
                let mut path = first.clone();
                loop {
                    let page = app.get(&path, &key).await;
                    page.expect(200);
                    for object in page.data()["results"].as_array().unwrap() {
                        seen.push(object["properties"]["n"].as_i64().unwrap());
                    }
                    match page.data()["next_cursor"].as_str() {
                        Some(cursor) => path = format!("{first}&cursor={cursor}"),
                        None => break,
                    }
                }
                seen
            }
        };
        // Sorted by a property, either way.
        assert_eq!(walk("/v1/objects/logs/list?filter[n][lt]=4&sort=-n&limit=1").await, vec![3, 2, 1, 0]);
        assert_eq!(walk("/v1/objects/logs/list?filter[word][eq]=rare&sort=n&limit=3").await, vec![3, 13, 23, 33]);
        // All 40, a page of one at a time.
        let all = walk("/v1/objects/logs/list?filter[n][gte]=0&sort=-n&limit=1").await;
        assert_eq!(all, (0..40).rev().collect::<Vec<_>>());
        // Words: few, then many.
        let rare = app.post("/v1/objects/logs/search", &tenant.key, json!({ "query": "rare", "limit": 10 })).await;
        assert_eq!(rare.data()["total"], 4);
        let mut found: Vec<i64> =
            rare.data()["results"].as_array().unwrap().iter().map(|o| o["properties"]["n"].as_i64().unwrap()).collect();
        found.sort();
        assert_eq!(found, vec![3, 13, 23, 33]);
        let common = app.post("/v1/objects/logs/search", &tenant.key, json!({ "query": "common", "limit": 1 })).await;
        assert_eq!(common.data()["total"], 36);
        assert_eq!(common.data()["results"].as_array().unwrap().len(), 1);
    }

    async fn a_required_property_is_filled_in_the_background(app) {
        let tenant = app.tenant_on("Fill", "enterprise").await;
        schema(&app, &tenant, "logs", json!([{ "name": "n", "data_type": "integer" }])).await;
        // More objects than the change fills itself, one of them in the trash.
        for chunk in 0..11 {
            let objects: Vec<Value> = (0..100).map(|i| json!({ "properties": { "n": chunk * 100 + i } })).collect();
            app.post("/v1/objects/logs/batch/create", &tenant.key, json!({ "objects": objects })).await.expect(201);
        }
        let trashed = create(&app, &tenant, "logs", json!({ "n": -1 })).await;
        app.delete(&format!("/v1/objects/logs/{}", trashed["id"].as_str().unwrap()), &tenant.key).await.expect(200);

        let body = json!({ "name": "level", "data_type": "string", "is_required": true, "default_value": "info" });
        let created = app.post("/v1/object-types/logs/properties", &tenant.key, body).await;
        created.expect(201);
        assert_eq!(created.data()["fill_status"], "filling", "{}", created.text);
        // Required from the answer on: a new object without it gets the default.
        let fresh = create(&app, &tenant, "logs", json!({ "n": 5000 })).await;
        assert_eq!(fresh["properties"]["level"], "info");

        let id = created.data()["id"].as_str().unwrap().to_string();
        let filling = format!("SELECT COUNT(*) FROM object_properties WHERE id = '{id}' AND fill_status = 'filling'");
        for _ in 0..600 {
            if app.count(&filling).await == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let property = app.get("/v1/object-types/logs/properties/level", &tenant.key).await;
        assert_eq!(property.data()["fill_status"], "done", "{}", property.text);
        let filled = app.get("/v1/objects/logs/list?filter[level][eq]=info&limit=1", &tenant.key).await;
        assert_eq!(filled.data()["total"], 1101, "{}", filled.text);
        let found = app.post("/v1/objects/logs/search", &tenant.key, json!({ "query": "info", "limit": 1 })).await;
        assert_eq!(found.data()["total"], 1101, "the filled value is searched: {}", found.text);
        let restored = app.post(&format!("/v1/objects/logs/{}/restore", trashed["id"].as_str().unwrap()), &tenant.key, json!({})).await;
        restored.expect(200);
        assert_eq!(restored.data()["properties"]["level"], "info", "the trash was filled too");
        // A schema change makes no new version (trashed and restored: its third).
        assert_eq!(restored.data()["version"], 3, "{}", restored.text);
        let second = app.get("/v1/objects/logs/list?filter[n][eq]=0", &tenant.key).await;
        assert_eq!(second.data()["results"][0]["version"], 1, "{}", second.text);
        assert_eq!(second.data()["results"][0]["properties"]["level"], "info");
    }

    async fn unique_values_hold_while_their_index_is_not_ready(app) {
        let tenant = app.tenant("Unready").await;
        schema(&app, &tenant, "users", json!([{ "name": "email", "data_type": "email", "is_unique": true }])).await;
        let first = create(&app, &tenant, "users", json!({ "email": "a@example.com" })).await;
        let second = create(&app, &tenant, "users", json!({ "email": "b@example.com" })).await;
        let id = app.get("/v1/object-types/users/properties/email", &tenant.key).await.data()["id"].as_str().unwrap().to_string();
        // As a build that died leaves it: no unique index, the status `failed`. Writes check
        // the values themselves.
        sqlx::query(&format!("DROP INDEX objuniq_{id}")).execute(app.app.db.pool()).await.unwrap();
        sqlx::query("UPDATE object_properties SET index_status = 'failed' WHERE id = $1").bind(&id).execute(app.app.db.pool()).await.unwrap();
        drop(app.app.schemas_changing());

        let writes = (0..12).map(|_| {
            let request = app.request(Method::POST, "/v1/objects/users", Some(&tenant.key))
                .json(&json!({ "properties": { "email": "c@example.com" } }));
            app.send(request)
        });
        let answers = futures::future::join_all(writes).await;
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 11, "{statuses:?}");
        assert_eq!(answers.iter().find(|r| r.status == 409).unwrap().body["error"]["property"], "email");
        // An update to a taken value, and a restore onto one, are refused; the object's own value is not "taken".
        let path = format!("/v1/objects/users/{}", second["id"].as_str().unwrap());
        app.patch(&path, &tenant.key, json!({ "properties": { "email": "a@example.com" } })).await.expect_error(409, "CONFLICT");
        app.patch(&path, &tenant.key, json!({ "properties": { "email": "b@example.com" } })).await.expect(200);
        let first_path = format!("/v1/objects/users/{}", first["id"].as_str().unwrap());
        app.delete(&first_path, &tenant.key).await.expect(200);
        create(&app, &tenant, "users", json!({ "email": "a@example.com" })).await;
        app.post(&format!("{first_path}/restore"), &tenant.key, json!({})).await.expect_error(409, "CONFLICT");
        let held = "SELECT COUNT(*) FROM objects WHERE deleted_at IS NULL GROUP BY properties ORDER BY COUNT(*) DESC LIMIT 1";
        assert_eq!(app.count(held).await, 1, "no value is held twice");

        // Flagged again, the index is built anew and holds.
        for unique in [false, true] {
            app.patch("/v1/object-types/users/properties/email", &tenant.key, json!({ "is_unique": unique })).await.expect(200);
        }
        index_settles(&app, &tenant, "users", "email", "ready").await;
        assert!(index_exists(&app, &format!("objuniq_{id}")).await);
        app.post("/v1/objects/users", &tenant.key, json!({ "properties": { "email": "c@example.com" } })).await.expect_error(409, "CONFLICT");
    }

    async fn unique_values_hold_under_concurrent_writes(app) {
        let tenant = app.tenant("Unique").await;
        schema(&app, &tenant, "users", json!([
            { "name": "email", "data_type": "email", "is_unique": true },
            { "name": "nick", "data_type": "string" },
        ])).await;
        let writes = (0..20).map(|i| {
            let request = app.request(Method::POST, "/v1/objects/users", Some(&tenant.key))
                .json(&json!({ "properties": { "email": "SAME@example.com", "nick": format!("n{i}") } }));
            app.send(request)
        });
        let answers = futures::future::join_all(writes).await;
        let created = answers.iter().filter(|r| r.status == 201).count();
        let conflicts = answers.iter().filter(|r| r.status == 409 && r.error_code() == "CONFLICT").count();
        assert_eq!((created, conflicts), (1, 19), "{:?}", answers.iter().map(|r| &r.text).collect::<Vec<_>>());
        assert_eq!(answers.iter().find(|r| r.status == 409).unwrap().body["error"]["property"], "email");
        assert_eq!(app.count("SELECT COUNT(*) FROM objects").await, 1);

        // A trashed object frees its value; restoring it while taken is refused.
        let first = app.get("/v1/objects/users/list", &tenant.key).await.data()["results"][0]["id"].as_str().unwrap().to_string();
        app.delete(&format!("/v1/objects/users/{first}"), &tenant.key).await.expect(200);
        create(&app, &tenant, "users", json!({ "email": "same@example.com" })).await;
        app.post(&format!("/v1/objects/users/{first}/restore"), &tenant.key, json!({})).await.expect_error(409, "CONFLICT");

        // Making a property unique while objects share values names them.
        create(&app, &tenant, "users", json!({ "email": "a@example.com", "nick": "twin" })).await;
        create(&app, &tenant, "users", json!({ "email": "b@example.com", "nick": "twin" })).await;
        let refused = app.patch("/v1/object-types/users/properties/nick", &tenant.key, json!({ "is_unique": true })).await;
        refused.expect_error(409, "CONFLICT");
        assert_eq!(refused.body["error"]["duplicates"][0]["count"], 2);
        // A required property without a default cannot join a type with objects; with one it fills them.
        app.post("/v1/object-types/users/properties", &tenant.key, json!({ "name": "plan", "data_type": "string", "is_required": true }))
            .await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/object-types/users/properties", &tenant.key,
            json!({ "name": "plan", "data_type": "string", "is_required": true, "default_value": "free" })).await.expect(201);
        let list = app.get("/v1/objects/users/list?filter[plan][eq]=free", &tenant.key).await;
        assert_eq!(list.data()["total"], 3);
        let found = app.post("/v1/objects/users/search", &tenant.key, json!({ "query": "free" })).await;
        assert_eq!(found.data()["total"], 3, "the filled value is searched: {}", found.text);
        // Existing properties made required: a number and a structured value fill the same way.
        for (name, data_type, default) in [("score", "integer", json!(7)), ("cap", "currency", json!({ "amount": "5", "code": "EUR" }))] {
            app.post("/v1/object-types/users/properties", &tenant.key, json!({ "name": name, "data_type": data_type })).await.expect(201);
            let path = format!("/v1/object-types/users/properties/{name}");
            let required = app.patch(&path, &tenant.key, json!({ "is_required": true, "default_value": default })).await;
            required.expect(200);
            let stored = required.data()["default_value"].clone();
            let all = app.get("/v1/objects/users/list?limit=50", &tenant.key).await;
            let results = all.data()["results"].as_array().unwrap();
            assert_eq!(results.len(), 3);
            assert!(results.iter().all(|o| o["properties"][name] == stored), "{}", all.text);
        }
        let list = app.get("/v1/objects/users/list?filter[score][eq]=7", &tenant.key).await;
        assert_eq!(list.data()["total"], 3);

        // A unique currency is its amount in its currency.
        schema(&app, &tenant, "prices", json!([{ "name": "fee", "data_type": "currency", "is_unique": true }])).await;
        create(&app, &tenant, "prices", json!({ "fee": { "amount": "10", "code": "EUR" } })).await;
        create(&app, &tenant, "prices", json!({ "fee": { "amount": "10", "code": "USD" } })).await;
        app.post("/v1/objects/prices", &tenant.key, json!({ "properties": { "fee": { "amount": "10.00", "code": "EUR" } } }))
            .await.expect_error(409, "CONFLICT");
    }

    async fn lists_filter_and_sort_by_typed_properties(app) {
        let tenant = app.tenant_on("Filters", "enterprise").await;
        schema(&app, &tenant, "items", json!([
            { "name": "name", "data_type": "string", "is_sortable": true },
            { "name": "qty", "data_type": "integer", "is_indexed": true, "is_sortable": true },
            { "name": "price", "data_type": "decimal", "is_sortable": true },
            { "name": "due", "data_type": "date", "is_indexed": true },
            { "name": "at", "data_type": "datetime", "is_sortable": true },
            { "name": "active", "data_type": "boolean" },
            { "name": "size", "data_type": "enum", "enum_values": ["s", "m", "l"] },
            { "name": "tags", "data_type": "multi_enum", "enum_values": ["red", "blue"] },
            { "name": "total", "data_type": "currency", "is_sortable": true },
            { "name": "notes", "data_type": "text" },
        ])).await;
        for (name, qty, price, due, active, size, tags) in [
            ("apple", 5, "9.5", "2026-03-01", true, "s", json!(["red"])),
            ("banana", 12, "10.25", "2026-01-15", false, "m", json!(["blue", "red"])),
            ("cherry", 100, "2", "2025-12-31", true, "l", json!([])),
            ("date", -3, "100.001", "2026-03-02", true, "m", json!(["blue"])),
        ] {
            create(&app, &tenant, "items", json!({
                "name": name, "qty": qty, "price": price, "due": due, "active": active, "size": size, "tags": tags,
                "total": { "amount": price, "code": "EUR" }, "notes": format!("{name} notes"),
                "at": format!("{due}T08:00:00Z"),
            })).await;
        }
        create(&app, &tenant, "items", json!({ "name": "empty" })).await;
        let list = |query: &str| {
            let path = format!("/v1/objects/items/list?{query}");
            let (app, key) = (&app, tenant.key.clone());
            async move { app.get(&path, &key).await }
        };
        let check = |resp: crate::common::Resp, want: &[&str]| {
            assert_eq!(resp.status, 200, "{}", resp.text);
            let mut got: Vec<String> = names(&resp).iter().map(|n| n.as_str().unwrap().to_string()).collect();
            got.sort();
            assert_eq!(got, want);
        };
        check(list("filter[qty][gt]=10").await, &["banana", "cherry"]);
        check(list("filter[qty][lte]=5&filter[qty][gte]=-3").await, &["apple", "date"]);
        // Decimals compare as numbers, not text ("9.5" > "10.25" as text).
        check(list("filter[price][lt]=10").await, &["apple", "cherry"]);
        check(list("filter[total][gte]=10").await, &["banana", "date"]);
        check(list("filter[due][gte]=2026-03-01").await, &["apple", "date"]);
        check(list("filter[at][lt]=2026-01-15T08:00:00.001Z").await, &["banana", "cherry"]);
        check(list("filter[active][eq]=false").await, &["banana"]);
        check(list("filter[size][in]=s,l").await, &["apple", "cherry"]);
        check(list("filter[size][ne]=m").await, &["apple", "cherry", "empty"]);
        check(list("filter[tags][contains]=blue").await, &["banana", "date"]);
        check(list("filter[name][starts_with]=b").await, &["banana"]);
        check(list("filter[notes][contains]=ERRY%20NO").await, &["cherry"]);
        check(list("filter[qty][exists]=false").await, &["empty"]);
        check(list("filter[name]=apple").await, &["apple"]);
        for bad in ["filter[qty][gt]=many", "filter[nope][eq]=1", "filter[tags][eq]=red", "filter[qty][near]=1",
                    "filter[size][eq]=xl", "sort=notes", "sort=unknown", "limit=0", "fields=secret", "colour=red"] {
            let resp = list(bad).await;
            assert!(resp.status == 422 || resp.status == 400, "{bad}: {}", resp.text);
        }

        // Sorts: by a sortable property both ways (absent values smallest), paged by cursor.
        let asc = list("sort=qty").await;
        assert_eq!(names(&asc), [json!("empty"), json!("date"), json!("apple"), json!("banana"), json!("cherry")]);
        let desc = list("sort=price&order=desc").await;
        assert_eq!(names(&desc), [json!("date"), json!("banana"), json!("apple"), json!("cherry"), json!("empty")]);
        let by_time = list("sort=-at").await;
        assert_eq!(names(&by_time)[0], "date");
        for sort in ["qty", "-qty", "name", "-price", "at", "total", "-total", "created_at", "-updated_at", "id"] {
            let whole = ids(&list(&format!("sort={sort}")).await);
            let mut paged = Vec::new();
            let mut cursor = String::new();
            loop {
                let page = list(&format!("sort={sort}&limit=2{cursor}")).await;
                page.expect(200);
                paged.extend(ids(&page));
                match page.data()["next_cursor"].as_str() {
                    Some(next) => cursor = format!("&cursor={next}"),
                    None => break,
                }
            }
            assert_eq!(paged, whole, "sort {sort}");
        }
        // A cursor belongs to its sort.
        let page = list("sort=qty&limit=1").await;
        let cursor = page.data()["next_cursor"].as_str().unwrap().to_string();
        list(&format!("sort=name&cursor={cursor}")).await.expect_error(400, "BAD_REQUEST");
        // Fields: object fields and property names.
        let slim = list("fields=name,version&limit=1").await;
        let first = &slim.data()["results"][0];
        assert_eq!(first.as_object().unwrap().keys().collect::<Vec<_>>(), ["id", "properties", "version"]);
        assert_eq!(first["properties"].as_object().unwrap().keys().collect::<Vec<_>>(), ["name"]);
    }

    async fn cursor_pages_stay_stable_while_objects_arrive(app) {
        let tenant = app.tenant("Pages").await;
        schema(&app, &tenant, "rows", json!([{ "name": "n", "data_type": "integer", "is_sortable": true }])).await;
        for n in 0..6 {
            create(&app, &tenant, "rows", json!({ "n": n * 10 })).await;
        }
        let first = app.get("/v1/objects/rows/list?sort=n&limit=3", &tenant.key).await;
        let cursor = first.data()["next_cursor"].as_str().unwrap().to_string();
        // New rows before and after the cursor's position.
        create(&app, &tenant, "rows", json!({ "n": 5 })).await;
        create(&app, &tenant, "rows", json!({ "n": 45 })).await;
        let second = app.get(&format!("/v1/objects/rows/list?sort=n&limit=10&cursor={cursor}"), &tenant.key).await;
        let values: Vec<i64> = second.data()["results"].as_array().unwrap().iter().map(|o| o["properties"]["n"].as_i64().unwrap()).collect();
        assert_eq!(values, [30, 40, 45, 50]);
    }

    async fn search_combines_groups_and_full_text(app) {
        let tenant = app.tenant("Search").await;
        schema(&app, &tenant, "docs", json!([
            { "name": "title", "data_type": "string" },
            { "name": "body", "data_type": "rich_text" },
            { "name": "stars", "data_type": "integer", "is_sortable": true },
            { "name": "contact", "data_type": "email" },
        ])).await;
        create(&app, &tenant, "docs", json!({ "title": "Rust services", "body": "<p>Fast <b>and</b> safe</p>", "stars": 5 })).await;
        create(&app, &tenant, "docs", json!({ "title": "Gardening", "body": "<p>Slow and green</p>", "stars": 3 })).await;
        create(&app, &tenant, "docs", json!({ "title": "Fast food", "body": "<p>Neither</p>", "stars": 1, "contact": "chef@diner.example" })).await;
        let search = |body: Value| {
            let (app, key) = (&app, tenant.key.clone());
            async move { app.post("/v1/objects/docs/search", &key, body).await }
        };
        let titles = |resp: &crate::common::Resp| -> Vec<String> {
            resp.data()["results"].as_array().unwrap().iter().map(|o| o["properties"]["title"].as_str().unwrap().to_string()).collect()
        };
        let fast = search(json!({ "query": "fast", "sort": "-stars" })).await;
        fast.expect(200);
        assert_eq!(titles(&fast), ["Rust services", "Fast food"]);
        assert_eq!(titles(&search(json!({ "query": "fast safe" })).await), ["Rust services"]);
        // Addresses are searched by their words, on both databases.
        assert_eq!(titles(&search(json!({ "query": "diner.example" })).await), ["Fast food"]);
        assert_eq!(titles(&search(json!({ "query": "chef" })).await), ["Fast food"]);
        assert_eq!(titles(&search(json!({ "query": "\"unbalanced OR *" })).await), Vec::<String>::new());
        let grouped = search(json!({
            "filters": { "or": [
                { "property": "stars", "op": "gte", "value": 5 },
                { "and": [{ "property": "title", "op": "starts_with", "value": "Gar" }, { "property": "stars", "op": "lt", "value": "4" }] },
            ] },
            "sort": "stars",
        })).await;
        assert_eq!(titles(&grouped), ["Gardening", "Rust services"]);
        let paged = search(json!({ "sort": "stars", "limit": 2 })).await;
        let cursor = paged.data()["next_cursor"].as_str().unwrap();
        let rest = search(json!({ "sort": "stars", "limit": 2, "cursor": cursor })).await;
        assert_eq!(titles(&rest), ["Rust services"]);
        for bad in [
            json!({ "filters": { "property": "stars", "op": "gte" , "value": "x" } }),
            json!({ "filters": { "xor": [] } }),
            json!({ "filters": [{ "property": "nope", "op": "eq", "value": 1 }] }),
            json!({ "limit": 101 }),
            json!({ "sort": "title" }),
            json!({ "colour": 1 }),
        ] {
            let resp = search(bad.clone()).await;
            assert_eq!(resp.status, 422, "{bad}: {}", resp.text);
        }
    }

    async fn batches_are_all_or_nothing(app) {
        let tenant = app.tenant("Batch").await;
        schema(&app, &tenant, "tasks", json!([
            { "name": "title", "data_type": "string", "is_required": true },
            { "name": "code", "data_type": "string", "is_unique": true },
        ])).await;
        let refused = app.post("/v1/objects/tasks/batch/create", &tenant.key, json!({ "objects": [
            { "properties": { "title": "one" } }, { "properties": {} }, { "properties": { "title": 3 } },
        ] })).await;
        refused.expect_error(422, "VALIDATION_FAILED");
        let items = refused.body["error"]["items"].as_array().unwrap();
        assert_eq!(items.iter().map(|i| i["index"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(app.count("SELECT COUNT(*) FROM objects").await, 0);
        let duplicate = app.post("/v1/objects/tasks/batch/create", &tenant.key, json!({ "objects": [
            { "properties": { "title": "a", "code": "X" } }, { "properties": { "title": "b", "code": "X" } },
        ] })).await;
        duplicate.expect_error(409, "CONFLICT");
        assert_eq!(duplicate.body["error"]["index"], 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM objects").await, 0);
        let too_many: Vec<Value> = (0..101).map(|i| json!({ "properties": { "title": format!("t{i}") } })).collect();
        app.post("/v1/objects/tasks/batch/create", &tenant.key, json!({ "objects": too_many })).await.expect_error(422, "VALIDATION_FAILED");

        let created = app.post("/v1/objects/tasks/batch/create", &tenant.key, json!({ "objects": [
            { "properties": { "title": "a" } }, { "properties": { "title": "b" } }, { "properties": { "title": "c" } },
        ] })).await;
        created.expect(201);
        assert_eq!(created.data()["created"], 3);
        let created_ids: Vec<Value> = created.data()["ids"].as_array().unwrap().clone();
        let read = app.post("/v1/objects/tasks/batch/read", &tenant.key, json!({ "object_ids": [created_ids[2], created_ids[0], "obj_01h455vb4pex5vsknk084sn02q"] })).await;
        let read_ids: Vec<&Value> = read.data().as_array().unwrap().iter().map(|o| &o["id"]).collect();
        assert_eq!(read_ids, [&created_ids[2], &created_ids[0]]);

        let refused = app.post("/v1/objects/tasks/batch/update", &tenant.key, json!({ "updates": [
            { "object_id": created_ids[0], "properties": { "title": "A" } },
            { "object_id": created_ids[1], "properties": { "title": null } },
            { "object_id": created_ids[2], "properties": { "title": "C" }, "version": 7 },
        ] })).await;
        refused.expect_error(422, "VALIDATION_FAILED");
        assert_eq!(refused.body["error"]["items"].as_array().unwrap().len(), 2);
        let unchanged = app.get(&format!("/v1/objects/tasks/{}", created_ids[0].as_str().unwrap()), &tenant.key).await;
        assert_eq!(unchanged.data()["properties"]["title"], "a");
        assert_eq!(unchanged.data()["version"], 1);
        let updated = app.post("/v1/objects/tasks/batch/update", &tenant.key, json!({ "updates": [
            { "object_id": created_ids[0], "properties": { "title": "A" } },
            { "object_id": created_ids[1], "properties": { "title": "B" }, "version": 1 },
        ] })).await;
        updated.expect(200);
        assert_eq!(updated.data(), &json!([{ "object_id": created_ids[0], "version": 2 }, { "object_id": created_ids[1], "version": 2 }]));
    }

    async fn types_with_objects_need_confirmation_and_quota_is_enforced(app) {
        let tenant = app.tenant("Quota").await;
        schema(&app, &tenant, "things", json!([{ "name": "n", "data_type": "integer", "is_unique": true }])).await;
        schema(&app, &tenant, "links", json!([{ "name": "thing", "data_type": "reference", "reference_type": "things" }])).await;
        let request = app.request(Method::PATCH, &format!("/v1/tenants/{}/entitlements", tenant.id), Some(crate::common::ADMIN_KEY))
            .json(&json!({ "limits": { "objects": 2 } }));
        app.send(request).await.expect(200);
        let thing = create(&app, &tenant, "things", json!({ "n": 1 })).await;
        create(&app, &tenant, "links", json!({ "thing": thing["id"] })).await;
        let refused = app.post("/v1/objects/things", &tenant.key, json!({ "properties": { "n": 2 } })).await;
        refused.expect_error(403, "FEATURE_LIMIT_REACHED");
        // A purge of an object others point at needs confirmation; it gives the quota back.
        let purge = format!("/v1/objects/things/{}?force=true", thing["id"].as_str().unwrap());
        let asked = app.delete(&purge, &tenant.key).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        assert_eq!(asked.body["error"]["dependencies"][0]["type"], "references");
        let token = asked.body["error"]["confirm_token"].as_str().unwrap().to_string();
        app.delete(&format!("{purge}&confirm_token={token}"), &tenant.key).await.expect(200);
        create(&app, &tenant, "things", json!({ "n": 2 })).await;

        let asked = app.delete("/v1/object-types/things", &tenant.key).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        let deps = asked.body["error"]["dependencies"].as_array().unwrap();
        let count = |kind: &str| deps.iter().find(|d| d["type"] == kind).map(|d| d["count"].clone());
        assert_eq!(count("objects"), Some(json!(1)));
        assert_eq!(count("references"), Some(json!(1)));
        app.delete_confirmed("/v1/object-types/things", &tenant.key).await.expect(200);
        assert_eq!(app.count("SELECT COUNT(*) FROM object_properties WHERE data_type = 'reference'").await, 0);
        // The type's objects are gone and their quota with them: two more fit.
        create(&app, &tenant, "links", json!({})).await;
        let usage = app.get("/v1/entitlements/check?feature=objects", &tenant.key).await;
        assert_eq!(usage.data()["current_usage"], 2, "{}", usage.text);
    }
}

both_backends! {
    async fn property_indexes_are_built_and_dropped_in_the_background(app) {
        let tenant = app.tenant_on("Indexes", "enterprise").await;
        schema(&app, &tenant, "orders", json!([{ "name": "total", "data_type": "integer" }, { "name": "code", "data_type": "string" }])).await;
        for i in 0..40 {
            create(&app, &tenant, "orders", json!({ "total": (i * 7) % 40, "code": format!("c{i}") })).await;
        }
        let total = app.get("/v1/object-types/orders/properties/total", &tenant.key).await;
        assert_eq!(total.data()["index_status"], "none", "{}", total.text);
        let id = total.data()["id"].as_str().unwrap().to_string();
        let lookup = format!("objidx_{id}");

        // Asked for, the index is answered as building, then built by the job: lists read through it.
        let changed = app.patch("/v1/object-types/orders/properties/total", &tenant.key, json!({ "is_sortable": true })).await;
        changed.expect(200);
        assert_eq!(changed.data()["index_status"], "building", "{}", changed.text);
        let ready = index_settles(&app, &tenant, "orders", "total", "ready").await;
        assert_eq!(ready["is_sortable"], true);
        assert!(index_exists(&app, &lookup).await);
        let plan = plinth::objects::query::explain(&app.app, &plinth::id::TenantId::trusted(tenant.id.clone()), "orders", "sort=-total").await.unwrap();
        assert!(plan.contains(&lookup), "{plan}");
        let sorted = app.get("/v1/objects/orders/list?sort=-total&limit=3", &tenant.key).await;
        let totals: Vec<Value> = sorted.data()["results"].as_array().unwrap().iter().map(|o| o["properties"]["total"].clone()).collect();
        assert_eq!(totals, [json!(39), json!(38), json!(37)]);

        // Unflagged: no index wanted at once, and the index goes.
        let changed = app.patch("/v1/object-types/orders/properties/total", &tenant.key, json!({ "is_sortable": false })).await;
        assert_eq!(changed.data()["index_status"], "none", "{}", changed.text);
        index_goes(&app, &lookup).await;

        // Flipped on, off and on again before any job ran: the last word holds.
        for sortable in [true, false, true] {
            app.patch("/v1/object-types/orders/properties/total", &tenant.key, json!({ "is_sortable": sortable })).await.expect(200);
        }
        index_settles(&app, &tenant, "orders", "total", "ready").await;
        assert!(index_exists(&app, &lookup).await);

        // A unique property holds from the answer on, its index built in the background; unflagged
        // or deleted, its indexes go.
        let code = app.patch("/v1/object-types/orders/properties/code", &tenant.key, json!({ "is_unique": true, "is_indexed": true })).await;
        code.expect(200);
        assert_eq!(code.data()["index_status"], "building", "{}", code.text);
        let code_id = code.data()["id"].as_str().unwrap().to_string();
        let taken = app.post("/v1/objects/orders", &tenant.key, json!({ "properties": { "code": "c1" } })).await;
        taken.expect_error(409, "CONFLICT");
        index_settles(&app, &tenant, "orders", "code", "ready").await;
        assert!(index_exists(&app, &format!("objuniq_{code_id}")).await);
        let taken = app.post("/v1/objects/orders", &tenant.key, json!({ "properties": { "code": "c1" } })).await;
        assert_eq!(taken.expect_error(409, "CONFLICT").body["error"]["property"], "code", "{}", taken.text);
        app.delete("/v1/object-types/orders/properties/code", &tenant.key).await.expect(200);
        index_goes(&app, &format!("objuniq_{code_id}")).await;
        index_goes(&app, &format!("objidx_{code_id}")).await;
        // Deleting the type drops what its properties still had.
        app.delete_confirmed("/v1/object-types/orders", &tenant.key).await.expect(200);
        index_goes(&app, &lookup).await;
    }

    async fn filters_and_sorts_on_flagged_properties_use_their_indexes(app) {
        let tenant = app.tenant("Plans").await;
        schema(&app, &tenant, "orders", json!([
            { "name": "email", "data_type": "email", "is_indexed": true },
            { "name": "total", "data_type": "decimal", "is_sortable": true },
            { "name": "placed", "data_type": "date", "is_indexed": true, "is_sortable": true },
            { "name": "note", "data_type": "string" },
        ])).await;
        for i in 0..30 {
            create(&app, &tenant, "orders", json!({
                "email": format!("c{i}@example.com"), "total": format!("{i}.5"), "placed": format!("2026-01-{:02}", i % 28 + 1)
            })).await;
        }
        for query in ["filter[email][eq]=c3@example.com", "sort=-total", "filter[placed][gte]=2026-01-10&sort=placed",
                      "filter[email][in]=c1@example.com,c2@example.com&sort=total"] {
            let plan = plinth::objects::query::explain(&app.app, &plinth::id::TenantId::trusted(tenant.id.clone()), "orders", query).await.unwrap();
            println!("{query}\n{plan}\n");
            assert!(plan.contains("objidx_prop_"), "{query} does not use a property index:\n{plan}");
            assert!(!plan.contains("Seq Scan"), "{query} scans:\n{plan}");
        }
        // An unflagged property is read from the type's objects, without a property index.
        let plan = plinth::objects::query::explain(&app.app, &plinth::id::TenantId::trusted(tenant.id.clone()), "orders", "filter[note][eq]=x").await.unwrap();
        assert!(!plan.contains("objidx_prop_"), "{plan}");
    }

    async fn random_objects_round_trip_and_random_bad_ones_write_nothing(app) {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let tenant = app.tenant_on("Props", "enterprise").await;
        schema(&app, &tenant, "random", json!([
            { "name": "s", "data_type": "string" }, { "name": "i", "data_type": "integer" },
            { "name": "n", "data_type": "number" }, { "name": "d", "data_type": "decimal" },
            { "name": "b", "data_type": "boolean" }, { "name": "da", "data_type": "date" },
            { "name": "em", "data_type": "email" }, { "name": "en", "data_type": "enum", "enum_values": ["a", "b", "c"] },
            { "name": "co", "data_type": "color" }, { "name": "j", "data_type": "json" },
            { "name": "ti", "data_type": "time" },
        ])).await;
        let value = prop_oneof![
            Just(Value::Null), any::<bool>().prop_map(Value::from), any::<i32>().prop_map(Value::from), "[a-z]{0,8}".prop_map(Value::from)
        ];
        let valid = (
            proptest::option::of("\\PC{0,40}"),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<f64>().prop_filter("finite", |x| x.is_finite())),
            proptest::option::of("-?[1-9][0-9]{0,25}(\\.[0-9]{1,12})?"),
            proptest::option::of(any::<bool>()),
            proptest::option::of((1i32..=9999, 1u32..=365).prop_map(|(y, d)| chrono::NaiveDate::from_yo_opt(y, d).unwrap().format("%Y-%m-%d").to_string())),
            proptest::option::of("[a-z0-9]{1,12}@[a-z]{1,10}\\.(com|org)"),
            proptest::option::of(prop_oneof![Just("a"), Just("b"), Just("c")]),
            proptest::option::of("#[0-9A-F]{6}"),
            proptest::option::of(proptest::collection::btree_map("[a-z]{1,5}", value, 0..4)),
            proptest::option::of((0u32..24, 0u32..60, 0u32..60).prop_map(|(h, m, s)| format!("{h:02}:{m:02}:{s:02}"))),
        );
        let handle = tokio::runtime::Handle::current();
        let mut runner = TestRunner::new(Config { cases: 24, failure_persistence: None, ..Config::default() });
        runner.run(&valid, |(s, i, n, d, b, da, em, en, co, j, ti)| {
            let mut properties = serde_json::Map::new();
            let mut put = |name: &str, v: Option<Value>| { if let Some(v) = v { properties.insert(name.into(), v); } };
            put("s", s.map(Value::from)); put("i", i.map(Value::from)); put("n", n.map(Value::from));
            put("d", d.map(Value::from)); put("b", b.map(Value::from)); put("da", da.map(Value::from));
            put("em", em.map(Value::from)); put("en", en.map(Value::from)); put("co", co.map(Value::from));
            put("j", j.map(|m| json!(m))); put("ti", ti.map(Value::from));
            let properties = Value::Object(properties);
            let read = tokio::task::block_in_place(|| handle.block_on(async {
                let created = create(&app, &tenant, "random", properties.clone()).await;
                app.get(&format!("/v1/objects/random/{}", created["id"].as_str().unwrap()), &tenant.key).await
            }));
            prop_assert_eq!(&read.data()["properties"], &properties);
            Ok(())
        }).unwrap();

        let written = app.count("SELECT COUNT(*) FROM objects").await;
        let wrong = prop_oneof![
            Just(("i", json!("12"))), Just(("i", json!(1.5))), Just(("n", json!("nan"))), Just(("d", json!("1..2"))),
            Just(("b", json!(1))), Just(("da", json!("2026-02-29"))), Just(("em", json!("@x.com"))),
            Just(("en", json!("d"))), Just(("co", json!("#12345G"))), Just(("ti", json!("12:60:00"))), Just(("zz", json!(1))),
            Just(("s", json!(["list"]))),
        ];
        let mut runner = TestRunner::new(Config { cases: 24, failure_persistence: None, ..Config::default() });
        runner.run(&(wrong, "[a-z]{1,8}"), |((name, bad), fine)| {
            let resp = tokio::task::block_in_place(|| handle.block_on(
                app.post("/v1/objects/random", &tenant.key, json!({ "properties": { "s": fine, name: bad } }))
            ));
            prop_assert_eq!(resp.status, 422, "{}", resp.text);
            Ok(())
        }).unwrap();
        assert_eq!(app.count("SELECT COUNT(*) FROM objects").await, written, "refused objects write nothing");
    }
}

both_backends! {
    async fn every_filterable_type_filters_and_sorts_in_its_own_order(app) {
        let tenant = app.tenant_on("Orders", "enterprise").await;
        // Three values per type, smallest first in the type's order (not always in text order).
        let cases = [
            ("string", json!(["Apple", "apple", "banana"])),
            ("integer", json!([-5, 9, 10])),
            ("number", json!([-1.5, 2, 10.25])),
            ("percent", json!([0.5, 9, 10])),
            ("decimal", json!(["-2.5", "9.99", "10"])),
            ("currency", json!([{ "amount": "2", "code": "EUR" }, { "amount": "9.5", "code": "EUR" }, { "amount": "10", "code": "EUR" }])),
            ("date", json!(["1999-12-31", "2026-01-09", "2026-01-10"])),
            ("datetime", json!(["2026-01-01T22:00:00-02:00", "2026-01-02T00:30:00Z", "2026-01-02T00:30:00.5Z"])),
            ("time", json!(["08:00", "09:30:00", "10:00:00"])),
            ("email", json!(["a@b.com", "b@a.com", "c@a.com"])),
            ("url", json!(["http://a.com/", "https://a.com/", "https://b.com/"])),
            ("phone", json!(["+14155550000", "+442079460958", "+819012345678"])),
            ("uuid", json!(["00000000-0000-4000-8000-000000000000", "67e55044-10b1-426f-9247-bb680e5fe0c8", "ffffffff-0000-4000-8000-000000000000"])),
            ("color", json!(["#000000", "#7F7F7F", "#FFFFFF"])),
        ];
        for (data_type, values) in cases {
            let type_name = format!("t_{data_type}");
            schema(&app, &tenant, &type_name, json!([{ "name": "v", "data_type": data_type, "is_sortable": true, "is_indexed": true }])).await;
            let mut ids = Vec::new();
            // Inserted middle, largest, smallest: the sort has to do the work.
            for index in [1, 2, 0] {
                let object = create(&app, &tenant, &type_name, json!({ "v": values[index] })).await;
                ids.push((index, object["id"].as_str().unwrap().to_string()));
            }
            ids.sort();
            let want: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
            let list = |query: String| {
                let (app, key, path) = (&app, tenant.key.clone(), format!("/v1/objects/{type_name}/list?{query}"));
                async move { app.get(&path, &key).await }
            };
            let asc = list("sort=v".into()).await;
            assert_eq!(ids_of(&asc), want, "{data_type} ascending: {}", asc.text);
            let mut reversed = want.clone();
            reversed.reverse();
            assert_eq!(ids_of(&list("sort=-v".into()).await), reversed, "{data_type} descending");
            // The search body takes typed values; gt the middle value is the largest only.
            let middle = values[1].clone();
            let middle = if data_type == "currency" { middle["amount"].clone() } else { middle };
            let body = json!({ "filters": { "property": "v", "op": "gt", "value": middle } });
            let above = app.post(&format!("/v1/objects/{type_name}/search"), &tenant.key, body).await;
            assert_eq!(ids_of(&above), [want[2].clone()], "{data_type} gt: {}", above.text);
            let body = json!({ "filters": { "property": "v", "op": "lte", "value": middle } });
            let below = app.post(&format!("/v1/objects/{type_name}/search"), &tenant.key, body).await;
            let mut got = ids_of(&below);
            got.sort();
            let mut expected = want[..2].to_vec();
            expected.sort();
            assert_eq!(got, expected, "{data_type} lte: {}", below.text);
            let body = json!({ "filters": { "property": "v", "op": "eq", "value": middle } });
            let equal = app.post(&format!("/v1/objects/{type_name}/search"), &tenant.key, body).await;
            assert_eq!(ids_of(&equal), [want[1].clone()], "{data_type} eq: {}", equal.text);
        }
    }
}

fn ids_of(resp: &crate::common::Resp) -> Vec<String> {
    assert_eq!(resp.status, 200, "{}", resp.text);
    ids(resp)
}

/// PostgreSQL only, where nodes and tenants share one server: a tenant's property change (an
/// index, a unique property) neither waits for another tenant's write in flight nor holds it,
/// and its indexes are built once that write is done. (SQLite has one writer: every write waits its turn there.)
mod a_schema_change_holds_no_other_tenant {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let app = TestApp::spawn(crate::common::Backend::Postgres).await;
        let (a, b) = (app.tenant("Alpha").await, app.tenant("Beta").await);
        schema(&app, &a, "items", json!([{ "name": "qty", "data_type": "integer" }])).await;
        for qty in 0..20 {
            create(&app, &a, "items", json!({ "qty": qty })).await;
        }
        schema(&app, &b, "notes", json!([{ "name": "title", "data_type": "string" }])).await;
        let note = create(&app, &b, "notes", json!({ "title": "first" })).await;

        // Tenant B's write in flight: a transaction that changed its object and has not committed.
        let mut open = app.app.db.pool().begin().await.unwrap();
        sqlx::query("UPDATE objects SET version = version WHERE id = $1")
            .bind(note["id"].as_str().unwrap())
            .execute(&mut *open)
            .await
            .unwrap();

        // A's change is answered meanwhile; B goes on writing while A's index waits to be built.
        let wait = std::time::Duration::from_secs(20);
        let change = app.patch("/v1/object-types/items/properties/qty", &a.key, json!({ "is_sortable": true }));
        let changed = tokio::time::timeout(wait, change).await.expect("the change waited for another tenant's write");
        changed.expect(200);
        assert_eq!(changed.data()["index_status"], "building", "{}", changed.text);
        let unique = app.post(
            "/v1/object-types/items/properties",
            &a.key,
            json!({ "name": "sku", "data_type": "string", "is_unique": true }),
        );
        let unique =
            tokio::time::timeout(wait, unique).await.expect("a unique property waited for another tenant's write");
        unique.expect(201);
        assert_eq!(unique.data()["index_status"], "building", "{}", unique.text);
        let write = app.post("/v1/objects/notes", &b.key, json!({ "properties": { "title": "second" } }));
        tokio::time::timeout(wait, write).await.expect("B's write waited for A's index").expect(201);
        // A's unique values hold while their index waits to be built.
        create(&app, &a, "items", json!({ "qty": 1, "sku": "s-1" })).await;
        app.post("/v1/objects/items", &a.key, json!({ "properties": { "sku": "s-1" } }))
            .await
            .expect_error(409, "CONFLICT");
        // A concurrent build waits for every older write: it cannot be ready before B's commits.
        let property = app.get("/v1/object-types/items/properties/qty", &a.key).await;
        assert_eq!(property.data()["index_status"], "building", "{}", property.text);

        open.commit().await.unwrap();
        index_settles(&app, &a, "items", "qty", "ready").await;
        index_settles(&app, &a, "items", "sku", "ready").await;
        for pattern in ["objidx_%", "objuniq_%"] {
            let valid = app
                .count(&format!("SELECT COUNT(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE '{pattern}' AND i.indisvalid"))
                .await;
            assert_eq!(valid, 1, "{pattern}");
        }
        app.post("/v1/objects/items", &a.key, json!({ "properties": { "sku": "s-1" } }))
            .await
            .expect_error(409, "CONFLICT");
    }
}

/// The totals of a type's list and trash, the list's checked against a counted one.
async fn totals(app: &TestApp, key: &str) -> (i64, i64) {
    let live = app.get("/v1/objects/tasks/list?sort=-n&limit=2", key).await;
    let trash = app.get("/v1/objects/tasks/trash?limit=2", key).await;
    let counted = app.get("/v1/objects/tasks/list?filter[n][gte]=0&limit=2", key).await;
    assert_eq!(live.data()["total"], counted.data()["total"], "{} / {}", live.text, counted.text);
    (live.data()["total"].as_i64().unwrap(), trash.data()["total"].as_i64().unwrap())
}

both_backends! {
    async fn an_unfiltered_total_is_the_count_the_database_keeps(app) {
        let tenant = app.tenant_on("Totals", "enterprise").await;
        schema(&app, &tenant, "tasks", json!([{ "name": "n", "data_type": "integer", "is_sortable": true }])).await;
        schema(&app, &tenant, "other", json!([{ "name": "n", "data_type": "integer" }])).await;
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(create(&app, &tenant, "tasks", json!({ "n": n })).await["id"].as_str().unwrap().to_string());
        }
        create(&app, &tenant, "other", json!({ "n": 1 })).await;
        assert_eq!(totals(&app, &tenant.key).await, (5, 0));
        for id in &ids[..2] {
            app.delete(&format!("/v1/objects/tasks/{id}"), &tenant.key).await.expect(200);
        }
        assert_eq!(totals(&app, &tenant.key).await, (3, 2));
        app.post(&format!("/v1/objects/tasks/{}/restore", ids[0]), &tenant.key, json!({})).await.expect(200);
        assert_eq!(totals(&app, &tenant.key).await, (4, 1));
        app.delete(&format!("/v1/objects/tasks/{}?force=true", ids[1]), &tenant.key).await.expect(200);
        assert_eq!(totals(&app, &tenant.key).await, (4, 0));
        let batch: Vec<Value> = (10..13).map(|n| json!({ "properties": { "n": n } })).collect();
        app.post("/v1/objects/tasks/batch/create", &tenant.key, json!({ "objects": batch })).await.expect(201);
        assert_eq!(totals(&app, &tenant.key).await, (7, 0));
        // A failed write counts nothing.
        app.post("/v1/objects/tasks", &tenant.key, json!({ "properties": { "n": "seven" } })).await.expect(422);
        assert_eq!(totals(&app, &tenant.key).await, (7, 0));
        // An end user's list is narrowed by their policies: counted over what they may see.
        app.grant_owner_access(&tenant, "tasks").await;
        let body = json!({ "email": "counted@example.com", "password": "granite-otter-harbour-42" });
        let request = |path: &str| app.request(Method::POST, path, None).header("x-tenant-id", &tenant.id).json(&body);
        app.send(request("/v1/auth/signup")).await.expect(201);
        let login = app.send(request("/v1/auth/login")).await;
        let user = login.data()["access_token"].as_str().unwrap().to_string();
        app.post("/v1/objects/tasks", &user, json!({ "properties": { "n": 99 } })).await.expect(201);
        let theirs = app.get("/v1/objects/tasks/list", &user).await;
        assert_eq!(theirs.data()["total"], 1, "{}", theirs.text);
        assert_eq!(totals(&app, &tenant.key).await, (8, 0));
        // The kept count is the stored one, per type; a deleted type's goes with it.
        let stored = app.count("SELECT COUNT(*) FROM objects o JOIN object_types t ON t.id = o.object_type_id WHERE t.name = 'tasks' AND o.deleted_at IS NULL").await;
        assert_eq!(stored, 8);
        app.delete_confirmed("/v1/object-types/tasks", &tenant.key).await.expect(200);
        assert_eq!(app.count("SELECT COUNT(*) FROM object_counts").await, 1);
    }
}
