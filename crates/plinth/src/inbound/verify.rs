//! Signature checks of the senders whose webhooks the platform receives. Every comparison is
//! constant-time; schemes with a timestamp refuse one more than five minutes away.

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::secrets::{constant_time_eq, hex, hmac_sha256};

/// How far a signed timestamp may be from now, in seconds.
pub const TOLERANCE_SECS: i64 = 300;

/// The signing schemes an inbound source may use.
pub const SCHEMES: &[&str] = &["standard-webhooks", "github-sha256", "stripe", "meta"];

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn recent(timestamp: i64, now: i64) -> Result<(), &'static str> {
    if now.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
        Err("the signed timestamp is more than 5 minutes away")
    } else {
        Ok(())
    }
}

/// Checks a request of `scheme` signed with `secret` at `now` (Unix seconds); the reason when
/// it does not verify.
pub fn verify(scheme: &str, secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), &'static str> {
    match scheme {
        "standard-webhooks" => standard_webhooks(secret, headers, body, now),
        "github-sha256" | "meta" => hub_sha256(secret, headers, body),
        "stripe" => stripe(secret, headers, body, now),
        _ => Err("unknown signing scheme"),
    }
}

/// Standard Webhooks: `webhook-signature` holds space-separated `v1,<base64>` signatures of
/// `id.timestamp.body` under the base64 part of a `whsec_` secret.
fn standard_webhooks(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), &'static str> {
    let (Some(id), Some(timestamp), Some(signatures)) =
        (header(headers, "webhook-id"), header(headers, "webhook-timestamp"), header(headers, "webhook-signature"))
    else {
        return Err("the webhook-id, webhook-timestamp and webhook-signature headers are required");
    };
    let timestamp: i64 = timestamp.parse().map_err(|_| "webhook-timestamp is not a number")?;
    recent(timestamp, now)?;
    let key =
        STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).map_err(|_| "the secret is not base64")?;
    let expected =
        STANDARD.encode(hmac_sha256(&key, &[id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body]));
    let matched = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .fold(false, |found, given| found | constant_time_eq(given.as_bytes(), expected.as_bytes()));
    if matched {
        Ok(())
    } else {
        Err("no signature matches")
    }
}

/// GitHub and Meta: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
fn hub_sha256(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let given = header(headers, "x-hub-signature-256").ok_or("the X-Hub-Signature-256 header is required")?;
    let given = given.strip_prefix("sha256=").ok_or("X-Hub-Signature-256 must start with sha256=")?;
    let expected = hex(&hmac_sha256(secret.as_bytes(), &[body]));
    if constant_time_eq(given.to_ascii_lowercase().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err("the signature does not match")
    }
}

/// Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">[,v1=...]`, keyed with
/// the whole endpoint secret.
pub fn stripe(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), &'static str> {
    let value = header(headers, "stripe-signature").ok_or("the Stripe-Signature header is required")?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v1)) => signatures.push(v1),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("Stripe-Signature has no timestamp")?;
    recent(timestamp, now)?;
    let expected = hex(&hmac_sha256(secret.as_bytes(), &[timestamp.to_string().as_bytes(), b".", body]));
    let matched =
        signatures.iter().fold(false, |found, given| found | constant_time_eq(given.as_bytes(), expected.as_bytes()));
    if matched {
        Ok(())
    } else {
        Err("no signature matches")
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn standard_webhooks_vectors() {
        // The specification's example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let good = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".into()),
            ("webhook-timestamp", "1614265330".into()),
            ("webhook-signature", "v1,bm9ldHRoZXNpZ25hdHVyZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()),
        ]);
        assert!(verify("standard-webhooks", secret, &good, body, 1614265330).is_ok());
        assert!(verify("standard-webhooks", secret, &good, body, 1614265330 + 301).is_err(), "too old");
        assert!(verify("standard-webhooks", secret, &good, b"{}", 1614265330).is_err(), "another body");
        assert!(verify("standard-webhooks", "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &good, body, 1614265330).is_err());
        assert!(verify("standard-webhooks", secret, &HeaderMap::new(), body, 1614265330).is_err());
        let extreme = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".into()),
            ("webhook-timestamp", i64::MIN.to_string()),
            ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()),
        ]);
        assert!(verify("standard-webhooks", secret, &extreme, body, i64::MAX).is_err(), "no overflow");
    }

    #[test]
    fn hub_and_stripe_signatures() {
        let body = b"{\"zen\":\"Keep it logically awesome.\"}";
        let signature = format!("sha256={}", hex(&hmac_sha256(b"It's a Secret to Everybody", &[body])));
        let good = headers(&[("x-hub-signature-256", signature.clone())]);
        assert!(verify("github-sha256", "It's a Secret to Everybody", &good, body, 0).is_ok());
        assert!(verify("meta", "It's a Secret to Everybody", &good, body, 0).is_ok());
        assert!(verify("github-sha256", "another", &good, body, 0).is_err());
        assert!(verify("github-sha256", "It's a Secret to Everybody", &good, b"{}", 0).is_err());

        let secret = "whsec_test_secret";
        let v1 = hex(&hmac_sha256(secret.as_bytes(), &[b"1700000000.", body]));
        let good = headers(&[("stripe-signature", format!("t=1700000000,v1=deadbeef,v1={v1},v0=abc"))]);
        assert!(verify("stripe", secret, &good, body, 1700000100).is_ok());
        assert!(verify("stripe", secret, &good, body, 1700000400).is_err(), "too old");
        assert!(verify("stripe", "whsec_other", &good, body, 1700000100).is_err());
        let untimed = headers(&[("stripe-signature", format!("v1={v1}"))]);
        assert!(verify("stripe", secret, &untimed, body, 1700000100).is_err());
    }
}
