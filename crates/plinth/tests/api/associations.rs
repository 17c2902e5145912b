//! Associations: links made, replaced, listed from either end and removed; both ends checked
//! for the caller; trashed ends hidden; purges take their links; end users see only links whose
//! other end they may read; `include` embeds the linked objects and `associated_with` filters by
//! them.

use serde_json::{json, Value};

use crate::authz::{end_user, put};
use crate::both_backends;
use crate::common::{TestApp, TestTenant};

/// Types `companies` and `contacts`, each with an indexed `name`.
pub(crate) async fn crm_types(app: &TestApp, tenant: &TestTenant) {
    for kind in ["companies", "contacts"] {
        app.post("/v1/object-types", &tenant.key, json!({ "name": kind })).await.expect(201);
        let body = json!({ "name": "name", "data_type": "string", "is_indexed": true, "is_sortable": true });
        app.post(&format!("/v1/object-types/{kind}/properties"), &tenant.key, body).await.expect(201);
    }
}

pub(crate) async fn create(app: &TestApp, token: &str, kind: &str, name: &str) -> String {
    let made = app.post(&format!("/v1/objects/{kind}"), token, json!({ "properties": { "name": name } })).await;
    made.expect(201);
    made.data()["id"].as_str().unwrap().to_string()
}

/// Lets every signed-in user reach the objects of `types` they created, and only those.
pub(crate) async fn owners_of(app: &TestApp, tenant: &TestTenant, types: &[&str]) {
    let permissions: Vec<String> = types.iter().map(|t| format!("objects.{t}:*")).collect();
    put(app, "/v1/roles/authenticated/permissions", &tenant.key, json!({ "permissions": permissions }))
        .await
        .expect(200);
    for kind in types {
        let policy = json!({
            "name": "owners", "action": "all",
            "condition_json": { "property": "created_by", "op": "eq", "value": "$auth.user_id" }
        });
        app.post(&format!("/v1/object-types/{kind}/policies"), &tenant.key, policy).await.expect(201);
    }
}

fn link(from_type: &str, from: &str, kind: &str, to_type: &str, to: &str) -> String {
    format!("/v1/objects/{from_type}/{from}/associations/{kind}/{to_type}/{to}")
}

fn other_ends(page: &Value) -> Vec<(String, String)> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let direction = a["direction"].as_str().unwrap().to_string();
            let other = if direction == "outgoing" { &a["to_id"] } else { &a["from_id"] };
            (direction, other.as_str().unwrap().to_string())
        })
        .collect()
}

both_backends! {
    async fn links_are_made_listed_and_removed(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        crm_types(&app, &tenant).await;
        let acme = create(&app, &key, "companies", "Acme").await;
        let ada = create(&app, &key, "contacts", "Ada").await;
        let bob = create(&app, &key, "contacts", "Bob").await;

        // Made (201), then replaced in place (200, same id, new meta).
        let made = put(&app, &link("companies", &acme, "employs", "contacts", &ada), &key, json!({ "meta": { "role": "cto" } })).await;
        made.expect(201);
        let id = made.data()["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("asc_"));
        assert_eq!(made.data()["meta"], json!({ "role": "cto" }));
        assert_eq!(made.data()["from_id"], json!(acme));
        assert_eq!(made.data()["to_id"], json!(ada));
        let replaced = put(&app, &link("companies", &acme, "employs", "contacts", &ada), &key, json!({ "meta": { "role": "ceo" } })).await;
        replaced.expect(200);
        assert_eq!(replaced.data()["id"], json!(id));
        assert_eq!(replaced.data()["meta"], json!({ "role": "ceo" }));
        // No body at all: a link without meta.
        let bare = app.send(app.request(reqwest::Method::PUT, &link("companies", &acme, "employs", "contacts", &bob), Some(&key))).await;
        bare.expect(201);
        assert_eq!(bare.data()["meta"], Value::Null);
        put(&app, &link("contacts", &ada, "knows", "contacts", &bob), &key, json!({})).await.expect(201);
        assert_eq!(app.count("SELECT COUNT(*) FROM associations").await, 3);

        // Bad input is refused, and nothing is written.
        put(&app, &link("companies", &acme, "Employs-X", "contacts", &ada), &key, json!({})).await
            .expect_error(422, "VALIDATION_FAILED");
        let big = "x".repeat(11 * 1024);
        put(&app, &link("companies", &acme, "employs", "contacts", &ada), &key, json!({ "meta": { "big": big } })).await
            .expect_error(422, "VALIDATION_FAILED");
        put(&app, &link("companies", &acme, "employs", "contacts", "obj_01jd8x3k4m5n6p7q8r9s0t1v2w"), &key, json!({})).await
            .expect_error(404, "NOT_FOUND");
        put(&app, &link("companies", &acme, "employs", "companies", &ada), &key, json!({})).await
            .expect_error(404, "NOT_FOUND");
        assert_eq!(app.count("SELECT COUNT(*) FROM associations").await, 3);

        // Another tenant reaches neither end.
        let other = app.tenant("other").await;
        crm_types(&app, &other).await;
        let theirs = create(&app, &other.key, "contacts", "Eve").await;
        put(&app, &link("companies", &acme, "employs", "contacts", &theirs), &key, json!({})).await
            .expect_error(404, "NOT_FOUND");
        app.get(&format!("/v1/objects/companies/{acme}/associations"), &other.key).await.expect_error(404, "NOT_FOUND");

        // Listed from either end, with direction and type filters.
        let from_acme = app.get(&format!("/v1/objects/companies/{acme}/associations"), &key).await;
        from_acme.expect(200);
        assert_eq!(from_acme.data()["total"], json!(2));
        assert_eq!(other_ends(from_acme.data()), vec![("outgoing".into(), ada.clone()), ("outgoing".into(), bob.clone())]);
        let to_ada = app.get(&format!("/v1/objects/contacts/{ada}/associations"), &key).await;
        assert_eq!(other_ends(to_ada.data()), vec![("incoming".into(), acme.clone()), ("outgoing".into(), bob.clone())]);
        let incoming = app.get(&format!("/v1/objects/contacts/{ada}/associations?direction=incoming"), &key).await;
        assert_eq!(other_ends(incoming.data()), vec![("incoming".into(), acme.clone())]);
        let knows = app.get(&format!("/v1/objects/contacts/{ada}/associations?association_type=knows"), &key).await;
        assert_eq!(other_ends(knows.data()), vec![("outgoing".into(), bob.clone())]);
        app.get(&format!("/v1/objects/contacts/{ada}/associations?direction=sideways"), &key).await.expect(400);

        // Pages by cursor.
        let first = app.get(&format!("/v1/objects/companies/{acme}/associations?limit=1"), &key).await;
        assert_eq!(first.data()["total"], json!(2));
        let cursor = first.data()["next_cursor"].as_str().unwrap().to_string();
        let second = app.get(&format!("/v1/objects/companies/{acme}/associations?limit=1&cursor={cursor}"), &key).await;
        assert_eq!(other_ends(second.data()), vec![("outgoing".into(), bob.clone())]);
        assert_eq!(second.data()["next_cursor"], Value::Null);
        app.get(&format!("/v1/objects/contacts/{ada}/associations?limit=1&cursor={cursor}"), &key).await
            .expect_error(400, "BAD_REQUEST");

        // A trashed end hides its links and takes no new one, until restored.
        app.delete(&format!("/v1/objects/contacts/{bob}"), &key).await.expect(200);
        let without_bob = app.get(&format!("/v1/objects/companies/{acme}/associations"), &key).await;
        assert_eq!(other_ends(without_bob.data()), vec![("outgoing".into(), ada.clone())]);
        put(&app, &link("companies", &acme, "advises", "contacts", &bob), &key, json!({})).await.expect_error(409, "CONFLICT");
        app.post(&format!("/v1/objects/contacts/{bob}/restore"), &key, json!({})).await.expect(200);
        let again = app.get(&format!("/v1/objects/companies/{acme}/associations"), &key).await;
        assert_eq!(again.data()["total"], json!(2));

        // Removed: 200 once, then 404; each change an event.
        app.delete(&link("contacts", &ada, "knows", "contacts", &bob), &key).await.expect(200);
        app.delete(&link("contacts", &ada, "knows", "contacts", &bob), &key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'association.created'").await, 3);
        assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'association.updated'").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'association.deleted'").await, 1);

        // A purge asks for confirmation when links would go, and takes them.
        let asked = app.delete(&format!("/v1/objects/companies/{acme}?force=true"), &key).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        let confirm = asked.body["error"]["confirm_token"].as_str().unwrap().to_string();
        app.delete(&format!("/v1/objects/companies/{acme}?force=true&confirm_token={confirm}"), &key).await.expect(200);
        assert_eq!(app.count("SELECT COUNT(*) FROM associations").await, 0);

        // A key needs to change the `from` object and read the `to` object.
        let (_, writer) = app.key(&tenant, json!({ "name": "w", "scopes": ["objects.contacts:write"] })).await;
        put(&app, &link("contacts", &ada, "knows", "contacts", &bob), &writer, json!({})).await
            .expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, reader) = app.key(&tenant, json!({ "name": "r", "scopes": ["objects:read"] })).await;
        put(&app, &link("contacts", &ada, "knows", "contacts", &bob), &reader, json!({})).await
            .expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, both) = app.key(&tenant, json!({ "name": "rw", "scopes": ["objects.contacts:read", "objects.contacts:write"] })).await;
        put(&app, &link("contacts", &ada, "knows", "contacts", &bob), &both, json!({})).await.expect(201);
    }

    async fn end_users_see_only_links_they_may_read(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        crm_types(&app, &tenant).await;
        owners_of(&app, &tenant, &["companies", "contacts"]).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        let ben = end_user(&app, &tenant, "ben@example.com").await;
        let anns_company = create(&app, &ann.token, "companies", "Ann Co").await;
        let anns_contact = create(&app, &ann.token, "contacts", "Ann's").await;
        let bens_contact = create(&app, &ben.token, "contacts", "Ben's").await;
        put(&app, &link("companies", &anns_company, "employs", "contacts", &anns_contact), &key, json!({})).await.expect(201);
        put(&app, &link("companies", &anns_company, "employs", "contacts", &bens_contact), &key, json!({})).await.expect(201);

        // The key sees both links; Ann only the one whose other end is hers.
        let all = app.get(&format!("/v1/objects/companies/{anns_company}/associations"), &key).await;
        assert_eq!(all.data()["total"], json!(2));
        let anns = app.get(&format!("/v1/objects/companies/{anns_company}/associations"), &ann.token).await;
        anns.expect(200);
        assert_eq!(anns.data()["total"], json!(1));
        assert_eq!(other_ends(anns.data()), vec![("outgoing".into(), anns_contact.clone())]);
        // Ben cannot see Ann's company at all, nor link to it, nor link his contact from hers.
        app.get(&format!("/v1/objects/companies/{anns_company}/associations"), &ben.token).await.expect_error(404, "NOT_FOUND");
        put(&app, &link("contacts", &bens_contact, "works_at", "companies", &anns_company), &ben.token, json!({})).await
            .expect_error(404, "NOT_FOUND");
        put(&app, &link("companies", &anns_company, "employs", "contacts", &bens_contact), &ben.token, json!({})).await
            .expect_error(404, "NOT_FOUND");
        // Ann links her own objects.
        put(&app, &link("contacts", &anns_contact, "works_at", "companies", &anns_company), &ann.token, json!({})).await.expect(201);
        // Ben lists his contact's links: Ann's company is hidden from him.
        let bens = app.get(&format!("/v1/objects/contacts/{bens_contact}/associations"), &ben.token).await;
        bens.expect(200);
        assert_eq!(bens.data()["total"], json!(0));
    }

    async fn include_embeds_and_associated_with_filters(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        crm_types(&app, &tenant).await;
        owners_of(&app, &tenant, &["companies", "contacts"]).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        let ben = end_user(&app, &tenant, "ben@example.com").await;
        let acme = create(&app, &ann.token, "companies", "Acme").await;
        let globex = create(&app, &key, "companies", "Globex").await;
        let ada = create(&app, &ann.token, "contacts", "Ada").await;
        let bob = create(&app, &ben.token, "contacts", "Bob").await;
        let cyd = create(&app, &key, "contacts", "Cyd").await;
        for (company, contact) in [(&acme, &ada), (&acme, &bob), (&globex, &cyd)] {
            put(&app, &link("companies", company, "employs", "contacts", contact), &key, json!({})).await.expect(201);
        }
        put(&app, &link("contacts", &cyd, "knows", "contacts", &ada), &key, json!({})).await.expect(201);

        let names = |items: &Value| -> Vec<String> {
            let mut names: Vec<String> =
                items.as_array().unwrap().iter().map(|o| o["properties"]["name"].as_str().unwrap().to_string()).collect();
            names.sort();
            names
        };
        // `associated_with` filters a list by the links of one object, either way.
        let employed = app.get(&format!("/v1/objects/contacts/list?associated_with=companies:{acme}"), &key).await;
        employed.expect(200);
        assert_eq!(employed.data()["total"], json!(2));
        assert_eq!(names(&employed.data()["results"]), vec!["Ada", "Bob"]);
        let by_type = app.get(&format!("/v1/objects/contacts/list?associated_with=companies:{acme}:employs&sort=name"), &key).await;
        assert_eq!(names(&by_type.data()["results"]), vec!["Ada", "Bob"]);
        let none = app.get(&format!("/v1/objects/contacts/list?associated_with=companies:{acme}:knows"), &key).await;
        assert_eq!(none.data()["total"], json!(0));
        let known = app.get(&format!("/v1/objects/contacts/list?associated_with=contacts:{ada}"), &key).await;
        assert_eq!(names(&known.data()["results"]), vec!["Cyd"]);
        let filtered = app.get(&format!("/v1/objects/contacts/list?associated_with=companies:{acme}&filter[name]=Bob"), &key).await;
        assert_eq!(names(&filtered.data()["results"]), vec!["Bob"]);
        app.get("/v1/objects/contacts/list?associated_with=companies", &key).await.expect_error(422, "VALIDATION_FAILED");
        app.get("/v1/objects/contacts/list?associated_with=companies:obj_01jd8x3k4m5n6p7q8r9s0t1v2w", &key).await
            .expect_error(404, "NOT_FOUND");

        // `include` embeds the linked objects of a page in one request, and of one object.
        let companies = app.get("/v1/objects/companies/list?include=employs&sort=name", &key).await;
        companies.expect(200);
        let results = companies.data()["results"].as_array().unwrap();
        assert_eq!(results[0]["id"], json!(acme));
        assert_eq!(names(&results[0]["included"]["employs"]), vec!["Ada", "Bob"]);
        assert_eq!(names(&results[1]["included"]["employs"]), vec!["Cyd"]);
        let one = app.get(&format!("/v1/objects/contacts/{ada}?include=employs,knows"), &key).await;
        one.expect(200);
        assert_eq!(names(&one.data()["included"]["employs"]), vec!["Acme"]);
        assert_eq!(names(&one.data()["included"]["knows"]), vec!["Cyd"]);
        let plain = app.get(&format!("/v1/objects/contacts/{ada}"), &key).await;
        assert!(plain.data().get("included").is_none());
        let narrow = app.get("/v1/objects/companies/list?include=employs&fields=created_at", &key).await;
        assert!(narrow.data()["results"][0]["included"]["employs"].is_array());
        app.get(&format!("/v1/objects/contacts/{ada}?include=Not-A-Type"), &key).await.expect_error(422, "VALIDATION_FAILED");

        // End users: their policies decide the anchor, the rows and what is embedded.
        let anns = app.get(&format!("/v1/objects/companies/{acme}?include=employs"), &ann.token).await;
        anns.expect(200);
        assert_eq!(names(&anns.data()["included"]["employs"]), vec!["Ada"]);
        let anns_list = app.get(&format!("/v1/objects/contacts/list?associated_with=companies:{acme}"), &ann.token).await;
        assert_eq!(anns_list.data()["total"], json!(1));
        app.get(&format!("/v1/objects/contacts/list?associated_with=companies:{acme}"), &ben.token).await
            .expect_error(404, "NOT_FOUND");
        let bens = app.get(&format!("/v1/objects/contacts/{bob}?include=employs"), &ben.token).await;
        assert_eq!(bens.data()["included"]["employs"], json!([]));
    }
}
