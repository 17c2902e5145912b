//! Row-level policies of an object type (`/v1/object-types/{type}/policies`): per action and
//! role, a condition in the filter language the list and search routes speak, whose values may
//! name the caller (`$auth.user_id`, `$auth.role`, `$auth.roles`, `$auth.metadata.<key>`,
//! `$now`) and which may name the system fields (`id`, `created_by`, `created_at`,
//! `updated_at`). A condition is checked when it is written, so it never fails when read; at
//! request time it compiles into the SQL of every read and write.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::AnyConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Caller, ObjectAction};
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::events::{self, Event};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Created, Data, Deleted, Json, Page, Path};
use crate::id::{self, prefix};
use crate::objects::query::{self, check_op, field_leaf, parse_filters_with, Cond, Field};
use crate::objects::types::{DataType, Op};
use crate::objects::Schema;
use crate::scopes::required::{POLICIES_DELETE, POLICIES_READ, POLICIES_WRITE};
use crate::time;

/// Most policies on one type.
pub const POLICIES_MAX: i64 = 100;
/// Most conditions in one policy.
const CONDITIONS_MAX: usize = 50;
/// Actions a policy applies to.
pub const ACTIONS: &[&str] = &["select", "insert", "update", "delete", "all"];

/// A row-level policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Policy {
    #[schema(example = "pol_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub object_type_id: String,
    pub name: String,
    /// `select`, `insert`, `update`, `delete` or `all`.
    pub action: String,
    /// The role it applies to (its name); `null`: every end user.
    pub role: Option<String>,
    pub role_id: Option<String>,
    /// The condition a row must meet (for `insert` and `update`, the row as written too); `{}`:
    /// every row.
    #[schema(value_type = Object)]
    pub condition_json: Value,
    pub enabled: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A stored policy as the request path reads it.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub action: String,
    pub role_id: Option<String>,
    pub condition: Value,
}

impl Rule {
    pub fn applies_to(&self, action: ObjectAction) -> bool {
        self.action == "all" || self.action == action.policy_name()
    }
}

type PolicyRow = (String, String, String, String, Option<String>, Option<String>, String, i64, String, String);

const COLUMNS: &str = "p.id, p.object_type_id, p.name, p.action, p.role_id, r.name, p.condition_json, p.enabled, \
                       p.created_at, p.updated_at";

fn from_row(row: PolicyRow) -> ApiResult<Policy> {
    let (id, object_type_id, name, action, role_id, role, condition, enabled, created_at, updated_at) = row;
    Ok(Policy {
        id,
        object_type_id,
        name,
        action,
        role,
        role_id,
        condition_json: serde_json::from_str(&condition)?,
        enabled: enabled != 0,
        created_at: time::from_db(&created_at)?,
        updated_at: time::from_db(&updated_at)?,
    })
}

/// The enabled policies of a type, for the request path.
pub async fn enabled_rules(conn: &mut AnyConnection, object_type_id: &str) -> ApiResult<Vec<Rule>> {
    let rows: Vec<(String, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT id, name, action, role_id, condition_json FROM object_policies \
         WHERE object_type_id = $1 AND enabled = 1 ORDER BY created_at, id",
    )
    .bind(object_type_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(id, name, action, role_id, condition)| {
            Ok(Rule { id, name, action, role_id, condition: serde_json::from_str(&condition)? })
        })
        .collect()
}

/// A caller-dependent value in a condition.
#[derive(Debug, Clone, PartialEq)]
enum Var {
    UserId,
    Role,
    Roles,
    Metadata(String),
    Now,
}

/// The variable `text` names; `None` when it is a plain value.
fn variable(text: &str) -> Option<Result<Var, String>> {
    if !text.starts_with('$') {
        return None;
    }
    Some(match text {
        "$auth.user_id" => Ok(Var::UserId),
        "$auth.role" => Ok(Var::Role),
        "$auth.roles" => Ok(Var::Roles),
        "$now" => Ok(Var::Now),
        _ => match text.strip_prefix("$auth.metadata.") {
            Some(key)
                if !key.is_empty()
                    && key.len() <= 64
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Ok(Var::Metadata(key.to_string()))
            }
            _ => Err(format!(
                "unknown variable `{text}`: use $auth.user_id, $auth.role, $auth.roles, $auth.metadata.<key> or $now"
            )),
        },
    })
}

/// `$now` in the form `field` compares in.
fn now_for(field: &Field, now: &time::Timestamp) -> Result<Value, String> {
    match field.data_type() {
        DataType::Datetime => Ok(Value::String(now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())),
        DataType::Date => Ok(Value::String(now.format("%Y-%m-%d").to_string())),
        _ => Err(format!("`$now` compares with date and date-time fields, not `{}`", field.name())),
    }
}

/// How a condition's variables are read.
enum Values<'a> {
    /// Checking a condition as it is written: stand-ins of the right shape.
    Check,
    /// Compiling for a caller.
    Of(&'a Caller),
}

/// What one value of a condition becomes: a value, or nothing (the caller has no such value).
fn substitute(
    value: Value,
    field: &Field,
    op: Op,
    values: &Values,
    now: &time::Timestamp,
) -> Result<Option<Value>, String> {
    match value {
        Value::String(text) => match variable(&text) {
            None => Ok(Some(Value::String(text))),
            Some(var) => resolve(var?, field, op, values, now),
        },
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                // Each item is one value of an `in` list.
                match substitute(item, field, Op::In, values, now)? {
                    Some(Value::Array(many)) => out.extend(many),
                    Some(one) => out.push(one),
                    // A value known only for a caller: the list is checked for one.
                    None if matches!(values, Values::Check) => return Ok(None),
                    None => {}
                }
            }
            Ok(Some(Value::Array(out)))
        }
        other => Ok(Some(other)),
    }
}

/// A stand-in user id, for checking that `$auth.user_id` fits a field.
const SAMPLE_USER: &str = "usr_01jd8x3k4m5n6p7q8r9s0t1v2w";

fn resolve(var: Var, field: &Field, op: Op, values: &Values, now: &time::Timestamp) -> Result<Option<Value>, String> {
    if var == Var::Roles && op != Op::In {
        return Err("`$auth.roles` is a list: compare with `in`".into());
    }
    let caller = match values {
        Values::Check => {
            return Ok(match var {
                Var::UserId => Some(Value::String(SAMPLE_USER.into())),
                Var::Role => Some(Value::String(super::AUTHENTICATED.into())),
                Var::Roles => Some(json!([super::AUTHENTICATED])),
                // Any JSON: whether it fits is known only for a caller.
                Var::Metadata(_) => None,
                Var::Now => Some(now_for(field, now)?),
            });
        }
        Values::Of(caller) => caller,
    };
    Ok(match var {
        Var::UserId => caller.user_id.clone().map(Value::String),
        Var::Role => caller.role.clone().map(Value::String),
        Var::Roles => Some(json!(caller.roles)),
        Var::Metadata(key) => caller.metadata.get(&key).cloned().filter(|v| !v.is_null()),
        Var::Now => Some(now_for(field, now)?),
    })
}

/// A condition with nothing in it (`{}`, `[]` or `null`): every row.
fn is_empty_condition(condition: &Value) -> bool {
    match condition {
        Value::Null => true,
        Value::Object(fields) => fields.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn parse(schema: &Schema, condition: &Value, values: &Values, now: &time::Timestamp) -> Result<Cond, String> {
    if is_empty_condition(condition) {
        return Ok(Cond::All(Vec::new()));
    }
    let checking = matches!(values, Values::Check);
    let mut leaf = |name: &str, op: Op, value: Value| -> Result<Cond, String> {
        let field = Field::of(schema, name, true)?;
        check_op(&field, op)?;
        let label = field.name().to_string();
        match substitute(value, &field, op, values, now) {
            // For a caller, values of an `in` list that cannot match (a role outside an enum's
            // values, say) are dropped rather than failing the whole list.
            Ok(Some(Value::Array(items))) if !checking && op == Op::In => {
                let items: Vec<Value> = items.into_iter().filter(|item| field.scalar(item.clone()).is_ok()).collect();
                if items.is_empty() {
                    return Ok(Cond::Never);
                }
                field_leaf(field, op, Value::Array(items)).or(Ok(Cond::Never))
            }
            Ok(Some(value)) => match field_leaf(field, op, value) {
                Ok(cond) => Ok(cond),
                Err(problem) if checking => Err(format!("`{label}`: {problem}")),
                // The caller's value does not fit: this condition matches nothing.
                Err(_) => Ok(Cond::Never),
            },
            Ok(None) => Ok(Cond::Never),
            Err(problem) => Err(format!("`{label}`: {problem}")),
        }
    };
    let cond = parse_filters_with(condition.clone(), 0, &mut leaf)?;
    let leaves = query::count_leaves(&cond, 0)?;
    if leaves > CONDITIONS_MAX {
        return Err(format!("at most {CONDITIONS_MAX} conditions"));
    }
    Ok(cond)
}

/// Checks a condition as it is written: every property and system field named exists, every
/// operator applies, every value and variable fits its field.
pub fn check(schema: &Schema, condition: &Value) -> Result<(), String> {
    parse(schema, condition, &Values::Check, &time::now()).map(|_| ())
}

/// The rows `rule` admits for `caller`. A condition that no longer fits the schema (a property
/// removed since) admits nothing.
pub fn compile(schema: &Schema, rule: &Rule, caller: &Caller, now: &time::Timestamp) -> Cond {
    parse(schema, &rule.condition, &Values::Of(caller), now).unwrap_or(Cond::Never)
}

/// Finds a role of `tenant` by id or name.
async fn role_id(conn: &mut AnyConnection, tenant: &TenantId, role: &str) -> ApiResult<Option<String>> {
    let column = if id::is_valid(prefix::ROLE, role) { "id" } else { "name" };
    let found: Option<(String,)> =
        sqlx::query_as(&format!("SELECT id FROM roles WHERE tenant_id = $1 AND {column} = $2"))
            .bind(tenant.as_str())
            .bind(role)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.map(|(id,)| id))
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_policies, create_policy)).routes(routes!(update_policy, delete_policy))
}

/// A new policy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// 1 to 100 characters.
    pub name: String,
    /// `select`, `insert`, `update`, `delete` or `all`.
    pub action: String,
    /// A role's name or id; absent or `null`: every end user.
    pub role: Option<String>,
    /// The filter language of `POST /v1/objects/{type}/search`, over properties and `id`,
    /// `created_by`, `created_at`, `updated_at`; values may be `$auth.user_id`, `$auth.role`,
    /// `$auth.roles`, `$auth.metadata.<key>` or `$now`. `{}`: every row.
    #[schema(value_type = Object)]
    pub condition_json: Option<Value>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// Changes to a policy; absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    pub name: Option<String>,
    pub action: Option<String>,
    /// A role's name or id; `null`: every end user.
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<String>)]
    pub role: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub condition_json: Option<Value>,
    pub enabled: Option<bool>,
}

struct Checked {
    name: String,
    action: String,
    role_id: Option<String>,
    condition: Value,
    enabled: bool,
}

async fn check_fields(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    schema: &Schema,
    name: &str,
    action: &str,
    role: Option<&str>,
    condition: &Value,
) -> ApiResult<Option<String>> {
    let mut errors = FieldErrors::default();
    if name.trim().is_empty() || name.chars().count() > 100 {
        errors.add("name", "must be 1 to 100 characters");
    }
    if !ACTIONS.contains(&action) {
        errors.add("action", format!("must be one of: {}", ACTIONS.join(", ")));
    }
    if let Err(problem) = check(schema, condition) {
        errors.add("condition_json", problem);
    }
    let role_id = match role {
        Some(role) => {
            let found = role_id(conn, tenant, role).await?;
            if found.is_none() {
                errors.add("role", format!("no role `{role}`"));
            }
            found
        }
        None => None,
    };
    errors.finish()?;
    Ok(role_id)
}

async fn view(conn: &mut AnyConnection, object_type_id: &str, policy_id: &str) -> ApiResult<Policy> {
    let row: Option<PolicyRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM object_policies p LEFT JOIN roles r ON r.id = p.role_id \
         WHERE p.id = $1 AND p.object_type_id = $2"
    ))
    .bind(policy_id)
    .bind(object_type_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(from_row).transpose()?.ok_or_else(|| ApiError::not_found("policy"))
}

async fn record(
    tx: &mut crate::db::WriteTx,
    auth: &Auth,
    tenant: &TenantId,
    action: &str,
    policy: &Policy,
) -> ApiResult<()> {
    let kind = format!("policy.{action}");
    let entry = Entry {
        action: &kind,
        resource_type: "policy",
        resource_id: &policy.id,
        changes: json!({ "object_type_id": policy.object_type_id, "name": policy.name, "action": policy.action,
                         "role_id": policy.role_id, "condition_json": policy.condition_json, "enabled": policy.enabled }),
    };
    audit::record(&mut **tx, &Who::from(auth), None, entry).await?;
    let event =
        Event { kind: &kind, resource_type: "policy", resource_id: &policy.id, data: json!({ "policy": policy }) };
    events::record(tx, tenant, event).await?;
    Ok(())
}

/// List access policies
///
/// Every policy of the type, oldest first (at most 100, so one page).
#[utoipa::path(get, path = "/v1/object-types/{object_type_id}/policies", tag = "Policies", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    responses((status = 200, body = crate::http::response::Envelope<Page<Policy>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn list_policies(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
) -> ApiResult<Data<Page<Policy>>> {
    auth.require(POLICIES_READ)?;
    let mut conn = app.db.pool().acquire().await?;
    let object_type = crate::object_types::find(&mut conn, auth.tenant()?, &type_ref).await?;
    let rows: Vec<PolicyRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM object_policies p LEFT JOIN roles r ON r.id = p.role_id \
         WHERE p.object_type_id = $1 ORDER BY p.created_at, p.id"
    ))
    .bind(&object_type.id)
    .fetch_all(&mut *conn)
    .await?;
    let results: Vec<Policy> = rows.into_iter().map(from_row).collect::<ApiResult<_>>()?;
    let total = results.len() as i64;
    Ok(Data(Page { results, next_cursor: None, total }))
}

/// Create access policy
///
/// A row-level policy for end users: rows of the type they may `select`, `insert`, `update` or
/// `delete` (or `all` of them). Policies of one action are OR'd; with none, end users reach no
/// row. A bad condition (unknown property, wrong type, unknown variable) is 422 now.
#[utoipa::path(post, path = "/v1/object-types/{object_type_id}/policies", tag = "Policies", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = CreatePolicy,
    responses((status = 201, body = crate::http::response::Envelope<Policy>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_policy(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    Json(body): Json<CreatePolicy>,
) -> ApiResult<Created<Policy>> {
    auth.require(POLICIES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let condition = body.condition_json.unwrap_or_else(|| json!({}));
    let role_id =
        check_fields(&mut tx, tenant, &schema, &body.name, &body.action, body.role.as_deref(), &condition).await?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM object_policies WHERE object_type_id = $1")
        .bind(&schema.object_type.id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= POLICIES_MAX {
        return Err(ApiError::invalid("object_type_id", format!("a type has at most {POLICIES_MAX} policies")));
    }
    let checked = Checked {
        name: body.name.trim().to_string(),
        action: body.action,
        role_id,
        condition,
        enabled: body.enabled.unwrap_or(true),
    };
    let id = id::new_id(prefix::POLICY);
    let now = time::to_db(&time::now());
    sqlx::query(
        "INSERT INTO object_policies (id, tenant_id, object_type_id, name, action, role_id, condition_json, enabled, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(&id)
    .bind(tenant.as_str())
    .bind(&schema.object_type.id)
    .bind(&checked.name)
    .bind(&checked.action)
    .bind(&checked.role_id)
    .bind(checked.condition.to_string())
    .bind(i64::from(checked.enabled))
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    let policy = view(&mut tx, &schema.object_type.id, &id).await?;
    record(&mut tx, &auth, tenant, "created", &policy).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Created(policy))
}

/// Update access policy
///
/// Changes its name, action, role, condition or whether it is enabled; checked as on creation.
#[utoipa::path(patch, path = "/v1/object-types/{object_type_id}/policies/{policy_id}", tag = "Policies",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("policy_id" = String, Path, description = "The policy's id")),
    request_body = UpdatePolicy,
    responses((status = 200, body = crate::http::response::Envelope<Policy>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_policy(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, policy_id)): Path<(String, String)>,
    Json(body): Json<UpdatePolicy>,
) -> ApiResult<Data<Policy>> {
    auth.require(POLICIES_WRITE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let current = view(&mut tx, &schema.object_type.id, &policy_id).await?;
    let name = body.name.unwrap_or(current.name);
    let action = body.action.unwrap_or(current.action);
    let condition = body.condition_json.unwrap_or(current.condition_json);
    let role = match body.role {
        Some(role) => role,
        None => current.role_id,
    };
    let role_id = check_fields(&mut tx, tenant, &schema, &name, &action, role.as_deref(), &condition).await?;
    let enabled = body.enabled.unwrap_or(current.enabled);
    sqlx::query(
        "UPDATE object_policies SET name = $1, action = $2, role_id = $3, condition_json = $4, enabled = $5, \
         updated_at = $6 WHERE id = $7 AND object_type_id = $8",
    )
    .bind(name.trim())
    .bind(&action)
    .bind(&role_id)
    .bind(condition.to_string())
    .bind(i64::from(enabled))
    .bind(time::to_db(&time::now()))
    .bind(&policy_id)
    .bind(&schema.object_type.id)
    .execute(&mut *tx)
    .await?;
    let policy = view(&mut tx, &schema.object_type.id, &policy_id).await?;
    record(&mut tx, &auth, tenant, "updated", &policy).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Data(policy))
}

/// Delete access policy
///
/// End users lose what it granted from their next request on.
#[utoipa::path(delete, path = "/v1/object-types/{object_type_id}/policies/{policy_id}", tag = "Policies",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("policy_id" = String, Path, description = "The policy's id")),
    responses((status = 200, body = crate::http::response::Envelope<Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_policy(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, policy_id)): Path<(String, String)>,
) -> ApiResult<Data<Deleted>> {
    auth.require(POLICIES_DELETE)?;
    let tenant = auth.tenant()?;
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let policy = view(&mut tx, &schema.object_type.id, &policy_id).await?;
    sqlx::query("DELETE FROM object_policies WHERE id = $1").bind(&policy.id).execute(&mut *tx).await?;
    record(&mut tx, &auth, tenant, "deleted", &policy).await?;
    let _changed = app.credentials_changing();
    tx.commit().await?;
    Ok(Deleted::new(policy.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_named_exactly() {
        assert_eq!(variable("plain"), None);
        assert_eq!(variable("$auth.user_id"), Some(Ok(Var::UserId)));
        assert_eq!(variable("$auth.metadata.team"), Some(Ok(Var::Metadata("team".into()))));
        assert!(matches!(variable("$auth.email"), Some(Err(_))));
        assert!(matches!(variable("$auth.metadata."), Some(Err(_))));
        assert!(matches!(variable("$auth.metadata.a b"), Some(Err(_))));
        assert!(is_empty_condition(&json!({})) && is_empty_condition(&Value::Null));
        assert!(!is_empty_condition(&json!({"property": "x", "op": "eq", "value": 1})));
    }
}
