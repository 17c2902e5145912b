//! Authorization: the one module that decides what a caller may do. API keys are service
//! credentials: their scopes decide, and row policies do not apply to them. End users reach only
//! what their roles grant (permissions in the scope grammar, `objects.<type>:<action>` among
//! them) and, for objects, only the rows the type's policies allow, with the properties their
//! roles may not read left out: deny by default. Capabilities ask this module; they never decide
//! on their own.

pub mod access;
pub mod files;
pub mod policies;
pub mod roles;
pub mod simulate;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AnyConnection;
use utoipa_axum::router::OpenApiRouter;

use crate::app::App;
use crate::http::ApiResult;
use crate::id::TenantId;

pub use access::{ObjectAction, ObjectGuard};

/// The role every signed-in end user holds.
pub const AUTHENTICATED: &str = "authenticated";
/// The role of a request without a credential, on the public routes that accept one.
pub const ANON: &str = "anon";

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().merge(roles::routes()).merge(policies::routes()).merge(simulate::routes())
}

/// Resources end users never reach, whatever their roles say: credentials and the capabilities
/// that carry the tenant's data past row policies (webhooks and their logs, the dead-letter
/// queue, inbound messages, the AI gateway's tenant-wide conversations and usage). They are for
/// API keys, which are service credentials.
pub const SERVICE_RESOURCES: &[&str] = &[
    "api-keys",
    "public-keys",
    "tokens",
    "tenants",
    "usage",
    "analytics",
    "entitlements",
    "credentials",
    "webhooks",
    "dlq",
    "inbound",
    "ai",
    "chat",
    "embeddings",
    "models",
    "ai-providers",
    "ai-usage",
    "ai-budget",
    "agent-keys",
    // Where end users' emails and links lead, and everyone's trail: a tenant's own staff, by key.
    "auth-config",
    "audit-logs",
];

/// Event types end users never receive: they carry what the service resources guard.
const SERVICE_EVENTS: &[&str] = &["inbound.", "webhook.", "tenant.", "api_key."];

/// True when an end user may never receive events of `kind`.
pub fn is_service_event(kind: &str) -> bool {
    SERVICE_EVENTS.iter().any(|prefix| kind.starts_with(prefix))
}

/// True when end users may never use `resource`.
pub fn is_service_resource(resource: &str) -> bool {
    SERVICE_RESOURCES.contains(&resource)
}

/// Properties of one type that a role may not read or write.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Denial {
    pub object_type_id: String,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
}

/// A role an end user holds, directly or through a role it inherits from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRole {
    pub id: String,
    pub name: String,
}

/// Who an end user is for authorization, read with their session on every request (kept in
/// memory in embedded mode until anything it depends on changes), so that a role taken away
/// holds at once: their roles (with every ancestor), the values policies read, and the properties
/// their roles may not touch. Their permissions become the request's scopes.
#[derive(Debug, Clone)]
pub struct UserAccess {
    pub roles: Vec<HeldRole>,
    pub denied: Vec<Denial>,
    /// Who they are for row policies (`$auth.*`): id, the role named on the user, role names,
    /// `app_metadata`.
    pub caller: Caller,
}

impl UserAccess {
    pub fn role_names(&self) -> Vec<String> {
        self.caller.roles.clone()
    }

    pub fn holds_role_id(&self, id: &str) -> bool {
        self.roles.iter().any(|r| r.id == id)
    }

    /// The properties of `object_type_id` these roles may not read, and may not write.
    pub fn denied_on(&self, object_type_id: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut read = BTreeSet::new();
        let mut write = BTreeSet::new();
        for denial in self.denied.iter().filter(|d| d.object_type_id == object_type_id) {
            read.extend(denial.read.iter().cloned());
            write.extend(denial.write.iter().cloned());
        }
        (read, write)
    }
}

/// A role as the authorization queries read it: id, name, permissions and denied properties.
pub type GrantRow = (String, String, String, String);

/// Loads what `user_id` of `tenant` holds: the built-in `authenticated`, the role named on the
/// user, the roles assigned to them, and every ancestor of those. Answers the access and the
/// union of the roles' permissions.
pub async fn load_user(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    user_id: &str,
    role: &str,
    metadata: Value,
) -> ApiResult<(UserAccess, Vec<String>)> {
    let rows: Vec<GrantRow> = sqlx::query_as(
        "WITH RECURSIVE held (id) AS ( \
             SELECT role_id FROM user_roles WHERE user_id = $2 AND tenant_id = $1 \
             UNION SELECT id FROM roles WHERE tenant_id = $1 AND (name = $3 OR name = $4) \
             UNION SELECT r.parent_role_id FROM roles r JOIN held h ON r.id = h.id WHERE r.parent_role_id IS NOT NULL \
         ) SELECT r.id, r.name, r.permissions, r.denied_properties FROM roles r JOIN held h ON h.id = r.id \
         WHERE r.tenant_id = $1 ORDER BY r.name",
    )
    .bind(tenant)
    .bind(user_id)
    .bind(AUTHENTICATED)
    .bind(role)
    .fetch_all(&mut *conn)
    .await?;
    access_from(rows, user_id, role, metadata)
}

/// The access of `user_id` from the rows of the roles they hold, and the union of the roles'
/// permissions.
pub fn access_from(
    rows: Vec<GrantRow>,
    user_id: &str,
    role: &str,
    metadata: Value,
) -> ApiResult<(UserAccess, Vec<String>)> {
    let mut permissions: Vec<String> = Vec::new();
    let mut roles = Vec::with_capacity(rows.len());
    let mut denied = Vec::new();
    for (id, name, granted, denials) in rows {
        for permission in serde_json::from_str::<Vec<String>>(&granted)? {
            if !permissions.contains(&permission) {
                permissions.push(permission);
            }
        }
        denied.extend(serde_json::from_str::<Vec<Denial>>(&denials)?);
        roles.push(HeldRole { id, name });
    }
    let caller = Caller {
        user_id: Some(user_id.to_string()),
        role: Some(role.to_string()),
        roles: roles.iter().map(|r| r.name.clone()).collect(),
        metadata: metadata.as_object().map(|m| m.clone().into_iter().collect()).unwrap_or_default(),
    };
    let access = UserAccess { roles, denied, caller };
    Ok((access, permissions))
}

/// The caller a policy is evaluated for: a signed-in user, or the context `simulate` names.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub roles: Vec<String>,
    pub metadata: BTreeMap<String, Value>,
}
