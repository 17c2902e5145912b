//! Scopes: broad ones (`read`, `write`, `schema`, `files`, `auth`, `ai`, `admin`, `*`) and fine
//! ones (`<resource>:<action>`, and `objects.<type>:<action>` for one object type). A route
//! declares one fine scope it needs. The same grammar names the permissions of end users' roles.
//!
//! The broad `read` and `write` cover the data groups only: the admin resources (keys, tokens,
//! tenants, users, roles, policies, credentials, governance, ...) need `admin`, `*`, their
//! resource's `:*` or their fine scope, so that a data key cannot change who may do what.

use crate::http::error::FieldErrors;
use crate::limits::SCOPES_MAX;

/// The broad scopes.
pub const BROAD: &[&str] = &["read", "write", "schema", "files", "auth", "ai", "admin", "*"];

/// The admin group: resources the broad `read` and `write` never cover.
pub const ADMIN_RESOURCES: &[&str] = &[
    "api-keys",
    "public-keys",
    "tokens",
    "tenants",
    "usage",
    "analytics",
    "audit-logs",
    "governance",
    "auth-config",
    "users",
    "roles",
    "policies",
    "credentials",
    "ai-providers",
    "ai-budget",
    "agent-keys",
];

/// Resources that a resource-group broad scope covers with every action.
const GROUPS: &[(&str, &[&str])] = &[
    ("schema", &["object-types", "properties", "schema"]),
    ("files", &["files"]),
    ("auth", &["users", "auth", "sessions", "auth-config", "roles", "policies"]),
    ("ai", &["ai", "chat", "models", "embeddings", "ai-providers", "ai-usage", "ai-budget"]),
];

/// True when `resource` belongs to the admin group.
pub fn is_admin_resource(resource: &str) -> bool {
    ADMIN_RESOURCES.contains(&resource)
}

/// What a route needs: one fine scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Required {
    pub resource: &'static str,
    pub action: &'static str,
}

impl Required {
    pub const fn new(resource: &'static str, action: &'static str) -> Self {
        Required { resource, action }
    }

    /// True when the single granted scope `granted` satisfies this requirement.
    pub fn satisfied_by(&self, granted: &str) -> bool {
        grants(granted, self.resource, self.action)
    }

    /// True when any of `granted` satisfies this requirement.
    pub fn satisfied_by_any<S: AsRef<str>>(&self, granted: &[S]) -> bool {
        granted.iter().any(|g| self.satisfied_by(g.as_ref()))
    }

    /// `resource:action`, for messages.
    pub fn name(&self) -> String {
        format!("{}:{}", self.resource, self.action)
    }
}

/// The scopes of the routes that exist so far.
pub mod required {
    use super::Required;

    pub const TENANTS_READ: Required = Required::new("tenants", "read");
    pub const KEYS_READ: Required = Required::new("api-keys", "read");
    pub const KEYS_WRITE: Required = Required::new("api-keys", "write");
    pub const KEYS_DELETE: Required = Required::new("api-keys", "delete");
    pub const PUBLIC_KEYS_READ: Required = Required::new("public-keys", "read");
    pub const PUBLIC_KEYS_WRITE: Required = Required::new("public-keys", "write");
    pub const PUBLIC_KEYS_DELETE: Required = Required::new("public-keys", "delete");
    pub const TOKENS_DELETE: Required = Required::new("tokens", "delete");
    pub const USAGE_READ: Required = Required::new("usage", "read");
    pub const ANALYTICS_READ: Required = Required::new("analytics", "read");
    pub const AUDIT_LOGS_READ: Required = Required::new("audit-logs", "read");
    pub const OBJECT_TYPES_READ: Required = Required::new("object-types", "read");
    pub const OBJECT_TYPES_WRITE: Required = Required::new("object-types", "write");
    pub const OBJECT_TYPES_DELETE: Required = Required::new("object-types", "delete");
    pub const PROPERTIES_READ: Required = Required::new("properties", "read");
    pub const PROPERTIES_WRITE: Required = Required::new("properties", "write");
    pub const PROPERTIES_DELETE: Required = Required::new("properties", "delete");
    pub const OBJECTS_READ: Required = Required::new("objects", "read");
    pub const OBJECTS_WRITE: Required = Required::new("objects", "write");
    pub const OBJECTS_DELETE: Required = Required::new("objects", "delete");
    pub const EVENTS_READ: Required = Required::new("events", "read");
    pub const EVENTS_WRITE: Required = Required::new("events", "write");
    pub const ERRORS_READ: Required = Required::new("errors", "read");
    pub const ERRORS_WRITE: Required = Required::new("errors", "write");
    pub const WEBHOOKS_READ: Required = Required::new("webhooks", "read");
    pub const WEBHOOKS_WRITE: Required = Required::new("webhooks", "write");
    pub const WEBHOOKS_DELETE: Required = Required::new("webhooks", "delete");
    pub const CREDENTIALS_READ: Required = Required::new("credentials", "read");
    pub const CREDENTIALS_WRITE: Required = Required::new("credentials", "write");
    pub const CREDENTIALS_DELETE: Required = Required::new("credentials", "delete");
    pub const CHAT_WRITE: Required = Required::new("chat", "write");
    pub const EMBEDDINGS_WRITE: Required = Required::new("embeddings", "write");
    pub const MODELS_READ: Required = Required::new("models", "read");
    pub const AI_USAGE_READ: Required = Required::new("ai-usage", "read");
    pub const AI_READ: Required = Required::new("ai", "read");
    pub const AI_WRITE: Required = Required::new("ai", "write");
    pub const AI_PROVIDERS_READ: Required = Required::new("ai-providers", "read");
    pub const AI_PROVIDERS_WRITE: Required = Required::new("ai-providers", "write");
    pub const AI_PROVIDERS_DELETE: Required = Required::new("ai-providers", "delete");
    pub const FILES_READ: Required = Required::new("files", "read");
    pub const FILES_WRITE: Required = Required::new("files", "write");
    pub const FILES_DELETE: Required = Required::new("files", "delete");
    pub const DLQ_READ: Required = Required::new("dlq", "read");
    pub const DLQ_WRITE: Required = Required::new("dlq", "write");
    pub const DLQ_DELETE: Required = Required::new("dlq", "delete");
    pub const INBOUND_READ: Required = Required::new("inbound", "read");
    pub const INBOUND_WRITE: Required = Required::new("inbound", "write");
    pub const INBOUND_DELETE: Required = Required::new("inbound", "delete");
    pub const ENTITLEMENTS_READ: Required = Required::new("entitlements", "read");
    pub const ENTITLEMENTS_WRITE: Required = Required::new("entitlements", "write");
    pub const GOVERNANCE_READ: Required = Required::new("governance", "read");
    pub const GOVERNANCE_WRITE: Required = Required::new("governance", "write");
    pub const USERS_READ: Required = Required::new("users", "read");
    pub const USERS_WRITE: Required = Required::new("users", "write");
    pub const USERS_DELETE: Required = Required::new("users", "delete");
    pub const AUTH_CONFIG_READ: Required = Required::new("auth-config", "read");
    pub const AUTH_CONFIG_WRITE: Required = Required::new("auth-config", "write");
    pub const ROLES_READ: Required = Required::new("roles", "read");
    pub const ROLES_WRITE: Required = Required::new("roles", "write");
    pub const ROLES_DELETE: Required = Required::new("roles", "delete");
    pub const POLICIES_READ: Required = Required::new("policies", "read");
    pub const POLICIES_WRITE: Required = Required::new("policies", "write");
    pub const POLICIES_DELETE: Required = Required::new("policies", "delete");
    pub const AI_BUDGET_READ: Required = Required::new("ai-budget", "read");
    pub const AI_BUDGET_WRITE: Required = Required::new("ai-budget", "write");
}

/// True for a name: a letter, then lowercase letters, digits, `_` or `-`, at most 64 characters.
pub fn is_name(part: &str) -> bool {
    let mut chars = part.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && part.len() <= 64
}

/// True when `resource` is a resource name, or `objects.<type>` for one object type.
fn is_resource(resource: &str) -> bool {
    match resource.split_once('.') {
        Some(("objects", object_type)) => crate::names::is_identifier(object_type),
        Some(_) => false,
        None => is_name(resource),
    }
}

/// True when `scope` is a broad scope or a well-formed `<resource>:<action>`.
pub fn is_valid(scope: &str) -> bool {
    if BROAD.contains(&scope) {
        return true;
    }
    match scope.split_once(':') {
        Some((resource, action)) => is_resource(resource) && (action == "*" || is_name(action)),
        None => false,
    }
}

/// Validates and de-duplicates a requested scope list, keeping its order.
pub fn normalise(field: &str, scopes: &[String], errors: &mut FieldErrors) -> Vec<String> {
    if scopes.is_empty() {
        errors.add(field, "must name at least one scope");
    }
    if scopes.len() > SCOPES_MAX {
        errors.add(field, format!("at most {SCOPES_MAX} scopes"));
    }
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if !is_valid(scope) {
            errors.add(
                field,
                format!("unknown scope `{scope}`: use one of {} or `<resource>:<action>`", BROAD.join(", ")),
            );
        } else if !out.iter().any(|s| s == scope) {
            out.push(scope.to_string());
        }
    }
    out
}

/// True when the single scope `granted` allows `action` on `resource`. `objects.<type>` is
/// covered by whatever covers `objects`.
pub fn grants(granted: &str, resource: &str, action: &str) -> bool {
    if let Some(("objects", _)) = resource.split_once('.') {
        if grants(granted, "objects", action) {
            return true;
        }
    }
    match granted {
        "*" => true,
        "read" => action == "read" && !is_admin_resource(resource),
        "write" => matches!(action, "write" | "delete") && !is_admin_resource(resource),
        // The admin group: every admin resource, and the tenant's entitlements.
        "admin" => is_admin_resource(resource) || resource == "entitlements",
        _ => {
            if let Some((_, resources)) = GROUPS.iter().find(|(name, _)| *name == granted) {
                return resources.contains(&resource);
            }
            match granted.split_once(':') {
                Some((r, a)) => r == resource && (a == "*" || a == action),
                None => false,
            }
        }
    }
}

/// True when a holder of `granted` may hand out `wanted` (no credential can mint a wider one).
pub fn covers<S: AsRef<str>>(granted: &[S], wanted: &str) -> bool {
    let has = |s: &str| granted.iter().any(|g| g.as_ref() == s);
    if has("*") || has(wanted) {
        return true;
    }
    if BROAD.contains(&wanted) {
        return false;
    }
    match wanted.split_once(':') {
        // `<resource>:*` is every action routes declare: read, write and delete.
        Some((resource, "*")) => {
            granted.iter().any(|g| grants(g.as_ref(), resource, "*"))
                || ["read", "write", "delete"]
                    .iter()
                    .all(|action| granted.iter().any(|g| grants(g.as_ref(), resource, action)))
        }
        Some((resource, action)) => granted.iter().any(|g| grants(g.as_ref(), resource, action)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS_READ: Required = Required::new("api-keys", "read");
    const KEYS_DELETE: Required = Required::new("api-keys", "delete");

    #[test]
    fn fine_scope_rules_follow_the_contract() {
        assert!(KEYS_READ.satisfied_by("api-keys:read"));
        assert!(KEYS_READ.satisfied_by("api-keys:*"));
        assert!(!KEYS_READ.satisfied_by("read"));
        assert!(KEYS_READ.satisfied_by("*"));
        assert!(KEYS_READ.satisfied_by("admin"));
        assert!(!KEYS_READ.satisfied_by("write"));
        assert!(!KEYS_READ.satisfied_by("api-keys:write"));
        assert!(!KEYS_READ.satisfied_by("webhooks:read"));
        assert!(!KEYS_READ.satisfied_by("files"));
        assert!(!KEYS_DELETE.satisfied_by("write"));
        assert!(!KEYS_DELETE.satisfied_by("read"));
        let objects_read = Required::new("objects", "read");
        assert!(objects_read.satisfied_by("read"));
        assert!(Required::new("objects", "delete").satisfied_by("write"));
    }

    #[test]
    fn broad_read_and_write_stop_at_the_admin_group() {
        for resource in ADMIN_RESOURCES {
            for action in ["read", "write", "delete"] {
                let required = Required::new(resource, action);
                assert!(!required.satisfied_by("read") && !required.satisfied_by("write"), "{resource}:{action}");
                assert!(required.satisfied_by("admin") && required.satisfied_by("*"), "{resource}:{action}");
            }
        }
        assert!(Required::new("webhooks", "write").satisfied_by("write"));
        assert!(Required::new("roles", "read").satisfied_by("roles:*"));
    }

    #[test]
    fn per_type_object_scopes() {
        assert!(is_valid("objects.deals:read") && is_valid("objects.deals:*"));
        assert!(!is_valid("objects.Deals:read") && !is_valid("webhooks.x:read") && !is_valid("objects.:read"));
        assert!(grants("objects.deals:read", "objects.deals", "read"));
        assert!(grants("objects:read", "objects.deals", "read"));
        assert!(grants("read", "objects.deals", "read"));
        assert!(grants("objects.deals:*", "objects.deals", "delete"));
        assert!(!grants("objects.deals:read", "objects.notes", "read"));
        assert!(!grants("objects.deals:read", "objects", "read"));
        assert!(covers(&["objects:*"], "objects.deals:write"));
        assert!(!covers(&["objects.deals:*"], "objects:read"));
        assert!(covers(&["read", "write"], "objects.deals:*"));
        assert!(!covers(&["read"], "objects.deals:*"));
    }

    #[test]
    fn validates_scope_names() {
        assert!(is_valid("read"));
        assert!(is_valid("webhooks:read"));
        assert!(is_valid("objects:*"));
        assert!(!is_valid("Webhooks:read"));
        assert!(!is_valid("superuser"));
        assert!(!is_valid(":read"));
        assert!(!is_valid("a:b:c"));
    }

    #[test]
    fn no_credential_mints_a_wider_one() {
        assert!(covers(&["*"], "admin"));
        assert!(covers(&["read", "write"], "read"));
        assert!(!covers(&["read"], "write"));
        assert!(covers(&["read"], "webhooks:read"));
        assert!(!covers(&["read"], "webhooks:write"));
        assert!(!covers(&["read", "write"], "users:write"));
        assert!(covers(&["write"], "objects:delete"));
        assert!(covers(&["webhooks:*"], "webhooks:read"));
        assert!(covers(&["admin"], "api-keys:*"));
        assert!(!covers(&["read", "write"], "api-keys:*"));
        assert!(!covers(&["api-keys:read"], "*"));
    }
}
