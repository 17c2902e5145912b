//! Approval workflows (seed 002): a type's workflow is ordered stages, each with its approvers
//! (roles, users, keys) and how many approvals it needs. Submitting an object opens a review at
//! the first stage; each stage's approvers approve it on to the next, until it is approved, or
//! reject it back to draft with a reason. Only a stage's approvers act. A workflow may lock its
//! objects while in review (updates and deletes are 409). Every step is kept, audited and
//! emitted as a `workflow.*` event.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{AnyConnection, FromRow};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::routes::fetch_for;
use super::store::fetch_visible;
use super::Schema;
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Actor, Auth};
use crate::authz::access::readable;
use crate::authz::{ObjectAction, ObjectGuard};
use crate::db::WriteTx;
use crate::events::{self, Event};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Created, Data, Json, OptionalJson, Path};
use crate::id::{self, TenantId};
use crate::scopes::required::OBJECT_TYPES_WRITE;
use crate::time;

const STAGES_MAX: usize = 10;
const APPROVERS_MAX: usize = 50;
const APPROVALS_MAX: i64 = 20;
const TEXT_MAX: usize = 2_000;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_workflows, create_workflow))
        .routes(routes!(update_workflow, delete_workflow))
        .routes(routes!(submit))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(workflow_status))
}

/// Who may act at a stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    /// Role names: an end user holding one approves.
    #[serde(default)]
    pub roles: Vec<String>,
    /// End users' ids.
    #[serde(default)]
    pub users: Vec<String>,
    /// API keys' ids (a key and its tokens).
    #[serde(default)]
    pub keys: Vec<String>,
}

/// One stage of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// 1 to 100 characters, unique in the workflow.
    pub name: String,
    pub approvers: Approvers,
    /// Approvals by different approvers the stage needs: 1 (default) to 20.
    #[serde(default = "one")]
    pub required_approvals: i64,
}

fn one() -> i64 {
    1
}

/// A workflow.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Workflow {
    #[schema(example = "wf_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub object_type_id: String,
    pub name: String,
    pub stages: Vec<Stage>,
    /// Objects in review may not be changed or deleted.
    pub lock_in_review: bool,
    /// The type's one enabled workflow is the one submissions use.
    pub enabled: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, FromRow)]
struct WorkflowRow {
    id: String,
    object_type_id: String,
    name: String,
    stages: String,
    lock_in_review: i64,
    enabled: i64,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, object_type_id, name, stages, lock_in_review, enabled, created_at, updated_at";

impl TryFrom<WorkflowRow> for Workflow {
    type Error = ApiError;

    fn try_from(row: WorkflowRow) -> ApiResult<Workflow> {
        Ok(Workflow {
            stages: serde_json::from_str(&row.stages)?,
            lock_in_review: row.lock_in_review != 0,
            enabled: row.enabled != 0,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            id: row.id,
            object_type_id: row.object_type_id,
            name: row.name,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// 1 to 10 stages, in order.
    #[schema(min_items = 1, max_items = 10)]
    pub stages: Vec<Stage>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Default false.
    pub lock_in_review: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkflow {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(min_items = 1, max_items = 10)]
    pub stages: Option<Vec<Stage>>,
    pub enabled: Option<bool>,
    pub lock_in_review: Option<bool>,
}

/// Checks a workflow's name and stages; the approvers must exist in the tenant.
async fn check(conn: &mut AnyConnection, tenant: &TenantId, name: &str, stages: &[Stage]) -> ApiResult<()> {
    let mut errors = FieldErrors::default();
    let length = name.trim().chars().count();
    if length == 0 || name.chars().count() > 100 {
        errors.add("name", "must be 1 to 100 characters");
    }
    if stages.is_empty() || stages.len() > STAGES_MAX {
        errors.add("stages", format!("a workflow has 1 to {STAGES_MAX} stages"));
    }
    for (index, stage) in stages.iter().enumerate() {
        let field = format!("stages[{index}]");
        let length = stage.name.trim().chars().count();
        if length == 0 || stage.name.chars().count() > 100 {
            errors.add(&format!("{field}.name"), "must be 1 to 100 characters");
        }
        if stages[..index].iter().any(|s| s.name == stage.name) {
            errors.add(&format!("{field}.name"), "is the name of an earlier stage");
        }
        if !(1..=APPROVALS_MAX).contains(&stage.required_approvals) {
            errors.add(&format!("{field}.required_approvals"), format!("must be 1 to {APPROVALS_MAX}"));
        }
        let a = &stage.approvers;
        let count = a.roles.len() + a.users.len() + a.keys.len();
        if count == 0 || count > APPROVERS_MAX {
            errors.add(&format!("{field}.approvers"), format!("name 1 to {APPROVERS_MAX} roles, users or keys"));
        }
        for role in &a.roles {
            if crate::authz::roles::find(conn, tenant, role).await.is_err() {
                errors.add(&format!("{field}.approvers.roles"), format!("no role `{role}`"));
            }
        }
        for (table, ids, what) in [("users", &a.users, "user"), ("api_keys", &a.keys, "key")] {
            for id in ids {
                let found: Option<(String,)> =
                    sqlx::query_as(&format!("SELECT id FROM {table} WHERE id = $1 AND tenant_id = $2"))
                        .bind(id)
                        .bind(tenant.as_str())
                        .fetch_optional(&mut *conn)
                        .await?;
                if found.is_none() {
                    errors.add(&format!("{field}.approvers.{table}"), format!("no {what} `{id}`"));
                }
            }
        }
    }
    errors.finish()
}

async fn find(conn: &mut AnyConnection, object_type_id: &str, workflow_id: &str) -> ApiResult<Workflow> {
    let row: Option<WorkflowRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM workflows WHERE id = $1 AND object_type_id = $2"))
            .bind(workflow_id)
            .bind(object_type_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(Workflow::try_from).transpose()?.ok_or_else(|| ApiError::not_found("workflow"))
}

/// The workflow `workflow_id`, whatever its type.
async fn by_id(conn: &mut AnyConnection, workflow_id: &str) -> ApiResult<Option<Workflow>> {
    let row: Option<WorkflowRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM workflows WHERE id = $1"))
        .bind(workflow_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(Workflow::try_from).transpose()
}

/// Refuses a name another workflow of the type has (409).
async fn check_name_free(
    conn: &mut AnyConnection,
    object_type_id: &str,
    name: &str,
    other_than: &str,
) -> ApiResult<()> {
    let taken: Option<(String,)> =
        sqlx::query_as("SELECT id FROM workflows WHERE object_type_id = $1 AND name = $2 AND id <> $3")
            .bind(object_type_id)
            .bind(name)
            .bind(other_than)
            .fetch_optional(&mut *conn)
            .await?;
    match taken {
        Some(_) => Err(ApiError::conflict(format!("the type has a workflow named `{name}`"))),
        None => Ok(()),
    }
}

/// Refuses a second enabled workflow of a type.
async fn check_one_enabled(conn: &mut AnyConnection, object_type_id: &str, other_than: &str) -> ApiResult<()> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT name FROM workflows WHERE object_type_id = $1 AND enabled = 1 AND id <> $2")
            .bind(object_type_id)
            .bind(other_than)
            .fetch_optional(&mut *conn)
            .await?;
    match found {
        Some((name,)) => {
            Err(ApiError::conflict(format!("the workflow `{name}` is enabled: a type has one enabled workflow")))
        }
        None => Ok(()),
    }
}

/// List workflows
#[utoipa::path(get, path = "/v1/object-types/{object_type_id}/workflows", tag = "Workflows", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    responses((status = 200, body = crate::http::response::Envelope<Vec<Workflow>>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn list_workflows(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
) -> ApiResult<Data<Vec<Workflow>>> {
    let mut conn = app.db.pool().acquire().await?;
    let (type_access, _) = readable(&app, &mut conn, &auth, &type_ref, ObjectAction::Select).await?;
    let rows: Vec<WorkflowRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM workflows WHERE object_type_id = $1 ORDER BY name, id"))
            .bind(&type_access.schema.object_type.id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(Data(rows.into_iter().map(Workflow::try_from).collect::<ApiResult<_>>()?))
}

/// Create workflow
///
/// Stages in order, each naming its approvers (roles, users, keys of the tenant) and the
/// approvals it needs. Needs `object-types:write`; 409 when the name is taken or another
/// workflow of the type is enabled.
#[utoipa::path(post, path = "/v1/object-types/{object_type_id}/workflows", tag = "Workflows", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = CreateWorkflow,
    responses((status = 201, body = crate::http::response::Envelope<Workflow>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn create_workflow(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    Json(body): Json<CreateWorkflow>,
) -> ApiResult<Created<Workflow>> {
    auth.require(OBJECT_TYPES_WRITE)?;
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load(&mut tx, tenant, &type_ref).await?;
    check(&mut tx, tenant, &body.name, &body.stages).await?;
    let name = body.name.trim().to_owned();
    check_name_free(&mut tx, &schema.object_type.id, &name, "").await?;
    let enabled = body.enabled.unwrap_or(true);
    if enabled {
        check_one_enabled(&mut tx, &schema.object_type.id, "").await?;
    }
    let id = id::new_id("wf");
    let now = time::to_db(&time::now());
    sqlx::query(&format!("INSERT INTO workflows ({COLUMNS}, tenant_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)"))
        .bind(&id)
        .bind(&schema.object_type.id)
        .bind(&name)
        .bind(serde_json::to_string(&body.stages)?)
        .bind(i64::from(body.lock_in_review.unwrap_or(false)))
        .bind(i64::from(enabled))
        .bind(&now)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    let workflow = find(&mut tx, &schema.object_type.id, &id).await?;
    let entry = Entry {
        action: "workflow.created",
        resource_type: "workflow",
        resource_id: &id,
        changes: json!({ "name": name }),
    };
    audit::record(&mut *tx, &who, None, entry).await?;
    tx.commit().await?;
    Ok(Created(workflow))
}

/// Update workflow
///
/// Replaces what is given. Reviews under way keep their stage number; stages renamed or
/// removed apply to them from the next step on.
#[utoipa::path(patch, path = "/v1/object-types/{object_type_id}/workflows/{workflow_id}", tag = "Workflows",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("workflow_id" = String, Path, description = "The workflow's id")),
    request_body = UpdateWorkflow,
    responses((status = 200, body = crate::http::response::Envelope<Workflow>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn update_workflow(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, workflow_id)): Path<(String, String)>,
    Json(body): Json<UpdateWorkflow>,
) -> ApiResult<Data<Workflow>> {
    auth.require(OBJECT_TYPES_WRITE)?;
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load(&mut tx, tenant, &type_ref).await?;
    let workflow = find(&mut tx, &schema.object_type.id, &workflow_id).await?;
    let name = body.name.unwrap_or(workflow.name.clone()).trim().to_owned();
    let stages = body.stages.unwrap_or(workflow.stages.clone());
    check(&mut tx, tenant, &name, &stages).await?;
    check_name_free(&mut tx, &schema.object_type.id, &name, &workflow.id).await?;
    let enabled = body.enabled.unwrap_or(workflow.enabled);
    if enabled {
        check_one_enabled(&mut tx, &schema.object_type.id, &workflow.id).await?;
    }
    sqlx::query(
        "UPDATE workflows SET name = $1, stages = $2, enabled = $3, lock_in_review = $4, updated_at = $5 WHERE id = $6",
    )
    .bind(&name)
    .bind(serde_json::to_string(&stages)?)
    .bind(i64::from(enabled))
    .bind(i64::from(body.lock_in_review.unwrap_or(workflow.lock_in_review)))
    .bind(time::to_db(&time::now()))
    .bind(&workflow.id)
    .execute(&mut *tx)
    .await?;
    let workflow = find(&mut tx, &schema.object_type.id, &workflow.id).await?;
    let entry = Entry {
        action: "workflow.updated",
        resource_type: "workflow",
        resource_id: &workflow.id,
        changes: json!({ "name": workflow.name, "enabled": workflow.enabled }),
    };
    audit::record(&mut *tx, &who, None, entry).await?;
    tx.commit().await?;
    Ok(Data(workflow))
}

/// Delete workflow
///
/// Deletes it with its reviews' records. When reviews are under way, the answer is 409
/// `DEPENDENCY_EXISTS` with a `confirm_token`; send it back to delete anyway.
#[utoipa::path(delete, path = "/v1/object-types/{object_type_id}/workflows/{workflow_id}", tag = "Workflows",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("workflow_id" = String, Path, description = "The workflow's id"), crate::deletion::DeleteParams),
    responses((status = 200, body = crate::http::response::Envelope<crate::http::Deleted>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "`DEPENDENCY_EXISTS`")))]
async fn delete_workflow(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, workflow_id)): Path<(String, String)>,
    crate::http::Query(params): crate::http::Query<crate::deletion::DeleteParams>,
) -> ApiResult<Data<crate::http::Deleted>> {
    auth.require(OBJECT_TYPES_WRITE)?;
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load(&mut tx, tenant, &type_ref).await?;
    let workflow = find(&mut tx, &schema.object_type.id, &workflow_id).await?;
    let (active,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM workflow_runs WHERE workflow_id = $1 AND status = 'in_review'")
            .bind(&workflow.id)
            .fetch_one(&mut *tx)
            .await?;
    let target =
        crate::deletion::Target { scope: tenant.as_str(), resource_type: "workflow", resource_id: &workflow.id };
    let dependencies = vec![crate::deletion::Dependency {
        kind: "reviews",
        count: active,
        label: "objects in review under this workflow, whose reviews end with it",
    }];
    if let crate::deletion::Verdict::Refuse(dependencies) =
        crate::deletion::check(&mut tx, target, dependencies, &params).await?
    {
        tx.rollback().await?;
        return Err(crate::deletion::refuse(app.db.pool(), target, dependencies).await);
    }
    sqlx::query("DELETE FROM workflows WHERE id = $1").bind(&workflow.id).execute(&mut *tx).await?;
    let entry = Entry {
        action: "workflow.deleted",
        resource_type: "workflow",
        resource_id: &workflow.id,
        changes: json!({ "name": workflow.name }),
    };
    audit::record(&mut *tx, &who, None, entry).await?;
    tx.commit().await?;
    Ok(crate::http::Deleted::new(workflow.id))
}

// ---- Reviews ----

#[derive(Debug, FromRow)]
struct RunRow {
    id: String,
    workflow_id: String,
    status: String,
    stage: i64,
    reason: Option<String>,
}

/// The review of `object_id` in progress, if any, with its workflow.
async fn active_run(conn: &mut AnyConnection, object_id: &str) -> ApiResult<Option<(RunRow, Workflow)>> {
    let run: Option<RunRow> = sqlx::query_as(
        "SELECT id, workflow_id, status, stage, reason FROM workflow_runs WHERE object_id = $1 AND status = 'in_review'",
    )
    .bind(object_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(run) = run else { return Ok(None) };
    let workflow = by_id(conn, &run.workflow_id).await?.ok_or_else(|| ApiError::not_found("workflow"))?;
    Ok(Some((run, workflow)))
}

/// Refuses a change to an object a locking review holds (409).
pub async fn check_unlocked(conn: &mut AnyConnection, object_id: &str) -> ApiResult<()> {
    let locked: Option<(String,)> =
        sqlx::query_as("SELECT id FROM workflow_runs WHERE object_id = $1 AND status = 'in_review' AND locks = 1")
            .bind(object_id)
            .fetch_optional(&mut *conn)
            .await?;
    match locked {
        Some(_) => {
            Err(ApiError::conflict("the object is in review and its workflow locks it: approve or reject it first"))
        }
        None => Ok(()),
    }
}

/// True when `auth` is one of `stage`'s approvers.
fn approves(auth: &Auth, stage: &Stage) -> bool {
    match &auth.actor {
        Actor::User { user_id, .. } => {
            stage.approvers.users.contains(user_id)
                || auth
                    .access
                    .as_ref()
                    .is_some_and(|a| a.role_names().iter().any(|r| stage.approvers.roles.contains(r)))
        }
        Actor::ApiKey { key_id } | Actor::Token { key_id, .. } => stage.approvers.keys.contains(key_id),
        _ => false,
    }
}

async fn step(
    tx: &mut WriteTx,
    run_id: &str,
    stage: i64,
    action: &str,
    auth: &Auth,
    comment: Option<&str>,
) -> ApiResult<()> {
    let (actor_type, actor_id) = auth.actor.principal();
    sqlx::query(
        "INSERT INTO workflow_steps (id, run_id, stage, action, actor_type, actor_id, comment, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id::new_id("wfs"))
    .bind(run_id)
    .bind(stage)
    .bind(action)
    .bind(actor_type)
    .bind(actor_id.as_deref())
    .bind(comment)
    .bind(time::to_db(&time::now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a review's step in the outbox and the audit trail.
async fn tell(
    tx: &mut WriteTx,
    who: &Who,
    tenant: &TenantId,
    kind: &str,
    schema: &Schema,
    object_id: &str,
    data: Value,
) -> ApiResult<()> {
    let mut payload = json!({ "object_type": schema.object_type.name, "object_id": object_id });
    if let (Value::Object(payload), Value::Object(data)) = (&mut payload, data) {
        payload.extend(data);
    }
    let event = Event { kind, resource_type: "object", resource_id: object_id, data: payload.clone() };
    events::record(tx, tenant, event).await?;
    audit::record(
        &mut **tx,
        who,
        None,
        Entry { action: kind, resource_type: "object", resource_id: object_id, changes: payload },
    )
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    pub submitted: bool,
    /// The first stage.
    pub stage: String,
}

/// Submit for review
///
/// Opens a review of the object under its type's enabled workflow, at the first stage. Needs
/// changing the object; 409 when it is already in review or the type has no enabled workflow.
#[utoipa::path(post, path = "/v1/objects/{object_type_id}/{object_id}/submit-for-review", tag = "Workflows",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id")),
    responses((status = 200, body = crate::http::response::Envelope<Submitted>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody)))]
async fn submit(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
) -> ApiResult<Data<Submitted>> {
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let schema = Schema::load_for_write(&mut tx, &app, tenant, &type_ref).await?;
    let guard = ObjectGuard::load(&mut tx, &auth, &schema, ObjectAction::Update).await?;
    let object = fetch_for(&mut tx, app.db.backend(), &guard, &schema, &object_id, ObjectAction::Update).await?;
    if object.is_deleted {
        return Err(ApiError::conflict("the object is in the trash"));
    }
    let row: Option<WorkflowRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM workflows WHERE object_type_id = $1 AND enabled = 1"))
            .bind(&schema.object_type.id)
            .fetch_optional(&mut *tx)
            .await?;
    let workflow = row
        .map(Workflow::try_from)
        .transpose()?
        .ok_or_else(|| ApiError::conflict(format!("`{}` has no enabled workflow", schema.object_type.name)))?;
    if active_run(&mut tx, &object.id).await?.is_some() {
        return Err(ApiError::conflict("the object is already in review"));
    }
    let run_id = id::new_id("wfr");
    let now = time::to_db(&time::now());
    sqlx::query(
        "INSERT INTO workflow_runs (id, tenant_id, workflow_id, object_id, status, stage, locks, reason, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, 'in_review', 0, $5, NULL, $6, $6)",
    )
    .bind(&run_id)
    .bind(tenant.as_str())
    .bind(&workflow.id)
    .bind(&object.id)
    .bind(i64::from(workflow.lock_in_review))
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    step(&mut tx, &run_id, 0, "submitted", &auth, None).await?;
    let stage = workflow.stages.first().map(|s| s.name.clone()).unwrap_or_default();
    let data = json!({ "workflow_id": workflow.id, "stage": stage });
    tell(&mut tx, &who, tenant, "workflow.submitted", &schema, &object.id, data).await?;
    tx.commit().await?;
    Ok(Data(Submitted { submitted: true, stage }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// At most 2,000 characters.
    #[schema(max_length = 2000)]
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Why: 1 to 2,000 characters.
    #[schema(min_length = 1, max_length = 2000)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Approved {
    pub approved: bool,
    /// The stage approved.
    pub stage: String,
    /// `in_review` (more approvals or stages to go) or `approved`.
    pub status: String,
    /// The stage the review is at now, when still in review.
    pub next_stage: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rejected {
    pub rejected: bool,
    pub stage: String,
}

/// The object in review, the caller's right to act at its stage.
async fn review_for(
    app: &App,
    tx: &mut WriteTx,
    auth: &Auth,
    type_ref: &str,
    object_id: &str,
) -> ApiResult<(Schema, String, RunRow, Workflow, Stage)> {
    let tenant = auth.tenant()?;
    let schema = Schema::load(tx, tenant, type_ref).await?;
    let guard = ObjectGuard::load(tx, auth, &schema, ObjectAction::Select).await?;
    let object =
        fetch_visible(tx, app.db.backend(), &schema, object_id, guard.rows(&schema, ObjectAction::Select)).await?;
    let (run, workflow) =
        active_run(tx, &object.id).await?.ok_or_else(|| ApiError::conflict("the object is not in review"))?;
    let stage = workflow
        .stages
        .get(run.stage as usize)
        .cloned()
        .ok_or_else(|| ApiError::conflict("the review's stage is gone from its workflow"))?;
    if !approves(auth, &stage) {
        return Err(ApiError::forbidden(format!("you are not an approver of the stage `{}`", stage.name)));
    }
    Ok((schema, object.id, run, workflow, stage))
}

/// Approve object
///
/// Approves the object at its current stage. Once the stage has the approvals it needs (from
/// different approvers), the review moves to the next stage, or the object is approved after
/// the last. Only the stage's approvers; 409 when not in review or already approved by you.
#[utoipa::path(post, path = "/v1/objects/{object_type_id}/{object_id}/approve", tag = "Workflows",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id")),
    request_body(content = Option<ApproveBody>),
    responses((status = 200, body = crate::http::response::Envelope<Approved>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody)))]
async fn approve(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<ApproveBody>,
) -> ApiResult<Data<Approved>> {
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let comment = body.unwrap_or_default().comment;
    if comment.as_ref().is_some_and(|c| c.chars().count() > TEXT_MAX) {
        return Err(ApiError::invalid("comment", format!("must be at most {TEXT_MAX} characters")));
    }
    let mut tx = app.db.begin_write().await?;
    let (schema, object_id, run, workflow, stage) = review_for(&app, &mut tx, &auth, &type_ref, &object_id).await?;
    let (actor_type, actor_id) = auth.actor.principal();
    let (already,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM workflow_steps WHERE run_id = $1 AND stage = $2 AND action = 'approved' \
         AND actor_type = $3 AND actor_id = $4",
    )
    .bind(&run.id)
    .bind(run.stage)
    .bind(actor_type)
    .bind(actor_id.as_deref().unwrap_or_default())
    .fetch_one(&mut *tx)
    .await?;
    if already > 0 {
        return Err(ApiError::conflict(format!("you approved the stage `{}` already", stage.name)));
    }
    step(&mut tx, &run.id, run.stage, "approved", &auth, comment.as_deref()).await?;
    let (approvals,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM workflow_steps WHERE run_id = $1 AND stage = $2 AND action = 'approved'")
            .bind(&run.id)
            .bind(run.stage)
            .fetch_one(&mut *tx)
            .await?;
    let now = time::to_db(&time::now());
    let (status, next_stage) = if approvals < stage.required_approvals {
        ("in_review", Some(stage.name.clone()))
    } else if let Some(next) = workflow.stages.get(run.stage as usize + 1) {
        sqlx::query("UPDATE workflow_runs SET stage = stage + 1, updated_at = $1 WHERE id = $2")
            .bind(&now)
            .bind(&run.id)
            .execute(&mut *tx)
            .await?;
        ("in_review", Some(next.name.clone()))
    } else {
        sqlx::query("UPDATE workflow_runs SET status = 'approved', updated_at = $1 WHERE id = $2")
            .bind(&now)
            .bind(&run.id)
            .execute(&mut *tx)
            .await?;
        ("approved", None)
    };
    let kind = if status == "approved" { "workflow.completed" } else { "workflow.approved" };
    let data = json!({ "workflow_id": workflow.id, "stage": stage.name, "status": status, "next_stage": next_stage });
    tell(&mut tx, &who, tenant, kind, &schema, &object_id, data).await?;
    tx.commit().await?;
    Ok(Data(Approved { approved: true, stage: stage.name, status: status.into(), next_stage }))
}

/// Reject object
///
/// Ends the review: the object returns to draft, with the reason. Only the current stage's
/// approvers.
#[utoipa::path(post, path = "/v1/objects/{object_type_id}/{object_id}/reject", tag = "Workflows",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id")),
    request_body = RejectBody,
    responses((status = 200, body = crate::http::response::Envelope<Rejected>),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn reject(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
    Json(body): Json<RejectBody>,
) -> ApiResult<Data<Rejected>> {
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let length = body.reason.chars().count();
    if length == 0 || length > TEXT_MAX {
        return Err(ApiError::invalid("reason", format!("must be 1 to {TEXT_MAX} characters")));
    }
    let mut tx = app.db.begin_write().await?;
    let (schema, object_id, run, workflow, stage) = review_for(&app, &mut tx, &auth, &type_ref, &object_id).await?;
    step(&mut tx, &run.id, run.stage, "rejected", &auth, Some(&body.reason)).await?;
    sqlx::query("UPDATE workflow_runs SET status = 'rejected', reason = $1, updated_at = $2 WHERE id = $3")
        .bind(&body.reason)
        .bind(time::to_db(&time::now()))
        .bind(&run.id)
        .execute(&mut *tx)
        .await?;
    let data = json!({ "workflow_id": workflow.id, "stage": stage.name, "reason": body.reason });
    tell(&mut tx, &who, tenant, "workflow.rejected", &schema, &object_id, data).await?;
    tx.commit().await?;
    Ok(Data(Rejected { rejected: true, stage: stage.name }))
}

/// One step of an object's reviews.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryStep {
    pub workflow_id: String,
    /// The stage's name (or number, when it is gone from the workflow).
    pub stage: String,
    /// `submitted`, `approved` or `rejected`.
    pub action: String,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub comment: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowStatus {
    /// `draft` (never submitted, or rejected), `in_review` or `approved`.
    pub status: String,
    /// The stage in review.
    pub stage: Option<String>,
    /// Approvals the stage has, and needs.
    pub approvals: Option<i64>,
    pub required_approvals: Option<i64>,
    /// Why the last review was rejected.
    pub rejection_reason: Option<String>,
    /// Every step of every review, oldest first.
    pub history: Vec<HistoryStep>,
}

/// A stored step: (stage, action, actor type, actor id, comment, created at).
type StepRow = (i64, String, String, Option<String>, Option<String>, String);

/// Get workflow status
#[utoipa::path(get, path = "/v1/objects/{object_type_id}/{object_id}/workflow-status", tag = "Workflows",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"),
           ("object_id" = String, Path, description = "The object's id")),
    responses((status = 200, body = crate::http::response::Envelope<WorkflowStatus>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn workflow_status(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
) -> ApiResult<Data<WorkflowStatus>> {
    let mut conn = app.db.pool().acquire().await?;
    let (type_access, guard) = readable(&app, &mut conn, &auth, &type_ref, ObjectAction::Select).await?;
    let schema = &type_access.schema;
    let object =
        fetch_visible(&mut conn, app.db.backend(), schema, &object_id, guard.rows(schema, ObjectAction::Select))
            .await?;
    let runs: Vec<RunRow> = sqlx::query_as(
        "SELECT id, workflow_id, status, stage, reason FROM workflow_runs WHERE object_id = $1 ORDER BY id",
    )
    .bind(&object.id)
    .fetch_all(&mut *conn)
    .await?;
    let mut history = Vec::new();
    let mut stage_names: std::collections::HashMap<String, Vec<Stage>> = std::collections::HashMap::new();
    for run in &runs {
        if !stage_names.contains_key(&run.workflow_id) {
            let stages = by_id(&mut conn, &run.workflow_id).await?.map(|w| w.stages).unwrap_or_default();
            stage_names.insert(run.workflow_id.clone(), stages);
        }
        let steps: Vec<StepRow> = sqlx::query_as(
            "SELECT stage, action, actor_type, actor_id, comment, created_at FROM workflow_steps WHERE run_id = $1 ORDER BY id",
        )
        .bind(&run.id)
        .fetch_all(&mut *conn)
        .await?;
        let stages = &stage_names[&run.workflow_id];
        for (stage, action, actor_type, actor_id, comment, created_at) in steps {
            history.push(HistoryStep {
                workflow_id: run.workflow_id.clone(),
                stage: stages.get(stage as usize).map(|s| s.name.clone()).unwrap_or_else(|| stage.to_string()),
                action,
                actor_type,
                actor_id,
                comment,
                created_at: time::from_db(&created_at)?,
            });
        }
    }
    let last = runs.last();
    let mut status = WorkflowStatus {
        status: "draft".into(),
        stage: None,
        approvals: None,
        required_approvals: None,
        rejection_reason: None,
        history,
    };
    match last {
        Some(run) if run.status == "in_review" => {
            let stage = stage_names[&run.workflow_id].get(run.stage as usize).cloned();
            let (approvals,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM workflow_steps WHERE run_id = $1 AND stage = $2 AND action = 'approved'",
            )
            .bind(&run.id)
            .bind(run.stage)
            .fetch_one(&mut *conn)
            .await?;
            status.status = "in_review".into();
            status.approvals = Some(approvals);
            status.required_approvals = stage.as_ref().map(|s| s.required_approvals);
            status.stage = stage.map(|s| s.name);
        }
        Some(run) if run.status == "approved" => status.status = "approved".into(),
        Some(run) if run.status == "rejected" => status.rejection_reason = run.reason.clone(),
        _ => {}
    }
    Ok(Data(status))
}
