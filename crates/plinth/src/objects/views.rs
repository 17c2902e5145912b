//! Saved views (seed 002): a named filter, sort and set of columns over one object type,
//! checked against the type like a list query, applied with `GET /v1/objects/{type}/list?view=`.
//! Reading views needs reading the type's objects; changing them the `object-types:write` scope
//! (a view is shared by the whole tenant).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{AnyConnection, FromRow};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{count_leaves, parse_fields_list, parse_filters, parse_sort, Cond};
use super::Schema;
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::authz::access::readable;
use crate::authz::ObjectAction;
use crate::http::{ApiError, ApiResult, Created, Data, Json, Path};
use crate::id::{self, TenantId};
use crate::scopes::required::OBJECT_TYPES_WRITE;
use crate::time;

/// Most views of one type.
const VIEWS_MAX: i64 = 100;
/// Most columns of one view.
const COLUMNS_MAX: usize = 100;
/// The id prefix of views.
pub const PREFIX: &str = "view";

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_views, create_view)).routes(routes!(update_view, delete_view))
}

/// How a view orders its objects.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewSort {
    /// `id`, `created_at`, `updated_at` or a sortable property.
    pub property: String,
    /// `asc` or `desc` (default `asc`).
    #[serde(default)]
    pub direction: SortDirection,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortDirection {
    #[default]
    Asc,
    Desc,
}

impl ViewSort {
    /// The list's `sort` parameter it stands for: `price` or `-price`.
    pub fn as_param(&self) -> String {
        match self.direction {
            SortDirection::Asc => self.property.clone(),
            SortDirection::Desc => format!("-{}", self.property),
        }
    }
}

/// A saved view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct View {
    #[schema(example = "view_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub object_type_id: String,
    pub name: String,
    /// Conditions in the search language (`{"property", "op", "value"}`, `{"and": [...]}`,
    /// `{"or": [...]}`); all must hold.
    #[schema(value_type = Vec<Object>)]
    pub filters: Vec<Value>,
    pub sort: Option<ViewSort>,
    /// Object fields or property names to show; empty for all.
    pub columns: Vec<String>,
    pub created_by: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, FromRow)]
struct ViewRow {
    id: String,
    object_type_id: String,
    name: String,
    filters: String,
    sort: Option<String>,
    columns: String,
    created_by: Option<String>,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, object_type_id, name, filters, sort, columns, created_by, created_at, updated_at";

impl TryFrom<ViewRow> for View {
    type Error = ApiError;

    fn try_from(row: ViewRow) -> ApiResult<View> {
        Ok(View {
            filters: serde_json::from_str(&row.filters)?,
            sort: row.sort.as_deref().map(serde_json::from_str).transpose()?,
            columns: serde_json::from_str(&row.columns)?,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            id: row.id,
            object_type_id: row.object_type_id,
            name: row.name,
            created_by: row.created_by,
        })
    }
}

impl View {
    /// The view's conditions over `schema` (as the caller may query it), all of which must hold.
    pub fn condition(&self, schema: &Schema) -> ApiResult<Option<Cond>> {
        if self.filters.is_empty() {
            return Ok(None);
        }
        parse_filters(schema, Value::Array(self.filters.clone()), 0).map(Some).map_err(|problem| {
            ApiError::invalid(
                "view",
                format!("the view `{}` does not fit the type as you may read it: {problem}", self.name),
            )
        })
    }
}

/// A new view.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateView {
    /// 1 to 100 characters, unique within the type.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Conditions in the search language; all must hold. At most 50 in all.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub filters: Option<Vec<Value>>,
    pub sort: Option<ViewSort>,
    /// Object fields or property names, at most 100.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

/// Changes to a view: what is given replaces what it held (`sort: null` removes the sort).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateView {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub filters: Option<Vec<Value>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<ViewSort>)]
    pub sort: Option<Option<ViewSort>>,
    pub columns: Option<Vec<String>>,
}

/// Checks a view's parts against `schema`, naming each problem by field.
fn check(schema: &Schema, name: &str, filters: &[Value], sort: Option<&ViewSort>, columns: &[String]) -> ApiResult<()> {
    let mut errors = crate::http::error::FieldErrors::default();
    let length = name.trim().chars().count();
    if length == 0 || name.chars().count() > 100 {
        errors.add("name", "must be 1 to 100 characters");
    }
    match parse_filters(schema, Value::Array(filters.to_vec()), 0).and_then(|cond| count_leaves(&cond, 0)) {
        Ok(n) if n > super::query::CONDITIONS_MAX => {
            errors.add("filters", format!("at most {} conditions", super::query::CONDITIONS_MAX))
        }
        Ok(_) => {}
        Err(problem) => errors.add("filters", problem),
    }
    if let Some(sort) = sort {
        if let Err(problem) = parse_sort(schema, Some(&sort.as_param()), None) {
            errors.add("sort", problem);
        }
    }
    if columns.len() > COLUMNS_MAX {
        errors.add("columns", format!("at most {COLUMNS_MAX} columns"));
    }
    parse_fields_list(schema, columns, "columns", &mut errors);
    errors.finish()
}

async fn find(conn: &mut AnyConnection, object_type_id: &str, view_id: &str) -> ApiResult<View> {
    let row: Option<ViewRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM object_views WHERE id = $1 AND object_type_id = $2"))
            .bind(view_id)
            .bind(object_type_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(View::try_from).transpose()?.ok_or_else(|| ApiError::not_found("view"))
}

/// The view `view_id` of `schema`'s type, for a list.
pub async fn load(conn: &mut AnyConnection, schema: &Schema, view_id: &str) -> ApiResult<View> {
    find(conn, &schema.object_type.id, view_id).await
}

async fn name_taken(conn: &mut AnyConnection, object_type_id: &str, name: &str, other_than: &str) -> ApiResult<bool> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT id FROM object_views WHERE object_type_id = $1 AND name = $2 AND id <> $3")
            .bind(object_type_id)
            .bind(name)
            .bind(other_than)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some())
}

async fn audit_change(tx: &mut crate::db::WriteTx, who: &Who, action: &str, view: &View) -> ApiResult<()> {
    let entry = Entry {
        action,
        resource_type: "view",
        resource_id: &view.id,
        changes: json!({ "object_type_id": view.object_type_id, "name": view.name }),
    };
    audit::record(&mut **tx, who, None, entry).await?;
    Ok(())
}

/// List saved views
///
/// Every view of the type, by name. Needs reading the type's objects.
#[utoipa::path(get, path = "/v1/object-types/{object_type_id}/views", tag = "Views", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    responses((status = 200, body = crate::http::response::Envelope<Vec<View>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn list_views(auth: Auth, State(app): State<App>, Path(type_ref): Path<String>) -> ApiResult<Data<Vec<View>>> {
    let mut conn = app.db.pool().acquire().await?;
    let (type_access, _) = readable(&app, &mut conn, &auth, &type_ref, ObjectAction::Select).await?;
    let rows: Vec<ViewRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM object_views WHERE object_type_id = $1 ORDER BY name, id"))
            .bind(&type_access.schema.object_type.id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(Data(rows.into_iter().map(View::try_from).collect::<ApiResult<_>>()?))
}

/// Create a saved view
///
/// `filters` (the search language), `sort` and `columns` are checked against the type like a
/// list query (422 naming the field). Needs `object-types:write`; 409 when the name is taken.
#[utoipa::path(post, path = "/v1/object-types/{object_type_id}/views", tag = "Views", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = CreateView,
    responses((status = 201, body = crate::http::response::Envelope<View>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_view(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    Json(body): Json<CreateView>,
) -> ApiResult<Created<View>> {
    auth.require(OBJECT_TYPES_WRITE)?;
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load(&mut tx, tenant, &type_ref).await?;
    let filters = body.filters.unwrap_or_default();
    let columns = body.columns.unwrap_or_default();
    check(&schema, &body.name, &filters, body.sort.as_ref(), &columns)?;
    let name = body.name.trim().to_owned();
    if name_taken(&mut tx, &schema.object_type.id, &name, "").await? {
        return Err(ApiError::conflict(format!("the type has a view named `{name}`")));
    }
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM object_views WHERE object_type_id = $1")
        .bind(&schema.object_type.id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= VIEWS_MAX {
        return Err(ApiError::conflict(format!("a type holds at most {VIEWS_MAX} views: delete one first")));
    }
    let id = id::new_id(PREFIX);
    let now = time::to_db(&time::now());
    sqlx::query(&format!(
        "INSERT INTO object_views ({COLUMNS}, tenant_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)"
    ))
    .bind(&id)
    .bind(&schema.object_type.id)
    .bind(&name)
    .bind(serde_json::to_string(&filters)?)
    .bind(body.sort.as_ref().map(serde_json::to_string).transpose()?)
    .bind(serde_json::to_string(&columns)?)
    .bind(who.actor_id.as_deref().unwrap_or(who.actor_type))
    .bind(&now)
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await?;
    let view = find(&mut tx, &schema.object_type.id, &id).await?;
    audit_change(&mut tx, &who, "view.created", &view).await?;
    tx.commit().await?;
    Ok(Created(view))
}

/// Update a saved view
///
/// Replaces the parts given, checked like a new view's.
#[utoipa::path(patch, path = "/v1/object-types/{object_type_id}/views/{view_id}", tag = "Views",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("view_id" = String, Path, description = "The view's id")),
    request_body = UpdateView,
    responses((status = 200, body = crate::http::response::Envelope<View>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_view(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, view_id)): Path<(String, String)>,
    Json(body): Json<UpdateView>,
) -> ApiResult<Data<View>> {
    auth.require(OBJECT_TYPES_WRITE)?;
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load(&mut tx, tenant, &type_ref).await?;
    let view = find(&mut tx, &schema.object_type.id, &view_id).await?;
    let name = body.name.unwrap_or(view.name.clone());
    let filters = body.filters.unwrap_or(view.filters.clone());
    let sort = body.sort.unwrap_or(view.sort.clone());
    let columns = body.columns.unwrap_or(view.columns.clone());
    check(&schema, &name, &filters, sort.as_ref(), &columns)?;
    let name = name.trim().to_owned();
    if name_taken(&mut tx, &schema.object_type.id, &name, &view.id).await? {
        return Err(ApiError::conflict(format!("the type has a view named `{name}`")));
    }
    sqlx::query(
        "UPDATE object_views SET name = $1, filters = $2, sort = $3, columns = $4, updated_at = $5 WHERE id = $6",
    )
    .bind(&name)
    .bind(serde_json::to_string(&filters)?)
    .bind(sort.as_ref().map(serde_json::to_string).transpose()?)
    .bind(serde_json::to_string(&columns)?)
    .bind(time::to_db(&time::now()))
    .bind(&view.id)
    .execute(&mut *tx)
    .await?;
    let view = find(&mut tx, &schema.object_type.id, &view.id).await?;
    audit_change(&mut tx, &who, "view.updated", &view).await?;
    tx.commit().await?;
    Ok(Data(view))
}

/// Delete a saved view
#[utoipa::path(delete, path = "/v1/object-types/{object_type_id}/views/{view_id}", tag = "Views",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("view_id" = String, Path, description = "The view's id")),
    responses((status = 200, body = crate::http::response::Envelope<crate::http::Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_view(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, view_id)): Path<(String, String)>,
) -> ApiResult<Data<crate::http::Deleted>> {
    auth.require(OBJECT_TYPES_WRITE)?;
    let tenant: &TenantId = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load(&mut tx, tenant, &type_ref).await?;
    let view = find(&mut tx, &schema.object_type.id, &view_id).await?;
    sqlx::query("DELETE FROM object_views WHERE id = $1").bind(&view.id).execute(&mut *tx).await?;
    audit_change(&mut tx, &who, "view.deleted", &view).await?;
    tx.commit().await?;
    Ok(crate::http::Deleted::new(view.id))
}
