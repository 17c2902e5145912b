//! Import: JSON bodies, CSV and JSON files, mapping, all or nothing, skipping invalid rows,
//! dry runs, upserts by a unique property, limits, scopes and end users.

use crate::files::{form, BOUNDARY};
use serde_json::{json, Value};

use crate::associations::owners_of;
use crate::authz::end_user;
use crate::both_backends;
use crate::common::{TestApp, TestTenant};

async fn contacts(app: &TestApp, tenant: &TestTenant) {
    app.post("/v1/object-types", &tenant.key, json!({ "name": "contacts" })).await.expect(201);
    for body in [
        json!({ "name": "email", "data_type": "email", "is_unique": true }),
        json!({ "name": "name", "data_type": "string", "is_required": true }),
        json!({ "name": "age", "data_type": "integer" }),
        json!({ "name": "vip", "data_type": "boolean" }),
        json!({ "name": "tags", "data_type": "multi_enum", "enum_values": ["a", "b", "c"] }),
    ] {
        app.post("/v1/object-types/contacts/properties", &tenant.key, body).await.expect(201);
    }
}

async fn import(app: &TestApp, token: &str, body: Value) -> crate::common::Resp {
    app.post("/v1/data/import", token, body).await
}

async fn count(app: &TestApp, token: &str) -> i64 {
    app.get("/v1/objects/contacts/list", token).await.data()["total"].as_i64().unwrap()
}

both_backends! {
    async fn rows_are_imported_checked_and_upserted(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        contacts(&app, &tenant).await;

        let rows = json!([
            { "email": "ada@example.com", "name": "Ada", "age": 36, "vip": true, "tags": ["a"] },
            { "email": "bob@example.com", "name": "Bob" },
            { "email": "cy@example.com", "name": "Cy", "age": 41 }
        ]);
        let done = import(&app, &key, json!({ "object_type_id": "contacts", "data": rows })).await;
        done.expect(200);
        assert_eq!((done.data()["imported"].as_i64(), done.data()["total"].as_i64()), (Some(3), Some(3)));
        assert_eq!(count(&app, &key).await, 3);

        // A CSV file, mapped, with a column the type does not have.
        let csv = "Full Name,email,age,vip,tags,junk\nDee,dee@example.com,29,yes,a;b,x\n\"Eve, Jr.\",eve@example.com,,no,,y\n";
        let body = form(&[
            ("object_type_id", None, None, b"contacts"),
            ("mapping", None, None, br#"{"Full Name": "name"}"#),
            ("file", Some("people.csv"), Some("text/csv"), csv.as_bytes()),
        ]);
        let request = app.request(reqwest::Method::POST, "/v1/data/import", Some(&key))
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"));
        let filed = app.send(request.body(body)).await;
        filed.expect(200);
        assert_eq!(filed.data()["imported"], json!(2));
        assert_eq!(filed.data()["ignored_columns"], json!(["junk"]));
        let dee = app.get("/v1/objects/contacts/list?filter[email]=dee@example.com", &key).await;
        assert_eq!(dee.data()["results"][0]["properties"], json!({ "email": "dee@example.com", "name": "Dee", "age": 29, "vip": true, "tags": ["a", "b"] }));
        let eve = app.get("/v1/objects/contacts/list?filter[email]=eve@example.com", &key).await;
        assert_eq!(eve.data()["results"][0]["properties"]["name"], json!("Eve, Jr."));

        // All or nothing: one bad row refuses the import, naming it; nothing written.
        let bad = json!([
            { "email": "fay@example.com", "name": "Fay" },
            { "email": "gus@example.com", "name": "Gus", "age": "old" },
            { "email": "not-an-email", "name": "Hal" }
        ]);
        let refused = import(&app, &key, json!({ "object_type_id": "contacts", "data": bad })).await;
        refused.expect_error(422, "VALIDATION_FAILED");
        let errors = refused.body["error"]["errors"].as_array().unwrap();
        assert_eq!(errors.iter().map(|e| e["row"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 2]);
        assert!(errors[0]["details"].as_object().unwrap().keys().any(|k| k.contains("age")), "{}", errors[0]);
        assert_eq!(count(&app, &key).await, 5);

        // Skipping invalid rows writes the others and reports the rest.
        let skipped = import(&app, &key, json!({ "object_type_id": "contacts", "data": bad, "mode": "skip_invalid" })).await;
        skipped.expect(200);
        assert_eq!((skipped.data()["imported"].as_i64(), skipped.data()["skipped"].as_i64()), (Some(1), Some(2)));
        assert_eq!(count(&app, &key).await, 6);

        // A dry run checks and writes nothing.
        let dry = import(&app, &key, json!({ "object_type_id": "contacts", "dry_run": true,
            "data": [{ "email": "ivy@example.com", "name": "Ivy" }] })).await;
        dry.expect(200);
        assert_eq!((dry.data()["imported"].as_i64(), dry.data()["dry_run"].as_bool()), (Some(1), Some(true)));
        assert_eq!(count(&app, &key).await, 6);

        // Upsert by the unique email: one update, one new.
        let upsert = import(&app, &key, json!({ "object_type_id": "contacts", "upsert_by": "email", "data": [
            { "email": "ada@example.com", "name": "Ada Lovelace" },
            { "email": "jo@example.com", "name": "Jo" }
        ] })).await;
        upsert.expect(200);
        assert_eq!((upsert.data()["imported"].as_i64(), upsert.data()["updated"].as_i64()), (Some(1), Some(1)));
        let ada = app.get("/v1/objects/contacts/list?filter[email]=ada@example.com", &key).await;
        assert_eq!(ada.data()["results"][0]["properties"]["name"], json!("Ada Lovelace"));
        assert_eq!(ada.data()["results"][0]["properties"]["age"], json!(36));
        assert_eq!(count(&app, &key).await, 7);

        // A taken unique value without upsert: 409 naming the row, nothing written.
        let taken = import(&app, &key, json!({ "object_type_id": "contacts", "data": [
            { "email": "kim@example.com", "name": "Kim" }, { "email": "bob@example.com", "name": "Bob 2" }
        ] })).await;
        taken.expect_error(409, "CONFLICT");
        assert_eq!(taken.body["error"]["row"], json!(1));
        assert_eq!(count(&app, &key).await, 7);

        // Bad requests.
        import(&app, &key, json!({ "object_type_id": "contacts", "upsert_by": "name", "data": [] })).await
            .expect_error(422, "VALIDATION_FAILED");
        import(&app, &key, json!({ "object_type_id": "contacts", "mapping": { "x": "nope" }, "data": [] })).await
            .expect_error(422, "VALIDATION_FAILED");
        import(&app, &key, json!({ "object_type_id": "contacts", "data": { "not": "rows" } })).await
            .expect_error(422, "VALIDATION_FAILED");
        let many: Vec<Value> = (0..10_001).map(|i| json!({ "name": format!("n{i}") })).collect();
        import(&app, &key, json!({ "object_type_id": "contacts", "data": many })).await.expect_error(422, "VALIDATION_FAILED");
        let text = app.send(app.request(reqwest::Method::POST, "/v1/data/import", Some(&key)).body("a,b")).await;
        assert_eq!(text.status, 415);
        import(&app, &key, json!({ "object_type_id": "nope", "data": [] })).await.expect_error(404, "NOT_FOUND");
        let (_, reader) = app.key(&tenant, json!({ "name": "r", "scopes": ["objects:read"] })).await;
        import(&app, &reader, json!({ "object_type_id": "contacts", "data": [] })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        assert_eq!(count(&app, &key).await, 7);
    }

    async fn an_end_user_imports_rows_of_their_own(app) {
        let tenant = app.tenant("acme").await;
        contacts(&app, &tenant).await;
        owners_of(&app, &tenant, &["contacts"]).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        let done = import(&app, &ann.token, json!({ "object_type_id": "contacts", "data": [
            { "email": "x@example.com", "name": "X" }, { "email": "y@example.com", "name": "Y" }
        ] })).await;
        done.expect(200);
        assert_eq!(count(&app, &ann.token).await, 2);
        let listed = app.get("/v1/objects/contacts/list", &ann.token).await;
        assert!(listed.data()["results"].as_array().unwrap().iter().all(|o| o["created_by"] == json!(ann.id)));
    }

    async fn large_imports_run_as_jobs_and_report_progress(app) {
        let tenant = app.tenant_on("acme", "pro").await;
        let key = tenant.key.clone();
        contacts(&app, &tenant).await;
        let rows: Vec<Value> = (0..1_200)
            .map(|i| json!({ "email": format!("p{i}@example.com"), "name": format!("P {i}"), "age": i % 90 }))
            .collect();
        let started = import(&app, &key, json!({ "object_type_id": "contacts", "data": rows, "async": true })).await;
        started.expect(202);
        let import_id = started.data()["import_id"].as_str().unwrap().to_string();
        assert!(import_id.starts_with("imp_"));
        assert_eq!(started.data()["status"], json!("queued"));
        assert_eq!(started.data()["total"], json!(1_200));
        assert_eq!(started.data()["status_path"], json!(format!("/v1/data/import/{import_id}")));
        let (done, seen) = settled(&app, &key, &import_id).await;
        assert_eq!(done["status"], json!("done"), "{done}");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen:?}");
        assert_eq!(done["processed"], json!(1_200));
        assert_eq!(done["result"]["imported"], json!(1_200));
        assert_eq!(done["result"]["total"], json!(1_200));
        assert!(done["finished_at"].is_string());
        assert_eq!(count(&app, &key).await, 1_200);
        let ages = app.count("SELECT COUNT(*) FROM objects WHERE deleted_at IS NULL").await;
        assert_eq!(ages, 1_200);
        // The rows as sent are removed once the import ended (just after its outcome is written).
        let mut kept = 1;
        for _ in 0..100 {
            kept = app.count("SELECT COUNT(*) FROM data_imports WHERE input_key IS NOT NULL").await;
            if kept == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(kept, 0);
        let inputs = app.storage.data_dir.join("files").join("imports");
        assert!(inputs.is_dir(), "the rows were kept there while the import ran");
        let stored = walk(&inputs);
        assert!(stored.is_empty(), "{stored:?}");

        // All or nothing, as a CSV form: one bad row, nothing written, the rows reported.
        let csv = "email,name,age\nq1@example.com,Q1,3\nq2@example.com,Q2,old\nq3@example.com,,4\n";
        let body = form(&[
            ("object_type_id", None, None, b"contacts"),
            ("async", None, None, b"true"),
            ("file", Some("people.csv"), Some("text/csv"), csv.as_bytes()),
        ]);
        let request = app.request(reqwest::Method::POST, "/v1/data/import", Some(&key))
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"));
        let started = app.send(request.body(body)).await;
        started.expect(202);
        let (failed, _) = settled(&app, &key, started.data()["import_id"].as_str().unwrap()).await;
        assert_eq!(failed["status"], json!("failed"), "{failed}");
        assert_eq!(failed["error"]["code"], json!("VALIDATION_FAILED"));
        let rows: Vec<i64> = failed["error"]["errors"].as_array().unwrap().iter().map(|e| e["row"].as_i64().unwrap()).collect();
        assert_eq!(rows, vec![1, 2]);
        assert!(failed["result"].is_null());
        assert_eq!(count(&app, &key).await, 1_200);

        // Skipping invalid rows; an upsert in a dry run writes nothing.
        let skip = json!({ "object_type_id": "contacts", "format": "csv", "data": csv, "mode": "skip_invalid", "async": true });
        let started = import(&app, &key, skip).await;
        started.expect(202);
        let (done, _) = settled(&app, &key, started.data()["import_id"].as_str().unwrap()).await;
        assert_eq!((done["result"]["imported"].as_i64(), done["result"]["skipped"].as_i64()), (Some(1), Some(2)));
        assert_eq!(count(&app, &key).await, 1_201);
        let dry = json!({ "object_type_id": "contacts", "async": true, "dry_run": true, "upsert_by": "email",
            "data": [{ "email": "p1@example.com", "name": "Renamed" }, { "email": "new@example.com", "name": "New" }] });
        let started = import(&app, &key, dry).await;
        started.expect(202);
        assert_eq!(started.data()["dry_run"], json!(true));
        let (done, _) = settled(&app, &key, started.data()["import_id"].as_str().unwrap()).await;
        assert_eq!((done["result"]["imported"].as_i64(), done["result"]["updated"].as_i64()), (Some(1), Some(1)));
        assert_eq!(done["result"]["dry_run"], json!(true));
        assert_eq!(count(&app, &key).await, 1_201);

        // What a request can check is refused at once, and nothing is queued.
        let before = app.count("SELECT COUNT(*) FROM data_imports").await;
        import(&app, &key, json!({ "object_type_id": "nope", "data": [], "async": true })).await.expect_error(404, "NOT_FOUND");
        import(&app, &key, json!({ "object_type_id": "contacts", "data": [{}], "mapping": { "a": "nope" }, "async": true }))
            .await.expect_error(422, "VALIDATION_FAILED");
        let too_many: Vec<Value> = (0..10_001).map(|_| json!({})).collect();
        import(&app, &key, json!({ "object_type_id": "contacts", "data": too_many, "async": true })).await.expect_error(422, "VALIDATION_FAILED");
        let (_, reader) = app.key(&tenant, json!({ "name": "r", "scopes": ["objects:read"] })).await;
        import(&app, &reader, json!({ "object_type_id": "contacts", "data": [], "async": true })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        assert_eq!(app.count("SELECT COUNT(*) FROM data_imports").await, before);

        // Reading an import needs inserting the type's objects, in the tenant.
        app.get(&format!("/v1/data/import/{import_id}"), &reader).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let other = app.tenant("other").await;
        app.get(&format!("/v1/data/import/{import_id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.get("/v1/data/import/imp_nothing", &key).await.expect_error(404, "NOT_FOUND");
    }

    async fn an_import_job_acts_with_the_standing_of_its_request(app) {
        let tenant = app.tenant_on("acme", "pro").await;
        let key = tenant.key.clone();
        contacts(&app, &tenant).await;
        owners_of(&app, &tenant, &["contacts"]).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        let bob = end_user(&app, &tenant, "bob@example.com").await;
        let started = import(&app, &ann.token, json!({ "object_type_id": "contacts", "async": true,
            "data": [{ "email": "x@example.com", "name": "X" }] })).await;
        started.expect(202);
        let import_id = started.data()["import_id"].as_str().unwrap().to_string();
        // Polled with the key (an end user's 60 requests a minute would not last a slow run).
        let (done, _) = settled(&app, &key, &import_id).await;
        assert_eq!(done["result"]["imported"], json!(1));
        let theirs = app.get(&format!("/v1/data/import/{import_id}"), &ann.token).await;
        theirs.expect(200);
        assert_eq!(theirs.data()["status"], json!("done"));
        // The job wrote as ann: the row is hers, under her policies.
        let listed = app.get("/v1/objects/contacts/list", &ann.token).await;
        assert_eq!(listed.data()["results"][0]["created_by"], json!(ann.id));
        // Another end user does not see it; the key does.
        app.get(&format!("/v1/data/import/{import_id}"), &bob.token).await.expect_error(404, "NOT_FOUND");
        app.get(&format!("/v1/data/import/{import_id}"), &key).await.expect(200);

        // A standing is checked again when the work runs: a revoked key, an ended session.
        use plinth::auth::standing::Standing;
        let tenant_id = plinth::id::TenantId::trusted(tenant.id.clone());
        let (key_id, _) = app.key(&tenant, json!({ "name": "w", "scopes": ["objects:write"] })).await;
        let standing = Standing::Key { key_id: key_id.clone(), jti: None };
        let resumed = standing.resume(&app.app, &tenant_id).await.expect("a live key");
        assert_eq!(resumed.scopes(), ["objects:write".to_string()]);
        // The key's scopes as they are when the work runs, not when it was asked for.
        app.patch(&format!("/v1/keys/{key_id}"), &key, json!({ "scopes": ["objects:read"] })).await.expect(200);
        let resumed = standing.resume(&app.app, &tenant_id).await.expect("a live key");
        assert_eq!(resumed.scopes(), ["objects:read".to_string()]);
        app.delete(&format!("/v1/api-keys/{key_id}"), &key).await.expect(200);
        let refused = standing.resume(&app.app, &tenant_id).await.unwrap_err();
        assert_eq!(refused.code.as_str(), "UNAUTHORIZED");
        // A token issued from a key: live until revoked.
        let issued = app.post_public("/v1/token", json!({ "api_key": key })).await;
        issued.expect(201);
        let jti = issued.data()["jti"].as_str().unwrap().to_string();
        let standing = Standing::Key { key_id: tenant.key_id.clone(), jti: Some(jti.clone()) };
        standing.resume(&app.app, &tenant_id).await.expect("a live token");
        let revoke = app.request(reqwest::Method::DELETE, "/v1/token", Some(&key)).json(&json!({ "jti": jti }));
        app.send(revoke).await.expect(200);
        assert_eq!(standing.resume(&app.app, &tenant_id).await.unwrap_err().code.as_str(), "UNAUTHORIZED");
        let other = plinth::id::TenantId::trusted("tn_other");
        let (key_id, _) = app.key(&tenant, json!({ "name": "w2", "scopes": ["objects:write"] })).await;
        let standing = Standing::Key { key_id, jti: None };
        assert!(standing.resume(&app.app, &other).await.is_err(), "a key acts in its own tenant only");

        let sessions: Vec<(String,)> = sqlx::query_as("SELECT id FROM auth_sessions WHERE user_id = $1")
            .bind(&bob.id).fetch_all(app.app.db.pool()).await.unwrap();
        let standing = Standing::User { user_id: bob.id.clone(), session_id: sessions[0].0.clone() };
        let resumed = standing.resume(&app.app, &tenant_id).await.expect("a live session");
        assert!(resumed.access.is_some(), "an end user's roles and policies");
        let stranger = Standing::User { user_id: ann.id.clone(), session_id: sessions[0].0.clone() };
        assert!(stranger.resume(&app.app, &tenant_id).await.is_err(), "a live session is its own user's only");
        app.send(app.request(reqwest::Method::POST, "/v1/auth/logout", Some(&bob.token))).await.expect(200);
        assert_eq!(standing.resume(&app.app, &tenant_id).await.unwrap_err().code.as_str(), "UNAUTHORIZED");
    }

    async fn exports_are_made_as_jobs_and_downloaded(app) {
        let tenant = app.tenant_on("acme", "pro").await;
        let key = tenant.key.clone();
        contacts(&app, &tenant).await;
        let rows: Vec<Value> = (0..2_500).map(|i| json!({ "email": format!("p{i}@example.com"), "name": format!("P {i}"), "age": i % 90 })).collect();
        import(&app, &key, json!({ "object_type_id": "contacts", "data": rows })).await.expect(200);

        let started = app.post("/v1/data/export", &key, json!({ "object_type_id": "contacts" })).await;
        started.expect(202);
        assert_eq!(started.data()["record_count"], json!(2_500));
        let path = started.data()["download_path"].as_str().unwrap().to_string();
        let body = download(&app, &key, &path).await;
        assert_eq!(body.0, "application/json");
        let objects: Vec<Value> = serde_json::from_slice(&body.1).unwrap();
        assert_eq!(objects.len(), 2_500);
        let mut emails: Vec<&str> = objects.iter().map(|o| o["properties"]["email"].as_str().unwrap()).collect();
        emails.sort();
        emails.dedup();
        assert_eq!(emails.len(), 2_500);

        // CSV, filtered.
        let filtered = app.post("/v1/data/export", &key, json!({ "object_type_id": "contacts", "format": "csv",
            "filters": [{ "property": "age", "op": "gte", "value": 80 }] })).await;
        filtered.expect(202);
        let expected = (0..2_500).filter(|i| i % 90 >= 80).count();
        let path = filtered.data()["download_path"].as_str().unwrap().to_string();
        let (content_type, bytes) = download(&app, &key, &path).await;
        assert!(content_type.starts_with("text/csv"));
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "id,created_at,updated_at,created_by,version,age,email,name,tags,vip");
        assert_eq!(lines.len(), expected + 1);
        let status = app.get(&path, &key).await;
        assert_eq!(status.status, 200);

        // Refusals and tenants.
        app.post("/v1/data/export", &key, json!({ "object_type_id": "contacts", "filters": [{ "property": "nope", "op": "eq", "value": 1 }] })).await
            .expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/data/export", &key, json!({ "object_type_id": "nope" })).await.expect_error(404, "NOT_FOUND");
        let other = app.tenant("other").await;
        app.get(&path, &other.key).await.expect_error(404, "NOT_FOUND");

        // An end user's export holds their rows only.
        owners_of(&app, &tenant, &["contacts"]).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        import(&app, &ann.token, json!({ "object_type_id": "contacts", "data": [{ "email": "ann1@example.com", "name": "A1" }] })).await.expect(200);
        let mine = app.post("/v1/data/export", &ann.token, json!({ "object_type_id": "contacts" })).await;
        mine.expect(202);
        assert_eq!(mine.data()["record_count"], json!(1));
        let path = mine.data()["download_path"].as_str().unwrap().to_string();
        let (_, bytes) = download(&app, &ann.token, &path).await;
        let objects: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0]["properties"]["email"], json!("ann1@example.com"));
    }
}

/// Waits for an export to be made, then downloads it: (content type, bytes).
/// The files under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .flat_map(|entry| if entry.path().is_dir() { walk(&entry.path()) } else { vec![entry.path()] })
        .collect()
}

/// Polls an import (60 s at most) until it ends: its last state, and each `processed` seen.
async fn settled(app: &TestApp, token: &str, import_id: &str) -> (Value, Vec<i64>) {
    let mut seen = Vec::new();
    for _ in 0..600 {
        let got = app.get(&format!("/v1/data/import/{import_id}"), token).await;
        got.expect(200);
        let data = got.data().clone();
        seen.push(data["processed"].as_i64().unwrap());
        if data["status"] == "done" || data["status"] == "failed" {
            return (data, seen);
        }
        assert!(data["status"] == "queued" || data["status"] == "running", "{data}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("import {import_id} did not end");
}

async fn download(app: &TestApp, token: &str, path: &str) -> (String, Vec<u8>) {
    for _ in 0..600 {
        let response = app.request(reqwest::Method::GET, path, Some(token)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
        let disposition = response.headers().get("content-disposition").is_some();
        let bytes = response.bytes().await.unwrap().to_vec();
        if disposition {
            return (content_type, bytes);
        }
        let status: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(["pending", "running"].contains(&status["data"]["status"].as_str().unwrap()), "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the export {path} was not made");
}
