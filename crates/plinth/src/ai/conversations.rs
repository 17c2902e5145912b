//! Conversations with server-side memory (seed 000 and 002): a conversation keeps its system
//! text, provider and model, and every message; chatting in it sends the latest messages (at
//! most 20 and 50 KB) as history and stores the new turn.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::native::{answer, Answered, ChatAnswer, ChatRequest, Turn};
use crate::app::App;
use crate::auth::Auth;
use crate::http::error::FieldErrors;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, ListParams, Page, Path};
use crate::id::TenantId;
use crate::id::{self, prefix};
use crate::scopes::required::{AI_READ, AI_WRITE, CHAT_WRITE};
use crate::time;

/// Messages sent as history, at most.
const HISTORY_MAX: i64 = 20;
/// Bytes of history sent, at most.
const HISTORY_MAX_BYTES: usize = 50 * 1024;
/// Messages shown with a conversation, at most (the latest).
const SHOWN_MAX: i64 = 200;

/// A conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Conversation {
    #[schema(example = "conv_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: String,
    pub title: Option<String>,
    pub system: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The latest messages, oldest first (on a single conversation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
}

/// One message of a conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub id: String,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct Row {
    id: String,
    tenant_id: TenantId,
    title: Option<String>,
    system: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, tenant_id, title, system, provider, model, created_at, updated_at";

impl TryFrom<Row> for Conversation {
    type Error = ApiError;

    fn try_from(row: Row) -> ApiResult<Conversation> {
        Ok(Conversation {
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            id: row.id,
            tenant_id: row.tenant_id.into(),
            title: row.title,
            system: row.system,
            provider: row.provider,
            model: row.model,
            messages: None,
        })
    }
}

pub(crate) const LIST: ListSpec = ListSpec {
    table: "ai_conversations",
    columns: COLUMNS,
    sortable: &[
        SortField { name: "created_at", column: "created_at" },
        SortField { name: "updated_at", column: "updated_at" },
    ],
    fields: &["id", "tenant_id", "title", "system", "provider", "model", "created_at", "updated_at"],
    updated_at: true,
};

/// A new conversation, or changes to one (absent fields keep their value).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationFields {
    pub title: Option<String>,
    pub system: Option<String>,
    /// The provider every turn uses (no failover); the priority list when absent.
    #[schema(value_type = Option<crate::http::shapes::Slug>)]
    pub provider: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::ModelName>)]
    pub model: Option<String>,
}

/// A turn in a conversation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Say {
    /// The user's message (or `message`): not blank, at most 32 KB.
    #[schema(value_type = Option<crate::http::shapes::Prose>)]
    pub prompt: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::Prose>)]
    pub message: Option<String>,
    /// Seed 000's `POST /v1/ai/conversation`: the conversation to continue; a new one when absent.
    pub conversation_id: Option<String>,
    pub system: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::Slug>)]
    pub provider: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::ModelName>)]
    pub model: Option<String>,
    #[schema(minimum = 1, maximum = 200_000)]
    pub max_tokens: Option<u64>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// A per-request credential for `provider`, as on `POST /v1/ai/chat`.
    #[schema(value_type = Option<String>)]
    pub api_key: Option<crate::config::Secret>,
}

/// The answer of a turn.
#[derive(Debug, Serialize, ToSchema)]
pub struct Said {
    pub conversation_id: String,
    #[serde(flatten)]
    pub answer: ChatAnswer,
}

fn check(fields: &ConversationFields, errors: &mut FieldErrors) {
    if fields.title.as_ref().is_some_and(|t| t.chars().count() > 200) {
        errors.add("title", "must be at most 200 characters");
    }
    if fields.system.as_ref().is_some_and(|s| s.len() > 32 * 1024) {
        errors.add("system", "must be at most 32 KB");
    }
    if fields.model.as_ref().is_some_and(|m| !crate::names::has_text(m) || m.chars().count() > 200) {
        errors.add("model", "must be 1 to 200 characters");
    }
    if fields.provider.as_ref().is_some_and(|p| !crate::names::is_slug(p)) {
        errors.add("provider", "must be a provider or an instance's name");
    }
}

async fn find(conn: &mut sqlx::AnyConnection, tenant: &TenantId, id: &str) -> ApiResult<Conversation> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM ai_conversations WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(Conversation::try_from).transpose()?.ok_or_else(|| ApiError::not_found("conversation"))
}

type MessageRow = (String, String, String, Option<String>, Option<String>, String);

/// The latest `limit` messages, oldest first.
async fn latest(conn: &mut sqlx::AnyConnection, conversation: &str, limit: i64) -> ApiResult<Vec<Message>> {
    let rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "SELECT id, role, content, provider, model, created_at FROM ai_messages WHERE conversation_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT {limit}"
    ))
    .bind(conversation)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .rev()
        .map(|(id, role, content, provider, model, at)| {
            Ok(Message { id, role, content, provider, model, created_at: time::from_db(&at)? })
        })
        .collect()
}

async fn create(app: &App, tenant: &TenantId, fields: &ConversationFields) -> ApiResult<Conversation> {
    let id = id::new_id(prefix::CONVERSATION);
    let now = time::to_db(&time::now());
    let mut tx = app.db.begin_write().await?;
    sqlx::query(
        "INSERT INTO ai_conversations (id, tenant_id, title, system, provider, model, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(&fields.title)
    .bind(&fields.system)
    .bind(&fields.provider)
    .bind(&fields.model)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    let conversation = find(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    Ok(conversation)
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_conversations, create_conversation))
        .routes(routes!(get_conversation, update_conversation, delete_conversation))
        .routes(routes!(chat_in_conversation))
        .routes(routes!(converse))
}

/// List conversations
#[utoipa::path(get, path = "/v1/ai/conversations", tag = "AI", security(("bearer" = [])),
    params(crate::http::list::ListQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<Conversation>>)))]
async fn list_conversations(auth: Auth, State(app): State<App>, params: ListParams) -> ApiResult<Data<Page<Value>>> {
    auth.require(AI_READ)?;
    let filter = Filter::new().eq("tenant_id", auth.tenant()?.as_str());
    let page: Page<Row> = list::fetch(&app.db, &LIST, filter, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(Conversation::try_from)?)?))
}

/// Start a conversation
#[utoipa::path(post, path = "/v1/ai/conversations", tag = "AI", security(("bearer" = [])),
    request_body = ConversationFields,
    responses((status = 201, body = crate::http::response::Envelope<Conversation>),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_conversation(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<ConversationFields>,
) -> ApiResult<Created<Conversation>> {
    auth.require(AI_WRITE)?;
    let mut errors = FieldErrors::default();
    check(&body, &mut errors);
    errors.finish()?;
    Ok(Created(create(&app, auth.tenant()?, &body).await?))
}

/// Get a conversation
///
/// With its latest 200 messages, oldest first.
#[utoipa::path(get, path = "/v1/ai/conversations/{conversation_id}", tag = "AI", security(("bearer" = [])),
    params(("conversation_id" = String, Path, description = "The conversation's id")),
    responses((status = 200, body = crate::http::response::Envelope<Conversation>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_conversation(auth: Auth, State(app): State<App>, Path(id): Path<String>) -> ApiResult<Data<Conversation>> {
    auth.require(AI_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    let mut conversation = find(&mut conn, auth.tenant()?, &id).await?;
    conversation.messages = Some(latest(&mut conn, &conversation.id, SHOWN_MAX).await?);
    Ok(Data(conversation))
}

/// Update a conversation
#[utoipa::path(patch, path = "/v1/ai/conversations/{conversation_id}", tag = "AI", security(("bearer" = [])),
    params(("conversation_id" = String, Path, description = "The conversation's id")),
    request_body = ConversationFields,
    responses((status = 200, body = crate::http::response::Envelope<Conversation>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_conversation(
    auth: Auth,
    State(app): State<App>,
    Path(id): Path<String>,
    Json(body): Json<ConversationFields>,
) -> ApiResult<Data<Conversation>> {
    auth.require(AI_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    check(&body, &mut errors);
    errors.finish()?;
    let mut tx = app.db.begin_write().await?;
    let current = find(&mut tx, tenant, &id).await?;
    sqlx::query(
        "UPDATE ai_conversations SET title = COALESCE($1, title), system = COALESCE($2, system), \
         provider = COALESCE($3, provider), model = COALESCE($4, model), updated_at = $5 WHERE id = $6 AND tenant_id = $7",
    )
    .bind(&body.title)
    .bind(&body.system)
    .bind(&body.provider)
    .bind(&body.model)
    .bind(time::to_db(&time::now()))
    .bind(&current.id)
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    let conversation = find(&mut tx, tenant, &current.id).await?;
    tx.commit().await?;
    Ok(Data(conversation))
}

/// Delete a conversation
///
/// With all its messages.
#[utoipa::path(delete, path = "/v1/ai/conversations/{conversation_id}", tag = "AI", security(("bearer" = [])),
    params(("conversation_id" = String, Path, description = "The conversation's id")),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_conversation(auth: Auth, State(app): State<App>, Path(id): Path<String>) -> ApiResult<Data<Deleted>> {
    auth.require(AI_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let conversation = find(&mut tx, tenant, &id).await?;
    sqlx::query("DELETE FROM ai_conversations WHERE id = $1 AND tenant_id = $2")
        .bind(&conversation.id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Deleted::new(conversation.id))
}

/// One turn: the conversation's latest messages as history, the answer, both stored.
async fn turn(
    app: App,
    auth: Auth,
    conversation: Result<Conversation, ConversationFields>,
    say: Say,
) -> ApiResult<Response> {
    let tenant = auth.tenant()?.clone();
    let (existing, new) = match conversation {
        Ok(existing) => (Some(existing), None),
        Err(fields) => (None, Some(fields)),
    };
    let mut history: Vec<Turn> = Vec::new();
    if let Some(existing) = &existing {
        let mut conn = app.db.pool().acquire().await?;
        history = latest(&mut conn, &existing.id, HISTORY_MAX)
            .await?
            .into_iter()
            .map(|m| Turn { role: m.role, content: m.content })
            .collect();
    }
    let settings = |pick: fn(&ConversationFields) -> Option<String>, from: fn(&Conversation) -> Option<String>| {
        existing.as_ref().and_then(from).or_else(|| new.as_ref().and_then(pick))
    };
    while history.iter().map(|t| t.content.len()).sum::<usize>() > HISTORY_MAX_BYTES {
        history.remove(0);
    }
    let prompt = say.prompt.clone().or(say.message.clone());
    let request = ChatRequest {
        prompt: prompt.clone(),
        message: None,
        history: Some(history),
        system: say.system.clone().or_else(|| settings(|f| f.system.clone(), |c| c.system.clone())),
        provider: say.provider.clone().or_else(|| settings(|f| f.provider.clone(), |c| c.provider.clone())),
        model: say.model.clone().or_else(|| settings(|f| f.model.clone(), |c| c.model.clone())),
        max_tokens: say.max_tokens,
        temperature: say.temperature,
        api_key: say.api_key.clone(),
    };
    if say.prompt.is_some() && say.message.is_some() {
        return Err(ApiError::invalid("prompt", "give `prompt` or `message`, not both"));
    }
    let Answered::Chat(answered) = answer(app.clone(), auth, request, false, None).await? else {
        return Err(ApiError::internal("a conversation turn does not stream"));
    };
    let now = time::now();
    let mut tx = app.db.begin_write().await?;
    let conversation_id = match (&existing, &new) {
        (Some(existing), _) => existing.id.clone(),
        (None, Some(fields)) => {
            let id = id::new_id(prefix::CONVERSATION);
            sqlx::query(
                "INSERT INTO ai_conversations (id, tenant_id, title, system, provider, model, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(&id)
            .bind(&tenant)
            .bind(&fields.title)
            .bind(&fields.system)
            .bind(&fields.provider)
            .bind(&fields.model)
            .bind(time::to_db(&now))
            .execute(&mut *tx)
            .await?;
            id
        }
        (None, None) => return Err(ApiError::internal("a turn without a conversation")),
    };
    for (offset, (role, content, provider, model)) in [
        ("user", prompt.unwrap_or_default(), None, None),
        ("assistant", answered.content.clone(), Some(answered.provider.clone()), Some(answered.model.clone())),
    ]
    .into_iter()
    .enumerate()
    {
        // The answer sorts after the question even within one clock tick.
        let at = now + chrono::Duration::microseconds(offset as i64);
        sqlx::query(
            "INSERT INTO ai_messages (id, conversation_id, tenant_id, role, content, provider, model, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id::new_id(prefix::AI_MESSAGE))
        .bind(&conversation_id)
        .bind(&tenant)
        .bind(role)
        .bind(&content)
        .bind(provider)
        .bind(model)
        .bind(time::to_db(&at))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE ai_conversations SET updated_at = $1 WHERE id = $2")
        .bind(time::to_db(&now))
        .bind(&conversation_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let provider = answered.provider.clone();
    let mut response = Data(Said { conversation_id, answer: answered }).into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&provider) {
        response.headers_mut().insert("x-plinth-provider", value);
    }
    Ok(response)
}

/// Chat in a conversation
///
/// Sends the conversation's latest messages (at most 20 and 50 KB) as history with the prompt,
/// answers like `POST /v1/ai/chat`, and stores both messages.
#[utoipa::path(post, path = "/v1/ai/conversations/{conversation_id}/chat", tag = "AI", security(("bearer" = [])),
    params(("conversation_id" = String, Path, description = "The conversation's id")),
    request_body = Say,
    responses((status = 200, body = crate::http::response::Envelope<Said>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn chat_in_conversation(
    auth: Auth,
    State(app): State<App>,
    Path(id): Path<String>,
    Json(say): Json<Say>,
) -> ApiResult<Response> {
    auth.require(CHAT_WRITE)?;
    if say.conversation_id.as_ref().is_some_and(|given| *given != id) {
        return Err(ApiError::invalid("conversation_id", "differs from the path"));
    }
    let mut conn = app.db.pool().acquire().await?;
    let conversation = find(&mut conn, auth.tenant()?, &id).await?;
    drop(conn);
    turn(app, auth, Ok(conversation), say).await
}

/// Converse
///
/// Seed 000's form: continues `conversation_id`, or starts a conversation (with `system`,
/// `provider`, `model`) when absent; answers with the `conversation_id` to continue with.
#[utoipa::path(post, path = "/v1/ai/conversation", tag = "AI", security(("bearer" = [])),
    request_body = Say,
    responses((status = 200, body = crate::http::response::Envelope<Said>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn converse(auth: Auth, State(app): State<App>, Json(say): Json<Say>) -> ApiResult<Response> {
    auth.require(CHAT_WRITE)?;
    let tenant = auth.tenant()?.clone();
    let conversation = match &say.conversation_id {
        Some(id) => {
            let mut conn = app.db.pool().acquire().await?;
            Ok(find(&mut conn, &tenant, id).await?)
        }
        None => {
            let fields = ConversationFields {
                title: say.prompt.as_ref().or(say.message.as_ref()).map(|p| p.chars().take(80).collect()),
                system: say.system.clone(),
                provider: say.provider.clone(),
                model: say.model.clone(),
            };
            let mut errors = FieldErrors::default();
            check(&fields, &mut errors);
            errors.finish()?;
            // Made with the turn's messages, so that a failed first turn leaves nothing behind.
            Err(fields)
        }
    };
    turn(app, auth, conversation, say).await
}
