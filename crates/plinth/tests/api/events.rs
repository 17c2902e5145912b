//! Events: the outbox read back, custom events, event types.

use serde_json::json;

use crate::both_backends;

both_backends! {
    async fn custom_and_platform_events_are_listed(app) {
        let tenant = app.tenant("Events").await;
        let tracked = app.post("/v1/events", &tenant.key, json!({ "event_type": "checkout.completed", "data": { "cart": 3, "token": "abc" } })).await;
        tracked.expect(201);
        assert_eq!(tracked.data()["tracked"], true);
        let id = tracked.data()["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("evt_"));
        app.post("/v1/object-types", &tenant.key, json!({ "name": "notes" })).await.expect(201);
        app.post("/v1/objects/notes", &tenant.key, json!({ "properties": {} })).await.expect(201);

        let list = app.get("/v1/events/list", &tenant.key).await;
        list.expect(200);
        assert_eq!(list.data()["total"], 2);
        let first = &list.data()["results"][0];
        assert_eq!(first["type"], "object.created");
        assert_eq!(first["data"]["object_type"], "notes");
        let custom = app.get("/v1/events/list?type=checkout.completed", &tenant.key).await;
        assert_eq!(custom.data()["total"], 1);
        assert_eq!(custom.data()["results"][0]["id"], id.as_str());
        assert_eq!(custom.data()["results"][0]["data"], json!({ "cart": 3, "token": "[REDACTED]" }));

        for path in ["/v1/events/types", "/events/types"] {
            let types = app.get(path, &tenant.key).await;
            types.expect(200);
            let names: Vec<&str> = types.data().as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            assert!(names.contains(&"object.created") && names.contains(&"checkout.completed"), "{names:?}");
        }

        for bad in [
            json!({ "event_type": "object.created" }),
            json!({ "event_type": "Checkout" }),
            json!({ "event_type": "single" }),
            json!({ "event_type": "a.*" }),
            json!({ "event_type": "a.b", "data": [1] }),
            json!({ "event_type": "a.b", "colour": 1 }),
        ] {
            let resp = app.post("/v1/events", &tenant.key, bad.clone()).await;
            assert_eq!(resp.status, 422, "{bad}: {}", resp.text);
        }

        // Another tenant sees none of them; a read key cannot track.
        let other = app.tenant("Other").await;
        assert_eq!(app.get("/v1/events/list", &other.key).await.data()["total"], 0);
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        app.get("/v1/events/list", &reader).await.expect(200);
        app.post("/v1/events", &reader, json!({ "event_type": "a.b" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.get_public("/v1/events/list").await.expect_error(401, "UNAUTHORIZED");
    }
}
