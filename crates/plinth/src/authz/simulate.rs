//! `POST /v1/policies/simulate`: what a type's policies (or one draft policy) decide for a
//! caller over sample rows, per action, with the policy that decided. Nothing stored is read
//! but the schema, roles and policies; the samples are evaluated with the same SQL that reads
//! stored rows.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{evaluate, RowValues};
use super::policies::{self, Rule, ACTIONS};
use super::{Caller, ObjectAction, AUTHENTICATED};
use crate::app::App;
use crate::auth::Auth;
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Data, Json};
use crate::objects::Schema;
use crate::scopes::required::POLICIES_READ;
use crate::time;

/// Most sample rows in one simulation.
const SAMPLES_MAX: usize = 100;

/// A policy to try before saving it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftPolicy {
    /// The type (id or name); or give `object_type_id` beside `policy`.
    pub object_type_id: Option<String>,
    pub name: Option<String>,
    /// `select`, `insert`, `update`, `delete` or `all`.
    pub action: String,
    /// A role's name; absent: every end user.
    pub role: Option<String>,
    #[schema(value_type = Object)]
    pub condition_json: Option<Value>,
    /// Accepted and ignored: a draft is simulated as enabled.
    pub enabled: Option<bool>,
}

/// The caller to simulate.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthContext {
    #[schema(min_length = 1, max_length = 200)]
    pub user_id: Option<String>,
    /// The role named on the user (`$auth.role`); default `authenticated`.
    pub role: Option<String>,
    /// Roles held, by name; `authenticated` and the parents of stored roles are added.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Simulate {
    /// One draft policy to try alone; without it, the type's enabled policies.
    pub policy: Option<DraftPolicy>,
    /// The type (id or name), when `policy` does not name it.
    pub object_type_id: Option<String>,
    #[serde(default)]
    pub auth_context: AuthContext,
    /// 1 to 100 rows: property values by name, and optionally `id`, `created_by`, `created_at`,
    /// `updated_at` (or the values under `properties`).
    #[schema(value_type = Vec<Object>, min_items = 1, max_items = 100)]
    pub sample_data: Vec<Value>,
}

/// The policy that decided.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Decider {
    /// Absent for a draft policy.
    pub id: Option<String>,
    pub name: String,
}

/// The decision for one action on one row.
#[derive(Debug, Serialize, ToSchema)]
pub struct Decision {
    /// What a request by this caller would get.
    pub allowed: bool,
    /// The first policy that admits the row; `null` when none does.
    pub policy: Option<Decider>,
    /// Whether the caller's roles grant `objects.<type>:<read|write|delete>` for this action.
    pub permission_granted: bool,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SampleResult {
    pub index: usize,
    /// By action: `select`, `insert`, `update`, `delete`.
    pub actions: BTreeMap<String, Decision>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Simulation {
    pub object_type_id: String,
    pub object_type: String,
    /// The roles the caller holds once inheritance is applied.
    pub roles: Vec<String>,
    pub results: Vec<SampleResult>,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(simulate))
}

/// A sample as a row: system fields at the top, the rest properties (in their canonical form).
fn sample_row(schema: &Schema, index: usize, sample: &Value, errors: &mut FieldErrors) -> Option<RowValues> {
    let field = format!("sample_data[{index}]");
    let Value::Object(fields) = sample else {
        errors.add(&field, "must be an object of property values");
        return None;
    };
    let now = time::to_db(&time::now());
    let mut row = RowValues {
        id: format!("obj_sample{index}"),
        properties: Value::Null,
        created_by: None,
        created_at: now.clone(),
        updated_at: now,
    };
    let mut properties = Map::new();
    let text = |name: &str, value: &Value, errors: &mut FieldErrors| -> Option<String> {
        let parsed = value.as_str().map(str::to_owned);
        if parsed.is_none() {
            errors.add(&format!("{field}.{name}"), "must be a string");
        }
        parsed
    };
    for (name, value) in fields {
        match name.as_str() {
            "id" => row.id = text(name, value, errors).unwrap_or_default(),
            "created_by" if value.is_null() => row.created_by = None,
            "created_by" => row.created_by = text(name, value, errors),
            "created_at" | "updated_at" => {
                let at = value.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                match at {
                    Some(at) => {
                        let at = time::to_db(&at.with_timezone(&chrono::Utc));
                        if name == "created_at" {
                            row.created_at = at;
                        } else {
                            row.updated_at = at;
                        }
                    }
                    None => errors.add(&format!("{field}.{name}"), "must be an RFC 3339 date-time"),
                }
            }
            "properties" if value.is_object() && schema.property("properties").is_none() => {
                if let Some(inner) = value.as_object() {
                    properties.extend(inner.clone());
                }
            }
            _ => {
                properties.insert(name.clone(), value.clone());
            }
        }
    }
    let mut canonical = Map::new();
    for (name, value) in properties {
        if value.is_null() {
            continue;
        }
        match schema.property(&name) {
            Some(property) => match property.canonical(&value) {
                Ok(value) => {
                    canonical.insert(name, value);
                }
                Err(problem) => errors.add(&format!("{field}.{name}"), problem),
            },
            None if schema.object_type.additional_properties => {
                canonical.insert(name, value);
            }
            None => errors
                .add(&format!("{field}.{name}"), format!("`{}` has no property `{name}`", schema.object_type.name)),
        }
    }
    row.properties = Value::Object(canonical);
    Some(row)
}

/// Simulate RLS policy
///
/// Per sample row and action, whether a caller with `auth_context` would be allowed, and which
/// policy decided: the type's enabled policies, or the draft `policy` alone. Nothing stored is
/// changed.
#[utoipa::path(post, path = "/v1/policies/simulate", tag = "Policies", security(("bearer" = [])),
    request_body = Simulate,
    responses((status = 200, body = crate::http::response::Envelope<Simulation>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn simulate(auth: Auth, State(app): State<App>, Json(body): Json<Simulate>) -> ApiResult<Data<Simulation>> {
    auth.require(POLICIES_READ)?;
    let tenant = auth.tenant()?;
    let type_ref =
        body.policy.as_ref().and_then(|p| p.object_type_id.clone()).or(body.object_type_id.clone()).ok_or_else(
            || ApiError::invalid("object_type_id", "name the type: `object_type_id`, or `policy.object_type_id`"),
        )?;
    let mut errors = FieldErrors::default();
    if body.sample_data.is_empty() || body.sample_data.len() > SAMPLES_MAX {
        errors.add("sample_data", format!("must hold 1 to {SAMPLES_MAX} rows"));
    }
    if let Some(user) = &body.auth_context.user_id {
        if user.is_empty() || user.chars().count() > 200 {
            errors.add("auth_context.user_id", "must be 1 to 200 characters");
        }
    }
    errors.finish()?;
    let mut conn = app.db.pool().acquire().await?;
    let schema = Schema::load(&mut conn, tenant, &type_ref).await?;

    // The caller: the named roles, `authenticated`, and every stored ancestor.
    let stored: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT id, name, parent_role_id, permissions FROM roles WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_all(&mut *conn)
            .await?;
    let role = body.auth_context.role.clone().unwrap_or_else(|| AUTHENTICATED.to_string());
    let mut names: Vec<String> = Vec::new();
    for name in [AUTHENTICATED.to_string(), role.clone()].into_iter().chain(body.auth_context.roles.iter().cloned()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    // Each name's stored parent joins the list once; the list is finite, so the walk ends.
    let mut i = 0;
    while i < names.len() {
        let parent = stored
            .iter()
            .find(|(_, name, _, _)| *name == names[i])
            .and_then(|(_, _, parent, _)| parent.as_ref())
            .and_then(|parent| stored.iter().find(|(id, ..)| id == parent))
            .map(|(_, name, _, _)| name.clone());
        if let Some(parent) = parent.filter(|p| !names.contains(p)) {
            names.push(parent);
        }
        i += 1;
    }
    let role_ids: Vec<String> =
        stored.iter().filter(|(_, name, _, _)| names.contains(name)).map(|(id, ..)| id.clone()).collect();
    let mut permissions: Vec<String> = Vec::new();
    for (_, name, _, granted) in &stored {
        if names.contains(name) {
            permissions.extend(serde_json::from_str::<Vec<String>>(granted)?);
        }
    }
    let caller = Caller {
        user_id: body.auth_context.user_id.clone(),
        role: Some(role),
        roles: names.clone(),
        metadata: body.auth_context.metadata.clone().into_iter().collect(),
    };

    // The policies that apply to this caller, draft or stored.
    let rules: Vec<(Rule, Option<String>)> = match &body.policy {
        Some(draft) => {
            let condition = draft.condition_json.clone().unwrap_or_else(|| serde_json::json!({}));
            let mut errors = FieldErrors::default();
            if !ACTIONS.contains(&draft.action.as_str()) {
                errors.add("policy.action", format!("must be one of: {}", ACTIONS.join(", ")));
            }
            if let Err(problem) = policies::check(&schema, &condition) {
                errors.add("policy.condition_json", problem);
            }
            errors.finish()?;
            let applies = draft.role.as_ref().is_none_or(|role| names.contains(role) || role_ids.contains(role));
            let rule = Rule {
                id: String::new(),
                name: draft.name.clone().unwrap_or_else(|| "draft".into()),
                action: draft.action.clone(),
                role_id: None,
                condition,
            };
            if applies {
                vec![(rule, None)]
            } else {
                Vec::new()
            }
        }
        None => policies::enabled_rules(&mut conn, &schema.object_type.id)
            .await?
            .into_iter()
            .filter(|rule| rule.role_id.as_ref().is_none_or(|id| role_ids.contains(id)))
            .map(|rule| {
                let id = Some(rule.id.clone());
                (rule, id)
            })
            .collect(),
    };

    let mut errors = FieldErrors::default();
    let rows: Vec<Option<RowValues>> =
        body.sample_data.iter().enumerate().map(|(i, sample)| sample_row(&schema, i, sample, &mut errors)).collect();
    errors.finish()?;
    let now = time::now();
    // A draft's update or delete reaches only rows the caller can see: through the stored select
    // policies as well as the draft.
    let sight: Vec<Rule> = if body.policy.is_some() {
        policies::enabled_rules(&mut conn, &schema.object_type.id)
            .await?
            .into_iter()
            .filter(|rule| rule.applies_to(ObjectAction::Select))
            .filter(|rule| rule.role_id.as_ref().is_none_or(|id| role_ids.contains(id)))
            .collect()
    } else {
        Vec::new()
    };
    let conds: Vec<_> = rules
        .iter()
        .map(|(rule, _)| rule)
        .chain(&sight)
        .map(|rule| policies::compile(&schema, rule, &caller, &now))
        .collect();
    let type_name = &schema.object_type.name;
    let resource = format!("objects.{type_name}");
    let mut results = Vec::with_capacity(rows.len());
    for (index, row) in rows.into_iter().enumerate() {
        let Some(row) = row else { continue };
        let admitted = evaluate(&mut conn, app.db.backend(), &conds, &row).await?;
        let mut actions = BTreeMap::new();
        let grants = |action: &str| permissions.iter().any(|p| crate::scopes::grants(p, &resource, action));
        let decider_of = |action: ObjectAction| {
            rules
                .iter()
                .zip(&admitted)
                .find(|((rule, _), admits)| **admits && rule.applies_to(action))
                .map(|((rule, id), _)| Decider { id: id.clone(), name: rule.name.clone() })
        };
        // Changing a row needs seeing it, as a request does.
        let seen = decider_of(ObjectAction::Select).is_some() || admitted[rules.len()..].iter().any(|a| *a);
        for action in ObjectAction::ALL {
            // Without reading the type, a request is told it does not exist.
            let permission_granted = grants("read") && grants(action.permission());
            let decider = decider_of(action);
            let needs_sight = matches!(action, ObjectAction::Update | ObjectAction::Delete);
            let reason = match (&decider, permission_granted) {
                (_, false) => format!("the roles grant no `{resource}:{}` (or no `:read`)", action.permission()),
                (Some(_), true) if needs_sight && !seen => "no select policy lets the caller see this row".to_string(),
                (Some(policy), true) => format!("admitted by policy `{}`", policy.name),
                (None, _) if rules.iter().any(|(rule, _)| rule.applies_to(action)) => {
                    format!("no {} policy admits this row", action.policy_name())
                }
                (None, _) => format!("no {} policy applies: denied by default", action.policy_name()),
            };
            let allowed = decider.is_some() && permission_granted && (!needs_sight || seen);
            actions.insert(
                action.policy_name().to_string(),
                Decision { allowed, policy: decider, permission_granted, reason },
            );
        }
        results.push(SampleResult { index, actions });
    }
    Ok(Data(Simulation {
        object_type_id: schema.object_type.id.clone(),
        object_type: type_name.clone(),
        roles: names,
        results,
    }))
}
