//! Comments: threaded, sanitised, authored by the credential; only the author (or a moderating
//! key) edits or deletes; edits kept; deleted comments stay while they have replies; end users
//! reach only the comments of objects they may read.

use serde_json::{json, Value};

use crate::associations::owners_of;
use crate::authz::end_user;
use crate::both_backends;
use crate::common::{TestApp, TestTenant};
use crate::realtime::EventStream;

async fn task(app: &TestApp, tenant: &TestTenant, token: &str, name: &str) -> String {
    if app.get("/v1/object-types/tasks", &tenant.key).await.status == 404 {
        app.post("/v1/object-types", &tenant.key, json!({ "name": "tasks" })).await.expect(201);
        app.post("/v1/object-types/tasks/properties", &tenant.key, json!({ "name": "name", "data_type": "string" }))
            .await
            .expect(201);
    }
    let made = app.post("/v1/objects/tasks", token, json!({ "properties": { "name": name } })).await;
    made.expect(201);
    made.data()["id"].as_str().unwrap().to_string()
}

fn bodies(page: &Value) -> Vec<Value> {
    page["results"].as_array().unwrap().iter().map(|c| c["body"].clone()).collect()
}

both_backends! {
    async fn comments_thread_and_only_authors_change_them(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        let t1 = task(&app, &tenant, &key, "ship it").await;
        let t2 = task(&app, &tenant, &key, "other").await;
        let path = format!("/v1/objects/tasks/{t1}/comments");

        let made = app.post(&path, &key, json!({ "body": "<p>Hello <script>alert(1)</script><b onclick=\"x()\">team</b></p>" })).await;
        made.expect(201);
        let first = made.data()["id"].as_str().unwrap().to_string();
        assert!(first.starts_with("cmt_"));
        assert_eq!(made.data()["body"], json!("<p>Hello <b>team</b></p>"));
        assert_eq!(made.data()["author_type"], json!("api_key"));
        assert_eq!(made.data()["author_id"], json!(tenant.key_id));
        let reply = app.post(&path, &key, json!({ "body": "agreed", "parent_id": first })).await;
        reply.expect(201);
        let reply_id = reply.data()["id"].as_str().unwrap().to_string();

        // Bad input: refused, nothing written.
        let elsewhere = app.post(&format!("/v1/objects/tasks/{t2}/comments"), &key, json!({ "body": "x" })).await;
        app.post(&path, &key, json!({ "body": "x", "parent_id": elsewhere.data()["id"] })).await.expect_error(422, "VALIDATION_FAILED");
        app.post(&path, &key, json!({ "body": "<script>only</script>" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post(&path, &key, json!({ "body": "a".repeat(10_001) })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/objects/tasks/obj_01jd8x3k4m5n6p7q8r9s0t1v2w/comments", &key, json!({ "body": "x" })).await
            .expect_error(404, "NOT_FOUND");
        assert_eq!(app.count("SELECT COUNT(*) FROM comments").await, 3);

        // Listed oldest first, by thread, in pages.
        let listed = app.get(&path, &key).await;
        listed.expect(200);
        assert_eq!(bodies(listed.data()), vec![json!("<p>Hello <b>team</b></p>"), json!("agreed")]);
        let replies = app.get(&format!("{path}?parent_id={first}"), &key).await;
        assert_eq!(replies.data()["total"], json!(1));
        let page = app.get(&format!("{path}?limit=1"), &key).await;
        let cursor = page.data()["next_cursor"].as_str().unwrap().to_string();
        let next = app.get(&format!("{path}?limit=1&cursor={cursor}"), &key).await;
        assert_eq!(bodies(next.data()), vec![json!("agreed")]);

        // Only the author edits; the earlier body is kept.
        let (_, helper) = app.key(&tenant, json!({ "name": "helper", "scopes": ["objects:read", "objects:write"] })).await;
        app.patch(&format!("{path}/{first}"), &helper, json!({ "body": "mine now" })).await.expect_error(403, "FORBIDDEN");
        app.delete(&format!("{path}/{first}"), &helper).await.expect_error(403, "FORBIDDEN");
        let edited = app.patch(&format!("{path}/{first}"), &key, json!({ "body": "Hello, team" })).await;
        edited.expect(200);
        assert_eq!(edited.data()["edits"], json!(1));
        assert_eq!(edited.data()["body"], json!("Hello, team"));
        assert_eq!(app.count("SELECT COUNT(*) FROM comment_edits WHERE body = '<p>Hello <b>team</b></p>'").await, 1);
        let helpers = app.post(&path, &helper, json!({ "body": "from the helper" })).await;
        helpers.expect(201);
        let helpers_id = helpers.data()["id"].as_str().unwrap().to_string();
        app.patch(&format!("{path}/{helpers_id}"), &helper, json!({ "body": "fixed" })).await.expect(200);

        // Deleted: kept without its body while a reply hangs from it, then gone from the list.
        app.delete(&format!("{path}/{first}"), &key).await.expect(200);
        let after = app.get(&path, &key).await;
        assert_eq!(after.data()["total"], json!(3));
        assert_eq!(after.data()["results"][0]["is_deleted"], json!(true));
        assert_eq!(after.data()["results"][0]["body"], Value::Null);
        app.patch(&format!("{path}/{first}"), &key, json!({ "body": "back" })).await.expect_error(404, "NOT_FOUND");
        app.delete(&format!("{path}/{reply_id}"), &key).await.expect(200);
        let last = app.get(&path, &key).await;
        assert_eq!(bodies(last.data()), vec![json!("fixed")]);
        app.post(&path, &key, json!({ "body": "x", "parent_id": first })).await.expect_error(422, "VALIDATION_FAILED");

        // Scopes and tenants.
        let (_, reader) = app.key(&tenant, json!({ "name": "reader", "scopes": ["objects:read"] })).await;
        app.get(&path, &reader).await.expect(200);
        app.post(&path, &reader, json!({ "body": "x" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let other = app.tenant("other").await;
        task(&app, &other, &other.key, "theirs").await;
        app.get(&path, &other.key).await.expect_error(404, "NOT_FOUND");
        app.patch(&format!("{path}/{helpers_id}"), &other.key, json!({ "body": "x" })).await.expect_error(404, "NOT_FOUND");

        // Events for each change; a purge asks first and takes the comments.
        assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'comment.created'").await, 4);
        assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'comment.updated'").await, 2);
        assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE type = 'comment.deleted'").await, 2);
        let asked = app.delete(&format!("/v1/objects/tasks/{t1}?force=true"), &key).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        let confirm = asked.body["error"]["confirm_token"].as_str().unwrap().to_string();
        app.delete(&format!("/v1/objects/tasks/{t1}?force=true&confirm_token={confirm}"), &key).await.expect(200);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM comments WHERE object_id = '{t1}'")).await, 0);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM comment_edits WHERE comment_id = '{first}'")).await, 0);
    }

    async fn end_users_comment_on_what_they_may_read(app) {
        let tenant = app.tenant("acme").await;
        let key = tenant.key.clone();
        task(&app, &tenant, &key, "seed").await;
        owners_of(&app, &tenant, &["tasks"]).await;
        let ann = end_user(&app, &tenant, "ann@example.com").await;
        let ben = end_user(&app, &tenant, "ben@example.com").await;
        let permissions = json!({ "permissions": ["objects.tasks:*", "events:read"] });
        crate::authz::put(&app, "/v1/roles/authenticated/permissions", &key, permissions).await.expect(200);
        let anns = task(&app, &tenant, &ann.token, "ann's task").await;
        let bens = task(&app, &tenant, &ben.token, "ben's task").await;
        let stream = "/v1/events/stream?types=comment.*";
        let mut ann_stream = EventStream::open(&app, stream, Some(&ann.token), None).await;
        let mut ben_stream = EventStream::open(&app, stream, Some(&ben.token), None).await;
        let path = format!("/v1/objects/tasks/{anns}/comments");
        let made = app.post(&path, &ann.token, json!({ "body": "note to self" })).await;
        made.expect(201);
        // Each hears of the comments on the objects they may read only: Ben's first event is
        // his own comment, not Ann's.
        let bens_comment = app.post(&format!("/v1/objects/tasks/{bens}/comments"), &ben.token, json!({ "body": "mine" })).await;
        let (_, kind, data) = ann_stream.next().await;
        assert_eq!((kind.as_str(), &data["data"]["comment"]["id"]), ("comment.created", &made.data()["id"]));
        let (_, _, data) = ben_stream.next().await;
        assert_eq!(data["data"]["comment"]["id"], bens_comment.data()["id"]);
        assert_eq!(made.data()["author_type"], json!("user"));
        assert_eq!(made.data()["author_id"], json!(ann.id));
        let comment = made.data()["id"].as_str().unwrap().to_string();
        // Ben may not see Ann's task, so neither its comments nor a way to add one.
        app.get(&path, &ben.token).await.expect_error(404, "NOT_FOUND");
        app.post(&path, &ben.token, json!({ "body": "hi" })).await.expect_error(404, "NOT_FOUND");
        app.delete(&format!("{path}/{comment}"), &ben.token).await.expect_error(404, "NOT_FOUND");
        // The tenant's `*` key moderates: it deletes Ann's comment.
        app.delete(&format!("{path}/{comment}"), &key).await.expect(200);
        assert_eq!(app.get(&path, &ann.token).await.data()["total"], json!(0));
    }
}
