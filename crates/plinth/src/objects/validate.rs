//! Checking objects against their schema: values, sizes, required properties, references.

use serde_json::{Map, Value};
use sqlx::AnyConnection;

use super::model::*;
use super::types::{self, DataType};
use crate::auth::TenantId;
use crate::http::error::FieldErrors;
use crate::http::ApiResult;

/// Per-field problems of one object, keyed `properties.<name>`.
pub type Problems = FieldErrors;

/// Checks one incoming value (`null` handled by the caller) against the schema.
pub fn check_value(schema: &Schema, name: &str, value: &Value, problems: &mut Problems) -> Option<Value> {
    let field = format!("properties.{name}");
    match schema.property(name) {
        Some(property) => match property.canonical(value) {
            Ok(canonical) => Some(canonical),
            Err(problem) => {
                problems.add(&field, problem);
                None
            }
        },
        None if schema.object_type.additional_properties => {
            if !crate::object_types::is_identifier(name) {
                problems.add(&field, "property names are lowercase identifiers");
                return None;
            }
            if types::has_nul(value) {
                problems.add(&field, "must not contain the NUL character");
                return None;
            }
            Some(value.clone())
        }
        None => {
            problems.add(&field, format!("`{}` has no property `{name}`", schema.object_type.name));
            None
        }
    }
}

pub fn check_size(values: &Map<String, Value>, problems: &mut Problems) {
    let size = serde_json::to_vec(values).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > PROPERTIES_MAX_BYTES {
        problems.add("properties", format!("must be at most {PROPERTIES_MAX_BYTES} bytes of JSON"));
    }
}

/// The canonical properties of a new object: the given values, then defaults, then the
/// required ones checked.
pub fn validate_new(schema: &Schema, input: &Map<String, Value>) -> Result<Map<String, Value>, Problems> {
    let mut problems = Problems::default();
    let mut values = Map::new();
    for (name, value) in input {
        if value.is_null() {
            continue;
        }
        if let Some(canonical) = check_value(schema, name, value, &mut problems) {
            values.insert(name.clone(), canonical);
        }
    }
    for property in &schema.properties {
        if values.contains_key(&property.name) {
            continue;
        }
        if let Some(default) = &property.default_value {
            values.insert(property.name.clone(), default.clone());
        } else if property.is_required && input.get(&property.name).is_none_or(Value::is_null) {
            problems.add(&format!("properties.{}", property.name), "is required");
        }
    }
    check_size(&values, &mut problems);
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

/// The properties after merging `patch` into `current` (`null` removes), and the names whose
/// value changed.
pub fn validate_patch(
    schema: &Schema,
    current: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<String>), Problems> {
    let mut problems = Problems::default();
    let mut values = current.clone();
    for (name, value) in patch {
        if value.is_null() {
            if schema.property(name).is_some_and(|p| p.is_required) {
                problems.add(&format!("properties.{name}"), "is required: it cannot be removed");
            }
            values.remove(name);
        } else if let Some(canonical) = check_value(schema, name, value, &mut problems) {
            values.insert(name.clone(), canonical);
        }
    }
    check_size(&values, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut changed: Vec<String> =
        patch.keys().filter(|name| current.get(*name) != values.get(*name)).cloned().collect();
    changed.sort();
    Ok((values, changed))
}

/// Checks that every reference among `names` points at a live object of its type.
pub async fn check_references(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    schema: &Schema,
    values: &Map<String, Value>,
    names: &[&String],
    problems: &mut Problems,
) -> ApiResult<()> {
    for property in schema.properties.iter().filter(|p| p.data_type == DataType::Reference) {
        if !names.contains(&&property.name) {
            continue;
        }
        let Some(target) = values.get(&property.name).and_then(Value::as_str) else { continue };
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM objects WHERE id = $1 AND tenant_id = $2 AND object_type_id = $3 AND deleted_at IS NULL",
        )
        .bind(target)
        .bind(tenant.as_str())
        .bind(property.reference_type.as_deref().unwrap_or_default())
        .fetch_optional(&mut *conn)
        .await?;
        if found.is_none() {
            problems
                .add(&format!("properties.{}", property.name), format!("no object `{target}` of the referenced type"));
        }
    }
    Ok(())
}
