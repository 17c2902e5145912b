//! Codes by SMS (read from a fake Twilio), TOTP second factors with codes computed here,
//! recovery codes and the lock, the bot check, the portal routes, tenant lookup and the data
//! export.

use plinth::config::Secret;
use reqwest::Method;
use serde_json::{json, Value};
use totp_rs::{Algorithm, TOTP};

use crate::common::{Backend, Resp, TestApp, TestTenant};
use crate::on_both_backends;
use crate::sms::{self, FakeSms};

const PASSWORD: &str = "granite-otter-harbour-42";

async fn end_user(app: &TestApp, tenant: &TestTenant, path: &str, body: Value) -> Resp {
    app.send(app.request(Method::POST, path, None).header("x-tenant-id", &tenant.id).json(&body)).await
}

async fn with_sms(backend: Backend) -> (TestApp, FakeSms) {
    let fake = FakeSms::start().await;
    let base = fake.base_url.clone();
    let app = TestApp::spawn_with(backend, move |config| {
        config.sms.sms_base_url = base;
        config.sms.sms_account_sid = Some(sms::ACCOUNT.into());
        config.sms.sms_auth_token = Some(Secret::new(sms::AUTH_TOKEN));
        config.sms.sms_from = Some("+15550001111".into());
        config.outbound_allow_private = true;
    })
    .await;
    (app, fake)
}

async fn methods(app: &TestApp, tenant: &TestTenant, otp: bool) {
    let body = json!({ "methods": { "password": true, "magic_link": true, "otp": otp, "anonymous": false } });
    app.post("/v1/auth-config", &tenant.key, body).await.expect(200);
}

/// TOTP codes as an authenticator makes them, each for a later time step than the last (the
/// server accepts the step before, this one and the next).
struct Authenticator {
    totp: TOTP,
    last: i64,
}

impl Authenticator {
    fn new(secret: &str) -> Self {
        let bytes = totp_rs::Secret::Encoded(secret.to_string()).to_bytes().unwrap();
        Authenticator { totp: TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes), last: i64::MIN }
    }

    fn code(&mut self) -> String {
        let now = (plinth::time::now().timestamp() / 30) as i64;
        let step = (self.last + 1).max(now - 1);
        assert!(step <= now + 1, "no fresh step left in the window");
        self.last = step;
        self.totp.generate(step as u64 * 30)
    }
}

on_both_backends! {
    async fn codes_by_sms_sign_in_and_run_out(backend) {
        let (app, texts) = with_sms(backend).await;
        let tenant = app.tenant("Texts").await;
        end_user(&app, &tenant, "/v1/auth/otp/send", json!({ "phone": "+4520304050" })).await.expect_error(403, "FORBIDDEN");
        methods(&app, &tenant, true).await;

        let sent = end_user(&app, &tenant, "/v1/auth/otp/send", json!({ "phone": "+45 20 30 40 50" })).await;
        sent.expect(200);
        let text = texts.wait_for("+4520304050", 1).await;
        assert_eq!(text.from, "+15550001111");
        assert!(text.body.starts_with("Your Texts code is "), "{}", text.body);
        let code = text.code();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        end_user(&app, &tenant, "/v1/auth/otp/verify", json!({ "phone": "+4520304050", "code": wrong })).await.expect_error(401, "UNAUTHORIZED");
        let signed_in = end_user(&app, &tenant, "/v1/auth/otp/verify", json!({ "phone": "+4520304050", "code": code })).await;
        signed_in.expect(200);
        assert_eq!(signed_in.data()["user"]["phone"], "+4520304050");
        assert_eq!(signed_in.data()["user"]["phone_verified"], true);
        end_user(&app, &tenant, "/v1/auth/otp/verify", json!({ "phone": "+4520304050", "code": code })).await.expect_error(401, "UNAUTHORIZED");
        assert!(!app.stored_anywhere(&format!("code is {code}")).await, "the text is wiped once sent");

        // Five wrong guesses spend a code: the right one no longer works.
        end_user(&app, &tenant, "/v1/auth/otp/send", json!({ "phone": "+4520304050" })).await.expect(200);
        let code = texts.wait_for("+4520304050", 2).await.code();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..5 {
            end_user(&app, &tenant, "/v1/auth/otp/verify", json!({ "phone": "+4520304050", "code": wrong })).await.expect_error(401, "UNAUTHORIZED");
        }
        end_user(&app, &tenant, "/v1/auth/otp/verify", json!({ "phone": "+4520304050", "code": code })).await.expect_error(401, "UNAUTHORIZED");

        // Invite-only: an unknown number gets the same answer and no text. Sending is throttled.
        app.post("/v1/auth-config", &tenant.key, json!({ "signup": "invite_only" })).await.expect(200);
        end_user(&app, &tenant, "/v1/auth/otp/send", json!({ "phone": "+4799887766" })).await.expect(200);
        end_user(&app, &tenant, "/v1/auth/otp/send", json!({ "phone": "+4520304050" })).await.expect(200);
        texts.wait_for("+4520304050", 3).await;
        assert!(texts.to("+4799887766").is_empty());
        let throttled = end_user(&app, &tenant, "/v1/auth/otp/send", json!({ "phone": "+4520304050" })).await;
        throttled.expect_error(429, "RATE_LIMITED");
        end_user(&app, &tenant, "/v1/auth/otp/send", json!({ "phone": "12" })).await.expect_error(422, "VALIDATION_FAILED");
    }

    async fn totp_second_factors_with_recovery_and_lock(backend) {
        let app = TestApp::spawn(backend).await;
        let tenant = app.tenant("Factors").await;
        end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "mfa@example.com", "password": PASSWORD })).await.expect(201);
        let signed_up = end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "mfa@example.com", "password": PASSWORD })).await;
        let first_access = signed_up.data()["access_token"].as_str().unwrap().to_string();
        let user_id = signed_up.data()["user"]["id"].as_str().unwrap().to_string();
        let login = || end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "mfa@example.com", "password": PASSWORD }));

        let enrolled = app.post("/v1/auth/mfa/enroll", &first_access, json!({ "friendly_name": "Phone" })).await;
        enrolled.expect(201);
        let factor = enrolled.data()["factor_id"].as_str().unwrap().to_string();
        let secret = enrolled.data()["totp"]["secret"].as_str().unwrap().to_string();
        assert!(enrolled.data()["totp"]["uri"].as_str().unwrap().starts_with("otpauth://totp/Factors:mfa%40example.com?secret="));
        assert!(enrolled.data()["totp"]["qr_uri"].as_str().unwrap().starts_with("data:image/svg+xml;base64,"));
        let recovery: Vec<String> = enrolled.data()["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        assert_eq!(recovery.len(), 10);
        assert!(!app.stored_anywhere(&secret).await, "the secret is sealed");
        assert!(!app.stored_anywhere(&recovery[0]).await, "recovery codes are hashed");
        // Unverified, the factor does not gate sign-in.
        let weak_access = login().await.data()["access_token"].as_str().expect("tokens").to_string();

        let mut phone = Authenticator::new(&secret);
        app.post("/v1/auth/mfa/verify", &first_access, json!({ "factor_id": factor, "code": "000000" })).await.expect_error(401, "UNAUTHORIZED");
        let verified = app.post("/v1/auth/mfa/verify", &first_access, json!({ "factor_id": factor, "code": phone.code() })).await;
        verified.expect(200);
        assert_eq!(verified.data()["verified"], true);
        let listed = app.get("/v1/auth/mfa/factors", &first_access).await;
        assert_eq!(listed.data()[0]["status"], "verified");
        assert_eq!(listed.data()[0]["friendly_name"], "Phone");
        assert_eq!(app.get(&format!("/v1/users/{user_id}/mfa"), &tenant.key).await.data()[0]["id"], factor.as_str());
        // A session that did not pass the factor cannot weaken it: no new factor (which would
        // replace the recovery codes), no new password or address; other changes are fine.
        app.post("/v1/auth/mfa/enroll", &weak_access, json!({})).await.expect_error(403, "FORBIDDEN");
        app.patch("/v1/auth/user", &weak_access, json!({ "password": "another-long-passphrase" })).await.expect_error(403, "FORBIDDEN");
        app.patch("/v1/auth/user", &weak_access, json!({ "email": "elsewhere@example.com" })).await.expect_error(403, "FORBIDDEN");
        app.patch("/v1/auth/user", &weak_access, json!({ "user_metadata": { "theme": "dark" } })).await.expect(200);

        // Signing in now stops at the challenge; a code completes it, once.
        let challenged = login().await;
        challenged.expect(200);
        assert_eq!(challenged.data()["mfa_required"], true);
        assert!(challenged.data().get("access_token").is_none());
        assert_eq!(challenged.data()["factors"][0]["id"], factor.as_str());
        let ticket = challenged.data()["mfa_ticket"].as_str().unwrap().to_string();
        let code = phone.code();
        let completed = app.post_public("/v1/auth/mfa/complete", json!({ "mfa_ticket": ticket, "factor_id": factor, "code": code })).await;
        completed.expect(200);
        let strong_access = completed.data()["access_token"].as_str().unwrap().to_string();
        let sessions = app.get("/v1/auth/sessions", &strong_access).await;
        let current: Vec<&Value> = sessions.data().as_array().unwrap().iter().filter(|s| s["current"] == true).collect();
        assert_eq!(current[0]["aal"], "aal2");
        app.post_public("/v1/auth/mfa/complete", json!({ "mfa_ticket": ticket, "code": "123456" })).await.expect_error(401, "UNAUTHORIZED");
        let ticket = login().await.data()["mfa_ticket"].as_str().unwrap().to_string();
        app.post_public("/v1/auth/mfa/complete", json!({ "mfa_ticket": ticket, "code": code })).await.expect_error(401, "UNAUTHORIZED");

        // A recovery code works once.
        let recovered = app.post_public("/v1/auth/mfa/recover", json!({ "mfa_ticket": ticket, "recovery_code": recovery[0].to_uppercase() })).await;
        recovered.expect(200);
        let ticket = login().await.data()["mfa_ticket"].as_str().unwrap().to_string();
        app.post_public("/v1/auth/mfa/recover", json!({ "mfa_ticket": ticket, "recovery_code": recovery[0] })).await.expect_error(401, "UNAUTHORIZED");

        // Five failures lock second-factor checks, right codes included, for 15 minutes (the
        // reused recovery code above was the first).
        for _ in 0..4 {
            app.post_public("/v1/auth/mfa/complete", json!({ "mfa_ticket": ticket, "code": "000001" })).await.expect_error(401, "UNAUTHORIZED");
        }
        let locked = app.post_public("/v1/auth/mfa/recover", json!({ "mfa_ticket": ticket, "recovery_code": recovery[1] })).await;
        locked.expect_error(429, "RATE_LIMITED");
        assert!(locked.body["error"]["retry_after"].as_i64().unwrap() > 800);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM users WHERE id = '{user_id}' AND mfa_locked_until IS NOT NULL")).await, 1);
        sqlx::query("UPDATE users SET mfa_locked_until = $1 WHERE id = $2")
            .bind("2020-01-01T00:00:00.000000Z").bind(&user_id).execute(app.app.db.pool()).await.unwrap();
        app.post_public("/v1/auth/mfa/recover", json!({ "mfa_ticket": ticket, "recovery_code": recovery[1] })).await.expect(200);

        // Removing a verified factor takes a session that passed it (the one that verified it
        // did; this one did not): step up, then remove.
        app.delete(&format!("/v1/auth/mfa/{factor}"), &weak_access).await.expect_error(403, "FORBIDDEN");
        let stepped = app.post("/v1/auth/mfa/challenge", &weak_access, json!({ "factor_id": factor, "code": phone.code() })).await;
        stepped.expect(200);
        assert_eq!(stepped.data()["user_id"], user_id.as_str());
        let removed = app.delete(&format!("/v1/auth/mfa/{factor}"), &weak_access).await;
        removed.expect(200);
        assert_eq!(removed.data()["unenrolled"], true);
        assert!(login().await.data()["access_token"].is_string(), "no factor, no challenge");
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = '{user_id}'")).await, 0);
        let kinds = app.count(&format!("SELECT COUNT(*) FROM events WHERE resource_id = '{user_id}' AND type IN ('user.mfa_enrolled', 'user.mfa_removed')")).await;
        assert_eq!(kinds, 2);
        // Another tenant's admin sees nothing of it.
        let other = app.tenant("Other").await;
        app.get(&format!("/v1/users/{user_id}/mfa"), &other.key).await.expect_error(404, "NOT_FOUND");
    }

    async fn bot_checks_guard_sign_in_when_configured(backend) {
        let (app, _texts) = with_sms(backend).await;
        let tenant = app.tenant("Guarded").await;
        end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "bot@example.com", "password": PASSWORD })).await.expect(201);
        let verifier = sms::start_verifier("turnstile-secret-0123").await;
        let set = app.post("/v1/auth-config", &tenant.key, json!({ "turnstile_verify_url": verifier, "turnstile_secret": "turnstile-secret-0123" })).await;
        set.expect(200);
        assert_eq!(set.data()["turnstile_secret_set"], true);
        assert!(!set.text.contains("turnstile-secret-0123"));
        assert_eq!(app.get("/v1/auth-config", &tenant.key).await.data()["turnstile_secret_set"], true);
        assert!(!app.stored_anywhere("turnstile-secret-0123").await);

        let login = |token: Option<&str>| {
            let mut body = json!({ "email": "bot@example.com", "password": PASSWORD });
            if let Some(token) = token {
                body["turnstile_token"] = json!(token);
            }
            end_user(&app, &tenant, "/v1/auth/login", body)
        };
        login(None).await.expect_error(403, "FORBIDDEN");
        login(Some("bad-token")).await.expect_error(403, "FORBIDDEN");
        login(Some("good-token")).await.expect(200);
        end_user(&app, &tenant, "/v1/auth/forgot-password", json!({ "email": "bot@example.com" })).await.expect_error(403, "FORBIDDEN");
        end_user(&app, &tenant, "/v1/auth/forgot-password", json!({ "email": "bot@example.com", "turnstile_token": "good-token" })).await.expect(200);
        // Clearing the secret turns the check off.
        app.post("/v1/auth-config", &tenant.key, json!({ "turnstile_secret": null })).await.expect(200);
        login(None).await.expect(200);
    }

    async fn the_portal_lookup_and_export(backend) {
        let app = TestApp::spawn(backend).await;
        let first = app.tenant("Alpha").await;
        let second = app.tenant("Beta").await;
        app.post("/v1/auth-config", &second.key, json!({ "branding": { "brand_name": "Beta Brand" } })).await.expect(200);

        // The portal names the tenant in the body, and only there.
        let body = json!({ "email": "both@example.com", "password": PASSWORD, "tenant_id": first.id });
        let made = app.post_public("/v1/auth/portal-signup", body).await;
        made.expect(201);
        app.post_public("/v1/auth/portal-signup", json!({ "email": "both@example.com", "password": PASSWORD })).await
            .expect_error(422, "VALIDATION_FAILED");
        let headed = app.send(app.request(Method::POST, "/v1/auth/portal-login", None).header("x-tenant-id", &first.id)
            .json(&json!({ "email": "both@example.com", "password": PASSWORD }))).await;
        headed.expect_error(422, "VALIDATION_FAILED");
        app.post_public("/v1/auth/portal-signup", json!({ "email": "both@example.com", "password": PASSWORD, "tenant_id": "beta" })).await.expect(201);
        let logged_in = app.post_public("/v1/auth/portal-login", json!({ "email": "both@example.com", "password": PASSWORD, "tenant_id": first.id })).await;
        logged_in.expect(200);
        app.post_public("/v1/auth/portal-forgot-password", json!({ "email": "both@example.com", "tenant_id": first.id })).await.expect(200);
        app.post_public("/v1/auth/portal-magic-link", json!({ "email": "both@example.com", "tenant_id": first.id })).await.expect(200);
        app.post_public("/v1/auth/portal-verify-email", json!({ "token": "nope" })).await.expect_error(400, "BAD_REQUEST");
        app.post_public("/v1/auth/portal-reset-password", json!({ "token": "nope", "password": PASSWORD })).await.expect_error(400, "BAD_REQUEST");
        app.post_public("/v1/auth/portal-magic-link-verify", json!({ "token": "nope" })).await.expect_error(400, "BAD_REQUEST");
        app.post_public("/v1/auth/portal-otp-send", json!({ "phone": "+4520304050" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post_public("/v1/auth/portal-otp-send", json!({ "phone": "+4520304050", "tenant_id": first.id })).await.expect_error(403, "FORBIDDEN");
        app.post_public("/v1/auth/portal-otp-verify", json!({ "phone": "+4520304050", "code": "123456" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post_public("/v1/auth/portal-otp-verify", json!({ "phone": "+4520304050", "code": "123456", "tenant_id": first.id })).await.expect_error(401, "UNAUTHORIZED");

        let identified = app.post_public("/v1/auth/portal-identify", json!({ "email": "Both@Example.com" })).await;
        identified.expect(200);
        assert_eq!(identified.data()["multiple_tenants"], true);
        assert_eq!(identified.data()["tenants"].as_array().unwrap().len(), 2);
        assert_eq!(identified.data()["tenant_id"], first.id.as_str(), "the first by name");
        let looked_up = app.post_public("/v1/tenants/lookup", json!({ "email": "both@example.com" })).await;
        looked_up.expect(200);
        assert_eq!(looked_up.data(), &json!([
            { "tenant_id": first.id, "brand_name": "Alpha" },
            { "tenant_id": second.id, "brand_name": "Beta Brand" },
        ]));
        let nobody = app.post_public("/v1/auth/portal-identify", json!({ "email": "nobody@example.com" })).await;
        assert_eq!(nobody.data(), &json!({ "tenant_id": null, "multiple_tenants": false, "tenants": [] }));

        // The export: everything about the user, once an hour.
        let access = logged_in.data()["access_token"].as_str().unwrap().to_string();
        app.post("/v1/object-types", &first.key, json!({ "name": "notes" })).await.expect(201);
        app.grant_owner_access(&first, "notes").await;
        app.post("/v1/objects/notes", &access, json!({ "properties": {} })).await.expect(201);
        let exported = app.get("/v1/auth/me/export", &access).await;
        exported.expect(200);
        let data = exported.data();
        assert_eq!(data["_meta"]["export_type"], "user_data_export");
        assert_eq!(data["_meta"]["tenant_id"], first.id.as_str());
        assert_eq!(data["user"]["email"], "both@example.com");
        assert_eq!(data["sessions"].as_array().unwrap().len(), 1, "sign-up opens no session; the login does");
        assert_eq!(data["objects"].as_array().unwrap().len(), 1);
        assert_eq!(data["objects"][0]["object_type"], "notes");
        assert!(data["audit_logs"].as_array().unwrap().iter().any(|e| e["action"] == "user.signed_in"));
        app.get("/v1/auth/me/export", &access).await.expect_error(429, "RATE_LIMITED");
        app.get("/v1/auth/me/export", &first.key).await.expect_error(403, "FORBIDDEN");
    }
}
