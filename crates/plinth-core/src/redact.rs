//! Secret-looking fields, kept out of every record, event and log line.

use serde_json::{Map, Value};

/// Field names whose values never reach a record, an event or a log line.
pub const SECRET_FIELDS: &[&str] = &[
    "api_key",
    "oauth_token",
    "password",
    "secret",
    "token",
    "client_secret",
    "refresh_token",
    "access_token",
    "authorization",
    "pem_private",
];

/// Replaces the value of every secret-looking field, at any depth, with `"[REDACTED]"`.
pub fn redact(value: Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .map(|(k, v)| {
                    let secret = SECRET_FIELDS.iter().any(|s| k.eq_ignore_ascii_case(s));
                    (k, if secret { Value::String("[REDACTED]".into()) } else { redact(v) })
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}
