//! Rules of the server that the derived OpenAPI document cannot state by itself: fields that
//! depend on each other, choices checked at run time against a fixed list, and the request
//! bodies of the routes that read raw JSON. Each is written onto the document from the same
//! constants the handlers check with.

use serde_json::{json, Value};

use crate::http::openapi;
use crate::http::shapes;

/// Applies every rule to the finished document.
pub fn apply(document: &mut Value) {
    openapi::require_one_of(document, "CreateUser", &["email", "phone"], false);
    openapi::require_one_of(document, "Replay", &["event", "payload"], true);
    openapi::require_one_of(document, "ChatRequest", &["prompt", "message"], true);
    openapi::require_one_of(document, "Say", &["prompt", "message"], true);

    // A per-request provider credential is for the provider the request names.
    let key = json!({ "type": ["string", "null"], "pattern": override_pattern() });
    for schema in ["ChatRequest", "Say", "VisionRequest", "ImageRequest", "EmbedRequest"] {
        set(document, schema, "/properties/api_key", key.clone());
        all_of(
            document,
            schema,
            json!({ "anyOf": [
                { "properties": { "api_key": { "type": "null" } } },
                { "required": ["provider"], "properties": { "provider": { "type": "string" } } },
            ] }),
        );
    }
    set(document, "Turn", "/properties/role", json!({ "type": "string", "enum": ["user", "assistant"] }));
    set(
        document,
        "EmbedRequest",
        "/properties/input",
        json!({ "description": "A text, or 1 to 100 texts", "oneOf": [
            { "type": "string", "minLength": 1 },
            { "type": "array", "minItems": 1, "maxItems": 100, "items": { "type": "string", "minLength": 1 } },
        ] }),
    );
    all_of(document, "VisionRequest", vision_image());

    // A custom event may not take a name of the platform's own.
    set(
        document,
        "TrackEvent",
        "/properties/event_type/not",
        json!({ "pattern": format!("^({})(\\.|$)", crate::events::RESERVED.join("|")) }),
    );
    set(
        document,
        "CreateProvider",
        "/properties/provider_type",
        json!({ "type": "string", "enum": crate::ai::providers::TYPES }),
    );
    set(
        document,
        "CreateProvider",
        "/properties/name",
        json!({ "type": "string", "pattern": shapes::SLUG_PATTERN, "not": { "enum": crate::ai::BUILT_IN } }),
    );
    // `is_active` is another spelling of `status`: both given, they agree.
    for schema in ["CreateWebhook", "UpdateWebhook"] {
        let clash = |status: &str, active: bool| {
            json!({ "required": ["status", "is_active"],
                "properties": { "status": { "const": status }, "is_active": { "const": active } } })
        };
        all_of(document, schema, json!({ "not": { "anyOf": [clash("active", false), clash("disabled", true)] } }));
    }
    // A provider instance's own credential.
    let secret = format!("^[^{c}]*[^{b}][^{c}]*$", c = shapes::CONTROL_CLASS, b = shapes::BLANK_CLASS);
    for schema in ["CreateProvider", "UpdateProvider"] {
        set(
            document,
            schema,
            "/properties/api_key",
            json!({ "type": ["string", "null"], "maxLength": 1024, "pattern": secret }),
        );
    }
    set(
        document,
        "CreateSource",
        "/properties/scheme",
        json!({ "type": "string", "enum": crate::inbound::verify::SCHEMES }),
    );
    all_of(
        document,
        "Simulate",
        json!({ "anyOf": [
            { "required": ["object_type_id"], "properties": { "object_type_id": { "type": "string" } } },
            { "required": ["policy"], "properties": { "policy": {
                "type": "object", "required": ["object_type_id"], "properties": { "object_type_id": { "type": "string" } },
            } } },
        ] }),
    );
    query_enum(document, "/v1/auth/verify", "get", "type", &["signup", "email", "email_change"]);
    query_enum(document, "/v1/auth/portal-verify-email", "get", "type", &["signup", "email", "email_change"]);

    // The portal's routes take the same bodies as the tenant's own, and the tenant in them.
    let paths: Vec<String> = document["paths"]
        .as_object()
        .map(|paths| paths.keys().filter(|p| p.starts_with("/v1/auth/portal-")).cloned().collect())
        .unwrap_or_default();
    for path in paths {
        let component = body(document, &path, "post")
            .and_then(|b| b.get("$ref"))
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .map(str::to_string);
        let takes_tenant = component
            .as_ref()
            .is_some_and(|c| document["components"]["schemas"][c]["properties"].get("tenant_id").is_some());
        if !takes_tenant {
            continue;
        }
        if let Some(schema) = body(document, &path, "post") {
            let tenant = json!({ "required": ["tenant_id"], "properties": { "tenant_id": {
                "type": "string", "description": "The tenant's id or slug",
                "pattern": format!("^[^\\x00]*[^{b}][^\\x00]*$", b = shapes::BLANK_CLASS),
            } } });
            *schema = json!({ "allOf": [schema.take(), tenant] });
        }
        if let Some(responses) = operation(document, &path, "post").and_then(|o| o.get_mut("responses")) {
            responses["404"] = json!({ "description": "No such tenant (`NOT_FOUND`)",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } });
        }
    }

    // A turn under a conversation's path names no other conversation.
    if let Some(schema) = body(document, "/v1/ai/conversations/{conversation_id}/chat", "post") {
        *schema = json!({ "allOf": [schema.take(), { "properties": { "conversation_id": { "type": "null" } } }] });
    }
    // A stream resumes after an event id.
    let event_id = json!({ "type": "string", "pattern": "^(evt_[0-7][0-9a-hjkmnp-tv-z]{25})?$" });
    for path in ["/events/stream", "/v1/events/stream"] {
        set_parameters(
            document,
            path,
            "get",
            |p| p["name"] == "types",
            serde_json::to_value(<shapes::EventPatterns as utoipa::PartialSchema>::schema()).unwrap_or(Value::Null),
        );
        set_parameters(
            document,
            path,
            "get",
            |p| p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("last-event-id") || n == "last_event_id"),
            event_id.clone(),
        );
    }

    // The routes that read OpenAI's wire format take its bodies.
    let chat = json!({
        "type": "object",
        "description": "OpenAI's chat completion request: `model` and `messages`, and any of OpenAI's other fields",
        "required": ["model", "messages"],
        "properties": {
            "model": { "$ref": "#/components/schemas/ModelName" },
            "messages": { "type": "array", "minItems": 1, "items": { "type": "object" } },
            "stream": { "type": "boolean" },
            "api_key": { "type": "string", "pattern": override_pattern() },
        },
    });
    let embeddings = json!({
        "type": "object",
        "description": "OpenAI's embeddings request: `model` and `input`, and any of OpenAI's other fields",
        "required": ["model", "input"],
        "properties": {
            "model": { "$ref": "#/components/schemas/ModelName" },
            "input": { "not": { "type": "null" } },
            "api_key": { "type": "string", "pattern": override_pattern() },
        },
    });
    for (path, wire) in
        [("/v1/chat/completions", &chat), ("/v1/ai/completions", &chat), ("/v1/embeddings", &embeddings)]
    {
        if let Some(schema) = body(document, path, "post") {
            *schema = wire.clone();
        }
    }
    for path in ["/v1/chat/completions", "/v1/ai/completions"] {
        let answer = operation(document, path, "post")
            .and_then(|o| o.pointer_mut("/responses/200/content"))
            .and_then(Value::as_object_mut);
        if let Some(content) = answer {
            content.insert(
                "text/event-stream".into(),
                json!({ "schema": { "type": "string", "description": "With `\"stream\": true`: `chat.completion.chunk` frames, then `data: [DONE]`" } }),
            );
        }
    }
    document["components"]["schemas"]["ModelName"] =
        serde_json::to_value(<shapes::ModelName as utoipa::PartialSchema>::schema()).unwrap_or(Value::Null);

    // The auth settings take any of their own fields, and the write-only secrets.
    let mut settings = document["components"]["schemas"]["AuthConfig"].clone();
    if let Some(properties) = settings["properties"].as_object_mut() {
        properties.retain(|_, field| field["readOnly"] != true);
        for (field, _, _) in crate::users::config::WRITE_ONLY {
            properties.insert(
                (*field).into(),
                json!({ "type": ["string", "null"], "minLength": 1, "maxLength": 1024, "writeOnly": true }),
            );
        }
        settings.as_object_mut().map(|s| s.remove("required"));
        settings["description"] = json!("Fields to replace; absent ones keep their value. Secrets are write-only.");
        document["components"]["schemas"]["AuthConfigChanges"] = settings;
        if let Some(schema) = body(document, "/v1/auth-config", "post") {
            *schema = json!({ "$ref": "#/components/schemas/AuthConfigChanges" });
        }
    }
    every_operation(document);
}

/// Rules of every operation: a path or query holding the NUL character is refused before any
/// route (400), so no free-text parameter may hold one; and the sign-in routes are rate limited
/// by address and by email or phone, with a credential or without.
fn every_operation(document: &mut Value) {
    let Some(paths) = document["paths"].as_object_mut() else { return };
    for (path, item) in paths.iter_mut() {
        let sign_in = path.starts_with("/v1/auth/");
        for operation in item.as_object_mut().into_iter().flat_map(|item| item.values_mut()) {
            if sign_in {
                if let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) {
                    responses.entry("429").or_insert_with(|| {
                        json!({ "description": "Too many requests (`RATE_LIMITED`); `Retry-After` says when to try again",
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } })
                    });
                }
            }
            // Server-Sent Events, each as schemathesis and EventSource read them.
            let streams =
                operation.get_mut("responses").and_then(Value::as_object_mut).into_iter().flat_map(|r| r.values_mut());
            for answer in streams {
                if let Some(stream) = answer.pointer_mut("/content/text~1event-stream") {
                    let description =
                        stream.pointer("/schema/description").cloned().unwrap_or(json!("Server-Sent Events"));
                    stream["schema"] = json!({ "type": "object", "description": description, "required": ["data"], "properties": {
                        "event": { "type": "string" }, "data": { "type": "string" }, "id": { "type": "string" },
                        "retry": { "type": "integer" },
                    } });
                }
            }
            let parameters = operation.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten();
            for parameter in parameters.filter(|p| p["in"] == "path" || p["in"] == "query") {
                let schema = &mut parameter["schema"];
                let text = schema["type"] == "string"
                    || schema["type"].as_array().is_some_and(|t| t.contains(&json!("string")));
                let free = ["pattern", "enum", "format", "$ref"].iter().all(|k| schema.get(k).is_none());
                if text && free {
                    schema["pattern"] = json!("^[^\\x00]*$");
                }
            }
        }
    }
}

fn override_pattern() -> String {
    format!("^[!-~]{{1,{}}}$", crate::vault::OVERRIDE_MAX_CHARS)
}

/// One of the three ways to give an image, the others absent.
fn vision_image() -> Value {
    let base64 = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
    json!({ "oneOf": [
        { "required": ["image_url"], "properties": {
            "image_url": { "type": "string", "pattern": "^https://", "maxLength": 4096 },
            "image_base64": { "type": "null" }, "upload_id": { "type": "null" } } },
        { "required": ["image_base64", "media_type"], "properties": {
            "image_base64": { "type": "string", "minLength": 1, "pattern": base64 },
            "media_type": { "type": "string", "pattern": "^image/" },
            "image_url": { "type": "null" }, "upload_id": { "type": "null" } } },
        { "required": ["upload_id"], "properties": {
            "upload_id": { "type": "string", "maxLength": 64 },
            "image_url": { "type": "null" }, "image_base64": { "type": "null" }, "media_type": { "type": "null" } } },
    ] })
}

/// Sets the value at `pointer` inside the component `schema` (its parents must exist).
fn set(document: &mut Value, schema: &str, pointer: &str, value: Value) {
    let Some(component) = document["components"]["schemas"].get_mut(schema) else { return };
    let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if let Some(parent) = component.pointer_mut(parent).and_then(Value::as_object_mut) {
        parent.insert(field.into(), value);
    }
}

/// Adds a rule the component must also satisfy.
fn all_of(document: &mut Value, schema: &str, rule: Value) {
    let Some(component) = document["components"]["schemas"].get_mut(schema).and_then(Value::as_object_mut) else {
        return;
    };
    match component.get_mut("allOf").and_then(Value::as_array_mut) {
        Some(rules) => rules.push(rule),
        None => {
            component.insert("allOf".into(), json!([rule]));
        }
    }
}

fn query_enum(document: &mut Value, path: &str, method: &str, name: &str, choices: &[&str]) {
    set_parameters(
        document,
        path,
        method,
        |p| p["name"] == name && p["in"] == "query",
        json!({ "type": "string", "enum": choices }),
    );
}

/// Sets the schema of the operation's parameters that `which` picks.
fn set_parameters(document: &mut Value, path: &str, method: &str, which: impl Fn(&Value) -> bool, schema: Value) {
    let Some(parameters) =
        operation(document, path, method).and_then(|o| o.get_mut("parameters")).and_then(Value::as_array_mut)
    else {
        return;
    };
    for parameter in parameters.iter_mut().filter(|p| which(p)) {
        parameter["schema"] = schema.clone();
    }
}

fn operation<'a>(document: &'a mut Value, path: &str, method: &str) -> Option<&'a mut Value> {
    document.get_mut("paths")?.get_mut(path)?.get_mut(method)
}

/// The JSON request body's schema of an operation.
fn body<'a>(document: &'a mut Value, path: &str, method: &str) -> Option<&'a mut Value> {
    operation(document, path, method)?
        .get_mut("requestBody")?
        .get_mut("content")?
        .get_mut("application/json")?
        .get_mut("schema")
}
