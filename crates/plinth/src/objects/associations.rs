//! Associations (seed 002): typed, directed links between two objects of a tenant, with optional
//! metadata. Linking needs the right to change the object it starts from and to read the one it
//! leads to; a list shows only links whose other end the caller may read, decided in the query.
//! Purging either end removes its links (a foreign key); a trashed end hides them until restored.

use std::collections::{BTreeSet, HashMap};

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::{AnyConnection, FromRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{cond_sql, Cond};
use super::routes::fetch_for;
use super::sql::{self, Binds};
use super::store::fetch_visible;
use super::Schema;
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::Auth;
use crate::authz::access::readable;
use crate::authz::{ObjectAction, ObjectGuard};
use crate::events::{self, Event};
use crate::http::{list, ApiError, ApiResult, Data, OptionalJson, Page, Path, Query};
use crate::id::{self, TenantId};
use crate::time;

/// Largest `meta`, serialised.
pub const META_MAX_BYTES: usize = 10 * 1024;
/// Longest association type name.
const TYPE_NAME_MAX: usize = 64;
/// Most objects `include` embeds per object and association type.
pub const INCLUDE_MAX: usize = 100;
/// The id prefix of associations.
pub const PREFIX: &str = "asc";

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(put_association, delete_association)).routes(routes!(list_associations))
}

/// A link from one object to another.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Association {
    #[schema(example = "asc_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    /// Its name, such as `primary_contact`.
    pub association_type: String,
    pub from_type_id: String,
    pub from_id: String,
    pub to_type_id: String,
    pub to_id: String,
    /// What the caller attached to the link, if anything.
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    /// In a list: `outgoing` when the listed object is `from`, `incoming` when it is `to`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The credential that made it.
    pub created_by: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, FromRow)]
struct AssociationRow {
    id: String,
    association_type: String,
    from_type_id: String,
    from_id: String,
    to_type_id: String,
    to_id: String,
    meta: Option<String>,
    created_by: Option<String>,
    created_at: String,
    updated_at: String,
    direction: String,
}

const COLUMNS: &str = "id, association_type, from_type_id, from_id, to_type_id, to_id, meta, created_by, created_at, \
                       updated_at";

impl TryFrom<AssociationRow> for Association {
    type Error = ApiError;

    fn try_from(row: AssociationRow) -> ApiResult<Association> {
        Ok(Association {
            meta: row.meta.as_deref().map(serde_json::from_str).transpose()?,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            direction: Some(row.direction).filter(|d| !d.is_empty()),
            id: row.id,
            association_type: row.association_type,
            from_type_id: row.from_type_id,
            from_id: row.from_id,
            to_type_id: row.to_type_id,
            to_id: row.to_id,
            created_by: row.created_by,
        })
    }
}

/// Checks an association type's name: `[a-z][a-z0-9_]*`, at most 64 characters.
pub fn check_type_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = name.len() <= TYPE_NAME_MAX
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!("an association type is a lowercase letter, then letters, digits or `_`, at most {TYPE_NAME_MAX}"))
    }
}

/// An association's metadata.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAssociation {
    /// Any JSON object, at most 10 KB serialised; absent or `null` for none. Replaces what the
    /// link held.
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Map<String, Value>>,
}

/// The path of one association.
type LinkPath = (String, String, String, String, String);

/// Both ends of a link, checked for the caller: the `from` object it may change, the `to` object
/// it may read.
struct Ends {
    from: Schema,
    to: Schema,
    from_id: String,
    to_id: String,
    to_trashed: bool,
    from_trashed: bool,
}

async fn ends(
    tx: &mut crate::db::WriteTx,
    app: &App,
    auth: &Auth,
    (from_type, from_id, _, to_type, to_id): &LinkPath,
) -> ApiResult<Ends> {
    let tenant = auth.tenant()?;
    let backend = app.db.backend();
    let from = Schema::load_for_write(tx, app, tenant, from_type).await?;
    let guard = ObjectGuard::load(tx, auth, &from, ObjectAction::Update).await?;
    let from_object = fetch_for(tx, backend, &guard, &from, from_id, ObjectAction::Update).await?;
    let to = Schema::load(tx, tenant, to_type).await?;
    let to_guard = ObjectGuard::load(tx, auth, &to, ObjectAction::Select).await?;
    let to_object = fetch_visible(tx, backend, &to, to_id, to_guard.rows(&to, ObjectAction::Select)).await?;
    Ok(Ends {
        from,
        to,
        from_id: from_object.id,
        to_id: to_object.id,
        from_trashed: from_object.is_deleted,
        to_trashed: to_object.is_deleted,
    })
}

async fn find_link(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    from_id: &str,
    association_type: &str,
    to_id: &str,
) -> ApiResult<Option<Association>> {
    let row: Option<AssociationRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, '' AS direction FROM associations \
         WHERE from_id = $1 AND association_type = $2 AND to_id = $3 AND tenant_id = $4"
    ))
    .bind(from_id)
    .bind(association_type)
    .bind(to_id)
    .bind(tenant.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(Association::try_from).transpose()
}

async fn record_change(
    tx: &mut crate::db::WriteTx,
    who: &Who,
    tenant: &TenantId,
    kind: &str,
    association: &Association,
    ends: &Ends,
) -> ApiResult<()> {
    let event = Event {
        kind,
        resource_type: "association",
        resource_id: &association.id,
        data: json!({
            "association": association,
            "from_type": ends.from.object_type.name,
            "to_type": ends.to.object_type.name,
        }),
    };
    events::record(tx, tenant, event).await?;
    let entry = Entry {
        action: kind,
        resource_type: "association",
        resource_id: &association.id,
        changes: json!({
            "association_type": association.association_type,
            "from_id": association.from_id,
            "to_id": association.to_id,
        }),
    };
    audit::record(&mut **tx, who, None, entry).await?;
    Ok(())
}

/// Create or update an association
///
/// Links `from` to `to` under `association_type` (`[a-z][a-z0-9_]*`), or replaces the `meta` of
/// the link that exists: 201 when the link is new, 200 when it was there. Both objects must be
/// live objects of the tenant; the caller needs to change the `from` object and read the `to`
/// object (keys: `objects.<from type>:write` and `objects.<to type>:read`).
#[utoipa::path(put,
    path = "/v1/objects/{object_type_id}/{object_id}/associations/{association_type}/{to_type}/{to_id}",
    tag = "Associations", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The `from` object's type, by id or name"),
           ("object_id" = String, Path, description = "The `from` object's id"),
           ("association_type" = String, Path, description = "The link's name, such as `primary_contact`",
            pattern = "^[a-z][a-z0-9_]{0,63}$"),
           ("to_type" = String, Path, description = "The `to` object's type, by id or name"),
           ("to_id" = String, Path, description = "The `to` object's id")),
    request_body(content = Option<PutAssociation>, description = "Optional metadata"),
    responses((status = 200, body = crate::http::response::Envelope<Association>, description = "The link was there: its meta replaced"),
              (status = 201, body = crate::http::response::Envelope<Association>, description = "A new link"),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody, description = "One end is in the trash"),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn put_association(
    auth: Auth,
    State(app): State<App>,
    Path(path): Path<LinkPath>,
    OptionalJson(body): OptionalJson<PutAssociation>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let body = body.unwrap_or_default();
    check_type_name(&path.2).map_err(|problem| ApiError::invalid("association_type", problem))?;
    let meta = match body.meta {
        Some(meta) => {
            let text = serde_json::to_string(&meta)?;
            if text.len() > META_MAX_BYTES {
                return Err(ApiError::invalid("meta", "must be at most 10 KB serialised"));
            }
            Some(text)
        }
        None => None,
    };
    let mut tx = app.db.begin_write().await?;
    let ends = ends(&mut tx, &app, &auth, &path).await?;
    if ends.from_trashed || ends.to_trashed {
        return Err(ApiError::conflict("one end of the association is in the trash: restore it first"));
    }
    let now = time::to_db(&time::now());
    let existing = find_link(&mut tx, tenant, &ends.from_id, &path.2, &ends.to_id).await?;
    let (kind, id) = match existing {
        Some(found) => {
            sqlx::query("UPDATE associations SET meta = $1, updated_at = $2 WHERE id = $3")
                .bind(meta.as_deref())
                .bind(&now)
                .bind(&found.id)
                .execute(&mut *tx)
                .await?;
            ("association.updated", found.id)
        }
        None => {
            let id = id::new_id(PREFIX);
            sqlx::query(
                "INSERT INTO associations (id, tenant_id, association_type, from_type_id, from_id, to_type_id, \
                 to_id, meta, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            )
            .bind(&id)
            .bind(tenant.as_str())
            .bind(&path.2)
            .bind(&ends.from.object_type.id)
            .bind(&ends.from_id)
            .bind(&ends.to.object_type.id)
            .bind(&ends.to_id)
            .bind(meta.as_deref())
            .bind(who.actor_id.as_deref().unwrap_or(who.actor_type))
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            ("association.created", id)
        }
    };
    let association = find_link(&mut tx, tenant, &ends.from_id, &path.2, &ends.to_id)
        .await?
        .ok_or_else(|| ApiError::internal(format!("association {id} vanished in its own transaction")))?;
    record_change(&mut tx, &who, tenant, kind, &association, &ends).await?;
    tx.commit().await?;
    Ok(if kind == "association.created" {
        crate::http::Created(association).into_response()
    } else {
        Data(association).into_response()
    })
}

/// Delete an association
///
/// Removes the link; 404 when there is none. Needs the same rights as making it.
#[utoipa::path(delete,
    path = "/v1/objects/{object_type_id}/{object_id}/associations/{association_type}/{to_type}/{to_id}",
    tag = "Associations", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The `from` object's type, by id or name"),
           ("object_id" = String, Path, description = "The `from` object's id"),
           ("association_type" = String, Path, description = "The link's name", pattern = "^[a-z][a-z0-9_]{0,63}$"),
           ("to_type" = String, Path, description = "The `to` object's type, by id or name"),
           ("to_id" = String, Path, description = "The `to` object's id")),
    responses((status = 200, body = crate::http::response::Envelope<crate::http::Deleted>),
              (status = 404, body = crate::http::error::ErrorBody)))]
async fn delete_association(
    auth: Auth,
    State(app): State<App>,
    Path(path): Path<LinkPath>,
) -> ApiResult<Data<crate::http::Deleted>> {
    let tenant = auth.tenant()?;
    let who = Who::from(&auth);
    let mut tx = app.db.begin_write().await?;
    let ends = ends(&mut tx, &app, &auth, &path).await?;
    let association = find_link(&mut tx, tenant, &ends.from_id, &path.2, &ends.to_id)
        .await?
        .ok_or_else(|| ApiError::not_found("association"))?;
    sqlx::query("DELETE FROM associations WHERE id = $1").bind(&association.id).execute(&mut *tx).await?;
    record_change(&mut tx, &who, tenant, "association.deleted", &association, &ends).await?;
    tx.commit().await?;
    Ok(crate::http::Deleted::new(association.id))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AssociationsQuery {
    /// `outgoing` (links from this object), `incoming` (links to it) or `both` (default).
    #[param(inline)]
    pub direction: Option<Direction>,
    /// Only links of this type.
    #[param(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    pub association_type: Option<String>,
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outgoing,
    Incoming,
    #[default]
    Both,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    object: String,
    direction: Direction,
    association_type: Option<String>,
    after: String,
    total: i64,
}

/// What the caller may read of the objects of several types: one SQL condition over `objects`
/// (for a subquery: its column names are the objects table's) admitting live objects of a type
/// the caller may read in rows its policies admit, and each type's guard to redact them with.
pub struct Readable {
    /// `None` when the caller may read no object of any of the types.
    pub condition: Option<String>,
    pub guards: HashMap<String, ObjectGuard>,
}

pub async fn readable_objects(
    app: &App,
    conn: &mut AnyConnection,
    auth: &Auth,
    type_ids: &BTreeSet<String>,
    binds: &mut Binds,
) -> ApiResult<Readable> {
    let mut parts = Vec::new();
    let mut guards = HashMap::new();
    for type_id in type_ids {
        let (type_access, guard) = match readable(app, conn, auth, type_id, ObjectAction::Select).await {
            Ok(found) => found,
            // A type the caller may not read, or one deleted meanwhile: its objects stay hidden.
            Err(error) if error.code.status().is_client_error() => continue,
            Err(error) => return Err(error),
        };
        let schema = &type_access.schema;
        let literal = sql::literal(&schema.object_type.id);
        match guard.rows(schema, ObjectAction::Select) {
            None => parts.push(format!("object_type_id = {literal}")),
            Some(Cond::Never) => continue,
            Some(cond) => {
                parts.push(format!("(object_type_id = {literal} AND {})", cond_sql(app.db.backend(), &cond, binds)))
            }
        }
        guards.insert(type_id.clone(), guard);
    }
    let condition = (!parts.is_empty()).then(|| format!("deleted_at IS NULL AND ({})", parts.join(" OR ")));
    Ok(Readable { condition, guards })
}

/// Reads `include=<association_type>,...`: at most 10 association type names.
pub fn parse_include(text: &str) -> ApiResult<Vec<String>> {
    let kinds: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if kinds.len() > INCLUDE_TYPES_MAX {
        return Err(ApiError::invalid("include", format!("at most {INCLUDE_TYPES_MAX} association types")));
    }
    for kind in &kinds {
        check_type_name(kind).map_err(|problem| ApiError::invalid("include", problem))?;
    }
    Ok(kinds)
}

/// Most association types one `include` names.
const INCLUDE_TYPES_MAX: usize = 10;

#[derive(Debug, FromRow)]
struct EmbeddedRow {
    owner: String,
    association_type: String,
    #[sqlx(flatten)]
    object: super::ObjectRow,
}

/// Embeds in each of `objects`, under `included.<association_type>`, the objects linked to it
/// (either way) by each of `kinds` that the caller may read, redacted as the caller reads them:
/// at most 100 per object and type, oldest link first. One query for the whole page.
pub async fn embed(
    app: &App,
    conn: &mut AnyConnection,
    auth: &Auth,
    objects: &mut [super::Object],
    kinds: &[String],
) -> ApiResult<()> {
    if kinds.is_empty() || objects.is_empty() {
        return Ok(());
    }
    for object in objects.iter_mut() {
        object.included = Some(kinds.iter().map(|k| (k.clone(), Value::Array(Vec::new()))).collect());
    }
    let backend = app.db.backend();
    let ids: Vec<String> = objects.iter().map(|o| o.id.clone()).collect();
    let mut type_binds = Binds::new(backend);
    let owners: Vec<String> = ids.iter().map(|id| type_binds.text(id.clone())).collect();
    let names: Vec<String> = kinds.iter().map(|k| type_binds.text(k.clone())).collect();
    let (owners_sql, names_sql) = (owners.join(", "), names.join(", "));
    let types: Vec<(String,)> = sqlx::query_as_with(
        &format!(
            "SELECT to_type_id FROM associations WHERE from_id IN ({owners_sql}) AND association_type IN ({names_sql}) \
             UNION SELECT from_type_id FROM associations WHERE to_id IN ({owners_sql}) AND association_type IN ({names_sql})"
        ),
        type_binds.arguments()?,
    )
    .fetch_all(&mut *conn)
    .await?;
    let types: BTreeSet<String> = types.into_iter().map(|(id,)| id).collect();
    let mut binds = Binds::new(backend);
    let readable = readable_objects(app, conn, auth, &types, &mut binds).await?;
    let Some(visible) = readable.condition else { return Ok(()) };
    let owners: Vec<String> = ids.iter().map(|id| binds.text(id.clone())).collect();
    let names: Vec<String> = kinds.iter().map(|k| binds.text(k.clone())).collect();
    let (owners_sql, names_sql) = (owners.join(", "), names.join(", "));
    let columns: Vec<String> = super::COLUMNS.split(", ").map(|c| format!("o.{c}")).collect();
    let sql = format!(
        "WITH links AS (\
           SELECT from_id AS owner, to_id AS other, association_type, id FROM associations \
           WHERE from_id IN ({owners_sql}) AND association_type IN ({names_sql}) \
           UNION ALL \
           SELECT to_id AS owner, from_id AS other, association_type, id FROM associations \
           WHERE to_id IN ({owners_sql}) AND association_type IN ({names_sql}) AND from_id <> to_id), \
         ranked AS (\
           SELECT owner, other, association_type, ROW_NUMBER() OVER (PARTITION BY owner, association_type ORDER BY id) AS n \
           FROM links WHERE other IN (SELECT id FROM objects WHERE {visible})) \
         SELECT r.owner, r.association_type, {} FROM ranked r JOIN objects o ON o.id = r.other \
         WHERE r.n <= {INCLUDE_MAX} ORDER BY r.owner, r.association_type, r.n",
        columns.join(", ")
    );
    let rows: Vec<EmbeddedRow> = sqlx::query_as_with(&sql, binds.arguments()?).fetch_all(&mut *conn).await?;
    let mut by_owner: HashMap<String, Vec<(String, super::Object)>> = HashMap::new();
    for row in rows {
        let object = super::Object::try_from(row.object)?;
        let Some(guard) = readable.guards.get(&object.object_type_id) else { continue };
        by_owner.entry(row.owner).or_default().push((row.association_type, guard.redact_object(object)));
    }
    for object in objects.iter_mut() {
        let (Some(found), Some(included)) = (by_owner.remove(&object.id), object.included.as_mut()) else { continue };
        for (kind, other) in found {
            if let Some(Value::Array(items)) = included.get_mut(&kind) {
                items.push(serde_json::to_value(other)?);
            }
        }
    }
    Ok(())
}

/// The types at the other end of `object_id`'s links.
async fn other_types(
    conn: &mut AnyConnection,
    object_id: &str,
    direction: Direction,
    association_type: Option<&str>,
) -> ApiResult<BTreeSet<String>> {
    let kind = if association_type.is_some() { " AND association_type = $2" } else { "" };
    let mut sql = Vec::new();
    if direction != Direction::Incoming {
        sql.push(format!("SELECT DISTINCT to_type_id FROM associations WHERE from_id = $1{kind}"));
    }
    if direction != Direction::Outgoing {
        sql.push(format!("SELECT DISTINCT from_type_id FROM associations WHERE to_id = $1{kind}"));
    }
    let sql = sql.join(" UNION ");
    let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(object_id);
    if let Some(kind) = association_type {
        query = query.bind(kind);
    }
    Ok(query.fetch_all(&mut *conn).await?.into_iter().map(|(id,)| id).collect())
}

/// List associations
///
/// Links from (`outgoing`) and to (`incoming`) the object, oldest first, each with its
/// `direction`. Only links whose other end is a live object the caller may read are listed.
#[utoipa::path(get, path = "/v1/objects/{object_type_id}/{object_id}/associations", tag = "Associations",
    security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The object's type, by id or name"),
           ("object_id" = String, Path, description = "The object's id"), AssociationsQuery),
    responses((status = 200, body = crate::http::response::Envelope<Page<Association>>),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn list_associations(
    auth: Auth,
    State(app): State<App>,
    Path((type_ref, object_id)): Path<(String, String)>,
    Query(params): Query<AssociationsQuery>,
) -> ApiResult<Data<Page<Association>>> {
    let tenant = auth.tenant()?;
    let limit = list::page_limit(params.limit)?;
    if let Some(kind) = &params.association_type {
        check_type_name(kind).map_err(|problem| ApiError::invalid("association_type", problem))?;
    }
    let direction = params.direction.unwrap_or_default();
    let backend = app.db.backend();
    let mut conn = app.db.pool().acquire().await?;
    let (type_access, guard) = readable(&app, &mut conn, &auth, &type_ref, ObjectAction::Select).await?;
    let schema = &type_access.schema;
    let object =
        fetch_visible(&mut conn, backend, schema, &object_id, guard.rows(schema, ObjectAction::Select)).await?;
    let cursor: Option<Cursor> = params.cursor.as_deref().map(|text| list::open(&app.cursor_key, text)).transpose()?;
    if let Some(cursor) = &cursor {
        if cursor.object != object.id
            || cursor.direction != direction
            || cursor.association_type != params.association_type
        {
            return Err(ApiError::bad_request("this cursor belongs to another list: keep the first page's parameters"));
        }
    }
    let types = other_types(&mut conn, &object.id, direction, params.association_type.as_deref()).await?;
    let mut binds = Binds::new(backend);
    let Some(visible) = readable_objects(&app, &mut conn, &auth, &types, &mut binds).await?.condition else {
        return Ok(Data(Page { results: Vec::new(), next_cursor: None, total: 0 }));
    };
    let anchor = binds.text(object.id.clone());
    let tenant_p = binds.text(tenant.as_str());
    let kind = match &params.association_type {
        Some(kind) => format!(" AND association_type = {}", binds.text(kind.clone())),
        None => String::new(),
    };
    let mut halves = Vec::new();
    if direction != Direction::Incoming {
        halves.push(format!(
            "SELECT {COLUMNS}, 'outgoing' AS direction FROM associations WHERE from_id = {anchor} \
             AND tenant_id = {tenant_p}{kind} AND to_id IN (SELECT id FROM objects WHERE {visible})"
        ));
    }
    if direction != Direction::Outgoing {
        // A link of the object to itself is listed once, as outgoing.
        let not_self = if direction == Direction::Both { format!(" AND from_id <> {anchor}") } else { String::new() };
        halves.push(format!(
            "SELECT {COLUMNS}, 'incoming' AS direction FROM associations WHERE to_id = {anchor} \
             AND tenant_id = {tenant_p}{kind}{not_self} AND from_id IN (SELECT id FROM objects WHERE {visible})"
        ));
    }
    let all = halves.join(" UNION ALL ");
    let total = match &cursor {
        Some(cursor) => cursor.total,
        None => {
            let (n,): (i64,) = sqlx::query_as_with(&format!("SELECT COUNT(*) FROM ({all}) links"), binds.arguments()?)
                .fetch_one(&mut *conn)
                .await?;
            n
        }
    };
    let after = match &cursor {
        Some(cursor) => format!(" WHERE id > {}", binds.text(cursor.after.clone())),
        None => String::new(),
    };
    let rows: Vec<AssociationRow> = sqlx::query_as_with(
        &format!("SELECT * FROM ({all}) links{after} ORDER BY id LIMIT {}", limit + 1),
        binds.arguments()?,
    )
    .fetch_all(&mut *conn)
    .await?;
    let more = rows.len() > limit as usize;
    let results: Vec<Association> =
        rows.into_iter().take(limit as usize).map(Association::try_from).collect::<ApiResult<_>>()?;
    let next_cursor = match results.last() {
        Some(last) if more => Some(list::seal(
            &app.cursor_key,
            &Cursor {
                object: object.id.clone(),
                direction,
                association_type: params.association_type.clone(),
                after: last.id.clone(),
                total,
            },
        )),
        _ => None,
    };
    Ok(Data(Page { results, next_cursor, total }))
}

/// How many links start or end at `object_id`, for a purge's confirmation.
pub async fn count_for(conn: &mut AnyConnection, object_id: &str) -> ApiResult<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM associations WHERE from_id = $1 OR to_id = $1")
        .bind(object_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}
