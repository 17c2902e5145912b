//! Objects (seed 002): records of an object type, validated against its properties, versioned,
//! soft-deleted to a trash, written in batches, listed and searched. Every write records a
//! version, an audit entry and an outbox event in its transaction.

pub mod properties;
pub mod query;
pub mod sql;
pub mod types;

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::{AnyConnection, FromRow};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::authz::access::readable;
use crate::authz::{ObjectAction, ObjectGuard};
use crate::db::WriteTx;
use crate::deletion::{self, DeleteParams, Target, Verdict};
use crate::entitlements;
use crate::events::{self, Event};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Created, Data, Json, Path, Query};
use crate::id::{self, prefix};
use crate::object_types::{self, ObjectType};
use crate::scopes::required::{OBJECTS_DELETE, OBJECTS_READ, OBJECTS_WRITE};
use crate::time;
use properties::Property;
use types::DataType;

/// Most items in one batch request.
pub const BATCH_MAX: usize = 100;
/// Largest `properties` of one object, serialised.
pub const PROPERTIES_MAX_BYTES: usize = 256 * 1024;

/// A record of an object type.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Object {
    #[schema(example = "obj_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub object_type_id: String,
    pub tenant_id: String,
    /// The values, each in its type's canonical form.
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The credential that created it (a key id, or `admin`).
    pub created_by: Option<String>,
    /// Starts at 1; every write adds one.
    pub version: i64,
    /// In the trash.
    pub is_deleted: bool,
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, FromRow)]
pub(crate) struct ObjectRow {
    id: String,
    tenant_id: String,
    object_type_id: String,
    properties: String,
    version: i64,
    created_by: Option<String>,
    created_at: String,
    updated_at: String,
    deleted_at: Option<String>,
}

pub(crate) const COLUMNS: &str =
    "id, tenant_id, object_type_id, properties, version, created_by, created_at, updated_at, deleted_at";

impl TryFrom<ObjectRow> for Object {
    type Error = ApiError;

    fn try_from(row: ObjectRow) -> ApiResult<Object> {
        let deleted_at = row.deleted_at.as_deref().map(time::from_db).transpose()?;
        Ok(Object {
            properties: serde_json::from_str(&row.properties)?,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            is_deleted: deleted_at.is_some(),
            deleted_at,
            id: row.id,
            object_type_id: row.object_type_id,
            tenant_id: row.tenant_id,
            created_by: row.created_by,
            version: row.version,
        })
    }
}

/// A type with its properties: what objects are validated against.
#[derive(Debug, Clone)]
pub struct Schema {
    pub object_type: ObjectType,
    pub properties: Vec<Property>,
}

impl Schema {
    pub async fn load(conn: &mut AnyConnection, tenant: &TenantId, type_ref: &str) -> ApiResult<Schema> {
        let object_type = object_types::find(conn, tenant, type_ref).await?;
        let properties = properties::of_type(conn, &object_type.id).await?;
        Ok(Schema { object_type, properties })
    }

    /// The schema for writing objects: the type is locked (shared) before its properties are
    /// read, so a schema change waits for the write or the write sees the change.
    pub async fn load_for_write(
        conn: &mut AnyConnection,
        app: &App,
        tenant: &TenantId,
        type_ref: &str,
    ) -> ApiResult<Schema> {
        let object_type = object_types::find(conn, tenant, type_ref).await?;
        object_types::lock(conn, app.db.backend(), &object_type.id, false).await?;
        let properties = properties::of_type(conn, &object_type.id).await?;
        Ok(Schema { object_type, properties })
    }

    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }
}

/// The text full-text search reads: the values of string, text, rich text and email properties.
pub fn search_text(properties: &[Property], values: &Map<String, Value>) -> String {
    let mut out = String::new();
    for property in properties {
        if let Some(text) = values.get(&property.name).and_then(|v| property.data_type.search_text(v)) {
            if !out.is_empty() {
                out.push('\n');
            }
            // Words only, as queries are read: `ada@example.com` is `ada example com` on both
            // databases (PostgreSQL's parser would otherwise keep it as one token).
            out.extend(text.chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }));
        }
    }
    out
}

/// Per-field problems of one object, keyed `properties.<name>`.
type Problems = FieldErrors;

/// Checks one incoming value (`null` handled by the caller) against the schema.
fn check_value(schema: &Schema, name: &str, value: &Value, problems: &mut Problems) -> Option<Value> {
    let field = format!("properties.{name}");
    match schema.property(name) {
        Some(property) => match property.canonical(value) {
            Ok(canonical) => Some(canonical),
            Err(problem) => {
                problems.add(&field, problem);
                None
            }
        },
        None if schema.object_type.additional_properties => {
            if !crate::object_types::is_identifier(name) {
                problems.add(&field, "property names are lowercase identifiers");
                return None;
            }
            if types::has_nul(value) {
                problems.add(&field, "must not contain the NUL character");
                return None;
            }
            Some(value.clone())
        }
        None => {
            problems.add(&field, format!("`{}` has no property `{name}`", schema.object_type.name));
            None
        }
    }
}

fn check_size(values: &Map<String, Value>, problems: &mut Problems) {
    let size = serde_json::to_vec(values).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > PROPERTIES_MAX_BYTES {
        problems.add("properties", format!("must be at most {PROPERTIES_MAX_BYTES} bytes of JSON"));
    }
}

/// The canonical properties of a new object: the given values, then defaults, then the
/// required ones checked.
fn validate_new(schema: &Schema, input: &Map<String, Value>) -> Result<Map<String, Value>, Problems> {
    let mut problems = Problems::default();
    let mut values = Map::new();
    for (name, value) in input {
        if value.is_null() {
            continue;
        }
        if let Some(canonical) = check_value(schema, name, value, &mut problems) {
            values.insert(name.clone(), canonical);
        }
    }
    for property in &schema.properties {
        if values.contains_key(&property.name) {
            continue;
        }
        if let Some(default) = &property.default_value {
            values.insert(property.name.clone(), default.clone());
        } else if property.is_required && input.get(&property.name).is_none_or(Value::is_null) {
            problems.add(&format!("properties.{}", property.name), "is required");
        }
    }
    check_size(&values, &mut problems);
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

/// The properties after merging `patch` into `current` (`null` removes), and the names whose
/// value changed.
fn validate_patch(
    schema: &Schema,
    current: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<String>), Problems> {
    let mut problems = Problems::default();
    let mut values = current.clone();
    for (name, value) in patch {
        if value.is_null() {
            if schema.property(name).is_some_and(|p| p.is_required) {
                problems.add(&format!("properties.{name}"), "is required: it cannot be removed");
            }
            values.remove(name);
        } else if let Some(canonical) = check_value(schema, name, value, &mut problems) {
            values.insert(name.clone(), canonical);
        }
    }
    check_size(&values, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut changed: Vec<String> =
        patch.keys().filter(|name| current.get(*name) != values.get(*name)).cloned().collect();
    changed.sort();
    Ok((values, changed))
}

/// Checks that every reference among `names` points at a live object of its type.
async fn check_references(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    schema: &Schema,
    values: &Map<String, Value>,
    names: &[&String],
    problems: &mut Problems,
) -> ApiResult<()> {
    for property in schema.properties.iter().filter(|p| p.data_type == DataType::Reference) {
        if !names.contains(&&property.name) {
            continue;
        }
        let Some(target) = values.get(&property.name).and_then(Value::as_str) else { continue };
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM objects WHERE id = $1 AND tenant_id = $2 AND object_type_id = $3 AND deleted_at IS NULL",
        )
        .bind(target)
        .bind(tenant.as_str())
        .bind(property.reference_type.as_deref().unwrap_or_default())
        .fetch_optional(&mut *conn)
        .await?;
        if found.is_none() {
            problems
                .add(&format!("properties.{}", property.name), format!("no object `{target}` of the referenced type"));
        }
    }
    Ok(())
}

/// The answer to a unique index refusing a write: 409 naming the property.
fn unique_conflict(schema: &Schema, error: &sqlx::Error) -> Option<ApiError> {
    if !crate::db::is_unique_violation(error) {
        return None;
    }
    let text = match error {
        sqlx::Error::Database(db) => format!("{} {}", db.message(), db.constraint().unwrap_or_default()),
        other => other.to_string(),
    };
    let property = schema.properties.iter().find(|p| text.contains(&sql::unique_index_name(&p.id)));
    let mut error = match property {
        Some(p) => ApiError::conflict(format!("another object has this `{}`", p.name)),
        None => ApiError::conflict("another object has one of these unique values"),
    };
    if let Some(p) = property {
        error.extra.insert("property".into(), json!(p.name));
    }
    Some(error)
}

/// Who wrote, for `created_by` and versions.
fn author(who: &Who) -> String {
    who.actor_id.clone().unwrap_or_else(|| who.actor_type.to_owned())
}

async fn record_version(
    conn: &mut AnyConnection,
    object: &Object,
    action: &str,
    changed: &[String],
    who: &Who,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO object_versions (object_id, version, tenant_id, action, properties, changed, actor_type, \
         actor_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&object.id)
    .bind(object.version)
    .bind(&object.tenant_id)
    .bind(action)
    .bind(serde_json::to_string(&object.properties)?)
    .bind(json!(changed).to_string())
    .bind(who.actor_type)
    .bind(&who.actor_id)
    .bind(time::to_db(&object.updated_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The version row, outbox event and audit entry of one write.
async fn record_write(
    conn: &mut WriteTx,
    schema: &Schema,
    object: &Object,
    action: &str,
    changed: &[String],
    who: &Who,
) -> ApiResult<()> {
    record_version(conn, object, action, changed, who).await?;
    let kind = format!("object.{action}");
    // The type's name, for subscriptions filtered by `object_types`.
    let mut data = json!({ "object_type": schema.object_type.name, "object": object });
    if action == "updated" {
        data["changed"] = json!(changed);
    }
    let event = Event { kind: &kind, resource_type: "object", resource_id: &object.id, data };
    events::record(conn, &object.tenant_id, event).await?;
    let entry = Entry {
        action: &kind,
        resource_type: "object",
        resource_id: &object.id,
        changes: json!({ "object_type_id": object.object_type_id, "version": object.version, "changed": changed }),
    };
    audit::record(&mut **conn, who, Some(&object.tenant_id), entry).await?;
    Ok(())
}

/// Inserts a validated object with its version, event and audit entry.
async fn insert(conn: &mut WriteTx, schema: &Schema, values: Map<String, Value>, who: &Who) -> ApiResult<Object> {
    let now = time::now();
    let object = Object {
        id: id::new_id(prefix::OBJECT),
        object_type_id: schema.object_type.id.clone(),
        tenant_id: schema.object_type.tenant_id.clone(),
        properties: values,
        created_at: now,
        updated_at: now,
        created_by: Some(author(who)),
        version: 1,
        is_deleted: false,
        deleted_at: None,
    };
    let inserted = sqlx::query(&format!(
        "INSERT INTO objects ({COLUMNS}, search_text) VALUES ($1, $2, $3, $4, 1, $5, $6, $6, NULL, $7)"
    ))
    .bind(&object.id)
    .bind(&object.tenant_id)
    .bind(&object.object_type_id)
    .bind(serde_json::to_string(&object.properties)?)
    .bind(&object.created_by)
    .bind(time::to_db(&now))
    .bind(search_text(&schema.properties, &object.properties))
    .execute(&mut **conn)
    .await;
    if let Err(error) = inserted {
        return Err(unique_conflict(schema, &error).unwrap_or_else(|| error.into()));
    }
    let changed: Vec<String> = object.properties.keys().cloned().collect();
    record_write(conn, schema, &object, "created", &changed, who).await?;
    Ok(object)
}

/// Writes new properties (or trash state) of `object` if its version is still `expected`.
async fn store(conn: &mut AnyConnection, schema: &Schema, object: &Object, expected: i64) -> ApiResult<()> {
    let updated = sqlx::query(
        "UPDATE objects SET properties = $1, search_text = $2, version = $3, updated_at = $4, deleted_at = $5 \
         WHERE id = $6 AND tenant_id = $7 AND version = $8",
    )
    .bind(serde_json::to_string(&object.properties)?)
    .bind(search_text(&schema.properties, &object.properties))
    .bind(object.version)
    .bind(time::to_db(&object.updated_at))
    .bind(object.deleted_at.as_ref().map(time::to_db))
    .bind(&object.id)
    .bind(&object.tenant_id)
    .bind(expected)
    .execute(&mut *conn)
    .await;
    match updated {
        Ok(result) if result.rows_affected() == 1 => Ok(()),
        Ok(_) => Err(stale(expected)),
        Err(error) => Err(unique_conflict(schema, &error).unwrap_or_else(|| error.into())),
    }
}

fn stale(expected: i64) -> ApiError {
    let mut error = ApiError::conflict(format!("the object changed since version {expected}: read it again"));
    error.extra.insert("expected_version".into(), json!(expected));
    error
}

/// One object of the tenant's type, in one indexed query (the type by id or name).
async fn fetch(conn: &mut AnyConnection, tenant: &TenantId, type_ref: &str, object_id: &str) -> ApiResult<Object> {
    let column = if id::is_valid(prefix::OBJECT_TYPE, type_ref) { "id" } else { "name" };
    let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("o.{c}")).collect();
    let row: Option<ObjectRow> = sqlx::query_as(&format!(
        "SELECT {} FROM objects o JOIN object_types t ON t.id = o.object_type_id \
         WHERE o.id = $1 AND o.tenant_id = $2 AND t.tenant_id = $2 AND t.{column} = $3",
        columns.join(", ")
    ))
    .bind(object_id)
    .bind(tenant.as_str())
    .bind(type_ref)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(Object::try_from).transpose()?.ok_or_else(|| ApiError::not_found("object"))
}

/// One object of `schema`'s type that the caller may see (`rows`: what its policies admit; none:
/// every row), or 404.
async fn fetch_visible(
    conn: &mut AnyConnection,
    backend: crate::db::Backend,
    schema: &Schema,
    object_id: &str,
    rows: Option<query::Cond>,
) -> ApiResult<Object> {
    let mut binds = sql::Binds::new(backend);
    let id = binds.text(object_id);
    let tenant = binds.text(schema.object_type.tenant_id.clone());
    let object_type = binds.text(schema.object_type.id.clone());
    let filter = match &rows {
        Some(cond) => format!(" AND {}", query::cond_sql(backend, cond, &mut binds)),
        None => String::new(),
    };
    let row: Option<ObjectRow> = sqlx::query_as_with(
        &format!(
            "SELECT {COLUMNS} FROM objects WHERE id = {id} AND tenant_id = {tenant} AND object_type_id = {object_type}{filter}"
        ),
        binds.arguments()?,
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(Object::try_from).transpose()?.ok_or_else(|| ApiError::not_found("object"))
}

/// The object `object_id` for a change by `action`: 404 when the caller may not see it, 403
/// when it may see it but `action`'s policies do not admit it.
async fn fetch_for(
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

fn check_version(object: &Object, wanted: Option<i64>) -> ApiResult<()> {
    match wanted {
        Some(version) if version != object.version => {
            let mut error = ApiError::conflict(format!(
                "If-Match asks for version {version}, the object is at version {}",
                object.version
            ));
            error.extra.insert("current_version".into(), json!(object.version));
            Err(error)
        }
        _ => Ok(()),
    }
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
    entitlements::consume(&mut tx, &app, tenant, "objects", 1).await?;
    let object = insert(&mut tx, &schema, values, &who).await.map_err(|e| guard.redact_error(e))?;
    guard.check_written(&mut tx, app.db.backend(), &schema, ObjectAction::Insert, &object.id).await?;
    tx.commit().await?;
    Ok(Created(guard.redact_object(object)))
}

/// Get an object
///
/// Objects in the trash are returned too, with `is_deleted: true`.
#[utoipa::path(get, path = "/v1/objects/{object_type_id}/{object_id}", tag = "Objects", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id")),
    responses((status = 200, body = crate::http::response::Envelope<Object>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_object(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
) -> ApiResult<Data<Object>> {
    let mut conn = app.db.pool().acquire().await?;
    if broadly_permitted(&auth, ObjectAction::Select) {
        return Ok(Data(fetch(&mut conn, auth.tenant()?, &type_ref, &object_id).await?));
    }
    let (type_access, guard) = readable(&app, &mut conn, &auth, &type_ref, ObjectAction::Select).await?;
    let schema = &type_access.schema;
    let rows = guard.rows(schema, ObjectAction::Select);
    let object = fetch_visible(&mut conn, app.db.backend(), schema, &object_id, rows).await?;
    Ok(Data(guard.redact_object(object)))
}

/// Update an object
///
/// Merges `properties` into the object (`null` removes an optional one) and adds one to
/// `version`. `If-Match: <version>` makes the write conditional: 409 when the object has moved
/// on. A change that changes nothing writes nothing. Needs the `write` scope.
#[utoipa::path(patch, path = "/v1/objects/{object_type_id}/{object_id}", tag = "Objects", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id"),
           ("If-Match" = Option<String>, Header, description = "The version the change was made against")),
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
        .map_err(|e| guard.redact_error(e))?;
    guard.check_written(&mut tx, backend, &schema, ObjectAction::Update, &object.id).await?;
    tx.commit().await?;
    Ok(Data(guard.redact_object(object)))
}

/// Validates and writes one update; the object as it now is.
async fn apply_update(
    conn: &mut WriteTx,
    tenant: &TenantId,
    schema: &Schema,
    mut object: Object,
    patch: &Map<String, Value>,
    wanted: Option<i64>,
    who: &Who,
) -> ApiResult<Object> {
    check_version(&object, wanted)?;
    if object.is_deleted {
        return Err(ApiError::conflict("the object is in the trash: restore it first"));
    }
    let (values, changed) = validate_patch(schema, &object.properties, patch).map_err(Problems::into_error)?;
    let mut problems = Problems::default();
    let names: Vec<&String> = changed.iter().collect();
    check_references(conn, tenant, schema, &values, &names, &mut problems).await?;
    problems.finish()?;
    if changed.is_empty() {
        return Ok(object);
    }
    let expected = object.version;
    object.properties = values;
    object.version += 1;
    object.updated_at = time::now();
    store(conn, schema, &object, expected).await?;
    record_write(conn, schema, &object, "updated", &changed, who).await?;
    Ok(object)
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
    if params.force {
        let target = Target { scope: tenant.as_str(), resource_type: "object", resource_id: &object.id };
        // Objects whose reference properties point at this one (associations and comments will
        // count here too).
        let dependencies = vec![crate::deletion::Dependency {
            kind: "references",
            count: referencing_objects(&mut tx, app.db.backend(), &schema, &object.id).await?,
            label: "live objects whose reference properties point at this object",
        }];
        // `?force=true` alone purges; with dependants it first answers 409 with the confirm token.
        let asked = DeleteParams { force: params.confirm_token.is_some(), confirm_token: params.confirm_token.clone() };
        if let Verdict::Refuse(dependencies) = deletion::check(&mut tx, target, dependencies, &asked).await? {
            tx.rollback().await?;
            return Err(deletion::refuse(app.db.pool(), target, dependencies).await);
        }
        sqlx::query("DELETE FROM objects WHERE id = $1 AND tenant_id = $2")
            .bind(&object.id)
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        entitlements::release(&mut tx, tenant, "objects", 1).await?;
        let event = Event {
            kind: "object.deleted",
            resource_type: "object",
            resource_id: &object.id,
            data: json!({ "object_type": schema.object_type.name, "object": object, "purged": true }),
        };
        events::record(&mut tx, tenant.as_str(), event).await?;
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
    type VersionRow = (i64, String, String, String, String, Option<String>, String);
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT version, action, properties, changed, actor_type, actor_id, created_at FROM object_versions \
         WHERE object_id = $1 AND tenant_id = $2 AND version < $3 ORDER BY version DESC LIMIT $4",
    )
    .bind(&object.id)
    .bind(tenant.as_str())
    .bind(before)
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *conn)
    .await?;
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
    entitlements::consume(&mut tx, &app, tenant, "objects", valid.len() as i64).await?;
    let mut ids = Vec::with_capacity(valid.len());
    for (index, values) in valid.into_iter().enumerate() {
        match insert(&mut tx, &schema, values, &who).await {
            Ok(object) => ids.push(object.id),
            Err(error) => return Err(at_index(guard.redact_error(error), index)),
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
    let tenant = auth.tenant()?;
    check_batch_size(body.object_ids.len())?;
    let backend = app.db.backend();
    let mut conn = app.db.pool().acquire().await?;
    let (type_access, guard) = readable(&app, &mut conn, &auth, &type_ref, ObjectAction::Select).await?;
    let schema = &type_access.schema;
    let ids: Vec<&String> = body.object_ids.iter().filter(|id| id::is_valid(prefix::OBJECT, id)).collect();
    if ids.is_empty() {
        return Ok(Data(Vec::new()));
    }
    let mut binds = sql::Binds::new(backend);
    let tenant_p = binds.text(tenant.as_str());
    let type_p = binds.text(schema.object_type.id.clone());
    let placeholders: Vec<String> = ids.iter().map(|id| binds.text(id.as_str())).collect();
    let filter = match guard.rows(schema, ObjectAction::Select) {
        Some(cond) => format!(" AND {}", query::cond_sql(backend, &cond, &mut binds)),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM objects WHERE tenant_id = {tenant_p} AND object_type_id = {type_p} AND id IN ({}){filter}",
        placeholders.join(", ")
    );
    let rows: Vec<ObjectRow> = sqlx::query_as_with(&sql, binds.arguments()?).fetch_all(&mut *conn).await?;
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
            // A unique index refused the write: the database's transaction is spent, so stop here.
            Err(error) if error.extra.contains_key("property") => {
                tx.rollback().await?;
                return Err(at_index(guard.redact_error(error), index));
            }
            Err(error) => {
                let mut problems = Problems::default();
                match error.details {
                    Some(details) => {
                        for (field, messages) in details {
                            for message in messages.as_array().into_iter().flatten() {
                                problems.add(&field, message.as_str().unwrap_or_default());
                            }
                        }
                    }
                    None => problems.add("object_id", error.message),
                }
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

/// How many live objects point at `object_id` through a reference property.
async fn referencing_objects(
    conn: &mut AnyConnection,
    backend: crate::db::Backend,
    schema: &Schema,
    object_id: &str,
) -> ApiResult<i64> {
    let mut pointing = properties::referencing(conn, &schema.object_type.id).await?;
    pointing.extend(
        schema
            .properties
            .iter()
            .filter(|p| p.reference_type.as_deref() == Some(schema.object_type.id.as_str()))
            .cloned(),
    );
    let mut total = 0;
    for property in pointing {
        let expr = sql::value_expr(backend, &property.name, DataType::Reference);
        let (count,): (i64,) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FROM objects WHERE object_type_id = $1 AND deleted_at IS NULL AND {expr} = $2"
        ))
        .bind(&property.object_type_id)
        .bind(object_id)
        .fetch_one(&mut *conn)
        .await?;
        total += count;
    }
    Ok(total)
}

/// What depends on an object type, for its secure deletion.
pub async fn type_dependants(
    conn: &mut AnyConnection,
    object_type: &ObjectType,
) -> ApiResult<Vec<crate::deletion::Dependency>> {
    let (objects,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM objects WHERE object_type_id = $1")
        .bind(&object_type.id)
        .fetch_one(&mut *conn)
        .await?;
    let (properties,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM object_properties WHERE object_type_id = $1")
        .bind(&object_type.id)
        .fetch_one(&mut *conn)
        .await?;
    let referencing = properties::referencing(conn, &object_type.id).await?.len() as i64;
    Ok(vec![
        crate::deletion::Dependency { kind: "objects", count: objects, label: "objects of this type" },
        crate::deletion::Dependency { kind: "properties", count: properties, label: "properties of this type" },
        crate::deletion::Dependency {
            kind: "references",
            count: referencing,
            label: "reference properties of other types pointing at this type",
        },
    ])
}

/// Removes what depends on a type before it is deleted: its properties' indexes, the reference
/// properties of other types that point at it, and its objects' share of the `objects` quota.
pub async fn remove_type_dependants(
    conn: &mut AnyConnection,
    backend: crate::db::Backend,
    tenant: &TenantId,
    object_type: &ObjectType,
) -> ApiResult<()> {
    for property in properties::of_type(conn, &object_type.id).await? {
        properties::drop_indexes(conn, backend, &property).await?;
    }
    for property in properties::referencing(conn, &object_type.id).await? {
        properties::drop_indexes(conn, backend, &property).await?;
        sqlx::query("DELETE FROM object_properties WHERE id = $1").bind(&property.id).execute(&mut *conn).await?;
    }
    let (objects,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM objects WHERE object_type_id = $1")
        .bind(&object_type.id)
        .fetch_one(&mut *conn)
        .await?;
    entitlements::release(conn, tenant, "objects", objects).await?;
    sqlx::query("DELETE FROM objects WHERE object_type_id = $1").bind(&object_type.id).execute(&mut *conn).await?;
    Ok(())
}
