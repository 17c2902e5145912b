//! Inbound webhooks: a tenant registers a source (a name, a signing scheme, the sender's
//! secret) and gives the sender `POST /v1/inbound/{source_id}`. A request whose signature
//! verifies is stored and emitted as `inbound.<name>.received`, which flows to webhooks and
//! realtime like any event; one that does not is refused with 401 and leaves nothing behind.

pub mod platform;
pub mod verify;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::events::{self, Event};
use crate::http::error::FieldErrors;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, ListParams, Page, Path, Query};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::keyring;
use crate::object_types::is_slug;
use crate::scopes::required::{INBOUND_DELETE, INBOUND_READ, INBOUND_WRITE};
use crate::time;

/// What stored secrets are sealed as.
const SECRET_KIND: &str = "inbound";
const TOKEN_KIND: &str = "inbound-verify-token";
/// Most sources per tenant.
const SOURCES_MAX: i64 = 100;
/// Largest payload that is put whole into the event (larger ones are referred to by id).
const EVENT_PAYLOAD_MAX_BYTES: usize = 64 * 1024;

/// A place where a tenant receives signed webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundSource {
    #[schema(example = "src_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: String,
    /// Lowercase letters, digits, `-` and `_`; events are `inbound.<name>.received`.
    pub name: String,
    /// `standard-webhooks`, `github-sha256`, `stripe` or `meta`.
    pub scheme: String,
    pub description: Option<String>,
    /// Where the sender posts: `/v1/inbound/{id}`.
    pub path: String,
    /// The event each verified request emits.
    pub event_type: String,
    pub received_count: i64,
    pub last_received_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct SourceRow {
    id: String,
    tenant_id: TenantId,
    name: String,
    scheme: String,
    description: Option<String>,
    received_count: i64,
    last_received_at: Option<String>,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str =
    "id, tenant_id, name, scheme, description, received_count, last_received_at, created_at, updated_at";

impl TryFrom<SourceRow> for InboundSource {
    type Error = ApiError;

    fn try_from(row: SourceRow) -> ApiResult<InboundSource> {
        Ok(InboundSource {
            path: format!("/v1/inbound/{}", row.id),
            event_type: format!("inbound.{}.received", row.name),
            last_received_at: row.last_received_at.as_deref().map(time::from_db).transpose()?,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            id: row.id,
            tenant_id: row.tenant_id.into(),
            name: row.name,
            scheme: row.scheme,
            description: row.description,
            received_count: row.received_count,
        })
    }
}

pub(crate) const LIST: ListSpec = ListSpec {
    table: "inbound_sources",
    columns: COLUMNS,
    sortable: &[SortField { name: "created_at", column: "created_at" }, SortField { name: "name", column: "name" }],
    fields: &[
        "id",
        "tenant_id",
        "name",
        "scheme",
        "description",
        "path",
        "event_type",
        "received_count",
        "last_received_at",
        "created_at",
        "updated_at",
    ],
    updated_at: true,
};

/// A new source.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSource {
    #[schema(value_type = crate::http::shapes::Slug)]
    pub name: String,
    /// `standard-webhooks`, `github-sha256`, `stripe` or `meta`.
    pub scheme: String,
    /// The sender's signing secret (Meta: the app secret). For `standard-webhooks` and
    /// `github-sha256` one is generated when absent, and shown once.
    pub secret: Option<String>,
    /// Meta only: the token its subscription handshake echoes.
    pub verify_token: Option<String>,
    pub description: Option<String>,
}

/// Changes: absent fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSource {
    /// A new secret (after the sender rotated its own).
    pub secret: Option<String>,
    pub verify_token: Option<String>,
    pub description: Option<String>,
}

/// A created source, with its secret when the platform generated it: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceCreated {
    #[serde(flatten)]
    pub source: InboundSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A verified request, as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundMessage {
    #[schema(example = "inmsg_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub source_id: String,
    /// The sender's delivery id, when it gave one.
    pub external_id: Option<String>,
    pub event_id: String,
    pub content_type: Option<String>,
    /// The body: JSON when it parses, else the text.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct MessageRow {
    id: String,
    source_id: String,
    external_id: Option<String>,
    event_id: String,
    content_type: Option<String>,
    payload: String,
    received_at: String,
}

impl TryFrom<MessageRow> for InboundMessage {
    type Error = ApiError;

    fn try_from(row: MessageRow) -> ApiResult<InboundMessage> {
        Ok(InboundMessage {
            payload: serde_json::from_str(&row.payload).unwrap_or(Value::String(row.payload)),
            received_at: time::from_db(&row.received_at)?,
            id: row.id,
            source_id: row.source_id,
            external_id: row.external_id,
            event_id: row.event_id,
            content_type: row.content_type,
        })
    }
}

pub(crate) const MESSAGES: ListSpec = ListSpec {
    table: "inbound_messages",
    columns: "id, source_id, external_id, event_id, content_type, payload, received_at",
    sortable: &[SortField { name: "received_at", column: "received_at" }],
    fields: &["id", "source_id", "external_id", "event_id", "content_type", "payload", "received_at"],
    updated_at: false,
};

/// What a sender is told.
#[derive(Debug, Serialize, ToSchema)]
pub struct Received {
    pub received: bool,
    pub id: String,
    /// True when this delivery id was received before (stored once).
    pub duplicate: bool,
}

/// Meta's subscription handshake.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    #[param(rename = "hub.mode")]
    pub mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    #[param(rename = "hub.verify_token")]
    pub verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    #[param(rename = "hub.challenge")]
    pub challenge: Option<String>,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_sources, create_source))
        .routes(routes!(get_source, update_source, delete_source))
        .routes(routes!(list_inbound_messages))
        .routes(routes!(receive, handshake))
        .merge(platform::routes())
}

fn check_secret(scheme: &str, secret: &str) -> Result<(), String> {
    if secret.len() < 8 || secret.len() > 512 || secret.trim() != secret {
        return Err("must be 8 to 512 characters, without surrounding spaces".into());
    }
    if scheme == "standard-webhooks" {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret));
        if !decoded.is_ok_and(|key| key.len() >= 16) {
            return Err("must be `whsec_` and the base64 of at least 16 bytes".into());
        }
    }
    Ok(())
}

fn generated_secret(scheme: &str) -> Option<String> {
    match scheme {
        "standard-webhooks" => {
            use base64::Engine;
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            Some(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
        }
        "github-sha256" => Some(crate::secrets::random_alphanumeric(40)),
        _ => None,
    }
}

async fn find(conn: &mut sqlx::AnyConnection, tenant: &TenantId, source_id: &str) -> ApiResult<InboundSource> {
    let row: Option<SourceRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM inbound_sources WHERE id = $1 AND tenant_id = $2"))
            .bind(source_id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(InboundSource::try_from).transpose()?.ok_or_else(|| ApiError::not_found("inbound source"))
}

/// List inbound sources
#[utoipa::path(get, path = "/v1/inbound-sources", tag = "Inbound", security(("bearer" = [])),
    params(crate::http::list::ListQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<InboundSource>>)))]
async fn list_sources(auth: Auth, State(app): State<App>, params: ListParams) -> ApiResult<Data<Page<Value>>> {
    auth.require(INBOUND_READ)?;
    let filter = Filter::new().eq("tenant_id", auth.tenant()?.as_str());
    let page: Page<SourceRow> = list::fetch(&app.db, &LIST, filter, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(InboundSource::try_from)?)?))
}

/// Create an inbound source
///
/// Give the sender the `path` it answers with. The secret is stored encrypted and never shown
/// again (a generated one is shown in this answer).
#[utoipa::path(post, path = "/v1/inbound-sources", tag = "Inbound", security(("bearer" = [])),
    request_body = CreateSource,
    responses((status = 201, body = crate::http::response::Envelope<SourceCreated>),
              (status = 409, body = crate::http::error::ErrorBody, description = "The name is taken"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_source(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<CreateSource>,
) -> ApiResult<Created<SourceCreated>> {
    auth.require(INBOUND_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    if !is_slug(&body.name) {
        errors.add("name", "must be 1 to 50 lowercase letters, digits, `-` or `_`");
    }
    if !verify::SCHEMES.contains(&body.scheme.as_str()) {
        errors.add("scheme", "must be `standard-webhooks`, `github-sha256`, `stripe` or `meta`");
    }
    let generated = if body.secret.is_none() { generated_secret(&body.scheme) } else { None };
    match (&body.secret, &generated) {
        (Some(secret), _) => {
            if let Err(problem) = check_secret(&body.scheme, secret) {
                errors.add("secret", problem);
            }
        }
        (None, None) if verify::SCHEMES.contains(&body.scheme.as_str()) => {
            errors.add("secret", format!("is required for `{}`: the sender's signing secret", body.scheme))
        }
        _ => {}
    }
    match (&body.verify_token, body.scheme.as_str()) {
        (Some(_), scheme) if scheme != "meta" => errors.add("verify_token", "is for the `meta` scheme only"),
        (Some(token), _) if token.len() < 8 || token.len() > 256 => {
            errors.add("verify_token", "must be 8 to 256 characters")
        }
        _ => {}
    }
    if body.description.as_ref().is_some_and(|d| d.chars().count() > 1000) {
        errors.add("description", "must be at most 1000 characters");
    }
    errors.finish()?;
    let secret = body.secret.clone().or(generated.clone()).unwrap_or_default();
    let id = id::new_id(prefix::INBOUND_SOURCE);
    let now = time::to_db(&time::now());
    let mut tx = app.db.begin_write().await?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM inbound_sources WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(&mut *tx)
        .await?;
    if count >= SOURCES_MAX {
        return Err(ApiError::invalid("name", format!("a tenant has at most {SOURCES_MAX} inbound sources")));
    }
    let sealed = keyring::seal(&mut tx, &app.wrap_key, tenant, SECRET_KIND, &id, &secret).await?;
    let token = match &body.verify_token {
        Some(token) => Some(keyring::seal(&mut tx, &app.wrap_key, tenant, TOKEN_KIND, &id, token).await?),
        None => None,
    };
    let inserted = sqlx::query(
        "INSERT INTO inbound_sources (id, tenant_id, name, scheme, secret, verify_token, description, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(&id)
    .bind(tenant.as_str())
    .bind(&body.name)
    .bind(&body.scheme)
    .bind(&sealed)
    .bind(&token)
    .bind(&body.description)
    .bind(&now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(error) if crate::db::is_unique_violation(&error) => {
            return Err(ApiError::conflict(format!("an inbound source is named `{}` already", body.name)))
        }
        other => other?,
    };
    let entry = Entry {
        action: "inbound_source.created",
        resource_type: "inbound_source",
        resource_id: &id,
        changes: json!({ "name": body.name, "scheme": body.scheme }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let source = find(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    Ok(Created(SourceCreated { source, secret: generated }))
}

/// Get an inbound source
#[utoipa::path(get, path = "/v1/inbound-sources/{source_id}", tag = "Inbound", security(("bearer" = [])),
    params(("source_id" = String, Path, description = "The source's id")),
    responses((status = 200, body = crate::http::response::Envelope<InboundSource>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_source(
    auth: Auth,
    State(app): State<App>,
    Path(source_id): Path<String>,
) -> ApiResult<Data<InboundSource>> {
    auth.require(INBOUND_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(Data(find(&mut conn, auth.tenant()?, &source_id).await?))
}

/// Update an inbound source
///
/// A new `secret` (after the sender rotated), Meta's `verify_token`, or the description.
#[utoipa::path(patch, path = "/v1/inbound-sources/{source_id}", tag = "Inbound", security(("bearer" = [])),
    params(("source_id" = String, Path, description = "The source's id")),
    request_body = UpdateSource,
    responses((status = 200, body = crate::http::response::Envelope<InboundSource>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_source(
    auth: Auth,
    State(app): State<App>,
    Path(source_id): Path<String>,
    Json(body): Json<UpdateSource>,
) -> ApiResult<Data<InboundSource>> {
    auth.require(INBOUND_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let current = find(&mut tx, tenant, &source_id).await?;
    let mut errors = FieldErrors::default();
    if let Some(secret) = &body.secret {
        if let Err(problem) = check_secret(&current.scheme, secret) {
            errors.add("secret", problem);
        }
    }
    if body.verify_token.is_some() && current.scheme != "meta" {
        errors.add("verify_token", "is for the `meta` scheme only");
    }
    if body.verify_token.as_ref().is_some_and(|t| t.len() < 8 || t.len() > 256) {
        errors.add("verify_token", "must be 8 to 256 characters");
    }
    if body.description.as_ref().is_some_and(|d| d.chars().count() > 1000) {
        errors.add("description", "must be at most 1000 characters");
    }
    errors.finish()?;
    let sealed = match &body.secret {
        Some(secret) => Some(keyring::seal(&mut tx, &app.wrap_key, tenant, SECRET_KIND, &current.id, secret).await?),
        None => None,
    };
    let token = match &body.verify_token {
        Some(token) => Some(keyring::seal(&mut tx, &app.wrap_key, tenant, TOKEN_KIND, &current.id, token).await?),
        None => None,
    };
    sqlx::query(
        "UPDATE inbound_sources SET secret = COALESCE($1, secret), verify_token = COALESCE($2, verify_token), \
         description = COALESCE($3, description), updated_at = $4 WHERE id = $5 AND tenant_id = $6",
    )
    .bind(&sealed)
    .bind(&token)
    .bind(&body.description)
    .bind(time::to_db(&time::now()))
    .bind(&current.id)
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await?;
    let entry = Entry {
        action: "inbound_source.updated",
        resource_type: "inbound_source",
        resource_id: &current.id,
        changes: json!({ "secret_changed": body.secret.is_some(), "verify_token_changed": body.verify_token.is_some() }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let source = find(&mut tx, tenant, &current.id).await?;
    tx.commit().await?;
    Ok(Data(source))
}

/// Delete an inbound source
///
/// Its path stops answering at once; what it received goes with it.
#[utoipa::path(delete, path = "/v1/inbound-sources/{source_id}", tag = "Inbound", security(("bearer" = [])),
    params(("source_id" = String, Path, description = "The source's id")),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_source(auth: Auth, State(app): State<App>, Path(source_id): Path<String>) -> ApiResult<Data<Deleted>> {
    auth.require(INBOUND_DELETE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let source = find(&mut tx, tenant, &source_id).await?;
    sqlx::query("DELETE FROM inbound_sources WHERE id = $1 AND tenant_id = $2")
        .bind(&source.id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    let entry = Entry {
        action: "inbound_source.deleted",
        resource_type: "inbound_source",
        resource_id: &source.id,
        changes: json!({ "name": source.name }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    tx.commit().await?;
    Ok(Deleted::new(source.id))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageFilter {
    /// Only the request with this sender delivery id.
    pub external_id: Option<String>,
}

/// List what a source received
#[utoipa::path(get, path = "/v1/inbound-sources/{source_id}/messages", tag = "Inbound", security(("bearer" = [])),
    params(("source_id" = String, Path, description = "The source's id"), crate::http::list::ListQuery, MessageFilter),
    responses((status = 200, body = crate::http::response::Envelope<Page<InboundMessage>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn list_inbound_messages(
    auth: Auth,
    State(app): State<App>,
    Path(source_id): Path<String>,
    params: ListParams,
    Query(filter): Query<MessageFilter>,
) -> ApiResult<Data<Page<Value>>> {
    auth.require(INBOUND_READ)?;
    let tenant = auth.tenant()?;
    let mut conn = app.db.pool().acquire().await?;
    let source = find(&mut conn, tenant, &source_id).await?;
    drop(conn);
    let filter = Filter::new()
        .eq("tenant_id", tenant.as_str())
        .eq("source_id", source.id)
        .eq_opt("external_id", filter.external_id);
    let page: Page<MessageRow> = list::fetch(&app.db, &MESSAGES, filter, &params).await?;
    Ok(Data(params.project(&MESSAGES, page.try_map(InboundMessage::try_from)?)?))
}

/// The source behind a public path, with its opened secret and verify token.
struct Opened {
    id: String,
    tenant_id: TenantId,
    name: String,
    scheme: String,
    secret: String,
    verify_token: Option<String>,
}

async fn open_source(app: &App, source_id: &str) -> ApiResult<Opened> {
    let mut conn = app.db.pool().acquire().await?;
    let row: Option<(TenantId, String, String, String, Option<String>)> =
        sqlx::query_as("SELECT tenant_id, name, scheme, secret, verify_token FROM inbound_sources WHERE id = $1")
            .bind(source_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((tenant_id, name, scheme, secret, token)) = row else {
        return Err(ApiError::not_found("inbound source"));
    };
    let secret = keyring::open(&mut conn, &app.wrap_key, &tenant_id, SECRET_KIND, source_id, &secret).await?;
    let verify_token = match token {
        Some(token) => Some(keyring::open(&mut conn, &app.wrap_key, &tenant_id, TOKEN_KIND, source_id, &token).await?),
        None => None,
    };
    Ok(Opened { id: source_id.to_string(), tenant_id, name, scheme, secret, verify_token })
}

/// The sender's own id of a delivery, when its scheme gives one.
fn external_id(scheme: &str, headers: &HeaderMap, payload: &Value) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    match scheme {
        // Signed ids: the sender's own.
        "standard-webhooks" => header("webhook-id"),
        "stripe" => payload["id"].as_str().map(str::to_string),
        // GitHub's delivery header is not signed and Meta gives none: the signature of the body
        // names the delivery, so a captured request re-sent under another id is stored once.
        "github-sha256" | "meta" => header("x-hub-signature-256").map(|s| s.to_ascii_lowercase()),
        _ => None,
    }
    .filter(|id| !id.is_empty() && id.len() <= 200)
}

/// Receive a webhook
///
/// For the sender, unauthenticated: the signature is the credential. Verified per the
/// source's scheme (Standard Webhooks, `X-Hub-Signature-256`, `Stripe-Signature`; signed
/// timestamps within 5 minutes), stored, and emitted as `inbound.<name>.received`. A bad
/// signature is 401 and nothing is stored; a delivery id seen before is answered 200 again
/// without a second copy.
#[utoipa::path(post, path = "/v1/inbound/{source_id}", tag = "Inbound",
    params(("source_id" = String, Path, description = "The source's id")),
    request_body(content = String, description = "The sender's payload, as sent"),
    responses((status = 200, body = crate::http::response::Envelope<Received>),
              (status = 401, body = crate::http::error::ErrorBody, description = "The signature does not verify"),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn receive(
    State(app): State<App>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Data<Received>> {
    let source = open_source(&app, &source_id).await?;
    let now = time::now();
    if let Err(reason) = verify::verify(&source.scheme, &source.secret, &headers, &body, now.timestamp()) {
        return Err(ApiError::unauthorized(format!("the webhook signature does not verify: {reason}")));
    }
    // PostgreSQL's text holds no NUL: it is kept as U+FFFD, like any byte that is not UTF-8.
    let text = String::from_utf8_lossy(&body).replace('\0', "\u{FFFD}");
    let payload: Value = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
    let external = external_id(&source.scheme, &headers, &payload);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let message_id = id::new_id(prefix::INBOUND_MESSAGE);
    let mut tx = app.db.begin_write().await?;
    if let Some(external) = &external {
        let seen: Option<(String,)> =
            sqlx::query_as("SELECT id FROM inbound_messages WHERE source_id = $1 AND external_id = $2")
                .bind(&source.id)
                .bind(external)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((id,)) = seen {
            return Ok(Data(Received { received: true, id, duplicate: true }));
        }
    }
    let kind = format!("inbound.{}.received", source.name);
    let in_event = if text.len() <= EVENT_PAYLOAD_MAX_BYTES { payload.clone() } else { Value::Null };
    let data = json!({
        "source_id": source.id,
        "source": source.name,
        "message_id": message_id,
        "external_id": external,
        "payload": in_event,
    });
    let event = Event { kind: &kind, resource_type: "inbound_message", resource_id: &message_id, data };
    let event_id = events::record(&mut tx, &source.tenant_id, event).await?;
    let stored = sqlx::query(
        "INSERT INTO inbound_messages (id, tenant_id, source_id, external_id, event_id, content_type, payload, \
         received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&message_id)
    .bind(&source.tenant_id)
    .bind(&source.id)
    .bind(&external)
    .bind(&event_id)
    .bind(&content_type)
    .bind(&text)
    .bind(time::to_db(&now))
    .execute(&mut *tx)
    .await;
    match stored {
        // The same delivery, received twice at once: the other copy is kept.
        Err(error) if crate::db::is_unique_violation(&error) => {
            tx.rollback().await?;
            let kept: Option<(String,)> =
                sqlx::query_as("SELECT id FROM inbound_messages WHERE source_id = $1 AND external_id = $2")
                    .bind(&source.id)
                    .bind(&external)
                    .fetch_optional(app.db.pool())
                    .await?;
            let id = kept.map(|(id,)| id).unwrap_or(message_id);
            return Ok(Data(Received { received: true, id, duplicate: true }));
        }
        other => other?,
    };
    sqlx::query("UPDATE inbound_sources SET received_count = received_count + 1, last_received_at = $1 WHERE id = $2")
        .bind(time::to_db(&now))
        .bind(&source.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Data(Received { received: true, id: message_id, duplicate: false }))
}

/// Answer Meta's handshake
///
/// For a `meta` source: echoes `hub.challenge` as text when `hub.mode` is `subscribe` and
/// `hub.verify_token` is the source's verify token; 403 otherwise.
#[utoipa::path(get, path = "/v1/inbound/{source_id}", tag = "Inbound",
    params(("source_id" = String, Path, description = "The source's id"), Handshake),
    responses((status = 200, body = String, content_type = "text/plain", description = "The challenge"),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn handshake(
    State(app): State<App>,
    Path(source_id): Path<String>,
    Query(query): Query<Handshake>,
) -> ApiResult<Response> {
    let source = open_source(&app, &source_id).await?;
    challenge(source.verify_token.as_deref(), &query)
}

/// The answer to a `hub.challenge` handshake against `expected`.
pub fn challenge(expected: Option<&str>, query: &Handshake) -> ApiResult<Response> {
    let matches = match (expected, query.verify_token.as_deref()) {
        (Some(expected), Some(given)) => crate::secrets::constant_time_eq(expected.as_bytes(), given.as_bytes()),
        _ => false,
    };
    match (query.mode.as_deref(), matches, &query.challenge) {
        (Some("subscribe"), true, Some(challenge)) if challenge.len() <= 1000 => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], challenge.clone())
                .into_response())
        }
        _ => Err(ApiError::forbidden("the verify token does not match")),
    }
}
