//! Object types (seed 002): a tenant's schema, one type per kind of record, like a table.
//! `/v1/object-types`; routes that take a type accept its id or its name.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{AnyConnection, FromRow};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::db::{is_unique_violation, Backend};
use crate::deletion::{self, DeleteParams, Target, Verdict};
use crate::http::error::FieldErrors;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, ListParams, Page, Path, Query};
use crate::id::{self, prefix};
use crate::scopes::required::{OBJECT_TYPES_DELETE, OBJECT_TYPES_READ, OBJECT_TYPES_WRITE};
use crate::time;

/// Most object types in one tenant (each property index is a database index: they are bounded).
pub const TYPES_MAX: i64 = 100;

/// An object type.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ObjectType {
    #[schema(example = "ot_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: String,
    /// Lowercase identifier, unique in the tenant: `[a-z][a-z0-9_]{0,62}`.
    pub name: String,
    pub display_name: String,
    pub description: Option<String>,
    /// Whether objects may carry properties the type does not define. Default false.
    pub additional_properties: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, FromRow)]
struct ObjectTypeRow {
    id: String,
    tenant_id: TenantId,
    name: String,
    display_name: String,
    description: Option<String>,
    additional_properties: i64,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, tenant_id, name, display_name, description, additional_properties, created_at, updated_at";

impl TryFrom<ObjectTypeRow> for ObjectType {
    type Error = ApiError;

    fn try_from(row: ObjectTypeRow) -> ApiResult<ObjectType> {
        Ok(ObjectType {
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            additional_properties: row.additional_properties != 0,
            id: row.id,
            tenant_id: row.tenant_id.into(),
            name: row.name,
            display_name: row.display_name,
            description: row.description,
        })
    }
}

pub(crate) const LIST: ListSpec = ListSpec {
    table: "object_types",
    columns: COLUMNS,
    sortable: &[
        SortField { name: "name", column: "name" },
        SortField { name: "created_at", column: "created_at" },
        SortField { name: "updated_at", column: "updated_at" },
    ],
    fields: &[
        "id",
        "tenant_id",
        "name",
        "display_name",
        "description",
        "additional_properties",
        "created_at",
        "updated_at",
    ],
    updated_at: true,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateObjectType {
    /// Lowercase identifier: `[a-z][a-z0-9_]{0,62}`.
    #[schema(value_type = crate::http::shapes::Identifier)]
    pub name: String,
    /// Default: the name in title case (`support_tickets` becomes `Support Tickets`).
    #[schema(value_type = Option<crate::http::shapes::Label>)]
    pub display_name: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::Description>)]
    pub description: Option<String>,
    pub additional_properties: Option<bool>,
}

/// Changes: absent fields keep their value; `null` clears the description.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateObjectType {
    #[schema(value_type = Option<crate::http::shapes::Identifier>)]
    pub name: Option<String>,
    #[schema(value_type = Option<crate::http::shapes::Label>)]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<crate::http::shapes::Description>)]
    pub description: Option<Option<String>>,
    pub additional_properties: Option<bool>,
}

pub use crate::names::{is_identifier, is_slug};

/// `support_tickets` -> `Support Tickets`.
fn title_case(name: &str) -> String {
    name.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn validate_name(name: &str, errors: &mut FieldErrors) {
    if !is_identifier(name) {
        errors.add("name", "must be a lowercase identifier: a letter, then letters, digits or `_`, at most 63");
    }
}

fn validate_text(field: &str, value: &str, max: usize, errors: &mut FieldErrors) {
    if !plinth_core::names::has_text(value) {
        errors.add(field, "must not be empty");
    } else if value.chars().count() > max {
        errors.add(field, format!("must be at most {max} characters"));
    }
}

/// The tenant's type named by `id_or_name`.
pub async fn find(conn: &mut AnyConnection, tenant: &TenantId, id_or_name: &str) -> ApiResult<ObjectType> {
    let column = if id::is_valid(prefix::OBJECT_TYPE, id_or_name) { "id" } else { "name" };
    let row: Option<ObjectTypeRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM object_types WHERE tenant_id = $1 AND {column} = $2"))
            .bind(tenant.as_str())
            .bind(id_or_name)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(ObjectType::try_from).transpose()?.ok_or_else(|| ApiError::not_found("object type"))
}

/// Locks the type's row until the transaction ends (PostgreSQL): `exclusive` for a schema
/// change, shared for object writes, so that no object is written against a schema that is
/// changing under it.
pub async fn lock(conn: &mut AnyConnection, backend: Backend, type_id: &str, exclusive: bool) -> ApiResult<()> {
    Ok(crate::db::lock_row(conn, backend, "object_types", type_id, exclusive).await?)
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_object_types, create_object_type)).routes(routes!(
        get_object_type,
        update_object_type,
        delete_object_type
    ))
}

/// List object types
#[utoipa::path(get, path = "/v1/object-types", tag = "Object types", security(("bearer" = [])),
    params(crate::http::list::ListQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<ObjectType>>)))]
async fn list_object_types(auth: Auth, State(app): State<App>, params: ListParams) -> ApiResult<Data<Page<Value>>> {
    auth.require(OBJECT_TYPES_READ)?;
    let filter = Filter::new().eq("tenant_id", auth.tenant()?.as_str());
    let page: Page<ObjectTypeRow> = list::fetch(&app.db, &LIST, filter, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(ObjectType::try_from)?)?))
}

/// Create an object type
///
/// Needs the `schema` scope (or `object-types:write`).
#[utoipa::path(post, path = "/v1/object-types", tag = "Object types", security(("bearer" = [])),
    request_body = CreateObjectType,
    responses((status = 201, body = crate::http::response::Envelope<ObjectType>),
              (status = 409, body = crate::http::error::ErrorBody, description = "The name is taken")))]
async fn create_object_type(
    auth: Auth,
    State(app): State<App>,
    Json(body): Json<CreateObjectType>,
) -> ApiResult<Created<ObjectType>> {
    auth.require(OBJECT_TYPES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    validate_name(&body.name, &mut errors);
    let display_name = body.display_name.unwrap_or_else(|| title_case(&body.name));
    let display_name = crate::tenants::model::validate_name("display_name", &display_name, &mut errors);
    if let Some(description) = &body.description {
        validate_text("description", description, 2000, &mut errors);
    }
    errors.finish()?;
    let now = time::now();
    let object_type = ObjectType {
        id: id::new_id(prefix::OBJECT_TYPE),
        tenant_id: tenant.as_str().to_owned(),
        name: body.name,
        display_name,
        description: body.description,
        additional_properties: body.additional_properties.unwrap_or(false),
        created_at: now,
        updated_at: now,
    };
    let mut tx = app.db.begin_write().await?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM object_types WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(&mut *tx)
        .await?;
    if count >= TYPES_MAX {
        return Err(ApiError::invalid("name", format!("a tenant has at most {TYPES_MAX} object types")));
    }
    let inserted =
        sqlx::query(&format!("INSERT INTO object_types ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"))
            .bind(&object_type.id)
            .bind(&object_type.tenant_id)
            .bind(&object_type.name)
            .bind(&object_type.display_name)
            .bind(&object_type.description)
            .bind(i64::from(object_type.additional_properties))
            .bind(time::to_db(&now))
            .execute(&mut *tx)
            .await;
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => {
            return Err(ApiError::conflict(format!("an object type named `{}` exists", object_type.name)))
        }
        Err(error) => return Err(error.into()),
    }
    let entry = Entry {
        action: "object_type.created",
        resource_type: "object_type",
        resource_id: &object_type.id,
        changes: json!({ "name": object_type.name, "display_name": object_type.display_name }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let _changed = app.schemas_changing();
    tx.commit().await?;
    Ok(Created(object_type))
}

/// Get an object type
#[utoipa::path(get, path = "/v1/object-types/{object_type_id}", tag = "Object types", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id (`ot_...`) or name")),
    responses((status = 200, body = crate::http::response::Envelope<ObjectType>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_object_type(
    auth: Auth,
    State(app): State<App>,
    Path(id_or_name): Path<String>,
) -> ApiResult<Data<ObjectType>> {
    auth.require(OBJECT_TYPES_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(Data(find(&mut conn, auth.tenant()?, &id_or_name).await?))
}

/// Update an object type
///
/// Rename it, or change its display name, description or `additional_properties`.
#[utoipa::path(patch, path = "/v1/object-types/{object_type_id}", tag = "Object types", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = UpdateObjectType,
    responses((status = 200, body = crate::http::response::Envelope<ObjectType>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "The name is taken")))]
async fn update_object_type(
    auth: Auth,
    State(app): State<App>,
    Path(id_or_name): Path<String>,
    Json(body): Json<UpdateObjectType>,
) -> ApiResult<Data<ObjectType>> {
    auth.require(OBJECT_TYPES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    if let Some(name) = &body.name {
        validate_name(name, &mut errors);
    }
    let display_name = body
        .display_name
        .as_deref()
        .map(|name| crate::tenants::model::validate_name("display_name", name, &mut errors));
    if let Some(Some(description)) = &body.description {
        validate_text("description", description, 2000, &mut errors);
    }
    errors.finish()?;
    let mut tx = app.db.begin_write().await?;
    let mut object_type = find(&mut tx, tenant, &id_or_name).await?;
    if let Some(name) = body.name.clone() {
        object_type.name = name;
    }
    if let Some(display_name) = display_name {
        object_type.display_name = display_name;
    }
    if let Some(description) = body.description.clone() {
        object_type.description = description;
    }
    if let Some(additional) = body.additional_properties {
        object_type.additional_properties = additional;
    }
    object_type.updated_at = time::now();
    let updated = sqlx::query(
        "UPDATE object_types SET name = $1, display_name = $2, description = $3, additional_properties = $4, \
         updated_at = $5 WHERE id = $6 AND tenant_id = $7",
    )
    .bind(&object_type.name)
    .bind(&object_type.display_name)
    .bind(&object_type.description)
    .bind(i64::from(object_type.additional_properties))
    .bind(time::to_db(&object_type.updated_at))
    .bind(&object_type.id)
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await;
    match updated {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => {
            return Err(ApiError::conflict(format!("an object type named `{}` exists", object_type.name)))
        }
        Err(error) => return Err(error.into()),
    }
    let entry = Entry {
        action: "object_type.updated",
        resource_type: "object_type",
        resource_id: &object_type.id,
        changes: json!({
            "name": body.name, "display_name": body.display_name, "description": body.description,
            "additional_properties": body.additional_properties,
        }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let _changed = app.schemas_changing();
    tx.commit().await?;
    Ok(Data(object_type))
}

/// Delete an object type
///
/// Deletes the type. A type that others depend on answers 409 `DEPENDENCY_EXISTS` with a
/// `confirm_token`; `?force=true&confirm_token=...` then deletes them too.
#[utoipa::path(delete, path = "/v1/object-types/{object_type_id}", tag = "Object types", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"), DeleteParams),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "`DEPENDENCY_EXISTS`")))]
async fn delete_object_type(
    auth: Auth,
    State(app): State<App>,
    Path(id_or_name): Path<String>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Data<Deleted>> {
    auth.require(OBJECT_TYPES_DELETE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let object_type = find(&mut tx, tenant, &id_or_name).await?;
    let target = Target { scope: tenant.as_str(), resource_type: "object_type", resource_id: &object_type.id };
    let dependencies = crate::objects::type_dependants(&mut tx, &object_type).await?;
    if let Verdict::Refuse(dependencies) = deletion::check(&mut tx, target, dependencies, &params).await? {
        tx.rollback().await?;
        return Err(deletion::refuse(app.db.pool(), target, dependencies).await);
    }
    crate::objects::remove_type_dependants(&mut tx, tenant, &object_type).await?;
    sqlx::query("DELETE FROM object_types WHERE id = $1 AND tenant_id = $2")
        .bind(&object_type.id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    let entry = Entry {
        action: "object_type.deleted",
        resource_type: "object_type",
        resource_id: &object_type.id,
        changes: json!({ "name": object_type.name }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let _changed = app.schemas_changing();
    tx.commit().await?;
    Ok(Deleted::new(object_type.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_identifiers() {
        for good in ["contacts", "support_tickets", "a", "v2_items"] {
            assert!(is_identifier(good), "{good}");
        }
        for bad in ["", "Contacts", "2things", "_x", "with-dash", "with space", &"a".repeat(64)] {
            assert!(!is_identifier(bad), "{bad}");
        }
        assert_eq!(title_case("support_tickets"), "Support Tickets");
    }
}
