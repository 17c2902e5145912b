//! The objects' SQL: writes with their versions, audit entries and events, reads, purges and
//! what depends on a type. A unique index refusing a write is a `WriteError::Unique`, told by
//! the dialect; while a unique property's index is still being built, the write checks the
//! value itself (`hold_unique_values`).

use serde_json::{json, Map, Value};
use sqlx::AnyConnection;

use super::indexes::IndexStatus;
use super::model::*;
use super::properties::{self};
use super::types::DataType;
use super::validate::*;
use super::{query, sql};
use crate::audit::{self, Entry, Who};
use crate::auth::TenantId;
use crate::db::{Backend, WriteTx};
use crate::entitlements;
use crate::events::{self, Event};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult};
use crate::id::{self, prefix};
use crate::object_types::ObjectType;
use crate::time;

/// Why a write was refused, told apart for the callers that treat them differently (a batch
/// stops at a unique violation, whose transaction is spent, and goes on past invalid items).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A unique index refused it; the property, when the dialect names the index.
    #[error("another object has this unique value")]
    Unique { property: Option<String> },
    /// The object moved on since version `expected`.
    #[error("the object changed since version {expected}")]
    Stale { expected: i64 },
    /// The values are not valid for the schema.
    #[error("the object is not valid")]
    Invalid(FieldErrors),
    /// Refused for another reason: the version asked for, the trash, a failed step.
    #[error("{}", .0.message)]
    Refused(ApiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<ApiError> for WriteError {
    fn from(error: ApiError) -> Self {
        WriteError::Refused(error)
    }
}

impl From<serde_json::Error> for WriteError {
    fn from(error: serde_json::Error) -> Self {
        WriteError::Refused(error.into())
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> ApiError {
        match error {
            WriteError::Unique { property: Some(property) } => {
                let mut error = ApiError::conflict(format!("another object has this `{property}`"));
                error.extra.insert("property".into(), json!(property));
                error
            }
            WriteError::Unique { property: None } => {
                ApiError::conflict("another object has one of these unique values")
            }
            WriteError::Stale { expected } => {
                let mut error =
                    ApiError::conflict(format!("the object changed since version {expected}: read it again"));
                error.extra.insert("expected_version".into(), json!(expected));
                error
            }
            WriteError::Invalid(problems) => problems.into_error(),
            WriteError::Refused(error) => error,
            WriteError::Database(error) => error.into(),
        }
    }
}

/// A failed statement as a `WriteError`: a unique violation names its property.
fn refused_by_database(schema: &Schema, error: sqlx::Error) -> WriteError {
    match crate::db::dialect::unique_violation(&error) {
        Some(index) => {
            let property = schema
                .properties
                .iter()
                .find(|p| index.as_deref() == Some(sql::unique_index_name(&p.id).as_str()))
                .map(|p| p.name.clone());
            WriteError::Unique { property }
        }
        None => WriteError::Database(error),
    }
}

/// Uniqueness while a unique property's index is not ready (being built by the `property.index`
/// job, or failed): writers of the property take turns (a lock per property, held until commit)
/// and each looks for a live object of the type holding the same value, compared as the index
/// compares them. The change that made the property unique held the type against writers until
/// it committed, so every write after it comes here; the build then finds no duplicate.
async fn hold_unique_values(tx: &mut WriteTx, schema: &Schema, object: &Object) -> Result<(), WriteError> {
    if object.deleted_at.is_some() {
        return Ok(());
    }
    let backend = tx.backend();
    let unready = schema.properties.iter().filter(|p| p.is_unique && p.index_status != IndexStatus::Ready);
    for property in unready {
        if object.properties.get(&property.name).is_none_or(Value::is_null) {
            continue;
        }
        crate::db::dialect::lock_key(tx, backend, &format!("unique:{}", property.id)).await?;
        let same: Vec<String> = sql::unique_exprs(backend, &property.name, property.data_type)
            .iter()
            .map(|e| format!("{e} = (SELECT {e} FROM (SELECT CAST($3 AS TEXT) AS properties) AS candidate)"))
            .collect();
        let taken: Option<(String,)> = sqlx::query_as(&format!(
            "SELECT id FROM objects WHERE object_type_id = $1 AND deleted_at IS NULL AND id <> $2 AND {} LIMIT 1",
            same.join(" AND ")
        ))
        .bind(&object.object_type_id)
        .bind(&object.id)
        .bind(serde_json::to_string(&object.properties)?)
        .fetch_optional(&mut **tx)
        .await?;
        if taken.is_some() {
            return Err(WriteError::Unique { property: Some(property.name.clone()) });
        }
    }
    Ok(())
}

/// Who wrote, for `created_by` and versions.
pub fn author(who: &Who) -> String {
    who.actor_id.clone().unwrap_or_else(|| who.actor_type.to_owned())
}

/// Records the version row of a write, sent with the transaction's commit (nothing reads it
/// before).
pub fn record_version(tx: &mut WriteTx, object: &Object, action: &str, changed: &[String], who: &Who) -> ApiResult<()> {
    tx.defer(
        crate::db::Deferred::new(
            "INSERT INTO object_versions (object_id, version, tenant_id, action, properties, changed, actor_type, \
             actor_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .text(object.id.as_str())
        .int(object.version)
        .text(object.tenant_id.as_str())
        .text(action)
        .string(Some(serde_json::to_string(&object.properties)?))
        .string(Some(json!(changed).to_string()))
        .text(who.actor_type)
        .text(who.actor_id.as_deref())
        .string(Some(time::to_db(&object.updated_at))),
    );
    Ok(())
}

/// The version row, outbox event and audit entry of one write.
pub async fn record_write(
    conn: &mut WriteTx,
    schema: &Schema,
    object: &Object,
    action: &str,
    changed: &[String],
    who: &Who,
) -> ApiResult<()> {
    record_version(conn, object, action, changed, who)?;
    let kind = format!("object.{action}");
    // The type's name, for subscriptions filtered by `object_types`.
    let mut data = json!({ "object_type": schema.object_type.name, "object": object });
    if action == "updated" {
        data["changed"] = json!(changed);
    }
    let event = Event { kind: &kind, resource_type: "object", resource_id: &object.id, data };
    let tenant = TenantId::trusted(object.tenant_id.clone());
    events::record(conn, &tenant, event).await?;
    let entry = Entry {
        action: &kind,
        resource_type: "object",
        resource_id: &object.id,
        changes: json!({ "object_type_id": object.object_type_id, "version": object.version, "changed": changed }),
    };
    audit::defer(conn, who, Some(&tenant), entry);
    Ok(())
}

/// Inserts a validated object with its version, event and audit entry.
pub async fn insert(
    conn: &mut WriteTx,
    schema: &Schema,
    values: Map<String, Value>,
    who: &Who,
) -> Result<Object, WriteError> {
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
        included: None,
    };
    hold_unique_values(conn, schema, &object).await?;
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
        return Err(refused_by_database(schema, error));
    }
    let changed: Vec<String> = object.properties.keys().cloned().collect();
    record_write(conn, schema, &object, "created", &changed, who).await?;
    Ok(object)
}

/// Writes new properties (or trash state) of `object` if its version is still `expected`.
pub async fn store(conn: &mut WriteTx, schema: &Schema, object: &Object, expected: i64) -> Result<(), WriteError> {
    hold_unique_values(conn, schema, object).await?;
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
    .execute(&mut **conn)
    .await;
    match updated {
        Ok(result) if result.rows_affected() == 1 => Ok(()),
        Ok(_) => Err(WriteError::Stale { expected }),
        Err(error) => Err(refused_by_database(schema, error)),
    }
}

/// One object of the tenant's type, in one indexed query (the type by id or name).
pub async fn fetch(conn: &mut AnyConnection, tenant: &TenantId, type_ref: &str, object_id: &str) -> ApiResult<Object> {
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
pub async fn fetch_visible(
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

/// Validates and writes one update; the object as it now is.
pub async fn apply_update(
    conn: &mut WriteTx,
    tenant: &TenantId,
    schema: &Schema,
    mut object: Object,
    patch: &Map<String, Value>,
    wanted: Option<i64>,
    who: &Who,
) -> Result<Object, WriteError> {
    check_version(&object, wanted)?;
    if object.is_deleted {
        return Err(ApiError::conflict("the object is in the trash: restore it first").into());
    }
    super::workflows::check_unlocked(conn, &object.id).await?;
    let (values, changed) = validate_patch(schema, &object.properties, patch).map_err(WriteError::Invalid)?;
    let mut problems = Problems::default();
    let names: Vec<&String> = changed.iter().collect();
    check_references(conn, tenant, schema, &values, &names, &mut problems).await?;
    if !problems.is_empty() {
        return Err(WriteError::Invalid(problems));
    }
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

/// How many live objects point at `object_id` through a reference property.
pub async fn referencing_objects(
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
pub async fn remove_type_dependants(tx: &mut WriteTx, tenant: &TenantId, object_type: &ObjectType) -> ApiResult<()> {
    for property in properties::of_type(tx, &object_type.id).await? {
        super::indexes::queue(tx, tenant, &property.id).await?;
    }
    for property in properties::referencing(tx, &object_type.id).await? {
        super::indexes::queue(tx, tenant, &property.id).await?;
        sqlx::query("DELETE FROM object_properties WHERE id = $1").bind(&property.id).execute(&mut **tx).await?;
    }
    let conn: &mut AnyConnection = tx;
    let (objects,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM objects WHERE object_type_id = $1")
        .bind(&object_type.id)
        .fetch_one(&mut *conn)
        .await?;
    entitlements::release(conn, tenant, crate::entitlements::Entitlement::Objects, objects).await?;
    sqlx::query("DELETE FROM objects WHERE object_type_id = $1").bind(&object_type.id).execute(&mut *conn).await?;
    Ok(())
}

/// Purges an object for good (its versions go with it), giving back its share of `objects`.
pub async fn purge(tx: &mut WriteTx, tenant: &TenantId, object_id: &str) -> ApiResult<()> {
    // Held version rows of the object would refer to a row no longer there.
    tx.flush().await?;
    sqlx::query("DELETE FROM objects WHERE id = $1 AND tenant_id = $2")
        .bind(object_id)
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await?;
    entitlements::release(tx, tenant, crate::entitlements::Entitlement::Objects, 1).await
}

/// A stored version: (version, action, properties, changed, actor type, actor id, created at).
pub type VersionRow = (i64, String, String, String, String, Option<String>, String);

/// Up to `limit` versions of an object older than `before`, newest first.
pub async fn versions_before(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    object_id: &str,
    before: i64,
    limit: i64,
) -> ApiResult<Vec<VersionRow>> {
    Ok(sqlx::query_as(
        "SELECT version, action, properties, changed, actor_type, actor_id, created_at FROM object_versions \
         WHERE object_id = $1 AND tenant_id = $2 AND version < $3 ORDER BY version DESC LIMIT $4",
    )
    .bind(object_id)
    .bind(tenant.as_str())
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// The objects of `schema`'s type among `ids` that `rows` admits (every one when `None`).
pub async fn read_many(
    conn: &mut AnyConnection,
    backend: Backend,
    schema: &Schema,
    ids: &[&String],
    rows: Option<query::Cond>,
) -> ApiResult<Vec<ObjectRow>> {
    let mut binds = sql::Binds::new(backend);
    let tenant_p = binds.text(schema.object_type.tenant_id.clone());
    let type_p = binds.text(schema.object_type.id.clone());
    let placeholders: Vec<String> = ids.iter().map(|id| binds.text(id.as_str())).collect();
    let filter = match rows {
        Some(cond) => format!(" AND {}", query::cond_sql(backend, &cond, &mut binds)),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM objects WHERE tenant_id = {tenant_p} AND object_type_id = {type_p} AND id IN ({}){filter}",
        placeholders.join(", ")
    );
    Ok(sqlx::query_as_with(&sql, binds.arguments()?).fetch_all(&mut *conn).await?)
}

/// Refuses a write whose `If-Match` asks for another version than the object's.
pub fn check_version(object: &Object, wanted: Option<i64>) -> ApiResult<()> {
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
