//! Rules of the server that the derived OpenAPI document cannot state by itself: fields that
//! depend on each other, choices checked at run time against a fixed list, and the request
//! bodies of the routes that read raw JSON. Each is written onto the document from the same
//! constants the handlers check with.

use serde_json::{json, Value};

use crate::http::document::{
    add_error_response, add_rule as all_of, component_mut, json_body_mut as body, operation_mut as operation,
    operations_mut, require_one_of, set_in_component as set, set_parameter_schemas as set_parameters,
};
use crate::http::shapes;

/// Applies every rule to the finished document.
pub fn apply(document: &mut Value) {
    require_one_of(document, "CreateUser", &["email", "phone"], false);
    require_one_of(document, "Replay", &["event", "payload"], true);
    require_one_of(document, "ChatRequest", &["prompt", "message"], true);
    require_one_of(document, "Say", &["prompt", "message"], true);

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
    // A batch names each file once.
    for schema in ["FileIds", "FileBatchUpdate"] {
        set(document, schema, "/properties/file_ids/uniqueItems", json!(true));
    }
    // A link to an object names both its type and the object.
    let half_link = json!({ "not": { "anyOf": [
        { "required": ["object_type_id"], "properties": { "object_type_id": { "type": "string" }, "object_id": { "type": "null" } } },
        { "required": ["object_id"], "properties": { "object_id": { "type": "string" }, "object_type_id": { "type": "null" } } },
    ] } });
    let both = json!({ "dependentRequired": { "object_type_id": ["object_id"], "object_id": ["object_type_id"] } });
    for schema in ["UploadUrl", "UpdateFile"] {
        all_of(document, schema, half_link.clone());
        all_of(document, schema, both.clone());
        for field in ["object_type_id", "object_id"] {
            set(document, schema, &format!("/properties/{field}/minLength"), json!(1));
        }
    }
    // A form's fields are text: a field left out is absent.
    all_of(document, "UploadForm", both);
    for field in ["object_type_id", "object_id", "file_id"] {
        set(document, "UploadForm", &format!("/properties/{field}"), json!({ "type": "string", "minLength": 1 }));
    }
    require_one_of(document, "FileBatchUpdate", &["access", "folder"], false);
    set_parameters(
        document,
        "/v1/files/{file_id}/variants/{variant}",
        "get",
        |p| p["name"] == "variant" && p["in"] == "path",
        &json!({ "type": "string", "enum": crate::files::content::VARIANTS }),
    );
    let variant = "/v1/files/{file_id}/variants/{variant}";
    query_enum(document, variant, "get", "fit", crate::files::images::FITS);
    query_enum(document, variant, "get", "format", crate::files::images::OUTPUTS);

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
            .and_then(|c| component_mut(document, &c).map(|c| c["properties"].get("tenant_id").is_some()))
            .unwrap_or(false);
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
        if let Some(operation) = operation(document, &path, "post") {
            add_error_response(operation, "404", "No such tenant (`NOT_FOUND`)");
        }
    }

    // A turn under a conversation's path names no other conversation.
    if let Some(schema) = body(document, "/v1/ai/conversations/{conversation_id}/chat", "post") {
        *schema = json!({ "allOf": [schema.take(), { "properties": { "conversation_id": { "type": "null" } } }] });
    }
    // A stream resumes after an event id.
    let event_id = crate::id::pattern(crate::id::prefix::EVENT);
    let event_id = json!({ "type": "string", "pattern": format!("^({})?$", &event_id[1..event_id.len() - 1]) });
    let types = serde_json::to_value(<shapes::EventPatterns as utoipa::PartialSchema>::schema()).unwrap_or(Value::Null);
    for path in ["/events/stream", "/v1/events/stream"] {
        set_parameters(document, path, "get", |p| p["name"] == "types", &types);
        set_parameters(
            document,
            path,
            "get",
            |p| p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("last-event-id") || n == "last_event_id"),
            &event_id,
        );
    }

    // The routes that read OpenAI's wire format take its bodies.
    let mut chat = openai_body(
        "OpenAI's chat completion request: `model` and `messages`, and any of OpenAI's other fields",
        "messages",
        json!({ "type": "array", "minItems": 1, "items": { "type": "object" } }),
    );
    chat["properties"]["stream"] = json!({ "type": "boolean" });
    let embeddings = openai_body(
        "OpenAI's embeddings request: `model` and `input`, and any of OpenAI's other fields",
        "input",
        json!({ "not": { "type": "null" } }),
    );
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
            let frames = "With `\"stream\": true`: `chat.completion.chunk` frames, then `data: [DONE]`";
            content.insert("text/event-stream".into(), json!({ "schema": { "description": frames } }));
        }
    }

    // The auth settings take any of their own fields, and the write-only secrets.
    let mut settings = component_mut(document, "AuthConfig").cloned().unwrap_or(Value::Null);
    if let Some(properties) = settings.get_mut("properties").and_then(Value::as_object_mut) {
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
    crate::http::document::describe_event_streams(document);
}

/// Rules of every operation: a path or query holding the NUL character is refused before any
/// route (400), so no free-text parameter may hold one; and the sign-in routes are rate limited
/// by address and by email or phone, with a credential or without.
fn every_operation(document: &mut Value) {
    for (path, operation) in operations_mut(document) {
        if path.starts_with("/v1/auth/") {
            add_error_response(
                operation,
                "429",
                "Too many requests (`RATE_LIMITED`); `Retry-After` says when to try again",
            );
        }
        let parameters = operation.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten();
        for parameter in parameters.filter(|p| p["in"] == "path" || p["in"] == "query") {
            let schema = &mut parameter["schema"];
            let text =
                schema["type"] == "string" || schema["type"].as_array().is_some_and(|t| t.contains(&json!("string")));
            let free = ["pattern", "enum", "format", "$ref"].iter().all(|k| schema.get(k).is_none());
            if text && free {
                schema["pattern"] = json!("^[^\\x00]*$");
            }
        }
    }
}

/// A request body of OpenAI's: `model`, the `field` the route needs, the per-request `api_key`,
/// and any of OpenAI's other fields.
fn openai_body(description: &str, field: &str, schema: Value) -> Value {
    json!({
        "type": "object",
        "description": description,
        "required": ["model", field],
        "properties": {
            "model": { "$ref": "#/components/schemas/ModelName" },
            field: schema,
            "api_key": { "type": "string", "pattern": override_pattern() },
        },
    })
}

fn override_pattern() -> String {
    format!("^[!-~]{{1,{}}}$", crate::vault::OVERRIDE_MAX_CHARS)
}

/// One of the three ways to give an image, the others absent.
fn vision_image() -> Value {
    let base64 = shapes::BASE64_PATTERN;
    json!({ "oneOf": [
        { "required": ["image_url"], "properties": {
            "image_url": { "type": "string", "pattern": "^https://", "maxLength": 4096 },
            "image_base64": { "type": "null" }, "upload_id": { "type": "null" }, "file_id": { "type": "null" } } },
        { "required": ["image_base64", "media_type"], "properties": {
            "image_base64": { "type": "string", "minLength": 1, "pattern": base64 },
            "media_type": { "type": "string", "pattern": "^image/" },
            "image_url": { "type": "null" }, "upload_id": { "type": "null" }, "file_id": { "type": "null" } } },
        { "required": ["upload_id"], "properties": {
            "upload_id": { "type": "string", "maxLength": 64 },
            "image_url": { "type": "null" }, "image_base64": { "type": "null" }, "media_type": { "type": "null" },
            "file_id": { "type": "null" } } },
        { "required": ["file_id"], "properties": {
            "file_id": { "type": "string", "maxLength": 64 },
            "image_url": { "type": "null" }, "image_base64": { "type": "null" }, "media_type": { "type": "null" },
            "upload_id": { "type": "null" } } },
    ] })
}

fn query_enum(document: &mut Value, path: &str, method: &str, name: &str, choices: &[&str]) {
    set_parameters(
        document,
        path,
        method,
        |p| p["name"] == name && p["in"] == "query",
        &json!({ "type": "string", "enum": choices }),
    );
}
