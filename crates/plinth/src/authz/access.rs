//! What a caller may do with the objects of one type: for a key, its scopes; for an end user,
//! their roles' permissions, the rows the type's policies admit (a condition compiled into the
//! SQL of the request) and the properties their roles may not read or write.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};
use sqlx::AnyConnection;

use super::policies::{self, Rule};
use super::UserAccess;
use crate::auth::Auth;
use crate::db::Backend;
use crate::http::{ApiError, ApiResult, ErrorCode};
use crate::objects::query::{cond_sql, Cond};
use crate::objects::sql::Binds;
use crate::objects::store::fetch_visible;
use crate::objects::{Object, Schema};
use crate::time;

/// What a request does to objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectAction {
    Select,
    Insert,
    Update,
    Delete,
}

impl ObjectAction {
    pub const ALL: [ObjectAction; 4] =
        [ObjectAction::Select, ObjectAction::Insert, ObjectAction::Update, ObjectAction::Delete];

    /// The permission action (`objects.<type>:<action>`) it needs.
    pub fn permission(self) -> &'static str {
        match self {
            ObjectAction::Select => "read",
            ObjectAction::Insert | ObjectAction::Update => "write",
            ObjectAction::Delete => "delete",
        }
    }

    /// Its name in a policy.
    pub fn policy_name(self) -> &'static str {
        match self {
            ObjectAction::Select => "select",
            ObjectAction::Insert => "insert",
            ObjectAction::Update => "update",
            ObjectAction::Delete => "delete",
        }
    }
}

/// True when the credential's scopes (a key's, or an end user's permissions) allow `action` on
/// objects of `type_name`.
pub fn permits(auth: &Auth, type_name: &str, action: ObjectAction) -> bool {
    let resource = format!("objects.{type_name}");
    auth.is_admin() || auth.scopes().iter().any(|s| crate::scopes::grants(s, &resource, action.permission()))
}

/// Whether `auth` may `action` objects of `schema`'s type at all, before any row is read.
fn check_permission(auth: &Auth, schema: &Schema, action: ObjectAction) -> ApiResult<()> {
    let name = &schema.object_type.name;
    if auth.access.is_none() {
        if permits(auth, name, action) {
            return Ok(());
        }
        return Err(ApiError::new(
            ErrorCode::InsufficientScope,
            format!("this credential lacks the scope `objects.{name}:{}`", action.permission()),
        ));
    }
    if !permits(auth, name, ObjectAction::Select) {
        return Err(ApiError::not_found("object type"));
    }
    if !permits(auth, name, action) {
        return Err(ApiError::forbidden(format!("your roles do not grant `objects.{name}:{}`", action.permission())));
    }
    Ok(())
}

/// An object type as end users' requests read it: its schema and its enabled policies.
#[derive(Debug)]
pub struct TypeAccess {
    pub schema: Schema,
    pub rules: Vec<Rule>,
}

/// The type `type_ref` of the caller's tenant and what the caller may `action` of it, for
/// requests that read. End users' come from `App::schemas` where it is enabled.
pub async fn readable(
    app: &crate::app::App,
    conn: &mut AnyConnection,
    auth: &Auth,
    type_ref: &str,
    action: ObjectAction,
) -> ApiResult<(Arc<TypeAccess>, ObjectGuard)> {
    let tenant = auth.tenant()?;
    if auth.access.is_none() {
        let schema = Schema::load(conn, tenant, type_ref).await?;
        let guard = ObjectGuard::load(conn, auth, &schema, action).await?;
        return Ok((Arc::new(TypeAccess { schema, rules: Vec::new() }), guard));
    }
    let key = format!("{}:{type_ref}", tenant.as_str());
    let type_access = match app.schemas.get(&key) {
        Some(found) => found,
        None => {
            let generation = app.schemas.generation();
            let schema = Schema::load(conn, tenant, type_ref).await?;
            let rules = policies::enabled_rules(conn, &schema.object_type.id).await?;
            let loaded = Arc::new(TypeAccess { schema, rules });
            app.schemas.insert(key, loaded.clone(), generation);
            loaded
        }
    };
    let guard = ObjectGuard::of(auth, &type_access, action)?;
    Ok((type_access, guard))
}

/// An end user's standing on one type.
#[derive(Debug, Clone)]
struct UserGuard {
    access: Arc<UserAccess>,
    rules: Vec<Rule>,
    hidden: BTreeSet<String>,
    read_only: BTreeSet<String>,
}

/// The decision for one request on one type: which rows, which properties.
#[derive(Debug, Clone)]
pub struct ObjectGuard {
    user: Option<UserGuard>,
    now: time::Timestamp,
}

impl ObjectGuard {
    /// A guard that admits everything: keys, and the platform admin.
    pub fn unrestricted() -> ObjectGuard {
        ObjectGuard { user: None, now: time::now() }
    }

    /// Checks that `auth` may `action` objects of `schema`'s type, and loads what restricts it.
    /// A key lacking the scope is 403 `INSUFFICIENT_SCOPE`. An end user whose roles grant no
    /// reading of the type is told it does not exist (404); one who may read but not `action`
    /// is 403.
    pub async fn load(
        conn: &mut AnyConnection,
        auth: &Auth,
        schema: &Schema,
        action: ObjectAction,
    ) -> ApiResult<ObjectGuard> {
        check_permission(auth, schema, action)?;
        let Some(access) = auth.access.as_ref() else { return Ok(ObjectGuard::unrestricted()) };
        let rules = policies::enabled_rules(conn, &schema.object_type.id).await?;
        Ok(ObjectGuard::for_user(access, rules, schema))
    }

    /// `load`, with the type's policies already read.
    pub fn of(auth: &Auth, type_access: &TypeAccess, action: ObjectAction) -> ApiResult<ObjectGuard> {
        check_permission(auth, &type_access.schema, action)?;
        Ok(match auth.access.as_ref() {
            Some(access) => ObjectGuard::for_user(access, type_access.rules.clone(), &type_access.schema),
            None => ObjectGuard::unrestricted(),
        })
    }

    /// The guard of an end user with the type's enabled policies.
    pub fn for_user(access: &Arc<UserAccess>, rules: Vec<Rule>, schema: &Schema) -> ObjectGuard {
        let rules = rules
            .into_iter()
            .filter(|rule| rule.role_id.as_deref().is_none_or(|role| access.holds_role_id(role)))
            .collect();
        let (hidden, read_only) = access.denied_on(&schema.object_type.id);
        ObjectGuard { user: Some(UserGuard { access: access.clone(), rules, hidden, read_only }), now: time::now() }
    }

    pub fn is_restricted(&self) -> bool {
        self.user.is_some()
    }

    /// The rows `action` may reach: `None` for every row; for an end user, the OR of the
    /// conditions of the policies that apply (nothing when none does).
    pub fn rows(&self, schema: &Schema, action: ObjectAction) -> Option<Cond> {
        let user = self.user.as_ref()?;
        let conds: Vec<Cond> = user
            .rules
            .iter()
            .filter(|rule| rule.applies_to(action))
            .map(|rule| policies::compile(schema, rule, &user.access.caller, &self.now))
            .collect();
        Some(if conds.is_empty() { Cond::Never } else { Cond::Any(conds) })
    }

    /// The schema as this caller may query it: without the properties it may not read, so that
    /// filtering, sorting or selecting by one is refused like an unknown property.
    pub fn readable_schema(&self, schema: &Schema) -> Schema {
        let mut visible = schema.clone();
        if let Some(user) = &self.user {
            visible.properties.retain(|p| !user.hidden.contains(&p.name));
        }
        visible
    }

    /// Refuses full-text search to a caller who may not read one of the properties it searches
    /// (the words of every text property are indexed together: a match would tell what a hidden
    /// one holds).
    pub fn check_text_search(&self, schema: &Schema, text: Option<&String>) -> ApiResult<()> {
        let Some(user) = &self.user else { return Ok(()) };
        let hidden_text = schema.properties.iter().any(|p| p.data_type.searchable() && user.hidden.contains(&p.name));
        if text.is_some() && hidden_text {
            return Err(ApiError::invalid(
                "query",
                "full-text search covers a property your roles may not read: filter by readable properties instead",
            ));
        }
        Ok(())
    }

    /// Removes the properties the caller may not read.
    pub fn redact(&self, properties: &mut Map<String, Value>) {
        if let Some(user) = &self.user {
            properties.retain(|name, _| !user.hidden.contains(name));
        }
    }

    /// An error as the caller may see it: a conflict on a property they may not read does not
    /// name it.
    pub fn redact_error(&self, mut error: ApiError) -> ApiError {
        let Some(user) = &self.user else { return error };
        let hidden = error.extra.get("property").and_then(Value::as_str).is_some_and(|p| user.hidden.contains(p));
        if hidden {
            error.extra.remove("property");
            error.message = "another object has one of these unique values".into();
        }
        error
    }

    pub fn redact_object(&self, mut object: Object) -> Object {
        self.redact(&mut object.properties);
        object
    }

    /// Names the caller may not read, among `names`, removed.
    pub fn redact_names(&self, names: &mut Vec<String>) {
        if let Some(user) = &self.user {
            names.retain(|name| !user.hidden.contains(name));
        }
    }

    /// Refuses a write that sets a property the caller may not write (403).
    pub fn check_writable<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> ApiResult<()> {
        let Some(user) = &self.user else { return Ok(()) };
        let denied: Vec<&String> = names.into_iter().filter(|name| user.read_only.contains(*name)).collect();
        if denied.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = denied.iter().map(|n| format!("`{n}`")).collect();
        Err(ApiError::forbidden(format!("your roles may not write {}", names.join(", "))))
    }

    /// Fails with 403 when no policy lets the caller `action` at all (before anything is read
    /// or written).
    pub fn require_any(&self, schema: &Schema, action: ObjectAction) -> ApiResult<()> {
        match self.rows(schema, action) {
            Some(Cond::Never) => Err(ApiError::forbidden(format!(
                "no policy of `{}` lets you {} its objects",
                schema.object_type.name,
                action.policy_name()
            ))),
            _ => Ok(()),
        }
    }

    /// True when the stored object `object_id` meets `action`'s policies (always, for a key).
    pub async fn admits(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        schema: &Schema,
        action: ObjectAction,
        object_id: &str,
    ) -> ApiResult<bool> {
        let Some(cond) = self.rows(schema, action) else { return Ok(true) };
        let mut binds = Binds::new(backend);
        let id = binds.text(object_id);
        let filter = cond_sql(backend, &cond, &mut binds);
        let found: Option<(i64,)> =
            sqlx::query_as_with(&format!("SELECT 1 FROM objects WHERE id = {id} AND {filter}"), binds.arguments()?)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(found.is_some())
    }

    /// Refuses (403) a write whose result falls outside the caller's policies for `action`:
    /// a user cannot write a row out of their own reach. Call in the writing transaction, after
    /// the write, and roll back on refusal.
    pub async fn check_written(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        schema: &Schema,
        action: ObjectAction,
        object_id: &str,
    ) -> ApiResult<()> {
        if self.admits(conn, backend, schema, action, object_id).await? {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the object as written is outside what your policies let you {}",
                action.policy_name()
            )))
        }
    }
}

/// Evaluates conditions on rows that are not stored (event payloads, simulated samples), with the
/// same SQL the stored rows are read with: one query, one answer per condition.
pub async fn evaluate(
    conn: &mut AnyConnection,
    backend: Backend,
    conds: &[Cond],
    row: &RowValues,
) -> ApiResult<Vec<bool>> {
    if conds.is_empty() {
        return Ok(Vec::new());
    }
    let mut binds = Binds::new(backend);
    let properties = binds.text(row.properties.to_string());
    let id = binds.text(row.id.clone());
    let created_by = match &row.created_by {
        Some(author) => binds.text(author.clone()),
        None => "NULL".into(),
    };
    let created_at = binds.text(row.created_at.clone());
    let updated_at = binds.text(row.updated_at.clone());
    let columns: Vec<String> = conds
        .iter()
        .map(|cond| format!("CAST(CASE WHEN {} THEN 1 ELSE 0 END AS BIGINT)", cond_sql(backend, cond, &mut binds)))
        .collect();
    let sql = format!(
        "SELECT {} FROM (SELECT CAST({properties} AS TEXT) AS properties, CAST({id} AS TEXT) AS id, \
         CAST({created_by} AS TEXT) AS created_by, CAST({created_at} AS TEXT) AS created_at, \
         CAST({updated_at} AS TEXT) AS updated_at) AS o",
        columns.join(", ")
    );
    let row = sqlx::query_with(&sql, binds.arguments()?).fetch_one(&mut *conn).await?;
    use sqlx::Row;
    (0..conds.len()).map(|i| Ok(row.try_get::<i64, _>(i).map(|v| v == 1)?)).collect()
}

/// A row to evaluate conditions on.
#[derive(Debug, Clone)]
pub struct RowValues {
    pub id: String,
    pub properties: Value,
    pub created_by: Option<String>,
    /// Stored timestamps (`time::to_db`).
    pub created_at: String,
    pub updated_at: String,
}

impl RowValues {
    pub fn of(object: &Object) -> RowValues {
        RowValues {
            id: object.id.clone(),
            properties: Value::Object(object.properties.clone()),
            created_by: object.created_by.clone(),
            created_at: time::to_db(&object.created_at),
            updated_at: time::to_db(&object.updated_at),
        }
    }
}

impl RowValues {
    /// The row an event's `object` describes (as delivered: RFC 3339 times).
    pub fn of_payload(object: &Value) -> Option<RowValues> {
        let at = |name: &str| {
            object[name]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| time::to_db(&t.with_timezone(&chrono::Utc)))
        };
        Some(RowValues {
            id: object["id"].as_str()?.to_string(),
            properties: object.get("properties").cloned().unwrap_or(Value::Null),
            created_by: object["created_by"].as_str().map(str::to_owned),
            created_at: at("created_at")?,
            updated_at: at("updated_at")?,
        })
    }
}

/// Decides, event by event, what a stream's end user may receive: object events only for rows
/// their policies let them read, without the properties they may not read; other events only
/// with `events:read`. What it learns of each type is kept until `reset` (the stream's
/// credential check), so a change to roles or policies reaches open streams there.
#[derive(Default)]
pub struct EventFilter {
    types: std::collections::HashMap<String, Option<(Schema, ObjectGuard)>>,
}

impl EventFilter {
    pub fn reset(&mut self) {
        self.types.clear();
    }

    /// Loads, once, what `auth` may read of the type `type_name`.
    async fn load_type(&mut self, app: &crate::app::App, auth: &Auth, type_name: &str) {
        if self.types.contains_key(type_name) {
            return;
        }
        let loaded = async {
            let tenant = auth.tenant().ok()?;
            let mut conn = app.db.pool().acquire().await.ok()?;
            let schema = Schema::load(&mut conn, tenant, type_name).await.ok()?;
            let guard = ObjectGuard::load(&mut conn, auth, &schema, ObjectAction::Select).await.ok()?;
            Some((schema, guard))
        }
        .await;
        self.types.insert(type_name.to_owned(), loaded);
    }

    /// True when `auth` may read the stored object `object_id` of the type `type_name`.
    async fn reads(&mut self, app: &crate::app::App, auth: &Auth, type_name: &str, object_id: &str) -> bool {
        self.load_type(app, auth, type_name).await;
        let Some(Some((schema, guard))) = self.types.get(type_name) else { return false };
        let Ok(mut conn) = app.db.pool().acquire().await else { return false };
        let found =
            fetch_visible(&mut conn, app.db.backend(), schema, object_id, guard.rows(schema, ObjectAction::Select))
                .await;
        found.is_ok()
    }

    /// The event as `auth` may receive it, or `None`. Keys receive every event they subscribed to.
    pub async fn admit(&mut self, app: &crate::app::App, auth: &Auth, event: &Value) -> Option<Value> {
        let kind = event["type"].as_str().unwrap_or_default();
        // Users' events carry their addresses and metadata: they need `users:read` beside the
        // stream's own scope.
        if kind.starts_with("user.") && auth.require(crate::scopes::required::USERS_READ).is_err() {
            return None;
        }
        if auth.access.is_none() {
            return Some(event.clone());
        }
        if kind.starts_with("file.") {
            // A file's event reaches the users who may read the file.
            auth.require(crate::scopes::required::FILES_READ).ok()?;
            let file = &event["data"]["file"];
            let facts = super::files::FileFacts {
                access: file["access"].as_str().unwrap_or("private"),
                uploaded_by: file["uploaded_by"].as_str(),
                object_type_id: file["object_type_id"].as_str(),
                object_id: file["object_id"].as_str(),
            };
            let mut conn = app.db.pool().acquire().await.ok()?;
            let read = super::files::check(app, &mut conn, auth, facts, super::files::FileAction::Read).await;
            return read.is_ok().then(|| event.clone());
        }
        if kind.starts_with("association.") || kind.starts_with("comment.") || kind.starts_with("workflow.") {
            // A link's, a comment's or a review's event reaches the users who may read every object it names.
            let data = &event["data"];
            let named: Vec<(String, String)> = if kind.starts_with("association.") {
                let link = &data["association"];
                vec![
                    (data["from_type"].as_str()?.to_owned(), link["from_id"].as_str()?.to_owned()),
                    (data["to_type"].as_str()?.to_owned(), link["to_id"].as_str()?.to_owned()),
                ]
            } else if kind.starts_with("workflow.") {
                vec![(data["object_type"].as_str()?.to_owned(), data["object_id"].as_str()?.to_owned())]
            } else {
                vec![(data["object_type"].as_str()?.to_owned(), data["comment"]["object_id"].as_str()?.to_owned())]
            };
            auth.require(crate::scopes::required::EVENTS_READ).ok()?;
            for (type_name, object_id) in named {
                if !self.reads(app, auth, &type_name, &object_id).await {
                    return None;
                }
            }
            return Some(event.clone());
        }
        if !kind.starts_with("object.") {
            let allowed = !super::is_service_event(kind) && auth.require(crate::scopes::required::EVENTS_READ).is_ok();
            return allowed.then(|| event.clone());
        }
        let type_name = event["data"]["object_type"].as_str()?.to_string();
        self.load_type(app, auth, &type_name).await;
        let (schema, guard) = self.types.get(&type_name)?.as_ref()?;
        // The name may have passed to another type since the event was recorded.
        if event["data"]["object"]["object_type_id"].as_str() != Some(schema.object_type.id.as_str()) {
            return None;
        }
        let cond = guard.rows(schema, ObjectAction::Select)?;
        if matches!(cond, Cond::Never)
            || matches!(&cond, Cond::Any(items) if items.iter().all(|c| matches!(c, Cond::Never)))
        {
            return None;
        }
        let row = RowValues::of_payload(&event["data"]["object"])?;
        let mut conn = app.db.pool().acquire().await.ok()?;
        let admitted = evaluate(&mut conn, app.db.backend(), std::slice::from_ref(&cond), &row).await.ok()?;
        if admitted.first() != Some(&true) {
            return None;
        }
        let mut event = event.clone();
        if let Some(Value::Object(properties)) = event["data"]["object"].get_mut("properties") {
            guard.redact(properties);
        }
        if let Some(Value::Array(changed)) = event["data"].get_mut("changed") {
            let mut names: Vec<String> = changed.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
            guard.redact_names(&mut names);
            *changed = names.into_iter().map(Value::String).collect();
        }
        Some(event)
    }
}

/// The objects `user_id` wrote that `auth` may read, as its guard shows them (at most `limit`,
/// oldest first): types it may not read are left out, and so are rows its policies do not admit
/// and properties it may not read.
pub async fn objects_written_by(
    conn: &mut AnyConnection,
    backend: Backend,
    auth: &Auth,
    user_id: &str,
    limit: i64,
) -> ApiResult<Vec<Value>> {
    let tenant = auth.tenant()?;
    let types: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT object_type_id FROM objects WHERE tenant_id = $1 AND created_by = $2")
            .bind(tenant.as_str())
            .bind(user_id)
            .fetch_all(&mut *conn)
            .await?;
    let mut out = Vec::new();
    for (type_id,) in types {
        let left = limit - out.len() as i64;
        if left <= 0 {
            break;
        }
        let schema = Schema::load(conn, tenant, &type_id).await?;
        let Ok(guard) = ObjectGuard::load(conn, auth, &schema, ObjectAction::Select).await else { continue };
        let mut binds = Binds::new(backend);
        let type_p = binds.text(type_id.clone());
        let user_p = binds.text(user_id);
        let filter = match guard.rows(&schema, ObjectAction::Select) {
            Some(cond) => format!(" AND {}", cond_sql(backend, &cond, &mut binds)),
            None => String::new(),
        };
        let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as_with(
            &format!(
                "SELECT id, properties, created_at, deleted_at FROM objects WHERE object_type_id = {type_p} \
                 AND created_by = {user_p}{filter} ORDER BY created_at LIMIT {left}"
            ),
            binds.arguments()?,
        )
        .fetch_all(&mut *conn)
        .await?;
        for (id, properties, created_at, deleted_at) in rows {
            let mut properties: Map<String, Value> = serde_json::from_str(&properties).unwrap_or_default();
            guard.redact(&mut properties);
            out.push(serde_json::json!({
                "id": id, "object_type": schema.object_type.name, "created_at": created_at, "properties": properties,
                "is_deleted": deleted_at.is_some(),
            }));
        }
    }
    Ok(out)
}
