//! What an object is: its record, the schema it is checked against, and the text search reads.

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{AnyConnection, FromRow};
use utoipa::ToSchema;

use super::properties::{self, Property};
use crate::app::App;
use crate::auth::TenantId;
use crate::db::WriteTx;
use crate::http::{ApiError, ApiResult};
use crate::object_types::{self, ObjectType};
use crate::time;

/// Most items in one batch request.
pub const BATCH_MAX: usize = 100;
/// Largest `properties` of one object, serialised.
pub const PROPERTIES_MAX_BYTES: usize = 256 * 1024;

/// A record of an object type.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Object {
    #[schema(example = "obj_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub object_type_id: String,
    pub tenant_id: String,
    /// The values, each in its type's canonical form.
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The credential that created it (a key id, or `admin`).
    pub created_by: Option<String>,
    /// Starts at 1; every write adds one.
    pub version: i64,
    /// In the trash.
    pub is_deleted: bool,
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
    /// With `include=<association_type>,...`: the objects linked to this one by each type, as
    /// the caller may read them (at most 100 per type).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub included: Option<Map<String, Value>>,
}

#[derive(Debug, FromRow)]
pub struct ObjectRow {
    id: String,
    tenant_id: TenantId,
    object_type_id: String,
    properties: String,
    version: i64,
    created_by: Option<String>,
    created_at: String,
    updated_at: String,
    deleted_at: Option<String>,
}

pub(crate) const COLUMNS: &str =
    "id, tenant_id, object_type_id, properties, version, created_by, created_at, updated_at, deleted_at";

impl TryFrom<ObjectRow> for Object {
    type Error = ApiError;

    fn try_from(row: ObjectRow) -> ApiResult<Object> {
        let deleted_at = row.deleted_at.as_deref().map(time::from_db).transpose()?;
        Ok(Object {
            properties: serde_json::from_str(&row.properties)?,
            created_at: time::from_db(&row.created_at)?,
            updated_at: time::from_db(&row.updated_at)?,
            is_deleted: deleted_at.is_some(),
            deleted_at,
            id: row.id,
            object_type_id: row.object_type_id,
            tenant_id: row.tenant_id.into(),
            created_by: row.created_by,
            version: row.version,
            included: None,
        })
    }
}

/// A type with its properties: what objects are validated against.
#[derive(Debug, Clone)]
pub struct Schema {
    pub object_type: ObjectType,
    pub properties: Vec<Property>,
}

impl Schema {
    pub async fn load(conn: &mut AnyConnection, tenant: &TenantId, type_ref: &str) -> ApiResult<Schema> {
        let object_type = object_types::find(conn, tenant, type_ref).await?;
        let properties = properties::of_type(conn, &object_type.id).await?;
        Ok(Schema { object_type, properties })
    }

    /// The schema for writing objects: the type is locked (shared) before its properties are
    /// read, so a schema change waits for the write or the write sees the change. In the
    /// embedded mode the write turn is held, so the cached schema is the stored one (see
    /// `auth::cache`) and no query is needed.
    pub async fn load_for_write(tx: &mut WriteTx, app: &App, tenant: &TenantId, type_ref: &str) -> ApiResult<Schema> {
        let key = format!("{}:{type_ref}", tenant.as_str());
        if let Some(found) = app.schemas.get(&key) {
            return Ok(found.schema.clone());
        }
        let generation = app.schemas.generation();
        let object_type = object_types::find(tx, tenant, type_ref).await?;
        object_types::lock(tx, app.db.backend(), &object_type.id, false).await?;
        let properties = properties::of_type(tx, &object_type.id).await?;
        let schema = Schema { object_type, properties };
        if app.schemas.is_enabled() {
            let rules = crate::authz::policies::enabled_rules(tx, &schema.object_type.id).await?;
            let access = crate::authz::access::TypeAccess { schema: schema.clone(), rules };
            app.schemas.insert(key, std::sync::Arc::new(access), generation);
        }
        Ok(schema)
    }

    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }
}

/// The text full-text search reads: the values of string, text, rich text and email properties.
pub fn search_text(properties: &[Property], values: &Map<String, Value>) -> String {
    let mut out = String::new();
    for property in properties {
        if let Some(text) = values.get(&property.name).and_then(|v| property.data_type.search_text(v)) {
            if !out.is_empty() {
                out.push('\n');
            }
            // Words only, as queries are read: `ada@example.com` is `ada example com` on both
            // databases (PostgreSQL's parser would otherwise keep it as one token).
            out.extend(text.chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }));
        }
    }
    out
}
