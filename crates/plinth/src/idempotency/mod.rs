//! Idempotent writes: a `POST`, `PUT`, `PATCH` or `DELETE` with an `Idempotency-Key` runs once
//! per tenant, credential and key (an access token shares its API key's). Its answer is kept for 24 hours and replayed to a retry of the same
//! request (with `Idempotent-Replayed: true`); the same key with another request, or a retry while
//! the first is still running, is 409 `IDEMPOTENCY_CONFLICT`.
//!
//! A replay carries this request's `request_id` and the first one's in `Original-Request-Id`,
//! and the headers that belong to the answer (`Content-Type`, `Location`, `ETag`, the
//! `X-Plinth-*` ones such as the provider that answered), not those of the request that carried
//! it (its id, its rate limit). A body that is not JSON is replayed byte for byte.
//! An answer of 5xx is not kept, so that a retry runs again. The answer is passed on as it is
//! made (a stream is never held back) while up to 1 MiB of it is kept; a longer answer, or one
//! the client walked away from, is recorded as given but not replayable (a retry is 409). The
//! key's lock is renewed while the request runs, so a long request is never run twice; a record
//! whose request died with its process is taken over by a retry once its lock
//! (`PLINTH_IDEMPOTENCY_LOCK_SECS`, 60 s) has passed.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::FromRow;

use crate::app::App;
use crate::auth::Auth;
use crate::db::is_unique_violation;
use crate::http::{ApiError, ErrorCode};
use crate::secrets;
use crate::time;

const HEADER: &str = "idempotency-key";
const KEY_MAX_CHARS: usize = 255;
/// How long an answer is kept.
const KEEP_HOURS: i64 = 24;
/// Most of an answer that is kept for replay.
const KEEP_MAX_BYTES: usize = 1024 * 1024;
/// Headers of an answer that are the answer's own, replayed with it (with every `x-plinth-*`).
const KEPT_HEADERS: &[&str] =
    &["content-type", "content-language", "content-disposition", "location", "etag", "last-modified"];
/// Most headers kept of one answer.
const KEPT_HEADERS_MAX: usize = 32;

fn conflict(message: &str) -> Response {
    ApiError::new(ErrorCode::IdempotencyConflict, message).into_response()
}

#[derive(Debug, FromRow)]
struct Record {
    request_hash: String,
    status: Option<i64>,
    response_body: Option<String>,
    content_type: Option<String>,
    response_headers: Option<String>,
    locked_until: String,
    expires_at: String,
}

enum Claim {
    /// This request owns the key: run it.
    Run,
    /// Replay the kept answer.
    Replay(Response),
    /// Refuse.
    Refuse(Response),
}

/// The scope of keys: the tenant (or the platform, for the admin acting on no tenant) and the
/// credential. Bound to the credential, so that a replay never hands one credential's answer
/// (a new key's secret, say) to another credential of the tenant that lacks the scopes to have
/// made the request.
fn scope_of(auth: &Auth) -> String {
    let tenant = match auth.tenant() {
        Ok(tenant) => tenant.as_str().to_string(),
        Err(_) => "platform".to_string(),
    };
    let credential = match &auth.actor {
        crate::auth::Actor::Admin => "admin",
        crate::auth::Actor::ApiKey { key_id } | crate::auth::Actor::Token { key_id, .. } => key_id.as_str(),
        crate::auth::Actor::TenantJwt { public_key_id } => public_key_id.as_str(),
        crate::auth::Actor::User { user_id, .. } => user_id.as_str(),
    };
    format!("{tenant}/{credential}")
}

async fn claim(app: &App, scope: &str, key: &str, request_hash: &str) -> Result<Claim, ApiError> {
    let pool = app.db.pool();
    let lock = chrono::Duration::seconds(app.config.idempotency_lock_secs as i64);
    for _ in 0..2 {
        let now = time::now();
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, idempotency_key, request_hash, locked_until, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(time::to_db(&(now + lock)))
        .bind(time::to_db(&now))
        .bind(time::to_db(&(now + chrono::Duration::hours(KEEP_HOURS))))
        .execute(pool)
        .await;
        match inserted {
            Ok(_) => return Ok(Claim::Run),
            Err(error) if is_unique_violation(&error) => {}
            Err(error) => return Err(error.into()),
        }
        let record: Option<Record> = sqlx::query_as(
            "SELECT request_hash, status, response_body, content_type, response_headers, locked_until, expires_at \
             FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(pool)
        .await?;
        let Some(record) = record else { continue };
        if time::from_db(&record.expires_at)? <= now {
            sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2 AND expires_at = $3")
                .bind(scope)
                .bind(key)
                .bind(&record.expires_at)
                .execute(pool)
                .await?;
            continue;
        }
        if !secrets::constant_time_eq(record.request_hash.as_bytes(), request_hash.as_bytes()) {
            return Ok(Claim::Refuse(conflict(
                "this Idempotency-Key was used with a different request; use a new key for a new request",
            )));
        }
        let Some(status) = record.status else {
            if time::from_db(&record.locked_until)? > now {
                return Ok(Claim::Refuse(conflict("a request with this Idempotency-Key is still running")));
            }
            // Its first request died: take the key over, unless another retry just did.
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET locked_until = $1 \
                 WHERE scope = $2 AND idempotency_key = $3 AND locked_until = $4 AND status IS NULL",
            )
            .bind(time::to_db(&(now + lock)))
            .bind(scope)
            .bind(key)
            .bind(&record.locked_until)
            .execute(pool)
            .await?;
            return Ok(if taken.rows_affected() == 1 {
                Claim::Run
            } else {
                Claim::Refuse(conflict("a request with this Idempotency-Key is still running"))
            });
        };
        let Some(kept) = record.response_body else {
            return Ok(Claim::Refuse(conflict(
                "the first request with this Idempotency-Key was answered with a stream or an answer over 1 MiB, \
                 or its client went away: its answer is not kept; use a new key to ask again",
            )));
        };
        // Answers are kept encrypted, bound to their scope and key; a row that does not open
        // (another master key) cannot be replayed.
        let Some(kept) = crate::secrets::open(&app.answer_key, associated(scope, key).as_bytes(), &kept) else {
            return Ok(Claim::Refuse(conflict("this Idempotency-Key's answer cannot be read back: use a new key")));
        };
        let (body, original_request_id) = restamp(kept);
        let mut response = Response::new(Body::from(body));
        *response.status_mut() =
            axum::http::StatusCode::from_u16(u16::try_from(status).unwrap_or(500)).unwrap_or_default();
        let headers = response.headers_mut();
        match record.response_headers.as_deref() {
            Some(kept) => restore_headers(headers, kept),
            // Kept before the answer's headers were.
            None => {
                if let Some(content_type) = record.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                    headers.insert(header::CONTENT_TYPE, content_type);
                }
            }
        }
        if let Some(original) = original_request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            headers.insert("original-request-id", original);
        }
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(Claim::Replay(response));
    }
    Ok(Claim::Refuse(conflict("a request with this Idempotency-Key is still running")))
}

/// The kept body with this request's id in place of the first request's (so that `request_id`
/// always equals `X-Request-Id`), and the first request's id. Any other body (a stream, bytes
/// that are not text) is given back as it was kept.
fn restamp(body: Vec<u8>) -> (Vec<u8>, Option<String>) {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (body, None);
    };
    let current = serde_json::Value::String(crate::http::request_id::current());
    let original = object.insert("request_id".into(), current).and_then(|v| v.as_str().map(str::to_owned));
    (serde_json::Value::Object(object).to_string().into_bytes(), original)
}

/// The answer's own headers, as kept: `[[name, value], ...]`.
fn kept_headers(headers: &HeaderMap) -> String {
    let kept: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(name, _)| KEPT_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("x-plinth-"))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .take(KEPT_HEADERS_MAX)
        .collect();
    serde_json::to_string(&kept).unwrap_or_else(|_| "[]".into())
}

fn restore_headers(headers: &mut HeaderMap, kept: &str) {
    let kept: Vec<(String, String)> = serde_json::from_str(kept).unwrap_or_default();
    for (name, value) in kept {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.append(name, value);
        }
    }
}

/// What a kept answer is bound to.
fn associated(scope: &str, key: &str) -> String {
    format!("idempotency\n{scope}\n{key}")
}

/// Writes the outcome: a 5xx forgets the key (a retry runs again); any other answer is kept
/// (sealed) when `body` holds it whole, else recorded as given but not replayable.
async fn finish(app: &App, scope: &str, key: &str, status: u16, body: Option<&[u8]>, headers: Option<&str>) {
    let pool = app.db.pool();
    let outcome = if status >= 500 {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2")
            .bind(scope)
            .bind(key)
            .execute(pool)
            .await
    } else {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response_body = $2, response_headers = $3 \
             WHERE scope = $4 AND idempotency_key = $5",
        )
        .bind(i64::from(status))
        .bind(body.map(|body| crate::secrets::seal(&app.answer_key, associated(scope, key).as_bytes(), body)))
        .bind(headers)
        .bind(scope)
        .bind(key)
        .execute(pool)
        .await
    };
    if let Err(error) = outcome {
        tracing::error!(%error, "keeping an idempotent answer failed");
    }
}

/// Pushes the key's lock on while its request runs; stops when `stop` is dropped.
fn hold_lock(app: &App, scope: String, key: String, stop: tokio::sync::oneshot::Receiver<()>) {
    let db = app.db.clone();
    let lock = app.config.idempotency_lock_secs;
    app.tasks.spawn("idempotency lock", async move {
        // Renewed every third of the lock, so a slow database round trip never lets it lapse.
        let every = std::time::Duration::from_millis(lock * 1000 / 3);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(every) => {}
            }
            let until = time::to_db(&(time::now() + chrono::Duration::seconds(lock as i64)));
            let renewed = sqlx::query(
                "UPDATE idempotency_keys SET locked_until = $1 WHERE scope = $2 AND idempotency_key = $3 \
                 AND status IS NULL",
            )
            .bind(until)
            .bind(&scope)
            .bind(&key)
            .execute(db.pool())
            .await;
            if let Err(error) = renewed {
                tracing::warn!(%error, "renewing an idempotency lock failed");
            }
        }
    });
}

/// Lets a key go if its request ends before it is answered.
struct Unanswered {
    app: Option<App>,
    scope: String,
    key: String,
}

impl Unanswered {
    fn answered(mut self) {
        self.app = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(app) = self.app.take() else { return };
        let (scope, key) = (std::mem::take(&mut self.scope), std::mem::take(&mut self.key));
        let tasks = app.tasks.clone();
        tasks.spawn("idempotency release", async move { finish(&app, &scope, &key, 500, None, None).await });
    }
}

/// An answer on its way out: passed on chunk by chunk, up to `KEEP_MAX_BYTES` of it kept, the
/// outcome written when it ends, or in the background if it is dropped first.
struct Keeping {
    app: App,
    scope: String,
    key: String,
    status: u16,
    /// The answer's own headers, as kept.
    headers: Option<String>,
    kept: Option<Vec<u8>>,
    renewing: Option<tokio::sync::oneshot::Sender<()>>,
    finished: bool,
}

impl Keeping {
    fn take(&mut self, chunk: &[u8]) {
        if let Some(kept) = &mut self.kept {
            if kept.len() + chunk.len() > KEEP_MAX_BYTES {
                self.kept = None;
            } else {
                kept.extend_from_slice(chunk);
            }
        }
    }

    async fn finish(&mut self) {
        self.finished = true;
        self.renewing.take();
        finish(&self.app, &self.scope, &self.key, self.status, self.kept.as_deref(), self.headers.as_deref()).await;
    }
}

impl Drop for Keeping {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The client went away (or the answer broke) mid-answer: what was done stands, but the
        // answer is not whole, so it is not replayable.
        self.renewing.take();
        let (app, scope, key, status, headers) = (
            self.app.clone(),
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
            self.status,
            self.headers.take(),
        );
        let tasks = app.tasks.clone();
        tasks.spawn(
            "idempotent answer",
            async move { finish(&app, &scope, &key, status, None, headers.as_deref()).await },
        );
    }
}

/// Middleware: runs a keyed write once and replays its answer.
pub async fn enforce(State(app): State<App>, request: Request, next: Next) -> Response {
    let keyed = matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
        && !crate::limits::streams_body(request.uri().path());
    let Some(value) = request.headers().get(HEADER).filter(|_| keyed).cloned() else {
        return next.run(request).await;
    };
    let Some(auth) = request.extensions().get::<Auth>().cloned() else {
        return next.run(request).await;
    };
    let key = match value.to_str() {
        Ok(key) if !key.is_empty() && key.chars().count() <= KEY_MAX_CHARS => key.to_string(),
        _ => {
            return ApiError::bad_request(format!("Idempotency-Key must be 1 to {KEY_MAX_CHARS} printable characters"))
                .into_response()
        }
    };
    let scope = scope_of(&auth);
    let (parts, body) = request.into_parts();
    let limit = crate::limits::body_limit(parts.uri.path(), app.config.max_body_bytes);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body exceeds the limit of {limit} bytes"),
            )
            .into_response()
        }
    };
    let target = parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    let mut fingerprint = format!("{} {target}\n", parts.method).into_bytes();
    fingerprint.extend_from_slice(&bytes);
    let request_hash = secrets::sha256_hex_bytes(&fingerprint);

    match claim(&app, &scope, &key, &request_hash).await {
        Err(error) => return error.into_response(),
        Ok(Claim::Replay(response) | Claim::Refuse(response)) => return response,
        Ok(Claim::Run) => {}
    }
    let (renewing, stop) = tokio::sync::oneshot::channel();
    hold_lock(&app, scope.clone(), key.clone(), stop);
    // Dropped before an answer exists (the request timed out, panicked, or its client left):
    // the key is let go at once, as for a 5xx, so a retry runs again.
    let unanswered = Unanswered { app: Some(app.clone()), scope: scope.clone(), key: key.clone() };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    unanswered.answered();
    let (parts, body) = response.into_parts();
    let keeping = Keeping {
        app,
        scope,
        key,
        status: parts.status.as_u16(),
        headers: Some(kept_headers(&parts.headers)),
        kept: Some(Vec::new()),
        renewing: Some(renewing),
        finished: false,
    };
    let chunks =
        futures_util::stream::unfold((body.into_data_stream(), keeping), |(mut body, mut keeping)| async move {
            use futures_util::StreamExt;
            match body.next().await {
                Some(Ok(chunk)) => {
                    keeping.take(&chunk);
                    Some((Ok::<Bytes, axum::Error>(chunk), (body, keeping)))
                }
                Some(Err(error)) => {
                    keeping.kept = None;
                    Some((Err(error), (body, keeping)))
                }
                None => {
                    keeping.finish().await;
                    None
                }
            }
        });
    Response::from_parts(parts, Body::from_stream(chunks))
}

/// Forgets answers older than 24 hours.
pub async fn purge_expired(app: &App) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at < $1")
        .bind(time::to_db(&time::now()))
        .execute(app.db.pool())
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_keeps_its_own_headers_not_its_requests() {
        let mut answer = HeaderMap::new();
        answer.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        answer.insert(header::LOCATION, HeaderValue::from_static("/v1/keys/key_1"));
        answer.insert("x-plinth-provider", HeaderValue::from_static("openai"));
        answer.insert("x-request-id", HeaderValue::from_static("req_first"));
        answer.insert("ratelimit-remaining", HeaderValue::from_static("9"));
        let mut replayed = HeaderMap::new();
        restore_headers(&mut replayed, &kept_headers(&answer));
        assert_eq!(replayed.len(), 3, "{replayed:?}");
        assert_eq!(replayed[header::LOCATION], "/v1/keys/key_1");
        assert_eq!(replayed["x-plinth-provider"], "openai");
        assert_eq!(replayed[header::CONTENT_TYPE], "application/json");
        // A kept value that no longer parses is left out, not a failure.
        let mut partial = HeaderMap::new();
        restore_headers(&mut partial, r#"[["bad name", "x"], ["etag", "\"v1\""]]"#);
        assert_eq!(partial.len(), 1);
        assert_eq!(partial[header::ETAG], "\"v1\"");
    }

    #[test]
    fn bodies_that_are_not_json_are_replayed_byte_for_byte() {
        let bytes = vec![0xff, 0xfe, 0x00, b'a'];
        assert_eq!(restamp(bytes.clone()), (bytes, None));
        let stream = b"data: {\"a\":1}\n\ndata: [DONE]\n\n".to_vec();
        assert_eq!(restamp(stream.clone()), (stream, None));
        let (json, original) = restamp(br#"{"data":{},"request_id":"req_first"}"#.to_vec());
        assert_eq!(original.as_deref(), Some("req_first"));
        assert!(serde_json::from_slice::<serde_json::Value>(&json).unwrap()["request_id"].is_string());
    }
}
