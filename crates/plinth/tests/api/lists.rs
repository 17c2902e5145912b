//! The list machinery, through the key list: sort, sparse fields, time filters, signed cursors
//! that stay stable while rows are added.

use serde_json::json;

use crate::both_backends;
use crate::common::{Resp, TestApp, TestTenant};

fn labels(resp: &Resp) -> Vec<String> {
    resp.data()["results"].as_array().unwrap().iter().map(|k| k["label"].as_str().unwrap().to_string()).collect()
}

/// Walks every page of `path` (which has a `?`), returning the labels in order.
async fn walk(app: &TestApp, tenant: &TestTenant, path: &str, during: impl Fn(usize) -> Option<String>) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut page_number = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_string(),
        };
        let page = app.get(&url, &tenant.key).await;
        page.expect(200);
        seen.extend(labels(&page));
        if let Some(label) = during(page_number) {
            app.key(tenant, json!({ "label": label })).await;
        }
        page_number += 1;
        match page.data()["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return seen,
        }
    }
}

both_backends! {
    async fn sort_fields_and_filters(app) {
        let tenant = app.tenant("Lists").await;
        for label in ["delta", "alpha", "charlie", "bravo"] {
            app.key(&tenant, json!({ "label": label })).await;
        }
        let by_label = app.get("/v1/keys?sort=label", &tenant.key).await;
        by_label.expect(200);
        assert_eq!(labels(&by_label), vec!["Default key", "alpha", "bravo", "charlie", "delta"]);
        let by_label_desc = app.get("/v1/keys?sort=-label", &tenant.key).await;
        assert_eq!(labels(&by_label_desc), vec!["delta", "charlie", "bravo", "alpha", "Default key"]);
        let oldest_first = app.get("/v1/keys?sort=created_at", &tenant.key).await;
        assert_eq!(labels(&oldest_first)[0], "Default key");

        let sparse = app.get("/v1/keys?fields=label,scopes&limit=1", &tenant.key).await;
        let item = sparse.data()["results"][0].as_object().unwrap();
        let mut keys: Vec<&str> = item.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, vec!["id", "label", "scopes"]);

        app.get("/v1/keys?sort=secret_hash", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/keys?fields=secret_hash", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/keys/public?updated_after=2020-01-01T00:00:00Z", &tenant.key)
            .await
            .expect_error(422, "VALIDATION_FAILED");

        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(app.get(&format!("/v1/keys?created_after={future}"), &tenant.key).await.data()["total"], 0);
        assert_eq!(app.get(&format!("/v1/keys?created_after={past}"), &tenant.key).await.data()["total"], 5);
        assert_eq!(app.get(&format!("/v1/keys?updated_before={past}"), &tenant.key).await.data()["total"], 0);
        assert_eq!(app.get(&format!("/v1/keys?created_before={future}&sort=label&limit=2"), &tenant.key).await.data()["total"], 5);
    }

    async fn cursors_are_stable_while_rows_are_added(app) {
        let tenant = app.tenant("Stable").await;
        for i in 0..6 {
            app.key(&tenant, json!({ "label": format!("k{i}") })).await;
        }
        // Newest first: keys added while walking are newer, so they never shift the pages.
        let seen = walk(&app, &tenant, "/v1/keys?limit=2", |page| (page < 2).then(|| format!("new{page}"))).await;
        assert_eq!(seen, vec!["k5", "k4", "k3", "k2", "k1", "k0", "Default key"]);
        // Sorted by label, a key inserted before the cursor is not seen and nothing repeats.
        let seen = walk(&app, &tenant, "/v1/keys?limit=3&sort=label", |page| (page == 0).then(|| "a-early".to_string())).await;
        let mut unique = seen.clone();
        unique.dedup();
        assert_eq!(seen, unique, "no label twice: {seen:?}");
        assert!(!seen.contains(&"a-early".to_string()));
        assert_eq!(seen.len(), 9);
    }

    async fn cursors_cannot_be_forged_or_reused_across_sorts(app) {
        let tenant = app.tenant("Signed").await;
        for i in 0..3 {
            app.key(&tenant, json!({ "label": format!("k{i}") })).await;
        }
        let page = app.get("/v1/keys?limit=1&sort=label", &tenant.key).await;
        let cursor = page.data()["next_cursor"].as_str().unwrap().to_string();
        app.get(&format!("/v1/keys?limit=1&sort=label&cursor={cursor}"), &tenant.key).await.expect(200);
        app.get(&format!("/v1/keys?limit=1&sort=-label&cursor={cursor}"), &tenant.key)
            .await
            .expect_error(400, "BAD_REQUEST");
        let (payload, mac) = cursor.split_once('.').unwrap();
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut decoded: serde_json::Value = serde_json::from_slice(&engine.decode(payload).unwrap()).unwrap();
        decoded["values"] = json!(["' OR 1=1 --"]);
        let forged = format!("{}.{mac}", engine.encode(serde_json::to_vec(&decoded).unwrap()));
        app.get(&format!("/v1/keys?limit=1&sort=label&cursor={forged}"), &tenant.key)
            .await
            .expect_error(400, "BAD_REQUEST");
    }
}

both_backends! {
    async fn offset_skips_items_from_the_start_or_past_a_cursor(app) {
        let tenant = app.tenant("Offsets").await;
        for label in ["a", "b", "c"] {
            app.key(&tenant, json!({ "label": label })).await;
        }
        let all = app.get("/v1/keys?sort=label", &tenant.key).await;
        let labels = |resp: &crate::common::Resp| -> Vec<String> {
            resp.data()["results"].as_array().unwrap().iter().map(|k| k["label"].as_str().unwrap().to_string()).collect()
        };
        let skipped = app.get("/v1/keys?sort=label&offset=2&limit=1", &tenant.key).await;
        skipped.expect(200);
        assert_eq!(labels(&skipped), labels(&all)[2..3].to_vec());
        assert_eq!(skipped.data()["total"], all.data()["total"]);
        let cursor = app.get("/v1/keys?sort=label&limit=1", &tenant.key).await.data()["next_cursor"].as_str().unwrap().to_string();
        // With a cursor, the offset skips past it: the first page held `labels[0]`, so one more
        // skipped leaves `labels[2]`.
        let past = app.get(&format!("/v1/keys?sort=label&offset=1&limit=1&cursor={cursor}"), &tenant.key).await;
        past.expect(200);
        assert_eq!(labels(&past), labels(&all)[2..3].to_vec());
        app.get("/v1/keys?offset=10001", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");

        app.post("/v1/object-types", &tenant.key, json!({ "name": "rows" })).await.expect(201);
        for _ in 0..3 {
            app.post("/v1/objects/rows", &tenant.key, json!({ "properties": {} })).await.expect(201);
        }
        let objects = app.get("/v1/objects/rows/list?sort=id", &tenant.key).await;
        let page = app.get("/v1/objects/rows/list?sort=id&offset=1&limit=1", &tenant.key).await;
        assert_eq!(page.data()["results"][0]["id"], objects.data()["results"][1]["id"]);
        let cursor = app.get("/v1/objects/rows/list?sort=id&limit=1", &tenant.key).await.data()["next_cursor"].as_str().unwrap().to_string();
        let past = app.get(&format!("/v1/objects/rows/list?sort=id&offset=1&limit=1&cursor={cursor}"), &tenant.key).await;
        past.expect(200);
        assert_eq!(past.data()["results"][0]["id"], objects.data()["results"][2]["id"]);
    }
}
