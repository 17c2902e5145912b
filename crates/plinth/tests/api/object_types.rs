//! Object types: the schema's tables, by id or name, per tenant.

use serde_json::json;

use crate::both_backends;

both_backends! {
    async fn object_type_lifecycle(app) {
        let tenant = app.tenant("Schema").await;
        let created = app.post("/v1/object-types", &tenant.key, json!({ "name": "support_tickets" })).await;
        created.expect(201);
        let id = created.data()["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("ot_"));
        assert_eq!(created.data()["display_name"], "Support Tickets");
        assert_eq!(created.data()["additional_properties"], false);
        assert_eq!(created.data()["tenant_id"], tenant.id.as_str());

        // By id or by name.
        app.get(&format!("/v1/object-types/{id}"), &tenant.key).await.expect(200);
        let by_name = app.get("/v1/object-types/support_tickets", &tenant.key).await;
        assert_eq!(by_name.data()["id"], id.as_str());

        app.post("/v1/object-types", &tenant.key, json!({ "name": "support_tickets" })).await.expect_error(409, "CONFLICT");
        for body in [json!({ "name": "Contacts" }), json!({ "name": "2x" }), json!({ "name": "a-b" }), json!({}), json!({ "name": "ok", "colour": 1 })] {
            app.post("/v1/object-types", &tenant.key, body).await.expect_error(422, "VALIDATION_FAILED");
        }

        let renamed = app.patch("/v1/object-types/support_tickets", &tenant.key, json!({
            "name": "tickets", "description": "Help desk", "additional_properties": true
        })).await;
        renamed.expect(200);
        assert_eq!(renamed.data()["name"], "tickets");
        assert_eq!(renamed.data()["display_name"], "Support Tickets", "the display name stays unless given");
        assert_eq!(renamed.data()["additional_properties"], true);
        app.get("/v1/object-types/support_tickets", &tenant.key).await.expect_error(404, "NOT_FOUND");
        let cleared = app.patch(&format!("/v1/object-types/{id}"), &tenant.key, json!({ "description": null })).await;
        assert_eq!(cleared.data()["description"], serde_json::Value::Null);

        app.post("/v1/object-types", &tenant.key, json!({ "name": "contacts", "display_name": "People" })).await.expect(201);
        app.patch("/v1/object-types/tickets", &tenant.key, json!({ "name": "contacts" })).await.expect_error(409, "CONFLICT");
        let list = app.get("/v1/object-types?sort=name", &tenant.key).await;
        list.expect(200);
        assert_eq!(list.data()["total"], 2);
        assert_eq!(list.data()["results"][0]["name"], "contacts");

        let deleted = app.delete("/v1/object-types/tickets", &tenant.key).await;
        deleted.expect(200);
        assert_eq!(deleted.data()["id"], id.as_str());
        app.get(&format!("/v1/object-types/{id}"), &tenant.key).await.expect_error(404, "NOT_FOUND");
        let log = app.get("/v1/audit-logs?resource_type=object_type", &tenant.key).await;
        assert_eq!(log.data()["total"], 5);
    }

    async fn object_types_are_per_tenant_and_need_the_schema_scope(app) {
        let a = app.tenant("A").await;
        let b = app.tenant("B").await;
        let created = app.post("/v1/object-types", &a.key, json!({ "name": "contacts" })).await;
        let id = created.data()["id"].as_str().unwrap();
        // B has its own namespace and cannot see A's type by id or name.
        app.post("/v1/object-types", &b.key, json!({ "name": "contacts" })).await.expect(201);
        app.get(&format!("/v1/object-types/{id}"), &b.key).await.expect_error(404, "NOT_FOUND");
        app.patch(&format!("/v1/object-types/{id}"), &b.key, json!({ "name": "mine" })).await.expect_error(404, "NOT_FOUND");
        app.delete(&format!("/v1/object-types/{id}"), &b.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/object-types", &b.key).await.data()["total"], 1);

        let (_, schema) = app.key(&a, json!({ "scopes": ["schema"] })).await;
        let (_, reader) = app.key(&a, json!({ "scopes": ["read"] })).await;
        app.post("/v1/object-types", &schema, json!({ "name": "deals" })).await.expect(201);
        app.get("/v1/object-types", &reader).await.expect(200);
        app.post("/v1/object-types", &reader, json!({ "name": "nope" })).await.expect_error(403, "INSUFFICIENT_SCOPE");

        // A tenant with object types needs confirmation to be deleted.
        let asked = app.delete(&format!("/v1/tenants/{}", a.id), crate::common::ADMIN_KEY).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        let object_types = asked.body["error"]["dependencies"].as_array().unwrap().iter().find(|d| d["type"] == "object_types").cloned();
        assert_eq!(object_types.unwrap()["count"], 2);
    }
}

both_backends! {
    async fn a_tenant_has_at_most_a_hundred_types(app) {
        let tenant = app.tenant_on("Many types", "enterprise").await;
        for i in 0..100 {
            app.post("/v1/object-types", &tenant.key, json!({ "name": format!("t{i}") })).await.expect(201);
        }
        app.post("/v1/object-types", &tenant.key, json!({ "name": "one_more" })).await.expect_error(422, "VALIDATION_FAILED");
        assert_eq!(app.get("/v1/object-types", &tenant.key).await.data()["total"], 100);
    }
}
