//! Roles of a tenant's end users (`/v1/roles`): a name, permissions in the scope grammar
//! (`objects.<type>:<action>` among them), an optional parent whose grants they inherit, and
//! properties of a type they may not read or write. `authenticated` (every signed-in user) and
//! `anon` are built in and start with no permissions. Assignments take effect on the user's next
//! request, on every node.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{AnyConnection, FromRow};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Denial, ANON, AUTHENTICATED};
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::db::{is_unique_violation, WriteTx};
use crate::deletion::{self, DeleteParams, Dependency, Target, Verdict};
use crate::events::{self, Event};
use crate::http::error::FieldErrors;
use crate::http::list::{self, Filter, ListSpec, SortField};
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, ListParams, Page, Path, Query};
use crate::id::{self, prefix};
use crate::scopes::required::{ROLES_DELETE, ROLES_READ, ROLES_WRITE};
use crate::time;

/// Most roles of one tenant.
pub const ROLES_MAX: i64 = 200;
/// Most permissions of one role.
const PERMISSIONS_MAX: usize = 100;
/// Most entries of `denied_properties`.
const DENIALS_MAX: usize = 100;
/// How deep inheritance goes.
const DEPTH_MAX: usize = 16;

/// A role.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Role {
    #[schema(example = "role_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    /// Lowercase letters, digits, `_` and `-`; unique in the tenant.
    pub name: String,
    pub description: Option<String>,
    /// What holders may do: scopes (`webhooks:read`, `read`, ...) and `objects.<type>:<action>`.
    pub permissions: Vec<String>,
    /// The role whose grants (and denials) this one inherits.
    pub parent_role_id: Option<String>,
    /// Properties holders may not read (absent from every answer and event that reaches them)
    /// or write.
    pub denied_properties: Vec<DeniedProperties>,
    /// `authenticated` and `anon`: cannot be renamed or deleted.
    pub built_in: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Properties of one type a role may not read or write.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeniedProperties {
    /// The type's id (a name is accepted when writing).
    pub object_type_id: String,
    /// Properties holders may not read (nor filter or sort by).
    #[serde(default)]
    pub read: Vec<String>,
    /// Properties holders may not set.
    #[serde(default)]
    pub write: Vec<String>,
}

#[derive(Debug, FromRow)]
struct RoleRow {
    id: String,
    name: String,
    description: Option<String>,
    permissions: String,
    parent_role_id: Option<String>,
    denied_properties: String,
    built_in: i64,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str =
    "id, name, description, permissions, parent_role_id, denied_properties, built_in, created_at, updated_at";

impl TryFrom<RoleRow> for Role {
    type Error = ApiError;

    fn try_from(row: RoleRow) -> ApiResult<Role> {
        let denied: Vec<Denial> = serde_json::from_str(&row.denied_properties)?;
        Ok(Role {
            id: row.id,
            name: row.name,
            description: row.description,
            permissions: serde_json::from_str(&row.permissions)?,
            parent_role_id: row.parent_role_id,
            denied_properties: denied
                .into_iter()
                .map(|d| DeniedProperties { object_type_id: d.object_type_id, read: d.read, write: d.write })
                .collect(),
            built_in: row.built_in != 0,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
        })
    }
}

pub(crate) const LIST: ListSpec = ListSpec {
    table: "roles",
    columns: COLUMNS,
    sortable: &[SortField { name: "name", column: "name" }, SortField { name: "created_at", column: "created_at" }],
    fields: &[
        "id",
        "name",
        "description",
        "permissions",
        "parent_role_id",
        "denied_properties",
        "built_in",
        "created_at",
        "updated_at",
    ],
    updated_at: true,
};

/// Creates the built-in roles of a new tenant, in its creating transaction.
pub async fn create_built_ins(conn: &mut AnyConnection, tenant: &TenantId) -> ApiResult<()> {
    let now = time::to_db(&time::now());
    for (name, description) in [
        (AUTHENTICATED, "Every signed-in end user"),
        (ANON, "Requests without a credential, on the public routes that accept them"),
    ] {
        sqlx::query(
            "INSERT INTO roles (id, tenant_id, name, description, permissions, parent_role_id, denied_properties, \
             built_in, created_at, updated_at) VALUES ($1, $2, $3, $4, '[]', NULL, '[]', 1, $5, $5) \
             ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(id::new_id(prefix::ROLE))
        .bind(tenant)
        .bind(name)
        .bind(description)
        .bind(&now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Gives every tenant made before roles existed its built-in roles (at start).
pub async fn backfill_built_ins(db: &crate::db::Db) -> ApiResult<()> {
    let missing: Vec<(TenantId,)> = sqlx::query_as(
        "SELECT id FROM tenants t WHERE NOT EXISTS (SELECT 1 FROM roles r WHERE r.tenant_id = t.id AND r.built_in = 1)",
    )
    .fetch_all(db.pool())
    .await?;
    for (tenant,) in missing {
        let mut tx = db.begin_write().await?;
        create_built_ins(&mut tx, &tenant).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// A role of `tenant` by id or name.
pub async fn find(conn: &mut AnyConnection, tenant: &TenantId, id_or_name: &str) -> ApiResult<Role> {
    let column = if id::is_valid(prefix::ROLE, id_or_name) { "id" } else { "name" };
    let row: Option<RoleRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM roles WHERE tenant_id = $1 AND {column} = $2"))
            .bind(tenant.as_str())
            .bind(id_or_name)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(Role::try_from).transpose()?.ok_or_else(|| ApiError::not_found("role"))
}

fn check_name(name: &str, errors: &mut FieldErrors) {
    let ok = !name.is_empty()
        && name.len() <= crate::users::ROLES_MAX_CHARS
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        errors.add("name", "must be 1 to 64 lowercase letters, digits, `_` or `-`, starting with a letter");
    }
}

fn check_description(description: Option<&str>, errors: &mut FieldErrors) {
    if description.is_some_and(|d| d.chars().count() > 500) {
        errors.add("description", "must be at most 500 characters");
    }
}

/// Validated, de-duplicated permissions, none wider than the granting credential's own scopes
/// (a key may not make a role, and through it a user, hold what the key lacks).
fn check_permissions(auth: &Auth, permissions: &[String], errors: &mut FieldErrors) -> Vec<String> {
    if permissions.len() > PERMISSIONS_MAX {
        errors.add("permissions", format!("at most {PERMISSIONS_MAX} permissions"));
    }
    let mut out: Vec<String> = Vec::with_capacity(permissions.len());
    for permission in permissions {
        if !crate::scopes::is_valid(permission) {
            errors.add(
                "permissions",
                format!("`{permission}` is not a permission: use a scope (`webhooks:read`, `read`, ...) or `objects.<type>:<action>`"),
            );
        } else if !auth.is_admin() && !crate::scopes::covers(auth.scopes(), permission) {
            errors.add("permissions", format!("`{permission}` is wider than the scopes of the credential granting it"));
        } else if !out.iter().any(|p| p == permission) {
            out.push(permission.to_string());
        }
    }
    out
}

/// Checks `denied_properties` against the tenant's types, answering them by type id.
async fn check_denials(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    denials: &[DeniedProperties],
    errors: &mut FieldErrors,
) -> ApiResult<Vec<Denial>> {
    if denials.len() > DENIALS_MAX {
        errors.add("denied_properties", format!("at most {DENIALS_MAX} entries"));
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(denials.len());
    for (index, denial) in denials.iter().enumerate() {
        let field = format!("denied_properties[{index}]");
        let schema = match crate::objects::Schema::load(conn, tenant, &denial.object_type_id).await {
            Ok(schema) => schema,
            Err(error) if error.code == crate::http::ErrorCode::NotFound => {
                errors.add(&field, format!("no object type `{}`", denial.object_type_id));
                continue;
            }
            Err(error) => return Err(error),
        };
        for name in denial.read.iter().chain(&denial.write) {
            if schema.property(name).is_none() {
                errors.add(&field, format!("`{}` has no property `{name}`", schema.object_type.name));
            }
        }
        if denial.read.is_empty() && denial.write.is_empty() {
            errors.add(&field, "name properties under `read` or `write`");
        }
        out.push(Denial {
            object_type_id: schema.object_type.id.clone(),
            read: denial.read.clone(),
            write: denial.write.clone(),
        });
    }
    Ok(out)
}

/// The permissions `role_id` holds, its ancestors' included.
async fn effective_permissions(conn: &mut AnyConnection, tenant: &TenantId, role_id: &str) -> ApiResult<Vec<String>> {
    let mut permissions = Vec::new();
    let mut at = Some(role_id.to_string());
    for _ in 0..=DEPTH_MAX {
        let Some(current) = at else { break };
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT permissions, parent_role_id FROM roles WHERE id = $1 AND tenant_id = $2")
                .bind(&current)
                .bind(tenant.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        let Some((granted, parent)) = row else { break };
        permissions.extend(serde_json::from_str::<Vec<String>>(&granted)?);
        at = parent;
    }
    Ok(permissions)
}

/// Refuses (403) to hand out `role_id` (as a parent, an assignment or a user's `role`) when it
/// holds a permission wider than the handing credential's scopes: no one passes on more than
/// they hold.
pub async fn check_grantable(conn: &mut AnyConnection, auth: &Auth, tenant: &TenantId, role_id: &str) -> ApiResult<()> {
    if auth.is_admin() {
        return Ok(());
    }
    for permission in effective_permissions(conn, tenant, role_id).await? {
        if !crate::scopes::covers(auth.scopes(), &permission) {
            return Err(ApiError::forbidden(format!(
                "the role holds `{permission}`, which your credential lacks: it cannot hand the role out"
            )));
        }
    }
    Ok(())
}

/// The role named `name` of `tenant`, when there is one: `check_grantable` for a user's `role`.
pub async fn check_grantable_name(
    conn: &mut AnyConnection,
    auth: &Auth,
    tenant: &TenantId,
    name: &str,
) -> ApiResult<()> {
    let found: Option<(String,)> = sqlx::query_as("SELECT id FROM roles WHERE tenant_id = $1 AND name = $2")
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    match found {
        Some((id,)) => check_grantable(conn, auth, tenant, &id).await,
        None => Ok(()),
    }
}

/// Checks that `parent` exists and that making it `role`'s parent makes no cycle; its id.
async fn check_parent(
    conn: &mut AnyConnection,
    auth: &Auth,
    tenant: &TenantId,
    role: Option<&str>,
    parent: &str,
    errors: &mut FieldErrors,
) -> ApiResult<Option<String>> {
    let parent = match find(conn, tenant, parent).await {
        Ok(parent) => parent,
        Err(error) if error.code == crate::http::ErrorCode::NotFound => {
            errors.add("parent_role_id", format!("no role `{parent}`"));
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    check_grantable(conn, auth, tenant, &parent.id).await?;
    let mut at = Some(parent.id.clone());
    for _ in 0..=DEPTH_MAX {
        let Some(current) = at else { return Ok(Some(parent.id)) };
        if Some(current.as_str()) == role {
            errors.add("parent_role_id", "would make a cycle: a role cannot inherit from itself or its descendants");
            return Ok(None);
        }
        let next: Option<(Option<String>,)> =
            sqlx::query_as("SELECT parent_role_id FROM roles WHERE id = $1 AND tenant_id = $2")
                .bind(&current)
                .bind(tenant.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        at = next.and_then(|(parent,)| parent);
    }
    errors.add("parent_role_id", format!("inheritance goes at most {DEPTH_MAX} roles deep"));
    Ok(None)
}

async fn record(
    tx: &mut WriteTx,
    auth: &Auth,
    tenant: &TenantId,
    action: &str,
    id: &str,
    data: Value,
) -> ApiResult<()> {
    let kind = format!("role.{action}");
    let entry = Entry { action: &kind, resource_type: "role", resource_id: id, changes: data.clone() };
    audit::record(&mut **tx, &Who::from(auth), None, entry).await?;
    let event = Event { kind: &kind, resource_type: "role", resource_id: id, data };
    events::record(tx, tenant, event).await?;
    Ok(())
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_roles, create_role))
        .routes(routes!(get_role, update_role, delete_role))
        .routes(routes!(set_permissions))
        .routes(routes!(assign_role))
        .routes(routes!(user_roles))
        .routes(routes!(remove_user_role))
}

/// A new role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    #[schema(value_type = crate::http::shapes::Name)]
    pub name: String,
    pub description: Option<String>,
    /// A role (id or name) whose grants this one inherits.
    pub parent_role_id: Option<String>,
    /// Default none.
    #[schema(value_type = Option<Vec<crate::http::shapes::Scope>>, max_items = 100)]
    pub permissions: Option<Vec<String>>,
    #[schema(max_items = 100)]
    pub denied_properties: Option<Vec<DeniedProperties>>,
}

/// Changes to a role; absent fields keep their value, `null` clears the parent.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRole {
    #[schema(value_type = Option<crate::http::shapes::Name>)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<String>)]
    pub parent_role_id: Option<Option<String>>,
    #[schema(value_type = Option<Vec<crate::http::shapes::Scope>>, max_items = 100)]
    pub permissions: Option<Vec<String>>,
    #[schema(max_items = 100)]
    pub denied_properties: Option<Vec<DeniedProperties>>,
}

/// The permissions of a role, replacing the ones it had.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPermissions {
    #[schema(value_type = Vec<crate::http::shapes::Scope>, max_items = 100)]
    pub permissions: Vec<String>,
}

/// A role to give a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRole {
    pub user_id: String,
    /// The role's id or name.
    pub role_id: String,
}

/// A user's hold on a role.
#[derive(Debug, Serialize, ToSchema)]
pub struct Assignment {
    pub user_id: String,
    pub role_id: String,
    pub role: String,
    pub assigned: bool,
}

/// A role a user holds, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserRole {
    pub id: String,
    pub name: String,
    pub permissions: Vec<String>,
    /// `assigned` (`POST /v1/roles/assign`), `built_in` (`authenticated`), `user` (the user's
    /// `role` field) or `inherited` (a parent of another held role).
    pub via: String,
}

/// List roles
///
/// The tenant's roles, the built-in `authenticated` and `anon` among them.
#[utoipa::path(get, path = "/v1/roles", tag = "Roles", security(("bearer" = [])),
    params(crate::http::list::ListQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<Role>>)))]
async fn list_roles(auth: Auth, State(app): State<App>, params: ListParams) -> ApiResult<Data<Page<Value>>> {
    auth.require(ROLES_READ)?;
    let filter = Filter::new().eq("tenant_id", auth.tenant()?.as_str());
    let page: Page<RoleRow> = list::fetch(&app.db, &LIST, filter, &params).await?;
    Ok(Data(params.project(&LIST, page.try_map(Role::try_from)?)?))
}

/// Create role
///
/// A role with its permissions (scopes and `objects.<type>:<action>`), an optional parent
/// (`parent_role_id`, cycles refused) and properties it may not read or write.
#[utoipa::path(post, path = "/v1/roles", tag = "Roles", security(("bearer" = [])),
    request_body = CreateRole,
    responses((status = 201, body = crate::http::response::Envelope<Role>),
              (status = 409, body = crate::http::error::ErrorBody, description = "The name is taken"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_role(auth: Auth, State(app): State<App>, Json(body): Json<CreateRole>) -> ApiResult<Created<Role>> {
    auth.require(ROLES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    check_name(&body.name, &mut errors);
    check_description(body.description.as_deref(), &mut errors);
    let permissions = check_permissions(&auth, body.permissions.as_deref().unwrap_or_default(), &mut errors);
    let mut tx = app.db.begin_write().await?;
    let denied =
        check_denials(&mut tx, tenant, body.denied_properties.as_deref().unwrap_or_default(), &mut errors).await?;
    let parent = match &body.parent_role_id {
        Some(parent) => check_parent(&mut tx, &auth, tenant, None, parent, &mut errors).await?,
        None => None,
    };
    errors.finish()?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM roles WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(&mut *tx)
        .await?;
    if count >= ROLES_MAX {
        return Err(ApiError::invalid("name", format!("a tenant has at most {ROLES_MAX} roles")));
    }
    let id = id::new_id(prefix::ROLE);
    let now = time::to_db(&time::now());
    let inserted = sqlx::query(
        "INSERT INTO roles (id, tenant_id, name, description, permissions, parent_role_id, denied_properties, \
         built_in, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
    )
    .bind(&id)
    .bind(tenant.as_str())
    .bind(&body.name)
    .bind(&body.description)
    .bind(json!(permissions).to_string())
    .bind(&parent)
    .bind(json!(denied).to_string())
    .bind(&now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(error) if is_unique_violation(&error) => {
            return Err(ApiError::conflict(format!("a role named `{}` exists", body.name)))
        }
        other => other?,
    };
    let role = find(&mut tx, tenant, &id).await?;
    record(&mut tx, &auth, tenant, "created", &id, json!({ "role": role })).await?;
    // Users whose `role` field names it hold it from now on.
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Created(role))
}

/// Get role
#[utoipa::path(get, path = "/v1/roles/{role_id}", tag = "Roles", security(("bearer" = [])),
    params(("role_id" = String, Path, description = "The role's id or name")),
    responses((status = 200, body = crate::http::response::Envelope<Role>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn get_role(auth: Auth, State(app): State<App>, Path(role_ref): Path<String>) -> ApiResult<Data<Role>> {
    auth.require(ROLES_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(Data(find(&mut conn, auth.tenant()?, &role_ref).await?))
}

/// Writes `role` back with its audit record and event, and commits: holders are affected from
/// their next request on.
async fn save(
    app: &App,
    mut tx: WriteTx,
    auth: &Auth,
    tenant: &TenantId,
    role: &Role,
    denied: &[Denial],
) -> ApiResult<Role> {
    store(&mut tx, tenant, role, denied).await?;
    let role = find(&mut tx, tenant, &role.id).await?;
    record(&mut tx, auth, tenant, "updated", &role.id, json!({ "role": role })).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(role)
}

/// Writes `role` back, as changed.
async fn store(tx: &mut WriteTx, tenant: &TenantId, role: &Role, denied: &[Denial]) -> ApiResult<()> {
    let updated = sqlx::query(
        "UPDATE roles SET name = $1, description = $2, permissions = $3, parent_role_id = $4, denied_properties = $5, \
         updated_at = $6 WHERE id = $7 AND tenant_id = $8",
    )
    .bind(&role.name)
    .bind(&role.description)
    .bind(json!(role.permissions).to_string())
    .bind(&role.parent_role_id)
    .bind(json!(denied).to_string())
    .bind(time::to_db(&time::now()))
    .bind(&role.id)
    .bind(tenant.as_str())
    .execute(&mut **tx)
    .await;
    match updated {
        Err(error) if is_unique_violation(&error) => {
            Err(ApiError::conflict(format!("a role named `{}` exists", role.name)))
        }
        other => other.map(|_| ()).map_err(ApiError::from),
    }
}

fn denials_of(role: &Role) -> Vec<Denial> {
    role.denied_properties
        .iter()
        .map(|d| Denial { object_type_id: d.object_type_id.clone(), read: d.read.clone(), write: d.write.clone() })
        .collect()
}

/// Update role
///
/// Renames it (not a built-in one), changes its description, parent, permissions or denied
/// properties. Holders are affected from their next request on.
#[utoipa::path(patch, path = "/v1/roles/{role_id}", tag = "Roles", security(("bearer" = [])),
    params(("role_id" = String, Path, description = "The role's id or name")),
    request_body = UpdateRole,
    responses((status = 200, body = crate::http::response::Envelope<Role>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_role(
    auth: Auth,
    State(app): State<App>,
    Path(role_ref): Path<String>,
    Json(body): Json<UpdateRole>,
) -> ApiResult<Data<Role>> {
    auth.require(ROLES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let mut role = find(&mut tx, tenant, &role_ref).await?;
    let mut errors = FieldErrors::default();
    if let Some(name) = body.name {
        check_name(&name, &mut errors);
        if role.built_in && name != role.name {
            errors.add("name", "a built-in role cannot be renamed");
        }
        role.name = name;
    }
    if let Some(description) = body.description {
        check_description(description.as_deref(), &mut errors);
        role.description = description;
    }
    if let Some(permissions) = body.permissions {
        role.permissions = check_permissions(&auth, &permissions, &mut errors);
    }
    let mut denied = denials_of(&role);
    if let Some(denials) = body.denied_properties {
        denied = check_denials(&mut tx, tenant, &denials, &mut errors).await?;
    }
    if let Some(parent) = body.parent_role_id {
        role.parent_role_id = match parent {
            Some(parent) => check_parent(&mut tx, &auth, tenant, Some(&role.id), &parent, &mut errors).await?,
            None => None,
        };
    }
    errors.finish()?;
    Ok(Data(save(&app, tx, &auth, tenant, &role, &denied).await?))
}

/// Assign permissions to role
///
/// Replaces the role's permissions. Holders gain or lose them from their next request on.
#[utoipa::path(put, path = "/v1/roles/{role_id}/permissions", tag = "Roles", security(("bearer" = [])),
    params(("role_id" = String, Path, description = "The role's id or name")),
    request_body = SetPermissions,
    responses((status = 200, body = crate::http::response::Envelope<Role>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn set_permissions(
    auth: Auth,
    State(app): State<App>,
    Path(role_ref): Path<String>,
    Json(body): Json<SetPermissions>,
) -> ApiResult<Data<Role>> {
    auth.require(ROLES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    let permissions = check_permissions(&auth, &body.permissions, &mut errors);
    errors.finish()?;
    let mut tx = app.db.begin_write().await?;
    let mut role = find(&mut tx, tenant, &role_ref).await?;
    role.permissions = permissions;
    let denied = denials_of(&role);
    Ok(Data(save(&app, tx, &auth, tenant, &role, &denied).await?))
}

/// Delete role
///
/// A role that users hold, that policies name or that other roles inherit from answers 409
/// `DEPENDENCY_EXISTS` with a `confirm_token`; `?force=true&confirm_token=...` then removes the
/// assignments and those policies, and the inheriting roles lose their parent. Built-in roles
/// cannot be deleted.
#[utoipa::path(delete, path = "/v1/roles/{role_id}", tag = "Roles", security(("bearer" = [])),
    params(("role_id" = String, Path, description = "The role's id or name"), DeleteParams),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "`DEPENDENCY_EXISTS`"),
              (status = 422, body = crate::http::error::ErrorBody, description = "A built-in role")))]
async fn delete_role(
    auth: Auth,
    State(app): State<App>,
    Path(role_ref): Path<String>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Data<Deleted>> {
    auth.require(ROLES_DELETE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let role = find(&mut tx, tenant, &role_ref).await?;
    if role.built_in {
        return Err(ApiError::invalid("role_id", "a built-in role cannot be deleted"));
    }
    let holders = count(&mut tx, "SELECT COUNT(*) FROM user_roles WHERE role_id = $1", &role.id).await?;
    let policies = count(&mut tx, "SELECT COUNT(*) FROM object_policies WHERE role_id = $1", &role.id).await?;
    let children = count(&mut tx, "SELECT COUNT(*) FROM roles WHERE parent_role_id = $1", &role.id).await?;
    let dependencies = vec![
        Dependency { kind: "users", count: holders, label: "users who hold this role" },
        Dependency { kind: "policies", count: policies, label: "row policies of this role" },
        Dependency { kind: "roles", count: children, label: "roles that inherit from this role" },
    ];
    let target = Target { scope: tenant.as_str(), resource_type: "role", resource_id: &role.id };
    if let Verdict::Refuse(dependencies) = deletion::check(&mut tx, target, dependencies, &params).await? {
        tx.rollback().await?;
        return Err(deletion::refuse(app.db.pool(), target, dependencies).await);
    }
    for sql in [
        "DELETE FROM user_roles WHERE role_id = $1",
        "DELETE FROM object_policies WHERE role_id = $1",
        "UPDATE roles SET parent_role_id = NULL WHERE parent_role_id = $1",
        "DELETE FROM roles WHERE id = $1",
    ] {
        sqlx::query(sql).bind(&role.id).execute(&mut *tx).await?;
    }
    record(&mut tx, &auth, tenant, "deleted", &role.id, json!({ "role": role })).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Deleted::new(role.id))
}

async fn count(conn: &mut AnyConnection, sql: &str, id: &str) -> ApiResult<i64> {
    let (n,): (i64,) = sqlx::query_as(sql).bind(id).fetch_one(&mut *conn).await?;
    Ok(n)
}

async fn find_user(conn: &mut AnyConnection, tenant: &TenantId, user_id: &str) -> ApiResult<crate::users::UserRow> {
    crate::users::find(conn, tenant, user_id).await?.ok_or_else(|| ApiError::not_found("user"))
}

/// Assign role to user
///
/// The user holds the role (and what it inherits) from their next request on. Assigning a role
/// the user holds already changes nothing.
#[utoipa::path(post, path = "/v1/roles/assign", tag = "Roles", security(("bearer" = [])),
    request_body = AssignRole,
    responses((status = 200, body = crate::http::response::Envelope<Assignment>),
              (status = 404, body = crate::http::error::ErrorBody, description = "No such user or role"),
              (status = 422, body = crate::http::error::ErrorBody, description = "A built-in role")))]
async fn assign_role(auth: Auth, State(app): State<App>, Json(body): Json<AssignRole>) -> ApiResult<Data<Assignment>> {
    auth.require(ROLES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let user = find_user(&mut tx, tenant, &body.user_id).await?;
    let role = find(&mut tx, tenant, &body.role_id).await?;
    check_grantable(&mut tx, &auth, tenant, &role.id).await?;
    if role.built_in {
        return Err(ApiError::invalid(
            "role_id",
            "built-in roles are not assigned: every signed-in user holds `authenticated`, and `anon` is for requests without a credential",
        ));
    }
    let added = sqlx::query(
        "INSERT INTO user_roles (user_id, role_id, tenant_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, role_id) DO NOTHING",
    )
    .bind(&user.id)
    .bind(&role.id)
    .bind(tenant.as_str())
    .bind(time::to_db(&time::now()))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added > 0 {
        record(&mut tx, &auth, tenant, "assigned", &role.id, json!({ "role_id": role.id, "user_id": user.id })).await?;
    }
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(Assignment { user_id: user.id, role_id: role.id, role: role.name, assigned: true }))
}

/// List user roles
///
/// Every role the user holds, and why: assigned, built in, named on the user, or inherited.
#[utoipa::path(get, path = "/v1/users/{user_id}/roles", tag = "Roles", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The user's id")),
    responses((status = 200, body = crate::http::response::Envelope<Page<UserRole>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn user_roles(
    auth: Auth,
    State(app): State<App>,
    Path(user_id): Path<String>,
) -> ApiResult<Data<Page<UserRole>>> {
    auth.require(ROLES_READ)?;
    let tenant = auth.tenant()?;
    let mut conn = app.db.pool().acquire().await?;
    let user = find_user(&mut conn, tenant, &user_id).await?;
    let assigned: Vec<(String,)> = sqlx::query_as("SELECT role_id FROM user_roles WHERE user_id = $1")
        .bind(&user.id)
        .fetch_all(&mut *conn)
        .await?;
    let (access, _) = super::load_user(&mut conn, tenant, &user.id, &user.role, Value::Null).await?;
    let mut results = Vec::with_capacity(access.roles.len());
    for held in access.roles {
        let role = find(&mut conn, tenant, &held.id).await?;
        let via = if assigned.iter().any(|(id,)| *id == held.id) {
            "assigned"
        } else if held.name == AUTHENTICATED {
            "built_in"
        } else if held.name == user.role {
            "user"
        } else {
            "inherited"
        };
        results.push(UserRole { id: held.id, name: held.name, permissions: role.permissions, via: via.into() });
    }
    let total = results.len() as i64;
    Ok(Data(Page { results, next_cursor: None, total }))
}

/// Remove role from user
///
/// The user loses the role from their next request on. 404 when they were not assigned it.
#[utoipa::path(delete, path = "/v1/roles/{role_id}/users/{user_id}", tag = "Roles", security(("bearer" = [])),
    params(("role_id" = String, Path, description = "The role's id or name"),
           ("user_id" = String, Path, description = "The user's id")),
    responses((status = 200, body = crate::http::response::Envelope<Assignment>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn remove_user_role(
    auth: Auth,
    State(app): State<App>,
    Path((role_ref, user_id)): Path<(String, String)>,
) -> ApiResult<Data<Assignment>> {
    auth.require(ROLES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let role = find(&mut tx, tenant, &role_ref).await?;
    let removed = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role_id = $2 AND tenant_id = $3")
        .bind(&user_id)
        .bind(&role.id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ApiError::not_found("role assignment"));
    }
    record(&mut tx, &auth, tenant, "unassigned", &role.id, json!({ "role_id": role.id, "user_id": user_id })).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(Assignment { user_id, role_id: role.id, role: role.name, assigned: false }))
}
