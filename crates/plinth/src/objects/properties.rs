//! Properties (seed 002): the typed fields of an object type. A property's flags become real
//! database indexes on the objects' JSON: `is_indexed`/`is_sortable`, a lookup and sort index
//! and `is_unique`, a unique index over the type's live objects, both built and dropped in the
//! background (`indexes`: `index_status` says where they stand). Uniqueness holds from the
//! answer on: until its index is ready, writes check the value themselves.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{AnyConnection, FromRow};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::fill::{self, FillStatus};
use super::indexes::{self, IndexStatus};
use super::sql;
use super::types::DataType;
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::db::{is_unique_violation, Backend, WriteTx};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, Path};
use crate::id::{self, prefix};
use crate::object_types::{self, is_identifier, ObjectType};
use crate::scopes::required::{PROPERTIES_DELETE, PROPERTIES_READ, PROPERTIES_WRITE};
use crate::time;

/// Most properties on one type.
pub const PROPERTIES_MAX: i64 = 200;
/// Most values of an enum.
pub const ENUM_VALUES_MAX: usize = 500;
/// How many offending objects an error names.
const NAMED_MAX: usize = 10;

/// A typed field of an object type.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Property {
    #[schema(example = "prop_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub object_type_id: String,
    /// Lowercase identifier, unique in the type; cannot change.
    pub name: String,
    /// Cannot change.
    pub data_type: DataType,
    /// Filters on it use an index.
    pub is_indexed: bool,
    /// Lists may sort by it, through an index.
    pub is_sortable: bool,
    /// Where the indexes that `is_indexed`, `is_sortable` and `is_unique` ask for stand: they are
    /// built in the background (`building`, then `ready`), so that a change never holds other
    /// writes while it scans the objects. Filters and sorts answer the same meanwhile, unindexed,
    /// and unique values hold all along.
    pub index_status: IndexStatus,
    /// No two live objects of the type share a value, from the answer that sets it on (each write
    /// checks until the unique index is built, then the index holds them).
    pub is_unique: bool,
    /// Every object has a value: new writes must give one (or get the default).
    pub is_required: bool,
    /// Where giving the default to objects without a value stands, once the property is made
    /// required: a few are filled by the change itself (`done`), more in the background
    /// (`filling`, then `done`); objects not filled yet read without the value meanwhile.
    pub fill_status: FillStatus,
    /// Given to new objects that omit the property (canonical form).
    #[schema(value_type = Option<Object>)]
    pub default_value: Option<Value>,
    /// The allowed values of `enum` and `multi_enum`.
    pub enum_values: Option<Vec<String>>,
    /// For `reference`: the id of the type its values point at.
    pub reference_type: Option<String>,
    pub description: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl Property {
    /// Whether the property has a lookup and sort index.
    fn has_lookup_index(&self) -> bool {
        self.is_indexed || self.is_sortable
    }

    pub fn enum_values(&self) -> &[String] {
        self.enum_values.as_deref().unwrap_or(&[])
    }

    /// The canonical form of `value` for this property.
    pub fn canonical(&self, value: &Value) -> Result<Value, String> {
        self.data_type.canonical(value, self.enum_values())
    }
}

#[derive(Debug, FromRow)]
struct PropertyRow {
    id: String,
    object_type_id: String,
    name: String,
    data_type: String,
    is_indexed: i64,
    is_sortable: i64,
    is_unique: i64,
    is_required: i64,
    index_status: String,
    fill_status: String,
    default_value: Option<String>,
    enum_values: Option<String>,
    reference_type_id: Option<String>,
    description: Option<String>,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, object_type_id, name, data_type, is_indexed, is_sortable, is_unique, is_required, \
     index_status, fill_status, default_value, enum_values, reference_type_id, description, created_at, updated_at";

impl TryFrom<PropertyRow> for Property {
    type Error = ApiError;

    fn try_from(row: PropertyRow) -> ApiResult<Property> {
        let data_type = DataType::parse(&row.data_type)
            .ok_or_else(|| ApiError::internal(format!("stored data type `{}`", row.data_type)))?;
        let index_status = IndexStatus::parse(&row.index_status)
            .ok_or_else(|| ApiError::internal(format!("stored index status `{}`", row.index_status)))?;
        let fill_status = FillStatus::parse(&row.fill_status)
            .ok_or_else(|| ApiError::internal(format!("stored fill status `{}`", row.fill_status)))?;
        Ok(Property {
            data_type,
            index_status,
            fill_status,
            is_indexed: row.is_indexed != 0,
            is_sortable: row.is_sortable != 0,
            is_unique: row.is_unique != 0,
            is_required: row.is_required != 0,
            default_value: row.default_value.as_deref().map(serde_json::from_str).transpose()?,
            enum_values: row.enum_values.as_deref().map(serde_json::from_str).transpose()?,
            reference_type: row.reference_type_id,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            id: row.id,
            object_type_id: row.object_type_id,
            name: row.name,
            description: row.description,
        })
    }
}

/// The properties of a type, by name.
pub async fn of_type(conn: &mut AnyConnection, type_id: &str) -> ApiResult<Vec<Property>> {
    let rows: Vec<PropertyRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM object_properties WHERE object_type_id = $1 ORDER BY name"))
            .bind(type_id)
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter().map(Property::try_from).collect()
}

/// Properties of other types whose references point at `type_id`.
pub async fn referencing(conn: &mut AnyConnection, type_id: &str) -> ApiResult<Vec<Property>> {
    let rows: Vec<PropertyRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM object_properties WHERE reference_type_id = $1 AND object_type_id <> $1"
    ))
    .bind(type_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Property::try_from).collect()
}

/// Queues, in the change's transaction, a job of `kind` for the property (its indexes, its fill);
/// a job of that kind still queued for it is replaced.
pub(super) async fn queue_job(tx: &mut WriteTx, kind: &str, tenant: &TenantId, property_id: &str) -> ApiResult<()> {
    crate::jobs::forget(tx, kind, property_id).await?;
    crate::jobs::enqueue(tx, crate::jobs::NewJob::new(kind, json!({})).tenant(tenant).reference(property_id)).await?;
    Ok(())
}

/// Records that a property's background work (`column`: `index_status` or `fill_status`) failed
/// on every attempt, unless the property has moved on from `working` meanwhile.
pub(super) async fn record_failed(
    tx: &mut WriteTx,
    column: &str,
    working: &str,
    property_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("UPDATE object_properties SET {column} = 'failed' WHERE id = $1 AND {column} = $2"))
        .bind(property_id)
        .bind(working)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A property by id, whatever its type.
pub async fn by_id(conn: &mut AnyConnection, id: &str) -> ApiResult<Option<Property>> {
    let row: Option<PropertyRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM object_properties WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(Property::try_from).transpose()
}

async fn find(conn: &mut AnyConnection, object_type: &ObjectType, id_or_name: &str) -> ApiResult<Property> {
    let column = if id::is_valid(prefix::PROPERTY, id_or_name) { "id" } else { "name" };
    let row: Option<PropertyRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM object_properties WHERE object_type_id = $1 AND {column} = $2"))
            .bind(&object_type.id)
            .bind(id_or_name)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(Property::try_from).transpose()?.ok_or_else(|| ApiError::not_found("property"))
}

/// Queues the drop of the indexes of every property of a tenant, in the transaction that
/// deletes the tenant (the rows go by cascade; the indexes would not).
pub async fn drop_tenant_indexes(tx: &mut WriteTx, tenant_id: &TenantId) -> ApiResult<()> {
    let ids: Vec<(String,)> = sqlx::query_as("SELECT id FROM object_properties WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_all(&mut **tx)
        .await?;
    for (id,) in ids {
        indexes::queue(tx, tenant_id, &id).await?;
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProperty {
    /// Lowercase identifier: `[a-z][a-z0-9_]{0,62}`.
    pub name: String,
    /// One of the 22 data types.
    #[schema(value_type = DataType)]
    pub data_type: String,
    pub is_indexed: Option<bool>,
    pub is_sortable: Option<bool>,
    pub is_unique: Option<bool>,
    pub is_required: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub default_value: Option<Value>,
    /// Required for `enum` and `multi_enum`: distinct, 1 to 500 values.
    pub enum_values: Option<Vec<String>>,
    /// Required for `reference`: the id or name of the type its values point at.
    pub reference_type: Option<String>,
    pub description: Option<String>,
}

/// Changes: absent fields keep their value; `null` clears `default_value` and `description`.
/// `name`, `data_type` and `reference_type` cannot change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProperty {
    pub is_indexed: Option<bool>,
    pub is_sortable: Option<bool>,
    pub is_unique: Option<bool>,
    pub is_required: Option<bool>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<Object>)]
    pub default_value: Option<Option<Value>>,
    pub enum_values: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// Never changed: named only to say so.
    #[schema(ignore)]
    pub name: Option<Value>,
    #[schema(ignore)]
    pub data_type: Option<Value>,
    #[schema(ignore)]
    pub reference_type: Option<Value>,
}

fn validate_enum_values(data_type: DataType, values: Option<&Vec<String>>, errors: &mut FieldErrors) {
    let wants = matches!(data_type, DataType::Enum | DataType::MultiEnum);
    match (wants, values) {
        (true, None) => errors.add("enum_values", "is required for `enum` and `multi_enum`"),
        (false, Some(_)) => errors.add("enum_values", "is only for `enum` and `multi_enum`"),
        (true, Some(values)) => {
            if values.is_empty() || values.len() > ENUM_VALUES_MAX {
                errors.add("enum_values", format!("must hold 1 to {ENUM_VALUES_MAX} values"));
            }
            for (i, value) in values.iter().enumerate() {
                if value.is_empty() || value.chars().count() > 255 || value.contains('\0') {
                    errors.add("enum_values", "each value must be 1 to 255 characters");
                } else if values[..i].contains(value) {
                    errors.add("enum_values", format!("`{value}` is named twice"));
                }
            }
        }
        (false, None) => {}
    }
}

fn validate_flags(data_type: DataType, indexed: bool, sortable: bool, unique: bool, errors: &mut FieldErrors) {
    if !data_type.indexable() {
        for (flag, on) in [("is_indexed", indexed), ("is_sortable", sortable), ("is_unique", unique)] {
            if on {
                errors.add(flag, format!("`{}` values cannot be indexed, sorted or unique", data_type.as_str()));
            }
        }
    }
}

fn validate_default(property: &Property, errors: &mut FieldErrors) -> Option<Value> {
    let value = property.default_value.as_ref()?;
    if property.is_unique {
        errors.add("default_value", "a unique property cannot have a default");
        return None;
    }
    if property.data_type == DataType::Reference {
        errors.add("default_value", "a reference cannot have a default");
        return None;
    }
    match property.canonical(value) {
        Ok(canonical) => Some(canonical),
        Err(problem) => {
            errors.add("default_value", problem);
            None
        }
    }
}

/// A page of an object scan: (id, properties JSON), in id order after `after`.
async fn scan(
    conn: &mut AnyConnection,
    type_id: &str,
    name: &str,
    backend: Backend,
    after: &str,
) -> ApiResult<Vec<(String, String)>> {
    Ok(sqlx::query_as(&format!(
        "SELECT id, properties FROM objects WHERE object_type_id = $1 AND id > $2 AND {} ORDER BY id LIMIT 500",
        sql::exists_expr(backend, name)
    ))
    .bind(type_id)
    .bind(after)
    .fetch_all(&mut *conn)
    .await?)
}

/// Refuses (409) when objects of the type hold values under `property.name` that are not valid,
/// canonical values for it: a new property must describe the data already there.
async fn check_existing_values(conn: &mut AnyConnection, backend: Backend, property: &Property) -> ApiResult<()> {
    let mut offending = Vec::new();
    let mut after = String::new();
    loop {
        let page = scan(conn, &property.object_type_id, &property.name, backend, &after).await?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        for (id, properties) in page {
            let properties: Value = serde_json::from_str(&properties)?;
            let value = &properties[&property.name];
            if property.canonical(value).ok().as_ref() != Some(value) {
                offending.push(id);
            }
        }
        if offending.len() >= NAMED_MAX {
            break;
        }
    }
    if offending.is_empty() {
        return Ok(());
    }
    offending.truncate(NAMED_MAX);
    let mut error = ApiError::conflict(format!(
        "objects hold `{}` values that are not valid `{}` values",
        property.name,
        property.data_type.as_str()
    ));
    error.extra.insert("objects".into(), json!(offending));
    Err(error)
}

/// Refuses (409, naming them) when live objects share a value of `property`, which is being
/// made unique. On SQLite, whose one writer every write waits for anyway, the unique index is
/// built here: its build is the check (one pass over the objects rather than two write turns),
/// and the job finds it made.
async fn refuse_duplicates(conn: &mut AnyConnection, backend: Backend, property: &Property) -> ApiResult<()> {
    if backend == Backend::Sqlite {
        let ddl = sql::create_unique_index(
            backend,
            &property.id,
            &property.object_type_id,
            &property.name,
            property.data_type,
        );
        match sqlx::query(&ddl).execute(&mut *conn).await {
            Ok(_) => return Ok(()),
            Err(error) if is_unique_violation(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    check_no_duplicates(conn, backend, property).await
}

/// Refuses (409, naming them) when live objects share a value of `property`.
async fn check_no_duplicates(conn: &mut AnyConnection, backend: Backend, property: &Property) -> ApiResult<()> {
    let exprs = sql::unique_exprs(backend, &property.name, property.data_type);
    let groups: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT MIN(id), MAX(id), COUNT(*) FROM objects WHERE object_type_id = $1 AND deleted_at IS NULL \
         AND {} IS NOT NULL GROUP BY {} HAVING COUNT(*) > 1 LIMIT {NAMED_MAX}",
        exprs[0],
        exprs.join(", ")
    ))
    .bind(&property.object_type_id)
    .fetch_all(&mut *conn)
    .await?;
    if groups.is_empty() {
        return Ok(());
    }
    let duplicates: Vec<Value> =
        groups.iter().map(|(first, last, count)| json!({ "objects": [first, last], "count": count })).collect();
    let mut error =
        ApiError::conflict(format!("objects share values of `{}`: it cannot be made unique", property.name));
    error.extra.insert("duplicates".into(), Value::Array(duplicates));
    Err(error)
}

/// Makes a property required: objects without a value get the default, or the change is
/// refused when there is none. Up to a batch of them are filled here; more by the
/// `property.fill` job (`fill`), which the change queues.
async fn require_values(tx: &mut WriteTx, tenant: &TenantId, property: &mut Property) -> ApiResult<()> {
    let backend = tx.backend();
    let missing = format!("NOT ({})", sql::exists_expr(backend, &property.name));
    // Counted up to one past a batch: a new property missing from a large type stops early.
    let (count,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM objects WHERE object_type_id = $1 AND {missing} LIMIT {}) AS m",
        fill::BATCH + 1
    ))
    .bind(&property.object_type_id)
    .fetch_one(&mut **tx)
    .await?;
    property.fill_status = FillStatus::Done;
    if count == 0 {
        return Ok(());
    }
    let Some(default) = property.default_value.clone() else {
        let many = if count > fill::BATCH { "more than " } else { "" };
        return Err(ApiError::invalid(
            "is_required",
            format!(
                "{many}{} objects have no `{}`: give a `default_value` to fill them, or set them first",
                count.min(fill::BATCH),
                property.name
            ),
        ));
    };
    if count > fill::BATCH {
        property.fill_status = FillStatus::Filling;
        return fill::queue(tx, tenant, &property.id).await;
    }
    for live in [true, false] {
        fill::fill(tx, backend, property, &default, ("", None), live).await?;
    }
    Ok(())
}

/// Queues the job that makes the property's indexes what its flags now want (the lookup and sort
/// index, the unique index: built or dropped in the background), and records in `after` that
/// they are being built. Until the unique index is ready, writes check the value themselves
/// (`store::hold_unique_values`), so uniqueness holds from the answer on.
async fn apply_indexes(
    tx: &mut WriteTx,
    tenant: &TenantId,
    before: Option<&Property>,
    after: &mut Property,
) -> ApiResult<()> {
    let had_lookup = before.is_some_and(Property::has_lookup_index);
    let had_unique = before.is_some_and(|p| p.is_unique);
    let changes = after.has_lookup_index() != had_lookup || after.is_unique != had_unique;
    if changes {
        after.index_status = IndexStatus::wanted(after.has_lookup_index() || after.is_unique);
        indexes::queue(tx, tenant, &after.id).await?;
    }
    Ok(())
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_properties, create_property)).routes(routes!(
        get_property,
        update_property,
        delete_property
    ))
}

/// List properties
#[utoipa::path(get, path = "/v1/object-types/{object_type_id}/properties", tag = "Properties",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    responses((status = 200, body = crate::http::response::Envelope<Vec<Property>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn list_properties(
    auth: Auth,
    State(app): State<App>,
    Path(type_id): Path<String>,
) -> ApiResult<Data<Vec<Property>>> {
    auth.require(PROPERTIES_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    let object_type = object_types::find(&mut conn, auth.tenant()?, &type_id).await?;
    Ok(Data(of_type(&mut conn, &object_type.id).await?))
}

/// Create a property
///
/// Adds a typed field. Needs the `schema` scope (or `properties:write`). Objects that already
/// hold values under the name must hold valid ones (409 naming them otherwise); a required
/// property without a default cannot join a type that has objects (422); a unique one cannot
/// while objects share a value (409 naming them).
#[utoipa::path(post, path = "/v1/object-types/{object_type_id}/properties", tag = "Properties",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = CreateProperty,
    responses((status = 201, body = crate::http::response::Envelope<Property>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_property(
    auth: Auth,
    State(app): State<App>,
    Path(type_id): Path<String>,
    Json(body): Json<CreateProperty>,
) -> ApiResult<Created<Property>> {
    auth.require(PROPERTIES_WRITE)?;
    let tenant = auth.tenant()?;
    let backend = app.db.backend();
    let mut errors = FieldErrors::default();
    if !is_identifier(&body.name) {
        errors.add("name", "must be a lowercase identifier: a letter, then letters, digits or `_`, at most 63");
    }
    let data_type = DataType::parse(&body.data_type);
    if data_type.is_none() {
        let names: Vec<&str> = DataType::ALL.iter().map(|t| t.as_str()).collect();
        errors.add("data_type", format!("must be one of: {}", names.join(", ")));
    }
    if let Some(description) = &body.description {
        if description.chars().count() > 2000 {
            errors.add("description", "must be at most 2000 characters");
        }
    }
    let data_type = match data_type {
        Some(data_type) => data_type,
        None => return Err(errors.into_error()),
    };
    validate_enum_values(data_type, body.enum_values.as_ref(), &mut errors);
    let (indexed, sortable, unique) =
        (body.is_indexed.unwrap_or(false), body.is_sortable.unwrap_or(false), body.is_unique.unwrap_or(false));
    validate_flags(data_type, indexed, sortable, unique, &mut errors);
    match (data_type == DataType::Reference, &body.reference_type) {
        (true, None) => errors.add("reference_type", "is required for `reference`: the id or name of a type"),
        (false, Some(_)) => errors.add("reference_type", "is only for `reference`"),
        _ => {}
    }

    let mut tx = app.db.begin_write().await?;
    let object_type = object_types::find(&mut tx, tenant, &type_id).await?;
    object_types::lock(&mut tx, app.db.backend(), &object_type.id, true).await?;
    let reference_type = match &body.reference_type {
        Some(target) => match object_types::find(&mut tx, tenant, target).await {
            Ok(target) => Some(target.id),
            Err(_) => {
                errors.add("reference_type", format!("no object type `{target}`"));
                None
            }
        },
        None => None,
    };
    let now = time::now();
    let mut property = Property {
        id: id::new_id(prefix::PROPERTY),
        object_type_id: object_type.id.clone(),
        name: body.name,
        data_type,
        is_indexed: indexed,
        is_sortable: sortable,
        index_status: IndexStatus::wanted(indexed || sortable || unique),
        fill_status: FillStatus::Done,
        is_unique: unique,
        is_required: body.is_required.unwrap_or(false),
        default_value: body.default_value.filter(|v| !v.is_null()),
        enum_values: body.enum_values,
        reference_type,
        description: body.description,
        created_at: now,
        updated_at: now,
    };
    property.default_value = validate_default(&property, &mut errors);
    errors.finish()?;

    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM object_properties WHERE object_type_id = $1")
        .bind(&object_type.id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= PROPERTIES_MAX {
        return Err(ApiError::invalid("name", format!("a type has at most {PROPERTIES_MAX} properties")));
    }
    let inserted = sqlx::query(&format!(
        "INSERT INTO object_properties ({COLUMNS}, tenant_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16)"
    ))
    .bind(&property.id)
    .bind(&object_type.id)
    .bind(&property.name)
    .bind(property.data_type.as_str())
    .bind(i64::from(property.is_indexed))
    .bind(i64::from(property.is_sortable))
    .bind(i64::from(property.is_unique))
    .bind(i64::from(property.is_required))
    .bind(property.index_status.as_str())
    .bind(property.fill_status.as_str())
    .bind(property.default_value.as_ref().map(Value::to_string))
    .bind(property.enum_values.as_ref().map(|v| json!(v).to_string()))
    .bind(&property.reference_type)
    .bind(&property.description)
    .bind(time::to_db(&now))
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => {
            return Err(ApiError::conflict(format!("the type has a property named `{}`", property.name)))
        }
        Err(error) => return Err(error.into()),
    }
    check_existing_values(&mut tx, backend, &property).await?;
    if property.is_required {
        require_values(&mut tx, tenant, &mut property).await?;
        sqlx::query("UPDATE object_properties SET fill_status = $1 WHERE id = $2")
            .bind(property.fill_status.as_str())
            .bind(&property.id)
            .execute(&mut *tx)
            .await?;
    }
    if property.is_unique {
        refuse_duplicates(&mut tx, backend, &property).await?;
    }
    apply_indexes(&mut tx, tenant, None, &mut property).await?;
    let entry = Entry {
        action: "property.created",
        resource_type: "property",
        resource_id: &property.id,
        changes: json!({ "object_type_id": object_type.id, "name": property.name, "data_type": property.data_type }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let _changed = app.schemas_changing();
    tx.commit().await?;
    Ok(Created(property))
}

/// Get a property
#[utoipa::path(get, path = "/v1/object-types/{object_type_id}/properties/{property_id}", tag = "Properties",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("property_id" = String, Path, description = "The property's id or name")),
    responses((status = 200, body = crate::http::response::Envelope<Property>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_property(
    auth: Auth,
    State(app): State<App>,
    Path((type_id, property_id)): Path<(String, String)>,
) -> ApiResult<Data<Property>> {
    auth.require(PROPERTIES_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    let object_type = object_types::find(&mut conn, auth.tenant()?, &type_id).await?;
    Ok(Data(find(&mut conn, &object_type, &property_id).await?))
}

/// Update a property
///
/// Changes flags, the default, the enum values or the description; `name`, `data_type` and
/// `reference_type` cannot change. Making it unique while objects share a value is 409 naming
/// them; required while objects lack it and there is no default is 422; removing an enum value
/// that objects hold is 409 naming them.
#[utoipa::path(patch, path = "/v1/object-types/{object_type_id}/properties/{property_id}", tag = "Properties",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("property_id" = String, Path, description = "The property's id or name")),
    request_body = UpdateProperty,
    responses((status = 200, body = crate::http::response::Envelope<Property>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_property(
    auth: Auth,
    State(app): State<App>,
    Path((type_id, property_id)): Path<(String, String)>,
    Json(body): Json<UpdateProperty>,
) -> ApiResult<Data<Property>> {
    auth.require(PROPERTIES_WRITE)?;
    let tenant = auth.tenant()?;
    let backend = app.db.backend();
    let mut errors = FieldErrors::default();
    for (field, given) in
        [("name", &body.name), ("data_type", &body.data_type), ("reference_type", &body.reference_type)]
    {
        if given.is_some() {
            errors.add(field, "cannot be changed: create a new property instead");
        }
    }
    if let Some(Some(description)) = &body.description {
        if description.chars().count() > 2000 {
            errors.add("description", "must be at most 2000 characters");
        }
    }
    errors.finish()?;
    let mut errors = FieldErrors::default();
    let mut tx = app.db.begin_write().await?;
    let object_type = object_types::find(&mut tx, tenant, &type_id).await?;
    object_types::lock(&mut tx, app.db.backend(), &object_type.id, true).await?;
    let before = find(&mut tx, &object_type, &property_id).await?;
    let mut after = before.clone();
    after.is_indexed = body.is_indexed.unwrap_or(before.is_indexed);
    after.is_sortable = body.is_sortable.unwrap_or(before.is_sortable);
    after.is_unique = body.is_unique.unwrap_or(before.is_unique);
    after.is_required = body.is_required.unwrap_or(before.is_required);
    if let Some(values) = &body.enum_values {
        validate_enum_values(after.data_type, Some(values), &mut errors);
        after.enum_values = Some(values.clone());
    }
    if let Some(default) = &body.default_value {
        after.default_value = default.clone().filter(|v| !v.is_null());
    }
    if let Some(description) = &body.description {
        after.description = description.clone();
    }
    validate_flags(after.data_type, after.is_indexed, after.is_sortable, after.is_unique, &mut errors);
    after.default_value = validate_default(&after, &mut errors);
    errors.finish()?;

    if body.enum_values.is_some() {
        check_existing_values(&mut tx, backend, &after).await?;
    }
    if after.is_required && !before.is_required {
        require_values(&mut tx, tenant, &mut after).await?;
    } else if !after.is_required {
        // A fill under way stops at its next batch.
        after.fill_status = FillStatus::Done;
    }
    if after.is_unique && !before.is_unique {
        refuse_duplicates(&mut tx, backend, &after).await?;
    }
    apply_indexes(&mut tx, tenant, Some(&before), &mut after).await?;
    after.updated_at = time::now();
    sqlx::query(
        "UPDATE object_properties SET is_indexed = $1, is_sortable = $2, is_unique = $3, is_required = $4, \
         index_status = $5, default_value = $6, enum_values = $7, description = $8, updated_at = $9, fill_status = $11 \
         WHERE id = $10",
    )
    .bind(i64::from(after.is_indexed))
    .bind(i64::from(after.is_sortable))
    .bind(i64::from(after.is_unique))
    .bind(i64::from(after.is_required))
    .bind(after.index_status.as_str())
    .bind(after.default_value.as_ref().map(Value::to_string))
    .bind(after.enum_values.as_ref().map(|v| json!(v).to_string()))
    .bind(&after.description)
    .bind(time::to_db(&after.updated_at))
    .bind(&after.id)
    .bind(after.fill_status.as_str())
    .execute(&mut *tx)
    .await?;
    let entry = Entry {
        action: "property.updated",
        resource_type: "property",
        resource_id: &after.id,
        changes: json!({
            "is_indexed": body.is_indexed, "is_sortable": body.is_sortable, "is_unique": body.is_unique,
            "is_required": body.is_required, "default_value": body.default_value,
            "enum_values": body.enum_values, "description": body.description,
        }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let _changed = app.schemas_changing();
    tx.commit().await?;
    Ok(Data(after))
}

/// Delete a property
///
/// Removes the field; its indexes are dropped in the background. Objects keep their values under
/// the name, untyped.
#[utoipa::path(delete, path = "/v1/object-types/{object_type_id}/properties/{property_id}", tag = "Properties",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("property_id" = String, Path, description = "The property's id or name")),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_property(
    auth: Auth,
    State(app): State<App>,
    Path((type_id, property_id)): Path<(String, String)>,
) -> ApiResult<Data<Deleted>> {
    auth.require(PROPERTIES_DELETE)?;
    let tenant: &TenantId = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let object_type = object_types::find(&mut tx, tenant, &type_id).await?;
    object_types::lock(&mut tx, app.db.backend(), &object_type.id, true).await?;
    let property = find(&mut tx, &object_type, &property_id).await?;
    // The job finds the property gone and drops its indexes.
    indexes::queue(&mut tx, tenant, &property.id).await?;
    sqlx::query("DELETE FROM object_properties WHERE id = $1").bind(&property.id).execute(&mut *tx).await?;
    let entry = Entry {
        action: "property.deleted",
        resource_type: "property",
        resource_id: &property.id,
        changes: json!({ "object_type_id": object_type.id, "name": property.name }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let _changed = app.schemas_changing();
    tx.commit().await?;
    Ok(Deleted::new(property.id))
}
