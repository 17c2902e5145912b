//! Comments on objects (seed 002): threaded by `parent_id`, rich text sanitised, the author taken
//! from the credential. Reading them needs reading the object; writing one, writing its type.
//! Only the author, or a key holding `admin` or `*`, edits or deletes a comment; every earlier
//! body is kept, and a deleted comment with live replies stays in the thread without its body.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{AnyConnection, FromRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::store::fetch_visible;
use super::{Object, Schema};
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::authz::access::readable;
use crate::authz::ObjectAction;
use crate::events::{self, Event};
use crate::http::{list, ApiError, ApiResult, Created, Data, Json, Page, Path, Query};
use crate::id::{self, TenantId};
use crate::time;

/// Longest comment, in characters, after sanitising.
const BODY_MAX_CHARS: usize = 10_000;
/// The id prefix of comments.
pub const PREFIX: &str = "cmt";

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_comments, create_comment)).routes(routes!(update_comment, delete_comment))
}

/// A comment on an object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Comment {
    #[schema(example = "cmt_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub object_type_id: String,
    pub object_id: String,
    /// The comment this one answers, if any.
    pub parent_id: Option<String>,
    /// Sanitised HTML; `null` once deleted.
    pub body: Option<String>,
    /// `api_key`, `user`, `tenant_jwt` or `admin`.
    pub author_type: String,
    pub author_id: Option<String>,
    /// How many times it was edited (each earlier body is kept).
    pub edits: i64,
    pub is_deleted: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, FromRow)]
struct CommentRow {
    id: String,
    object_type_id: String,
    object_id: String,
    parent_id: Option<String>,
    body: Option<String>,
    author_type: String,
    author_id: Option<String>,
    edits: i64,
    created_at: String,
    updated_at: String,
    deleted_at: Option<String>,
}

const COLUMNS: &str =
    "id, object_type_id, object_id, parent_id, body, author_type, author_id, edits, created_at, updated_at, deleted_at";

impl TryFrom<CommentRow> for Comment {
    type Error = ApiError;

    fn try_from(row: CommentRow) -> ApiResult<Comment> {
        let deleted_at = row.deleted_at.as_deref().map(time::from_db).transpose()?;
        Ok(Comment {
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            is_deleted: deleted_at.is_some(),
            deleted_at,
            id: row.id,
            object_type_id: row.object_type_id,
            object_id: row.object_id,
            parent_id: row.parent_id,
            body: row.body,
            author_type: row.author_type,
            author_id: row.author_id,
            edits: row.edits,
        })
    }
}

/// True for a credential that may edit or delete anyone's comment: the platform admin, or a key
/// holding `admin` or `*`.
fn moderates(auth: &Auth) -> bool {
    auth.is_admin() || (auth.access.is_none() && auth.scopes().iter().any(|s| s == "*" || s == "admin"))
}

/// A comment's body, sanitised: 1 to 10,000 characters of allowed HTML.
fn clean_body(body: &str) -> ApiResult<String> {
    if body.chars().count() > BODY_MAX_CHARS * 2 {
        return Err(ApiError::invalid("body", format!("must be at most {BODY_MAX_CHARS} characters")));
    }
    let clean = ammonia::clean(body);
    let length = clean.trim().chars().count();
    if length == 0 {
        return Err(ApiError::invalid("body", "must hold some text"));
    }
    if length > BODY_MAX_CHARS {
        return Err(ApiError::invalid("body", format!("must be at most {BODY_MAX_CHARS} characters")));
    }
    Ok(clean)
}

/// The object `object_id` of `type_ref` that the caller may read, with its schema; the caller
/// must also hold `action`'s permission on the type.
async fn object_for(
    app: &App,
    conn: &mut AnyConnection,
    auth: &Auth,
    type_ref: &str,
    object_id: &str,
    action: ObjectAction,
) -> ApiResult<(Schema, Object)> {
    let (type_access, guard) = readable(app, conn, auth, type_ref, action).await?;
    let schema = type_access.schema.clone();
    let rows = guard.rows(&schema, ObjectAction::Select);
    let object = fetch_visible(conn, app.db.backend(), &schema, object_id, rows).await?;
    Ok((schema, object))
}

async fn find(conn: &mut AnyConnection, tenant: &TenantId, object_id: &str, comment_id: &str) -> ApiResult<Comment> {
    let row: Option<CommentRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM comments WHERE id = $1 AND object_id = $2 AND tenant_id = $3"))
            .bind(comment_id)
            .bind(object_id)
            .bind(tenant.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    row.map(Comment::try_from).transpose()?.ok_or_else(|| ApiError::not_found("comment"))
}

async fn record_change(
    tx: &mut crate::db::WriteTx,
    who: &Who,
    tenant: &TenantId,
    kind: &str,
    comment: &Comment,
    schema: &Schema,
) -> ApiResult<()> {
    let event = Event {
        kind,
        resource_type: "comment",
        resource_id: &comment.id,
        data: json!({ "comment": comment, "object_type": schema.object_type.name }),
    };
    events::record(tx, tenant, event).await?;
    let entry = Entry {
        action: kind,
        resource_type: "comment",
        resource_id: &comment.id,
        changes: json!({ "object_id": comment.object_id, "edits": comment.edits }),
    };
    audit::record(&mut **tx, who, None, entry).await?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommentsQuery {
    /// Only the replies to this comment.
    pub parent_id: Option<String>,
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    object: String,
    parent: Option<String>,
    after: String,
    total: i64,
}

/// List comments
///
/// The object's comments, oldest first. A deleted comment is listed (without its body) only
/// while it has live replies. Needs reading the object.
#[utoipa::path(get, path = "/v1/objects/{object_type_id}/{object_id}/comments", tag = "Comments",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id"), CommentsQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<Comment>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn list_comments(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
    Query(params): Query<CommentsQuery>,
) -> ApiResult<Data<Page<Comment>>> {
    let tenant = auth.tenant()?;
    let limit = list::page_limit(params.limit)?;
    let mut conn = app.db.pool().acquire().await?;
    let (_, object) = object_for(&app, &mut conn, &auth, &type_ref, &object_id, ObjectAction::Select).await?;
    let cursor: Option<Cursor> = params.cursor.as_deref().map(|text| list::open(&app.cursor_key, text)).transpose()?;
    if let Some(cursor) = &cursor {
        if cursor.object != object.id || cursor.parent != params.parent_id {
            return Err(ApiError::bad_request("this cursor belongs to another list: keep the first page's parameters"));
        }
    }
    let shown = "object_id = $1 AND tenant_id = $2 AND ($3 = '' OR parent_id = $3) AND (deleted_at IS NULL OR EXISTS \
                 (SELECT 1 FROM comments r WHERE r.parent_id = comments.id AND r.deleted_at IS NULL))";
    let parent = params.parent_id.clone().unwrap_or_default();
    let total = match &cursor {
        Some(cursor) => cursor.total,
        None => {
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM comments WHERE {shown}"))
                .bind(&object.id)
                .bind(tenant.as_str())
                .bind(&parent)
                .fetch_one(&mut *conn)
                .await?;
            n
        }
    };
    let after = cursor.as_ref().map(|c| c.after.clone()).unwrap_or_default();
    let rows: Vec<CommentRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM comments WHERE {shown} AND id > $4 ORDER BY id LIMIT $5"))
            .bind(&object.id)
            .bind(tenant.as_str())
            .bind(&parent)
            .bind(&after)
            .bind(i64::from(limit) + 1)
            .fetch_all(&mut *conn)
            .await?;
    let more = rows.len() > limit as usize;
    let results: Vec<Comment> =
        rows.into_iter().take(limit as usize).map(Comment::try_from).collect::<ApiResult<_>>()?;
    let next_cursor = match results.last() {
        Some(last) if more => Some(list::seal(
            &app.cursor_key,
            &Cursor { object: object.id.clone(), parent: params.parent_id.clone(), after: last.id.clone(), total },
        )),
        _ => None,
    };
    Ok(Data(Page { results, next_cursor, total }))
}

/// A new comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateComment {
    /// Rich text (HTML, sanitised: scripts, handlers and unsafe links are removed), 1 to
    /// 10,000 characters.
    #[schema(min_length = 1, max_length = 20000)]
    pub body: String,
    /// A live comment of the same object this one answers.
    pub parent_id: Option<String>,
}

/// Changes to a comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateComment {
    #[schema(min_length = 1, max_length = 20000)]
    pub body: String,
}

/// Create comment
///
/// The author is the credential. Needs reading the object and writing its type
/// (`objects.<type>:write` for a key; a role granting it for an end user).
#[utoipa::path(post, path = "/v1/objects/{object_type_id}/{object_id}/comments", tag = "Comments",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id")),
    request_body = CreateComment,
    responses((status = 201, body = crate::http::response::Envelope<Comment>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "The object is in the trash"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_comment(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
    Json(body): Json<CreateComment>,
) -> ApiResult<Created<Comment>> {
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let text = clean_body(&body.body)?;
    let mut tx = app.db.begin_write().await?;
    let (schema, object) = object_for(&app, &mut tx, &auth, &type_ref, &object_id, ObjectAction::Update).await?;
    if object.is_deleted {
        return Err(ApiError::conflict("the object is in the trash: restore it to comment on it"));
    }
    if let Some(parent_id) = &body.parent_id {
        let parent = find(&mut tx, tenant, &object.id, parent_id)
            .await
            .map_err(|_| ApiError::invalid("parent_id", "is not a comment of this object"))?;
        if parent.is_deleted {
            return Err(ApiError::invalid("parent_id", "was deleted: answer a live comment"));
        }
    }
    let (author_type, author_id) = auth.actor.principal();
    let id = id::new_id(PREFIX);
    let now = time::to_db(&time::now());
    sqlx::query(&format!(
        "INSERT INTO comments ({COLUMNS}, tenant_id) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8, NULL, $9)"
    ))
    .bind(&id)
    .bind(&schema.object_type.id)
    .bind(&object.id)
    .bind(body.parent_id.as_deref())
    .bind(&text)
    .bind(author_type)
    .bind(author_id.as_deref())
    .bind(&now)
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await?;
    let comment = find(&mut tx, tenant, &object.id, &id).await?;
    record_change(&mut tx, &who, tenant, "comment.created", &comment, &schema).await?;
    tx.commit().await?;
    Ok(Created(comment))
}

/// The comment as its author (or a moderating key) may change it.
async fn own_comment(
    app: &App,
    tx: &mut crate::db::WriteTx,
    auth: &Auth,
    (type_ref, object_id, comment_id): &(String, String, String),
) -> ApiResult<(Schema, Comment)> {
    let tenant = auth.tenant()?;
    let (schema, object) = object_for(app, tx, auth, type_ref, object_id, ObjectAction::Select).await?;
    let comment = find(tx, tenant, &object.id, comment_id).await?;
    if comment.is_deleted {
        return Err(ApiError::not_found("comment"));
    }
    let (author_type, author_id) = auth.actor.principal();
    let is_author = comment.author_type == author_type && comment.author_id == author_id;
    if !is_author && !moderates(auth) {
        return Err(ApiError::forbidden("only the comment's author, or a key holding `admin`, may change it"));
    }
    Ok((schema, comment))
}

/// Keeps the body `comment` holds before a change, as its next edit.
async fn keep_edit(tx: &mut crate::db::WriteTx, comment: &Comment, now: &str) -> ApiResult<()> {
    sqlx::query("INSERT INTO comment_edits (comment_id, edit, body, edited_at) VALUES ($1, $2, $3, $4)")
        .bind(&comment.id)
        .bind(comment.edits + 1)
        .bind(comment.body.as_deref().unwrap_or_default())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Update comment
///
/// Replaces the body; the earlier one is kept. Only the author, or a key holding `admin` or `*`.
#[utoipa::path(patch, path = "/v1/objects/{object_type_id}/{object_id}/comments/{comment_id}", tag = "Comments",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id"),
           ("comment_id" = String, Path, description = "The comment's id")),
    request_body = UpdateComment,
    responses((status = 200, body = crate::http::response::Envelope<Comment>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_comment(
    auth: Auth,
    State(app): State<App>,
    Path(path): Path<(String, String, String)>,
    Json(body): Json<UpdateComment>,
) -> ApiResult<Data<Comment>> {
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let text = clean_body(&body.body)?;
    let mut tx = app.db.begin_write().await?;
    let (schema, comment) = own_comment(&app, &mut tx, &auth, &path).await?;
    if comment.body.as_deref() == Some(text.as_str()) {
        return Ok(Data(comment));
    }
    let now = time::to_db(&time::now());
    keep_edit(&mut tx, &comment, &now).await?;
    sqlx::query("UPDATE comments SET body = $1, edits = edits + 1, updated_at = $2 WHERE id = $3")
        .bind(&text)
        .bind(&now)
        .bind(&comment.id)
        .execute(&mut *tx)
        .await?;
    let comment = find(&mut tx, tenant, &comment.object_id, &comment.id).await?;
    record_change(&mut tx, &who, tenant, "comment.updated", &comment, &schema).await?;
    tx.commit().await?;
    Ok(Data(comment))
}

/// Delete comment
///
/// Removes the body (kept among the edits); replies stay in the thread. Only the author, or a
/// key holding `admin` or `*`.
#[utoipa::path(delete, path = "/v1/objects/{object_type_id}/{object_id}/comments/{comment_id}", tag = "Comments",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id"),
           ("comment_id" = String, Path, description = "The comment's id")),
    responses((status = 200, body = crate::http::response::Envelope<crate::http::Deleted>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_comment(
    auth: Auth,
    State(app): State<App>,
    Path(path): Path<(String, String, String)>,
) -> ApiResult<Data<crate::http::Deleted>> {
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let (schema, comment) = own_comment(&app, &mut tx, &auth, &path).await?;
    let now = time::to_db(&time::now());
    keep_edit(&mut tx, &comment, &now).await?;
    sqlx::query("UPDATE comments SET body = NULL, edits = edits + 1, updated_at = $1, deleted_at = $1 WHERE id = $2")
        .bind(&now)
        .bind(&comment.id)
        .execute(&mut *tx)
        .await?;
    let comment = find(&mut tx, tenant, &comment.object_id, &comment.id).await?;
    record_change(&mut tx, &who, tenant, "comment.deleted", &comment, &schema).await?;
    tx.commit().await?;
    Ok(crate::http::Deleted::new(comment.id))
}

/// How many comments an object holds, for a purge's confirmation.
pub async fn count_for(conn: &mut AnyConnection, object_id: &str) -> ApiResult<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM comments WHERE object_id = $1 AND deleted_at IS NULL")
        .bind(object_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}
