//! End users: the admin side, sign-up and sign-in, refresh rotation with reuse detection,
//! sessions, bans, throttling, auth config, and user access tokens on `/v1`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{Resp, TestApp, TestTenant};

const PASSWORD: &str = "granite-otter-harbour-42";

/// A request for `tenant`'s end users (named by `X-Tenant-ID`), without a credential.
async fn as_end_user(app: &TestApp, tenant: &str, path: &str, body: Value) -> Resp {
    app.send(app.request(Method::POST, path, None).header("x-tenant-id", tenant).json(&body)).await
}

/// A sign-up, as answered (no session: the same answer for a new address and a taken one).
async fn register(app: &TestApp, tenant: &TestTenant, email: &str) -> Resp {
    as_end_user(app, &tenant.id, "/v1/auth/signup", json!({ "email": email, "password": PASSWORD })).await
}

/// A new user, signed up and then in: the login's answer.
async fn signup(app: &TestApp, tenant: &TestTenant, email: &str) -> Resp {
    register(app, tenant, email).await.expect(201);
    let signed_in = login(app, &tenant.id, email, PASSWORD).await;
    signed_in.expect(200);
    signed_in
}

async fn login(app: &TestApp, tenant: &str, email: &str, password: &str) -> Resp {
    as_end_user(app, tenant, "/v1/auth/login", json!({ "email": email, "password": password })).await
}

fn tokens(resp: &Resp) -> (String, String) {
    (
        resp.data()["access_token"].as_str().expect("access_token").to_string(),
        resp.data()["refresh_token"].as_str().expect("refresh_token").to_string(),
    )
}

async fn refresh(app: &TestApp, token: &str) -> Resp {
    app.post_public("/v1/auth/refresh", json!({ "refresh_token": token })).await
}

both_backends! {
    async fn admins_manage_users(app) {
        let tenant = app.tenant("Users").await;
        let made = app.post("/v1/users", &tenant.key, json!({
            "email": "  Ada@Example.COM ", "password": PASSWORD, "role": "editor",
            "email_verified": true, "user_metadata": { "team": "core" }
        })).await;
        made.expect(201);
        let user = made.data().clone();
        let id = user["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("usr_"));
        assert_eq!(user["email"], "ada@example.com", "stored lowercased");
        assert_eq!(user["role"], "editor");
        assert_eq!(user["email_verified"], true);
        assert_eq!(user["banned"], false);
        assert!(user.get("password_hash").is_none() && !made.text.contains("argon2"));
        let stored = app.count(&format!("SELECT COUNT(*) FROM users WHERE id = '{id}' AND password_hash LIKE '$argon2id$%'")).await;
        assert_eq!(stored, 1, "the password is stored as an Argon2id hash");
        assert!(!app.stored_anywhere(PASSWORD).await);
        app.post("/v1/users", &tenant.key, json!({ "phone": "+4520304050" })).await.expect(201);

        // Refused: taken email, weak or common password, bad email, nothing to sign in with.
        let before = app.count("SELECT COUNT(*) FROM users").await;
        app.post("/v1/users", &tenant.key, json!({ "email": "ADA@example.com" })).await.expect_error(409, "CONFLICT");
        for (body, field) in [
            (json!({ "email": "b@example.com", "password": "password1" }), "password"),
            (json!({ "email": "b@example.com", "password": "short" }), "password"),
            (json!({ "email": "not an email" }), "email"),
            (json!({ "phone": "12345" }), "phone"),
            (json!({ "user_metadata": {} }), "email"),
            (json!({ "email": "b@example.com", "role": "Admin!" }), "role"),
            (json!({ "email": "b@example.com", "user_metadata": [1] }), "user_metadata"),
        ] {
            let refused = app.post("/v1/users", &tenant.key, body.clone()).await;
            refused.expect_error(422, "VALIDATION_FAILED");
            assert!(refused.body["error"]["details"].to_string().contains(field), "{body}: {}", refused.text);
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, before);

        // Lists: search and role filters, cursor pages.
        for n in 0..3 {
            app.post("/v1/users", &tenant.key, json!({ "email": format!("crew{n}@example.org") })).await.expect(201);
        }
        let listed = app.get("/v1/users?search=CREW&limit=2", &tenant.key).await;
        listed.expect(200);
        assert_eq!(listed.data()["total"], 3);
        assert_eq!(listed.data()["results"].as_array().unwrap().len(), 2);
        assert!(listed.data()["next_cursor"].is_string());
        let editors = app.get("/v1/users?role=editor", &tenant.key).await;
        assert_eq!(editors.data()["total"], 1);
        assert_eq!(editors.data()["results"][0]["id"], id.as_str());

        // Update, read back; another tenant sees nothing.
        let patched = app.patch(&format!("/v1/users/{id}"), &tenant.key, json!({ "user_metadata": { "team": "ops" }, "phone": "+1 555 123 4567" })).await;
        patched.expect(200);
        assert_eq!(patched.data()["user_metadata"], json!({ "team": "ops" }));
        assert_eq!(patched.data()["phone"], "+15551234567");
        assert_eq!(app.get(&format!("/v1/users/{id}"), &tenant.key).await.data()["phone"], "+15551234567");
        let other = app.tenant("Elsewhere").await;
        app.get(&format!("/v1/users/{id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.patch(&format!("/v1/users/{id}"), &other.key, json!({ "role": "x" })).await.expect_error(404, "NOT_FOUND");
        app.delete(&format!("/v1/users/{id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/users", &other.key).await.data()["total"], 0);

        // Scopes: users are of the admin group; a `users:read` key reads, cannot write; the broad
        // `read` does not reach them.
        let (_, broad) = app.key(&tenant, json!({ "scopes": ["read", "write"] })).await;
        app.get("/v1/users", &broad).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["users:read"] })).await;
        app.get("/v1/users", &reader).await.expect(200);
        app.post("/v1/users", &reader, json!({ "email": "z@example.com" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, auth_admin) = app.key(&tenant, json!({ "scopes": ["auth"] })).await;
        app.post("/v1/users", &auth_admin, json!({ "email": "z@example.com" })).await.expect(201);

        // Events and audit; deletion removes the user for good.
        let events = app.count(&format!("SELECT COUNT(*) FROM events WHERE tenant_id = '{}' AND type = 'user.created'", tenant.id)).await;
        assert_eq!(events, 6);
        app.delete(&format!("/v1/users/{id}"), &tenant.key).await.expect(200);
        app.get(&format!("/v1/users/{id}"), &tenant.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM users WHERE id = '{id}'")).await, 0);
        let audited = app.count(&format!("SELECT COUNT(*) FROM audit_logs WHERE resource_id = '{id}' AND action IN ('user.created', 'user.updated', 'user.deleted')")).await;
        assert_eq!(audited, 3);
    }

    async fn sign_up_log_in_and_refresh_with_reuse_detection(app) {
        let tenant = app.tenant("Shop").await;
        let registered = register(&app, &tenant, "Buyer@Example.com").await;
        registered.expect(201);
        assert_eq!(registered.data()["user"]["email"], "buyer@example.com");
        assert_eq!(registered.data()["confirmation_sent"], true);
        assert!(registered.data().get("access_token").is_none(), "no session at sign-up");
        let signed_up = login(&app, &tenant.id, "Buyer@Example.com", PASSWORD).await;
        signed_up.expect(200);
        assert_eq!(signed_up.data()["token_type"], "bearer");
        assert_eq!(signed_up.data()["user"]["email"], "buyer@example.com");
        assert_eq!(signed_up.data()["user"]["role"], "authenticated");
        assert!(signed_up.data()["expires_in"].as_i64().unwrap() > 3000);
        let (access, _) = tokens(&signed_up);

        // The access token is a credential: the user, and objects, but nothing else.
        let me = app.get("/v1/auth/user", &access).await;
        me.expect(200);
        assert_eq!(me.data()["email"], "buyer@example.com");
        app.get("/v1/users", &access).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.get("/v1/auth/user", &tenant.key).await.expect_error(403, "FORBIDDEN");
        // A taken address is answered as a new one would be: nothing tells that it has an account.
        let again = register(&app, &tenant, "buyer@example.com").await;
        again.expect(201);
        assert_eq!(again.data()["user"]["email"], "buyer@example.com");
        assert_ne!(again.data()["user"]["id"], registered.data()["user"]["id"]);
        let shape = |v: &Value| { let mut keys: Vec<String> = v["user"].as_object().unwrap().keys().cloned().collect(); keys.sort(); keys };
        assert_eq!(shape(again.data()), shape(registered.data()));
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM users WHERE tenant_id = '{}'", tenant.id)).await, 1);
        login(&app, &tenant.id, "buyer@example.com", PASSWORD).await.expect(200);

        // Wrong password and unknown email: the same answer.
        let wrong = login(&app, &tenant.id, "buyer@example.com", "not-the-password-1").await;
        let unknown = login(&app, &tenant.id, "nobody@example.com", "not-the-password-1").await;
        wrong.expect_error(401, "UNAUTHORIZED");
        unknown.expect_error(401, "UNAUTHORIZED");
        assert_eq!(wrong.body["error"]["message"], unknown.body["error"]["message"]);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM audit_logs WHERE tenant_id = '{}' AND action = 'user.sign_in_failed'", tenant.id)).await, 2);
        // The tenant by slug, and the credentials of another tenant's user do not work here.
        let logged_in = login(&app, "shop", "buyer@example.com", PASSWORD).await;
        logged_in.expect(200);
        let other = app.tenant("Other shop").await;
        login(&app, &other.id, "buyer@example.com", PASSWORD).await.expect_error(401, "UNAUTHORIZED");
        login(&app, "tn_unknown", "buyer@example.com", PASSWORD).await.expect_error(404, "NOT_FOUND");
        let (second_access, first_refresh) = tokens(&logged_in);

        // Rotation: each refresh token works once and gives the next pair.
        let rotated = refresh(&app, &first_refresh).await;
        rotated.expect(200);
        let (rotated_access, next_refresh) = tokens(&rotated);
        assert_ne!(next_refresh, first_refresh);
        app.get("/v1/auth/user", &rotated_access).await.expect(200);
        let again = refresh(&app, &next_refresh).await;
        again.expect(200);
        let (latest_access, latest_refresh) = tokens(&again);

        // Reuse of a used token ends the whole session: every token of it stops working.
        refresh(&app, &first_refresh).await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/auth/user", &latest_access).await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/auth/user", &second_access).await.expect_error(401, "UNAUTHORIZED");
        refresh(&app, &latest_refresh).await.expect_error(401, "UNAUTHORIZED");
        let ended = app.count(&format!("SELECT COUNT(*) FROM auth_sessions WHERE end_reason = 'refresh_token_reused' AND tenant_id = '{}'", tenant.id)).await;
        assert_eq!(ended, 1);
        // The sign-up session is another session and lives on.
        app.get("/v1/auth/user", &access).await.expect(200);
        refresh(&app, "rt_unknown").await.expect_error(401, "UNAUTHORIZED");
        let events: Vec<(String,)> = sqlx::query_as(&format!("SELECT type FROM events WHERE tenant_id = '{}' AND type LIKE 'user.%' ORDER BY created_at, id", tenant.id))
            .fetch_all(app.app.db.pool()).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|(k,)| k.as_str()).collect();
        assert_eq!(kinds, ["user.created", "user.signed_in", "user.signed_in", "user.sign_in_failed", "user.sign_in_failed", "user.signed_in", "user.session_ended"]);
        let unknown: (String,) = sqlx::query_as(&format!("SELECT data FROM events WHERE tenant_id = '{}' AND type = 'user.sign_in_failed' AND resource_id = 'unknown'", tenant.id))
            .fetch_one(app.app.db.pool()).await.unwrap();
        assert!(!unknown.0.contains("nobody@example.com"), "the address is not in the event: {}", unknown.0);
        assert!(!app.stored_anywhere(&latest_refresh).await, "refresh tokens are stored hashed");
    }

    async fn sessions_are_listed_and_ended(app) {
        let tenant = app.tenant("Sessions").await;
        let first = signup(&app, &tenant, "sam@example.com").await;
        let (first_access, first_refresh) = tokens(&first);
        let second = app.send(app.request(Method::POST, "/v1/auth/login", None).header("x-tenant-id", &tenant.id)
            .header("user-agent", "Phone/1.0").json(&json!({ "email": "sam@example.com", "password": PASSWORD }))).await;
        second.expect(200);
        let (second_access, _) = tokens(&second);
        let third = login(&app, &tenant.id, "sam@example.com", PASSWORD).await;
        let (third_access, _) = tokens(&third);

        let listed = app.get("/v1/auth/sessions", &second_access).await;
        listed.expect(200);
        let sessions = listed.data().as_array().unwrap().clone();
        assert_eq!(sessions.len(), 3);
        let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0]["user_agent"], "Phone/1.0");
        assert_eq!(current[0]["ip"], "127.0.0.1");

        // Another user's session is not found; one's own ends, and its token is refused at once.
        let stranger = signup(&app, &tenant, "stranger@example.com").await;
        let (stranger_access, _) = tokens(&stranger);
        let third_id = third.data()["session_id"].as_str().unwrap().to_string();
        app.delete(&format!("/v1/auth/sessions/{third_id}"), &stranger_access).await.expect_error(404, "NOT_FOUND");
        let ended = app.delete(&format!("/v1/auth/sessions/{third_id}"), &second_access).await;
        ended.expect(200);
        assert_eq!(ended.data()["revoked"], true);
        app.get("/v1/auth/user", &third_access).await.expect_error(401, "UNAUTHORIZED");

        // All but this one.
        let all = app.delete("/v1/auth/sessions", &second_access).await;
        all.expect(200);
        assert_eq!(all.data()["revoked"], 1);
        app.get("/v1/auth/user", &first_access).await.expect_error(401, "UNAUTHORIZED");
        refresh(&app, &first_refresh).await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/auth/user", &second_access).await.expect(200);

        // Logout by access token, then by refresh token.
        app.send(app.request(Method::POST, "/v1/auth/logout", Some(&second_access))).await.expect(200);
        app.get("/v1/auth/user", &second_access).await.expect_error(401, "UNAUTHORIZED");
        let (stranger_access, stranger_refresh) = (stranger_access, tokens(&stranger).1);
        app.post_public("/v1/auth/logout", json!({ "refresh_token": stranger_refresh })).await.expect(200);
        app.get("/v1/auth/user", &stranger_access).await.expect_error(401, "UNAUTHORIZED");
        refresh(&app, &stranger_refresh).await.expect_error(401, "UNAUTHORIZED");

        // Upkeep forgets sessions a month after they ended, with their refresh tokens.
        sqlx::query("UPDATE auth_sessions SET ended_at = $1 WHERE id = $2")
            .bind("2020-01-01T00:00:00.000000Z").bind(&third_id).execute(app.app.db.pool()).await.unwrap();
        let live = app.count(&format!("SELECT COUNT(*) FROM auth_sessions WHERE tenant_id = '{}'", tenant.id)).await;
        plinth::users::purge_expired(&app.app).await.unwrap();
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM auth_sessions WHERE id = '{third_id}'")).await, 0);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM refresh_tokens WHERE session_id = '{third_id}'")).await, 0);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM auth_sessions WHERE tenant_id = '{}'", tenant.id)).await, live - 1);
    }

    async fn bans_and_password_changes_end_sessions(app) {
        let tenant = app.tenant("Bans").await;
        let user = signup(&app, &tenant, "rowan@example.com").await;
        let (access, refresh_token) = tokens(&user);
        let id = user.data()["user"]["id"].as_str().unwrap().to_string();
        let other_device = login(&app, &tenant.id, "rowan@example.com", PASSWORD).await;
        let (other_access, _) = tokens(&other_device);

        // A new password (by the user) ends the other sessions, not this one.
        let changed = app.patch("/v1/auth/user", &access, json!({ "password": "a-brand-new-passphrase", "user_metadata": { "name": "Rowan" } })).await;
        changed.expect(200);
        assert_eq!(changed.data()["user_metadata"]["name"], "Rowan");
        app.get("/v1/auth/user", &other_access).await.expect_error(401, "UNAUTHORIZED");
        app.get("/v1/auth/user", &access).await.expect(200);
        login(&app, &tenant.id, "rowan@example.com", PASSWORD).await.expect_error(401, "UNAUTHORIZED");
        app.patch("/v1/auth/user", &access, json!({ "password": "qwertyuiop" })).await.expect_error(422, "VALIDATION_FAILED");

        // A ban ends every session at once; sign-in and refresh are refused; unbanning lets in.
        let banned = app.patch(&format!("/v1/users/{id}"), &tenant.key, json!({ "banned": true, "ban_reason": "spam" })).await;
        banned.expect(200);
        assert_eq!(banned.data()["banned"], true);
        assert_eq!(banned.data()["ban_reason"], "spam");
        app.get("/v1/auth/user", &access).await.expect_error(401, "UNAUTHORIZED");
        refresh(&app, &refresh_token).await.expect_error(401, "UNAUTHORIZED");
        login(&app, &tenant.id, "rowan@example.com", "a-brand-new-passphrase").await.expect_error(403, "FORBIDDEN");
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM events WHERE type = 'user.banned' AND resource_id = '{id}'")).await, 1);
        app.patch(&format!("/v1/users/{id}"), &tenant.key, json!({ "banned": false })).await.expect(200);
        login(&app, &tenant.id, "rowan@example.com", "a-brand-new-passphrase").await.expect(200);
    }

    async fn login_attempts_are_throttled_per_account(app) {
        let tenant = app.tenant("Throttle").await;
        register(&app, &tenant, "target@example.com").await.expect(201);
        for _ in 0..10 {
            login(&app, &tenant.id, "target@example.com", "guess-guess-guess").await.expect_error(401, "UNAUTHORIZED");
        }
        let throttled = login(&app, &tenant.id, "target@example.com", PASSWORD).await;
        throttled.expect_error(429, "RATE_LIMITED");
        assert!(throttled.body["error"]["retry_after"].as_u64().unwrap() >= 1);
        // Another account of the tenant is not held back.
        register(&app, &tenant, "bystander@example.com").await.expect(201);
        login(&app, &tenant.id, "bystander@example.com", PASSWORD).await.expect(200);
    }

    async fn auth_config_decides_who_may_sign_in(app) {
        let tenant = app.tenant("Configured").await;
        let defaults = app.get("/v1/auth-config", &tenant.key).await;
        defaults.expect(200);
        assert_eq!(defaults.data()["methods"], json!({ "password": true, "magic_link": true, "otp": false, "anonymous": false }));
        assert_eq!(defaults.data()["signup"], "open");

        as_end_user(&app, &tenant.id, "/v1/auth/anonymous", json!({})).await.expect_error(403, "FORBIDDEN");
        let set = app.post("/v1/auth-config", &tenant.key, json!({
            "methods": { "password": true, "magic_link": false, "otp": false, "anonymous": true },
            "signup": "invite_only",
            "branding": { "brand_name": "Configured Co", "primary_color": "#3366ff" },
            "redirect_allowlist": ["https://app.example.com/*"]
        })).await;
        set.expect(200);
        assert_eq!(set.data()["branding"]["brand_name"], "Configured Co");
        register(&app, &tenant, "late@example.com").await.expect_error(403, "FORBIDDEN");
        // An invited user (created by an admin) signs in.
        app.post("/v1/users", &tenant.key, json!({ "email": "invited@example.com", "password": PASSWORD })).await.expect(201);
        login(&app, &tenant.id, "invited@example.com", PASSWORD).await.expect(200);

        // Anonymous, then an account: the user stays the same.
        let anon = as_end_user(&app, &tenant.id, "/v1/auth/anonymous", json!({})).await;
        anon.expect(201);
        assert_eq!(anon.data()["user"]["is_anonymous"], true);
        assert!(anon.data()["user"]["email"].is_null());
        let (anon_access, _) = tokens(&anon);
        let upgraded = app.patch("/v1/auth/user", &anon_access, json!({ "email": "kept@example.com", "password": PASSWORD })).await;
        upgraded.expect(200);
        assert_eq!(upgraded.data()["is_anonymous"], false);
        assert_eq!(upgraded.data()["id"], anon.data()["user"]["id"]);
        login(&app, &tenant.id, "kept@example.com", PASSWORD).await.expect(200);

        // The public view, by slug; bad settings are refused and change nothing.
        let public = app.send(app.request(Method::GET, "/v1/tenant-config", None).header("x-tenant-id", "configured")).await;
        public.expect(200);
        assert_eq!(public.data()["branding"]["primary_color"], "#3366ff");
        assert_eq!(public.data()["methods"]["anonymous"], true);
        assert_eq!(public.data()["signup"], "invite_only");
        app.get_public("/v1/tenant-config").await.expect_error(400, "BAD_REQUEST");
        for bad in [
            json!({ "signup": "sometimes" }),
            json!({ "redirect_allowlist": ["not a url"] }),
            json!({ "branding": { "logo_url": "http://insecure.example/logo.png" } }),
            json!({ "methods": { "password": "yes" } }),
            json!({ "colour": "red" }),
            json!({ "email_templates": { "reset_password": { "subject": "Reset", "body": "no link here" } } }),
            json!({ "email_templates": { "magic_link": { "subject": "Sign in: {{link}}", "body": "{{link}}" } } }),
            json!({ "redirect_allowlist": ["https://app.example.com*"] }),
            json!({ "smtp_url": "smtp://127.0.0.1:25" }),
            json!({ "smtp_url": "smtp://localhost:2525" }),
        ] {
            let refused = app.post("/v1/auth-config", &tenant.key, bad.clone()).await;
            assert_eq!(refused.status, 422, "{bad}: {}", refused.text);
        }
        assert_eq!(app.get("/v1/auth-config", &tenant.key).await.data()["signup"], "invite_only");
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        app.post("/v1/auth-config", &reader, json!({ "signup": "open" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
    }

    async fn user_tokens_reach_objects_of_their_tenant_only(app) {
        let tenant = app.tenant("Objects").await;
        app.post("/v1/object-types", &tenant.key, json!({ "name": "notes" })).await.expect(201);
        app.post("/v1/object-types/notes/properties", &tenant.key, json!({ "name": "title", "data_type": "text" })).await.expect(201);
        let user = signup(&app, &tenant, "writer@example.com").await;
        let (access, _) = tokens(&user);
        // Deny by default: a new tenant grants its users nothing.
        app.post("/v1/objects/notes", &access, json!({ "properties": { "title": "mine" } })).await.expect_error(404, "NOT_FOUND");
        app.get("/v1/objects/notes/list", &access).await.expect_error(404, "NOT_FOUND");
        app.grant_owner_access(&tenant, "notes").await;
        let made = app.post("/v1/objects/notes", &access, json!({ "properties": { "title": "mine" } })).await;
        made.expect(201);
        let listed = app.get("/v1/objects/notes/list", &access).await;
        listed.expect(200);
        assert_eq!(listed.data()["total"], 1);
        let theirs = app.get("/v1/objects/notes/list", &tenant.key).await;
        assert_eq!(theirs.data()["results"][0]["id"], made.data()["id"]);
        app.get("/v1/object-types", &access).await.expect_error(403, "INSUFFICIENT_SCOPE");
        // The token names its tenant: another tenant named alongside it is refused.
        let other = app.tenant("Not theirs").await;
        let crossed = app.send(app.request(Method::GET, "/v1/auth/user", Some(&access)).header("x-tenant-id", &other.id)).await;
        crossed.expect(200);
        assert_eq!(crossed.data()["email"], "writer@example.com", "the header does not move a user token");
        // Deleting the user: their objects are a dependency; forcing erases their name from them.
        let user_id = user.data()["user"]["id"].as_str().unwrap().to_string();
        let object_id = made.data()["id"].as_str().unwrap().to_string();
        assert_eq!(made.data()["created_by"], user_id.as_str());
        let refused = app.delete(&format!("/v1/users/{user_id}"), &tenant.key).await;
        refused.expect_error(409, "DEPENDENCY_EXISTS");
        assert_eq!(refused.body["error"]["dependencies"][0]["type"], "objects");
        assert_eq!(refused.body["error"]["dependencies"][0]["count"], 1);
        let token = refused.body["error"]["confirm_token"].as_str().unwrap().to_string();
        app.delete(&format!("/v1/users/{user_id}?force=true&confirm_token=wrong"), &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM users WHERE id = '{user_id}'")).await, 1, "nothing half-done");
        app.delete(&format!("/v1/users/{user_id}?force=true&confirm_token={token}"), &tenant.key).await.expect(200);
        let kept = app.get(&format!("/v1/objects/notes/{object_id}"), &tenant.key).await;
        kept.expect(200);
        assert!(kept.data()["created_by"].is_null(), "{}", kept.text);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM object_versions WHERE actor_id = '{user_id}'")).await, 0);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM auth_sessions WHERE user_id = '{user_id}'")).await, 0);
        app.get("/v1/auth/user", &access).await.expect_error(401, "UNAUTHORIZED");
        let last = if access.ends_with('A') { 'B' } else { 'A' };
        let tampered = format!("{}{last}", &access[..access.len() - 1]);
        app.get("/v1/auth/user", &tampered).await.expect_error(401, "UNAUTHORIZED");
    }
}
