//! What end users get by email, read from a local SMTP receiver: verification at sign-up,
//! password reset, magic links; and the sender's log transport and retries.

use std::time::Duration;

use plinth::config::Secret;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{Backend, Resp, TestApp, TestTenant};
use crate::on_both_backends;
use crate::smtp::Smtp;

const PASSWORD: &str = "granite-otter-harbour-42";

async fn with_smtp(backend: Backend) -> (TestApp, Smtp) {
    let smtp = Smtp::start().await;
    let url = smtp.url.clone();
    let app = TestApp::spawn_with(backend, move |config| {
        config.email.smtp_url = Some(Secret::new(url));
        config.email.email_from = "Acme Accounts <accounts@acme.test>".into();
        // Tenants' own SMTP servers here are on loopback too.
        config.outbound_allow_private = true;
    })
    .await;
    (app, smtp)
}

async fn end_user(app: &TestApp, tenant: &TestTenant, path: &str, body: Value) -> Resp {
    app.send(app.request(Method::POST, path, None).header("x-tenant-id", &tenant.id).json(&body)).await
}

async fn allow_redirects(app: &TestApp, tenant: &TestTenant) {
    app.post("/v1/auth-config", &tenant.key, json!({ "redirect_allowlist": ["https://app.example.com/*"] }))
        .await
        .expect(200);
}

/// Waits (bounded) until the message rows of `tenant` are all settled with `status`.
async fn settled(app: &TestApp, tenant: &str, status: &str) -> i64 {
    for _ in 0..200 {
        let pending = app
            .count(&format!(
                "SELECT COUNT(*) FROM outbound_messages WHERE tenant_id = '{tenant}' AND status = 'pending'"
            ))
            .await;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    app.count(&format!("SELECT COUNT(*) FROM outbound_messages WHERE tenant_id = '{tenant}' AND status = '{status}'"))
        .await
}

on_both_backends! {
    async fn sign_up_sends_a_verification_link_that_works_once(backend) {
        let (app, smtp) = with_smtp(backend).await;
        let tenant = app.tenant("Acme").await;
        allow_redirects(&app, &tenant).await;
        let refused = end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "x@example.com", "password": PASSWORD, "redirect_to": "https://evil.example/" })).await;
        refused.expect_error(422, "VALIDATION_FAILED");
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0, "nothing half-made");

        let signed_up = end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "New@Example.com", "password": PASSWORD, "redirect_to": "https://app.example.com/welcome" })).await;
        signed_up.expect(201);
        assert_eq!(signed_up.data()["user"]["email_verified"], false);
        let signed_in = end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "new@example.com", "password": PASSWORD })).await;
        let access = signed_in.data()["access_token"].as_str().unwrap().to_string();
        let mail = smtp.wait_for("new@example.com", 1).await;
        assert_eq!(mail.from, "accounts@acme.test");
        assert_eq!(mail.subject, "Confirm your email for Acme");
        assert!(mail.body.contains(&format!("{}/v1/auth/verify?token=", app.base)), "{}", mail.body);
        let token = mail.param("token").unwrap();
        assert_eq!(token.len(), 43);

        // The link verifies and leads on to the app; it works once.
        let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let clicked = no_redirects.get(app.url(&format!("/v1/auth/verify?token={token}&type=signup"))).send().await.unwrap();
        assert_eq!(clicked.status(), 302);
        assert_eq!(clicked.headers()["location"], "https://app.example.com/welcome?verified=true");
        assert_eq!(app.get("/v1/auth/user", &access).await.data()["email_verified"], true);
        app.post_public("/v1/auth/verify", json!({ "token": token })).await.expect_error(400, "BAD_REQUEST");
        app.post_public("/v1/auth/verify", json!({ "token": "made-up" })).await.expect_error(400, "BAD_REQUEST");

        // Sent, body wiped, no token anywhere in the database.
        assert_eq!(settled(&app, &tenant.id, "sent").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM outbound_messages WHERE body <> ''").await, 0);
        assert!(!app.stored_anywhere(&token).await);

        // A new address is unverified again and gets its own link.
        let changed = app.patch("/v1/auth/user", &access, json!({ "email": "moved@example.com" })).await;
        changed.expect(200);
        assert_eq!(changed.data()["email_verified"], false);
        let again = smtp.wait_for("moved@example.com", 1).await;
        let token = again.param("token").unwrap();
        let verified = app.post_public("/v1/auth/verify", json!({ "token": token, "type": "email_change" })).await;
        verified.expect(200);
        assert_eq!(verified.data()["email"], "moved@example.com");

        // Signing up with a taken address answers as for a new one; the owner is told, with a
        // link to choose a new password, and no second account is made.
        let taken = end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "moved@example.com", "password": "another-long-passphrase-9" })).await;
        taken.expect(201);
        assert_eq!(taken.data()["confirmation_sent"], true);
        assert_eq!(taken.data()["user"]["email_verified"], false);
        let notice = smtp.wait_for("moved@example.com", 2).await;
        assert_eq!(notice.subject, "You already have an account at Acme");
        assert!(notice.body.contains("type=recovery"), "{}", notice.body);
        let reset = app.post_public("/v1/auth/reset-password", json!({ "token": notice.param("token").unwrap(), "password": "another-long-passphrase-9" })).await;
        reset.expect(200);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM users WHERE tenant_id = '{}'", tenant.id)).await, 1);
        end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "moved@example.com", "password": "another-long-passphrase-9" })).await.expect(200);
    }

    async fn passwords_are_reset_by_email_without_telling_who_exists(backend) {
        let (app, smtp) = with_smtp(backend).await;
        let tenant = app.tenant("Resets").await;
        allow_redirects(&app, &tenant).await;
        let user = end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "kim@example.com", "password": PASSWORD })).await;
        user.expect(201);
        let signed_in = end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "kim@example.com", "password": PASSWORD })).await;
        let old_access = signed_in.data()["access_token"].as_str().unwrap().to_string();
        smtp.wait_for("kim@example.com", 1).await;

        let known = end_user(&app, &tenant, "/v1/auth/forgot-password", json!({ "email": "kim@example.com", "redirect_to": "https://app.example.com/reset" })).await;
        let unknown = end_user(&app, &tenant, "/v1/auth/forgot-password", json!({ "email": "ghost@example.com", "redirect_to": "https://app.example.com/reset" })).await;
        known.expect(200);
        unknown.expect(200);
        assert_eq!(known.body["data"], unknown.body["data"], "the same answer");
        let mail = smtp.wait_for("kim@example.com", 2).await;
        assert_eq!(mail.subject, "Reset your password for Resets");
        assert!(mail.body.contains("https://app.example.com/reset?token="), "{}", mail.body);
        assert!(mail.body.contains("&type=recovery"));
        let token = mail.param("token").unwrap();
        end_user(&app, &tenant, "/v1/auth/forgot-password", json!({ "email": "kim@example.com", "redirect_to": "https://elsewhere.example/" }))
            .await.expect_error(422, "VALIDATION_FAILED");

        // A weak password is refused and the token still works; then it is spent.
        app.post_public("/v1/auth/reset-password", json!({ "token": token, "password": "password123" })).await.expect_error(422, "VALIDATION_FAILED");
        let reset = app.post_public("/v1/auth/reset-password", json!({ "token": token, "password": "new-and-long-passphrase" })).await;
        reset.expect(200);
        assert_eq!(reset.data()["password_reset"], true);
        app.post_public("/v1/auth/reset-password", json!({ "token": token, "password": "another-long-passphrase" })).await.expect_error(400, "BAD_REQUEST");
        app.get("/v1/auth/user", &old_access).await.expect_error(401, "UNAUTHORIZED");
        end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "kim@example.com", "password": PASSWORD })).await.expect_error(401, "UNAUTHORIZED");
        end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "kim@example.com", "password": "new-and-long-passphrase" })).await.expect(200);

        // Nobody was mailed about the unknown address; both requests are in the audit log.
        assert!(smtp.to("ghost@example.com").is_empty());
        let audited = app.count(&format!("SELECT COUNT(*) FROM audit_logs WHERE tenant_id = '{}' AND action = 'user.password_reset_requested'", tenant.id)).await;
        assert_eq!(audited, 2);
        // A newer reset email retires the older link.
        // (Messages are sent concurrently, so the second is asked for once the first arrived.)
        end_user(&app, &tenant, "/v1/auth/forgot-password", json!({ "email": "kim@example.com" })).await.expect(200);
        let first = smtp.wait_for("kim@example.com", 3).await.param("token").unwrap();
        end_user(&app, &tenant, "/v1/auth/forgot-password", json!({ "email": "kim@example.com" })).await.expect(200);
        let second = smtp.wait_for("kim@example.com", 4).await.param("token").unwrap();
        app.post_public("/v1/auth/reset-password", json!({ "token": first, "password": "third-long-passphrase" })).await.expect_error(400, "BAD_REQUEST");
        app.post_public("/v1/auth/reset-password", json!({ "token": second, "password": "third-long-passphrase" })).await.expect(200);

        // Links are built on the server's own address, whatever Host the asker sends.
        let spoofed = app.send(app.request(Method::POST, "/v1/auth/forgot-password", None).header("x-tenant-id", &tenant.id)
            .header("host", "evil.example").json(&json!({ "email": "kim@example.com" }))).await;
        spoofed.expect(200);
        let mail = smtp.wait_for("kim@example.com", 5).await;
        assert!(!mail.body.contains("evil.example"), "{}", mail.body);
        assert!(mail.body.contains(&format!("{}?token=", app.base)), "{}", mail.body);
        // A link sent to an address the account no longer has stops working.
        let access = end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "kim@example.com", "password": "third-long-passphrase" })).await;
        let access = access.data()["access_token"].as_str().unwrap().to_string();
        app.patch("/v1/auth/user", &access, json!({ "email": "kim.new@example.com" })).await.expect(200);
        app.post_public("/v1/auth/reset-password", json!({ "token": mail.param("token").unwrap(), "password": "fourth-long-passphrase" }))
            .await.expect_error(400, "BAD_REQUEST");
    }

    async fn magic_links_sign_in_and_sign_up(backend) {
        let (app, smtp) = with_smtp(backend).await;
        let tenant = app.tenant("Magic").await;
        app.post("/v1/users", &tenant.key, json!({ "email": "old@example.com" })).await.expect(201);

        end_user(&app, &tenant, "/v1/auth/magic-link", json!({ "email": "old@example.com" })).await.expect(200);
        let mail = smtp.wait_for("old@example.com", 1).await;
        assert_eq!(mail.subject, "Your sign-in link for Magic");
        assert!(mail.body.contains("type=magiclink"));
        let token = mail.param("token").unwrap();
        let signed_in = app.post_public("/v1/auth/magic-link/verify", json!({ "token": token })).await;
        signed_in.expect(200);
        assert_eq!(signed_in.data()["user"]["email"], "old@example.com");
        assert_eq!(signed_in.data()["user"]["email_verified"], true);
        app.post_public("/v1/auth/magic-link/verify", json!({ "token": token })).await.expect_error(400, "BAD_REQUEST");

        // A new address: the link makes the user.
        end_user(&app, &tenant, "/v1/auth/magic-link", json!({ "email": "fresh@example.com" })).await.expect(200);
        let token = smtp.wait_for("fresh@example.com", 1).await.param("token").unwrap();
        assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = 'fresh@example.com'").await, 0, "not before the link is used");
        let created = app.post_public("/v1/auth/magic-link/verify", json!({ "token": token })).await;
        created.expect(200);
        assert_eq!(created.data()["user"]["email"], "fresh@example.com");

        // Invite-only: unknown addresses get the same answer and no email; off means 403.
        app.post("/v1/auth-config", &tenant.key, json!({ "signup": "invite_only" })).await.expect(200);
        end_user(&app, &tenant, "/v1/auth/magic-link", json!({ "email": "stranger@example.com" })).await.expect(200);
        end_user(&app, &tenant, "/v1/auth/magic-link", json!({ "email": "old@example.com" })).await.expect(200);
        smtp.wait_for("old@example.com", 2).await;
        assert!(smtp.to("stranger@example.com").is_empty());
        end_user(&app, &tenant, "/v1/auth/magic-link", json!({ "email": "old@example.com" })).await.expect(200);
        let pending = smtp.wait_for("old@example.com", 3).await.param("token").unwrap();
        app.post("/v1/auth-config", &tenant.key, json!({ "methods": { "password": true, "magic_link": false, "otp": false, "anonymous": false } })).await.expect(200);
        end_user(&app, &tenant, "/v1/auth/magic-link", json!({ "email": "old@example.com" })).await.expect_error(403, "FORBIDDEN");
        // A link sent before the switch does not work after it.
        app.post_public("/v1/auth/magic-link/verify", json!({ "token": pending })).await.expect_error(403, "FORBIDDEN");

        app.post("/v1/auth-config", &tenant.key, json!({ "methods": { "password": true, "magic_link": true, "otp": false, "anonymous": false }, "signup": "open" })).await.expect(200);

        // Someone signs up with another's address and a password; when the owner proves the
        // address, that password and its sessions stop working.
        let squatter = end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "victim@example.com", "password": PASSWORD })).await;
        squatter.expect(201);
        let squatter_in = end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "victim@example.com", "password": PASSWORD })).await;
        let squatter_access = squatter_in.data()["access_token"].as_str().unwrap().to_string();
        smtp.wait_for("victim@example.com", 1).await;
        end_user(&app, &tenant, "/v1/auth/magic-link", json!({ "email": "victim@example.com" })).await.expect(200);
        let owner_token = smtp.wait_for("victim@example.com", 2).await.param("token").unwrap();
        let owner = app.post_public("/v1/auth/magic-link/verify", json!({ "token": owner_token })).await;
        owner.expect(200);
        assert_eq!(owner.data()["user"]["email_verified"], true);
        app.get("/v1/auth/user", &squatter_access).await.expect_error(401, "UNAUTHORIZED");
        end_user(&app, &tenant, "/v1/auth/login", json!({ "email": "victim@example.com", "password": PASSWORD })).await.expect_error(401, "UNAUTHORIZED");
        let owner_access = owner.data()["access_token"].as_str().unwrap().to_string();
        app.get("/v1/auth/user", &owner_access).await.expect(200);
        // Asking is throttled per account: a burst of five (in a tenant of its own, so that the
        // per-address limit above does not interfere).
        let busy = app.tenant("Busy").await;
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(end_user(&app, &busy, "/v1/auth/magic-link", json!({ "email": "busy@example.com" })).await.status);
        }
        assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    }

    async fn the_log_transport_and_retries(backend) {
        // No SMTP server configured: emails go to the log and count as sent.
        let app = TestApp::spawn(backend).await;
        let tenant = app.tenant("Logged").await;
        end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "dev@example.com", "password": PASSWORD })).await.expect(201);
        assert_eq!(settled(&app, &tenant.id, "sent").await, 1);

        // An SMTP server that is not there: the message waits for its retry, with the error.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let app = TestApp::spawn_with(backend, move |config| {
            config.email.smtp_url = Some(Secret::new(format!("smtp://127.0.0.1:{port}")));
        }).await;
        let tenant = app.tenant("Unreachable").await;
        end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "later@example.com", "password": PASSWORD })).await.expect(201);
        let mut tried = 0;
        for _ in 0..200 {
            tried = app.count(&format!("SELECT COUNT(*) FROM outbound_messages WHERE tenant_id = '{}' AND attempts = 1 AND last_error IS NOT NULL", tenant.id)).await;
            if tried == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(tried, 1);
        let (status, next): (String, String) = sqlx::query_as("SELECT status, next_attempt_at FROM outbound_messages")
            .fetch_one(app.app.db.pool()).await.unwrap();
        assert_eq!(status, "pending");
        assert!(next > plinth::time::to_db(&plinth::time::now()), "the retry is in the future");
    }

    async fn tenants_can_send_through_their_own_smtp_server(backend) {
        let (app, server_smtp) = with_smtp(backend).await;
        let own = Smtp::start().await;
        let tenant = app.tenant("Own Mail").await;
        let refused = app.post("/v1/auth-config", &tenant.key, json!({ "smtp_url": "ftp://nope" })).await;
        refused.expect_error(422, "VALIDATION_FAILED");
        let set = app.post("/v1/auth-config", &tenant.key, json!({ "smtp_url": own.url, "email_from": "Own Mail <hello@own.test>" })).await;
        set.expect(200);
        assert_eq!(set.data()["smtp_url_set"], true);
        assert_eq!(set.data()["email_from"], "Own Mail <hello@own.test>");
        assert!(!set.text.contains(&own.url));
        assert!(!app.stored_anywhere(&own.url).await, "the URL is sealed");

        end_user(&app, &tenant, "/v1/auth/signup", json!({ "email": "mine@example.com", "password": PASSWORD })).await.expect(201);
        let mail = own.wait_for("mine@example.com", 1).await;
        assert_eq!(mail.from, "hello@own.test");
        // Other settings can change without touching the stored URL.
        app.post("/v1/auth-config", &tenant.key, json!({ "site_url": "https://own.test/app" })).await.expect(200);
        end_user(&app, &tenant, "/v1/auth/forgot-password", json!({ "email": "mine@example.com" })).await.expect(200);
        let reset = own.wait_for("mine@example.com", 2).await;
        assert!(reset.body.contains("https://own.test/app?token="), "{}", reset.body);
        assert!(server_smtp.to("mine@example.com").is_empty(), "nothing went through the server's SMTP");

        // Cleared: back to the server's.
        let cleared = app.post("/v1/auth-config", &tenant.key, json!({ "smtp_url": null })).await;
        assert_eq!(cleared.data()["smtp_url_set"], false);
        end_user(&app, &tenant, "/v1/auth/forgot-password", json!({ "email": "mine@example.com" })).await.expect(200);
        let via_server = server_smtp.wait_for("mine@example.com", 1).await;
        assert_eq!(via_server.from, "accounts@acme.test");
    }
}

/// The tenant's SMTP server is reached at the address the guard checked: the mail client never
/// resolves the name again (a second answer could point at loopback). Here the name resolves to
/// nothing at all, and the mail still arrives at the checked address.
#[tokio::test]
async fn smtp_connects_to_the_checked_address_not_a_second_lookup() {
    use lettre::AsyncTransport;
    let smtp = Smtp::start().await;
    let port = smtp.url.rsplit(':').next().unwrap();
    let plinth::messages::Mailer::Smtp(transport) =
        plinth::messages::Mailer::pinned(&format!("smtp://mail.plinth.invalid:{port}"), [127, 0, 0, 1].into()).unwrap()
    else {
        panic!("an SMTP transport");
    };
    let email = lettre::Message::builder()
        .from("from@example.com".parse().unwrap())
        .to("pinned@example.com".parse().unwrap())
        .subject("Pinned")
        .body("to the checked address".to_string())
        .unwrap();
    transport.send(email).await.expect("sent to the checked address");
    assert_eq!(smtp.wait_for("pinned@example.com", 1).await.subject, "Pinned");
    // Through the name alone, the same URL reaches nothing.
    let unpinned = plinth::messages::Mailer::from_config(Some(&format!("smtp://mail.plinth.invalid:{port}"))).unwrap();
    let plinth::messages::Mailer::Smtp(transport) = unpinned else { panic!("an SMTP transport") };
    let email = lettre::Message::builder()
        .from("from@example.com".parse().unwrap())
        .to("lost@example.com".parse().unwrap())
        .subject("Lost")
        .body("nowhere".to_string())
        .unwrap();
    assert!(transport.send(email).await.is_err());
}
