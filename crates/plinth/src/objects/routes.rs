//! The objects' routes: create, read, update, trash, restore, versions and batches, each
//! through the one authorization module.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::AnyConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::*;
use super::query;
use super::store::{self, *};
use super::validate::*;
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::authz::access::readable;
use crate::authz::{ObjectAction, ObjectGuard};
use crate::deletion::{self, DeleteParams, Target, Verdict};
use crate::entitlements;
use crate::events::{self, Event};
use crate::http::{ApiError, ApiResult, Created, Data, Json, Path, Query};
use crate::id::{self, prefix};
use crate::scopes::required::{OBJECTS_DELETE, OBJECTS_READ, OBJECTS_WRITE};
use crate::time;

/// The object `object_id` for a change by `action`: 404 when the caller may not see it, 403
/// when it may see it but `action`'s policies do not admit it.
pub(super) async fn fetch_for(
    conn: &mut AnyConnection,
    backend: crate::db::Backend,
    guard: &ObjectGuard,
    schema: &Schema,
    object_id: &str,
    action: ObjectAction,
) -> ApiResult<Object> {
    let object = fetch_visible(conn, backend, schema, object_id, guard.rows(schema, ObjectAction::Select)).await?;
    if guard.is_restricted() && !guard.admits(conn, backend, schema, action, &object.id).await? {
        return Err(ApiError::forbidden(format!(
            "your policies let you see this object but not {} it",
            action.policy_name()
        )));
    }
    Ok(object)
}

/// True when the credential holds `objects:<action>` for every type (a key's broad scope), so
/// that no per-type decision is needed.
fn broadly_permitted(auth: &Auth, action: ObjectAction) -> bool {
    let scope = match action {
        ObjectAction::Select => OBJECTS_READ,
        ObjectAction::Insert | ObjectAction::Update => OBJECTS_WRITE,
        ObjectAction::Delete => OBJECTS_DELETE,
    };
    auth.access.is_none() && auth.require(scope).is_ok()
}

/// The version an `If-Match` header asks for: `3`, `"3"` or `W/"3"`; `None` for absent or `*`.
fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get("if-match") else { return Ok(None) };
    let text = value.to_str().map_err(|_| ApiError::bad_request("If-Match must be a version number"))?.trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.trim_start_matches("W/").trim_matches('"');
    text.parse::<i64>().map(Some).map_err(|_| ApiError::bad_request("If-Match must be a version number, such as `3`"))
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_object))
        .routes(routes!(get_object, update_object, delete_object))
        .routes(routes!(restore_object))
        .routes(routes!(list_versions))
        .routes(routes!(batch_create))
        .routes(routes!(batch_read))
        .routes(routes!(batch_update))
        .merge(query::routes())
        .merge(super::associations::routes())
        .merge(super::views::routes())
        .merge(super::comments::routes())
        .merge(super::reports::routes())
        .merge(super::sql_query::routes())
        .merge(super::transfer::routes())
        .merge(super::export::routes())
        .merge(super::workflows::routes())
}

/// A new object.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateObject {
    /// Values by property name; `null` is the same as absent.
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

/// Changes to an object.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateObject {
    /// Values to set, merged into the object; `null` removes an optional property.
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

/// Create an object
///
/// Validates every value against the type's properties (422 with a message per property),
/// fills defaults, checks references and unique values (409). Needs the `write` scope.
#[utoipa::path(post, path = "/v1/objects/{object_type_id}", tag = "Objects", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = CreateObject,
    responses((status = 201, body = crate::http::response::Envelope<Object>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "A unique value is taken"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_object(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    Json(body): Json<CreateObject>,
) -> ApiResult<Created<Object>> {
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let guard = ObjectGuard::load(&mut tx, &auth, &schema, ObjectAction::Insert).await?;
    guard.require_any(&schema, ObjectAction::Insert)?;
    guard.check_writable(body.properties.keys())?;
    let values = validate_new(&schema, &body.properties).map_err(Problems::into_error)?;
    let mut problems = Problems::default();
    let names: Vec<&String> = values.keys().collect();
    check_references(&mut tx, tenant, &schema, &values, &names, &mut problems).await?;
    problems.finish()?;
    entitlements::consume(&mut tx, &app, tenant, crate::entitlements::Entitlement::Objects, 1).await?;
    let object = insert(&mut tx, &schema, values, &who).await.map_err(|e| guard.redact_error(e.into()))?;
    guard.check_written(&mut tx, app.db.backend(), &schema, ObjectAction::Insert, &object.id).await?;
    tx.commit().await?;
    Ok(Created(guard.redact_object(object)))
}

/// Get an object
///
/// Objects in the trash are returned too, with `is_deleted: true`.
#[utoipa::path(get, path = "/v1/objects/{object_type_id}/{object_id}", tag = "Objects", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id"), GetObjectParams),
    responses((status = 200, body = crate::http::response::Envelope<Object>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn get_object(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
    Query(params): Query<GetObjectParams>,
) -> ApiResult<Data<Object>> {
    let include = params.include.as_deref().map(super::associations::parse_include).transpose()?.unwrap_or_default();
    let mut conn = app.db.pool().acquire().await?;
    let mut object = if broadly_permitted(&auth, ObjectAction::Select) {
        fetch(&mut conn, auth.tenant()?, &type_ref, &object_id).await?
    } else {
        let (type_access, guard) = readable(&app, &mut conn, &auth, &type_ref, ObjectAction::Select).await?;
        let schema = &type_access.schema;
        let rows = guard.rows(schema, ObjectAction::Select);
        guard.redact_object(fetch_visible(&mut conn, app.db.backend(), schema, &object_id, rows).await?)
    };
    if !include.is_empty() {
        super::associations::embed(&app, &mut conn, &auth, std::slice::from_mut(&mut object), &include).await?;
    }
    Ok(Data(object))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetObjectParams {
    /// Comma-separated association types: the object embeds, under `included`, the objects
    /// linked to it by each (either way) that the caller may read, at most 100 per type.
    pub include: Option<String>,
}

/// Update an object
///
/// Merges `properties` into the object (`null` removes an optional one) and adds one to
/// `version`. `If-Match: <version>` makes the write conditional: 409 when the object has moved
/// on. A change that changes nothing writes nothing. Needs the `write` scope.
#[utoipa::path(patch, path = "/v1/objects/{object_type_id}/{object_id}", tag = "Objects", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id"),
           ("If-Match" = Option<u64>, Header, description = "The version the change was made against")),
    request_body = UpdateObject,
    responses((status = 200, body = crate::http::response::Envelope<Object>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "Stale version, a unique value taken, or in the trash"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_object(
    auth: Auth,
    State(app): State<App>,
    headers: HeaderMap,
    Path((type_ref, object_id)): Path<(String, String)>,
    Json(body): Json<UpdateObject>,
) -> ApiResult<Data<Object>> {
    let tenant = auth.tenant()?;
    let wanted = if_match(&headers)?;
    let who = Who::from(&auth);
    let backend = app.db.backend();
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let guard = ObjectGuard::load(&mut tx, &auth, &schema, ObjectAction::Update).await?;
    let object = fetch_for(&mut tx, backend, &guard, &schema, &object_id, ObjectAction::Update).await?;
    guard.check_writable(body.properties.keys())?;
    let object = apply_update(&mut tx, tenant, &schema, object, &body.properties, wanted, &who)
        .await
        .map_err(|e| guard.redact_error(e.into()))?;
    guard.check_written(&mut tx, backend, &schema, ObjectAction::Update, &object.id).await?;
    tx.commit().await?;
    Ok(Data(guard.redact_object(object)))
}

/// Delete an object
///
/// Moves it to the trash (`is_deleted: true`, restorable). `?force=true` purges it for good,
/// with its versions; when other records depend on it, the purge needs the `confirm_token` of a
/// 409 `DEPENDENCY_EXISTS` answer. Needs the `write` scope.
#[utoipa::path(delete, path = "/v1/objects/{object_type_id}/{object_id}", tag = "Objects", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id"), DeleteParams),
    responses((status = 200, body = crate::http::response::Envelope<crate::http::Deleted>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "`DEPENDENCY_EXISTS`")))]
async fn delete_object(
    auth: Auth,
    State(app): State<App>,
    headers: HeaderMap,
    Path((type_ref, object_id)): Path<(String, String)>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Data<crate::http::Deleted>> {
    let tenant = auth.tenant()?;
    let wanted = if_match(&headers)?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let guard = ObjectGuard::load(&mut tx, &auth, &schema, ObjectAction::Delete).await?;
    let mut object = fetch_for(&mut tx, app.db.backend(), &guard, &schema, &object_id, ObjectAction::Delete).await?;
    check_version(&object, wanted)?;
    super::workflows::check_unlocked(&mut tx, &object.id).await?;
    if params.force {
        let target = Target { scope: tenant.as_str(), resource_type: "object", resource_id: &object.id };
        // Objects whose reference properties point at this one, and links that go with it.
        let dependencies = vec![
            crate::deletion::Dependency {
                kind: "references",
                count: referencing_objects(&mut tx, app.db.backend(), &schema, &object.id).await?,
                label: "live objects whose reference properties point at this object",
            },
            crate::deletion::Dependency {
                kind: "associations",
                count: super::associations::count_for(&mut tx, &object.id).await?,
                label: "associations from or to this object, which the purge removes",
            },
            crate::deletion::Dependency {
                kind: "comments",
                count: super::comments::count_for(&mut tx, &object.id).await?,
                label: "comments on this object, which the purge removes",
            },
        ];
        // `?force=true` alone purges; with dependants it first answers 409 with the confirm token.
        let asked = DeleteParams { force: params.confirm_token.is_some(), confirm_token: params.confirm_token.clone() };
        if let Verdict::Refuse(dependencies) = deletion::check(&mut tx, target, dependencies, &asked).await? {
            tx.rollback().await?;
            return Err(deletion::refuse(app.db.pool(), target, dependencies).await);
        }
        store::purge(&mut tx, tenant, &object.id).await?;
        let event = Event {
            kind: "object.deleted",
            resource_type: "object",
            resource_id: &object.id,
            data: json!({ "object_type": schema.object_type.name, "object": object, "purged": true }),
        };
        events::record(&mut tx, tenant, event).await?;
        let entry = Entry {
            action: "object.purged",
            resource_type: "object",
            resource_id: &object.id,
            changes: json!({ "object_type_id": object.object_type_id, "version": object.version }),
        };
        audit::record(&mut *tx, &who, None, entry).await?;
    } else if !object.is_deleted {
        let expected = object.version;
        let now = time::now();
        object.version += 1;
        object.updated_at = now;
        object.deleted_at = Some(now);
        object.is_deleted = true;
        store(&mut tx, &schema, &object, expected).await?;
        record_write(&mut tx, &schema, &object, "deleted", &[], &who).await?;
    }
    tx.commit().await?;
    Ok(crate::http::Deleted::new(object.id))
}

/// Restore an object
///
/// Takes it out of the trash (a new version). 409 when it is not in the trash, or when a live
/// object has taken one of its unique values meanwhile.
#[utoipa::path(post, path = "/v1/objects/{object_type_id}/{object_id}/restore", tag = "Objects",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id")),
    responses((status = 200, body = crate::http::response::Envelope<Object>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody)))]
async fn restore_object(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
) -> ApiResult<Data<Object>> {
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let backend = app.db.backend();
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let guard = ObjectGuard::load(&mut tx, &auth, &schema, ObjectAction::Update).await?;
    let mut object = fetch_for(&mut tx, backend, &guard, &schema, &object_id, ObjectAction::Update).await?;
    if !object.is_deleted {
        return Err(ApiError::conflict("the object is not in the trash"));
    }
    let expected = object.version;
    object.version += 1;
    object.updated_at = time::now();
    object.deleted_at = None;
    object.is_deleted = false;
    store(&mut tx, &schema, &object, expected).await?;
    record_write(&mut tx, &schema, &object, "restored", &[], &who).await?;
    guard.check_written(&mut tx, backend, &schema, ObjectAction::Update, &object.id).await?;
    tx.commit().await?;
    Ok(Data(guard.redact_object(object)))
}

/// One earlier version of an object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectVersion {
    pub version: i64,
    /// `created`, `updated`, `deleted` or `restored`.
    pub action: String,
    /// The values as they were at this version.
    #[schema(value_type = Object)]
    pub properties: Value,
    /// The property names this version changed.
    pub changed: Vec<String>,
    /// `api_key`, `token`, `tenant_jwt` or `admin`.
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionsQuery {
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VersionCursor {
    object: String,
    before: i64,
}

/// List an object's versions
///
/// Every earlier version, newest first: what it held, what changed, who changed it and when.
#[utoipa::path(get, path = "/v1/objects/{object_type_id}/{object_id}/versions", tag = "Objects",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id"), VersionsQuery),
    responses((status = 200, body = crate::http::response::Envelope<crate::http::Page<ObjectVersion>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn list_versions(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
    Query(params): Query<VersionsQuery>,
) -> ApiResult<Data<crate::http::Page<ObjectVersion>>> {
    let tenant = auth.tenant()?;
    let limit = params.limit.unwrap_or(crate::limits::LIST_DEFAULT_LIMIT);
    if !(1..=crate::limits::LIST_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100"));
    }
    let mut conn = app.db.pool().acquire().await?;
    let (type_access, guard) = readable(&app, &mut conn, &auth, &type_ref, ObjectAction::Select).await?;
    let schema = &type_access.schema;
    let rows = guard.rows(schema, ObjectAction::Select);
    let object = fetch_visible(&mut conn, app.db.backend(), schema, &object_id, rows).await?;
    let before = match &params.cursor {
        Some(text) => {
            let cursor: VersionCursor = crate::http::list::open(&app.cursor_key, text)?;
            if cursor.object != object.id {
                return Err(ApiError::bad_request("this cursor belongs to another object"));
            }
            cursor.before
        }
        None => object.version,
    };
    let rows = store::versions_before(&mut conn, tenant, &object.id, before, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    let results = rows
        .into_iter()
        .take(limit as usize)
        .map(|(version, action, properties, changed, actor_type, actor_id, created_at)| {
            let mut properties: Map<String, Value> = serde_json::from_str(&properties)?;
            guard.redact(&mut properties);
            let mut changed: Vec<String> = serde_json::from_str(&changed)?;
            guard.redact_names(&mut changed);
            Ok(ObjectVersion {
                version,
                action,
                properties: Value::Object(properties),
                changed,
                actor_type,
                actor_id,
                created_at: time::from_db(&created_at)?,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let next_cursor = match results.last() {
        Some(last) if more => Some(crate::http::list::seal(
            &app.cursor_key,
            &VersionCursor { object: object.id.clone(), before: last.version },
        )),
        _ => None,
    };
    Ok(Data(crate::http::Page { results, next_cursor, total: object.version - 1 }))
}

/// Objects to create at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreate {
    /// 1 to 100 objects.
    #[schema(min_items = 1, max_items = 100)]
    pub objects: Vec<CreateObject>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCreated {
    pub created: usize,
    pub ids: Vec<String>,
}

/// Refuses a batch: one error naming each failing item by its index.
fn batch_error(items: Vec<(usize, Problems)>) -> ApiError {
    let details: Vec<Value> = items
        .into_iter()
        .map(|(index, problems)| {
            let error = problems.into_error();
            json!({ "index": index, "message": error.message, "details": error.details })
        })
        .collect();
    let mut error = ApiError::invalid("items", format!("{} items are not valid: nothing was written", details.len()));
    error.extra.insert("items".into(), Value::Array(details));
    error
}

/// Names the batch item an error is about.
fn at_index(mut error: ApiError, index: usize) -> ApiError {
    error.extra.insert("index".into(), json!(index));
    error
}

fn check_batch_size(len: usize) -> ApiResult<()> {
    if len == 0 || len > BATCH_MAX {
        return Err(ApiError::invalid("items", format!("a batch holds 1 to {BATCH_MAX} items")));
    }
    Ok(())
}

/// Batch create objects
///
/// All or nothing: when one item is invalid the answer is 422 with every failing item's index
/// and problems, and nothing is written; a unique value taken (also within the batch) is 409
/// naming the item.
#[utoipa::path(post, path = "/v1/objects/{object_type_id}/batch/create", tag = "Objects",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = BatchCreate,
    responses((status = 201, body = crate::http::response::Envelope<BatchCreated>),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn batch_create(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    Json(body): Json<BatchCreate>,
) -> ApiResult<Created<BatchCreated>> {
    let tenant = auth.tenant()?;
    check_batch_size(body.objects.len())?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let guard = ObjectGuard::load(&mut tx, &auth, &schema, ObjectAction::Insert).await?;
    guard.require_any(&schema, ObjectAction::Insert)?;
    for (index, item) in body.objects.iter().enumerate() {
        guard.check_writable(item.properties.keys()).map_err(|error| at_index(error, index))?;
    }
    let mut valid = Vec::with_capacity(body.objects.len());
    let mut failed = Vec::new();
    for (index, item) in body.objects.iter().enumerate() {
        match validate_new(&schema, &item.properties) {
            Ok(values) => {
                let mut problems = Problems::default();
                let names: Vec<&String> = values.keys().collect();
                check_references(&mut tx, tenant, &schema, &values, &names, &mut problems).await?;
                if problems.is_empty() {
                    valid.push(values);
                } else {
                    failed.push((index, problems));
                }
            }
            Err(problems) => failed.push((index, problems)),
        }
    }
    if !failed.is_empty() {
        return Err(batch_error(failed));
    }
    entitlements::consume(&mut tx, &app, tenant, crate::entitlements::Entitlement::Objects, valid.len() as i64).await?;
    let mut ids = Vec::with_capacity(valid.len());
    for (index, values) in valid.into_iter().enumerate() {
        match insert(&mut tx, &schema, values, &who).await {
            Ok(object) => ids.push(object.id),
            Err(error) => return Err(at_index(guard.redact_error(error.into()), index)),
        }
    }
    for (index, id) in ids.iter().enumerate() {
        guard
            .check_written(&mut tx, app.db.backend(), &schema, ObjectAction::Insert, id)
            .await
            .map_err(|error| at_index(error, index))?;
    }
    tx.commit().await?;
    Ok(Created(BatchCreated { created: ids.len(), ids }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRead {
    /// 1 to 100 object ids.
    #[schema(min_items = 1, max_items = 100)]
    pub object_ids: Vec<String>,
}

/// Batch read objects
///
/// The objects found, in the order asked; ids of other types or tenants are left out.
#[utoipa::path(post, path = "/v1/objects/{object_type_id}/batch/read", tag = "Objects",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = BatchRead,
    responses((status = 200, body = crate::http::response::Envelope<Vec<Object>>)))]
async fn batch_read(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    Json(body): Json<BatchRead>,
) -> ApiResult<Data<Vec<Object>>> {
    let _tenant = auth.tenant()?;
    check_batch_size(body.object_ids.len())?;
    let backend = app.db.backend();
    let mut conn = app.db.pool().acquire().await?;
    let (type_access, guard) = readable(&app, &mut conn, &auth, &type_ref, ObjectAction::Select).await?;
    let schema = &type_access.schema;
    let ids: Vec<&String> = body.object_ids.iter().filter(|id| id::is_valid(prefix::OBJECT, id)).collect();
    if ids.is_empty() {
        return Ok(Data(Vec::new()));
    }
    let rows = store::read_many(&mut conn, backend, schema, &ids, guard.rows(schema, ObjectAction::Select)).await?;
    let mut found: Vec<Object> =
        rows.into_iter().map(|row| Object::try_from(row).map(|o| guard.redact_object(o))).collect::<ApiResult<_>>()?;
    found.sort_by_key(|o| body.object_ids.iter().position(|id| *id == o.id));
    Ok(Data(found))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchUpdateItem {
    pub object_id: String,
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    /// Like `If-Match`: the version the change was made against.
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchUpdate {
    /// 1 to 100 updates, each to a different object.
    #[schema(min_items = 1, max_items = 100)]
    pub updates: Vec<BatchUpdateItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchUpdated {
    pub object_id: String,
    pub version: i64,
}

/// Batch update objects
///
/// All or nothing, like batch create: an invalid item, a missing object or a stale `version`
/// fails the batch with each failing item's index, and nothing is written.
#[utoipa::path(post, path = "/v1/objects/{object_type_id}/batch/update", tag = "Objects",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = BatchUpdate,
    responses((status = 200, body = crate::http::response::Envelope<Vec<BatchUpdated>>),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn batch_update(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    Json(body): Json<BatchUpdate>,
) -> ApiResult<Data<Vec<BatchUpdated>>> {
    let tenant = auth.tenant()?;
    check_batch_size(body.updates.len())?;
    let who = Who::from(&auth);
    let backend = app.db.backend();
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let guard = ObjectGuard::load(&mut tx, &auth, &schema, ObjectAction::Update).await?;
    for (index, item) in body.updates.iter().enumerate() {
        guard.check_writable(item.properties.keys()).map_err(|error| at_index(error, index))?;
    }
    let mut failed = Vec::new();
    let mut results = Vec::with_capacity(body.updates.len());
    for (index, item) in body.updates.iter().enumerate() {
        if body.updates[..index].iter().any(|other| other.object_id == item.object_id) {
            let mut problems = Problems::default();
            problems.add("object_id", "is named twice in the batch");
            failed.push((index, problems));
            continue;
        }
        let object = match fetch_for(&mut tx, backend, &guard, &schema, &item.object_id, ObjectAction::Update).await {
            Ok(object) => object,
            Err(error) if error.code == crate::http::ErrorCode::Forbidden => {
                tx.rollback().await?;
                return Err(at_index(error, index));
            }
            Err(error) => {
                let mut problems = Problems::default();
                problems.add("object_id", error.message);
                failed.push((index, problems));
                continue;
            }
        };
        match apply_update(&mut tx, tenant, &schema, object, &item.properties, item.version, &who).await {
            Ok(object) => {
                if let Err(error) =
                    guard.check_written(&mut tx, backend, &schema, ObjectAction::Update, &object.id).await
                {
                    tx.rollback().await?;
                    return Err(at_index(error, index));
                }
                results.push(BatchUpdated { object_id: object.id, version: object.version })
            }
            // A unique index refused the write, or the database failed: the transaction is
            // spent, so stop here.
            Err(error @ (WriteError::Unique { .. } | WriteError::Database(_))) => {
                tx.rollback().await?;
                return Err(at_index(guard.redact_error(error.into()), index));
            }
            Err(WriteError::Invalid(problems)) => failed.push((index, problems)),
            Err(error) => {
                let mut problems = Problems::default();
                problems.add("object_id", ApiError::from(error).message);
                failed.push((index, problems));
            }
        }
    }
    if !failed.is_empty() {
        tx.rollback().await?;
        return Err(batch_error(failed));
    }
    tx.commit().await?;
    Ok(Data(results))
}
