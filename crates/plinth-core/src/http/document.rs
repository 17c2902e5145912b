//! Edits of the finished OpenAPI document, as JSON, for rules no derived type can state: fields
//! that depend on each other, one operation's body or parameters made exact. Each edit names
//! what it touches and does nothing when that is absent.

use serde_json::{json, Value};

/// The component `schema`, if the document has it.
pub fn component_mut<'a>(document: &'a mut Value, schema: &str) -> Option<&'a mut Value> {
    document.get_mut("components")?.get_mut("schemas")?.get_mut(schema)
}

/// The operation `method` (lowercase) of `path`.
pub fn operation_mut<'a>(document: &'a mut Value, path: &str, method: &str) -> Option<&'a mut Value> {
    document.get_mut("paths")?.get_mut(path)?.get_mut(method)
}

/// The schema of an operation's JSON request body.
pub fn json_body_mut<'a>(document: &'a mut Value, path: &str, method: &str) -> Option<&'a mut Value> {
    operation_mut(document, path, method)?.pointer_mut("/requestBody/content/application~1json/schema")
}

/// Sets the value at `pointer` inside the component `schema`; its parent must exist.
pub fn set_in_component(document: &mut Value, schema: &str, pointer: &str, value: Value) {
    let Some(component) = component_mut(document, schema) else { return };
    let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if let Some(parent) = component.pointer_mut(parent).and_then(Value::as_object_mut) {
        parent.insert(field.into(), value);
    }
}

/// Adds a rule that objects of the component `schema` must also satisfy (`allOf`).
pub fn add_rule(document: &mut Value, schema: &str, rule: Value) {
    let Some(component) = component_mut(document, schema).and_then(Value::as_object_mut) else { return };
    match component.get_mut("allOf").and_then(Value::as_array_mut) {
        Some(rules) => rules.push(rule),
        None => {
            component.insert("allOf".into(), json!([rule]));
        }
    }
}

/// States that an object of the component `schema` gives at least one (`exactly_one`: just one)
/// of `fields`, not null.
pub fn require_one_of(document: &mut Value, schema: &str, fields: &[&str], exactly_one: bool) {
    let Some(component) = component_mut(document, schema).and_then(Value::as_object_mut) else { return };
    let alternatives: Vec<Value> = fields
        .iter()
        .map(|field| json!({ "required": [field], "properties": { *field: { "not": { "type": "null" } } } }))
        .collect();
    component.insert(if exactly_one { "oneOf" } else { "anyOf" }.into(), alternatives.into());
}

/// Sets the schema of the parameters of an operation that `which` picks.
pub fn set_parameter_schemas(
    document: &mut Value,
    path: &str,
    method: &str,
    which: impl Fn(&Value) -> bool,
    schema: &Value,
) {
    let parameters = operation_mut(document, path, method).and_then(|o| o.get_mut("parameters"));
    for parameter in parameters.and_then(Value::as_array_mut).into_iter().flatten().filter(|p| which(p)) {
        parameter["schema"] = schema.clone();
    }
}

/// Adds an error answer of the envelope to an operation, unless it has one for `status`.
pub fn add_error_response(operation: &mut Value, status: &str, description: &str) {
    let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { return };
    if !responses.contains_key(status) {
        let answer = serde_json::to_value(super::openapi::error_response(description)).unwrap_or(Value::Null);
        responses.insert(status.into(), answer);
    }
}

/// Every operation of the document, with its path.
pub fn operations_mut(document: &mut Value) -> impl Iterator<Item = (&String, &mut Value)> {
    let paths = document.get_mut("paths").and_then(Value::as_object_mut).into_iter().flatten();
    paths.flat_map(|(path, item)| {
        item.as_object_mut().into_iter().flatten().map(move |(_, operation)| (path, operation))
    })
}

/// Describes every `text/event-stream` answer as its events, which is how clients (and
/// schemathesis) read them: `event`, `data`, `id`, `retry`.
pub fn describe_event_streams(document: &mut Value) {
    for (_, operation) in operations_mut(document) {
        let answers = operation.get_mut("responses").and_then(Value::as_object_mut).into_iter().flatten();
        for (_, answer) in answers {
            if let Some(stream) = answer.pointer_mut("/content/text~1event-stream") {
                let description = stream.pointer("/schema/description").cloned().unwrap_or(json!("Server-Sent Events"));
                stream["schema"] = json!({ "type": "object", "description": description, "required": ["data"], "properties": {
                    "event": { "type": "string" }, "data": { "type": "string" }, "id": { "type": "string" },
                    "retry": { "type": "integer" },
                } });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_of_what_is_absent_leave_the_document_as_it_was() {
        let mut document = json!({ "paths": {}, "components": { "schemas": {} } });
        let before = document.clone();
        require_one_of(&mut document, "Missing", &["a", "b"], true);
        add_rule(&mut document, "Missing", json!({}));
        set_in_component(&mut document, "Missing", "/properties/a", json!({}));
        set_parameter_schemas(&mut document, "/nowhere", "get", |_| true, &json!({}));
        assert_eq!(document, before);
    }

    #[test]
    fn rules_add_up() {
        let mut document =
            json!({ "components": { "schemas": { "A": { "type": "object", "properties": { "x": {} } } } } });
        add_rule(&mut document, "A", json!({ "required": ["x"] }));
        add_rule(&mut document, "A", json!({ "required": ["y"] }));
        set_in_component(&mut document, "A", "/properties/x", json!({ "type": "string" }));
        assert_eq!(
            document["components"]["schemas"]["A"]["allOf"],
            json!([{ "required": ["x"] }, { "required": ["y"] }])
        );
        assert_eq!(document["components"]["schemas"]["A"]["properties"]["x"], json!({ "type": "string" }));
    }
}
