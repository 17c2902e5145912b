//! Assembly of the OpenAPI 3.1 document from the routes' own annotations.

use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::Required;
use utoipa::openapi::{OpenApi as OpenApiDoc, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::list::ListSpec;

/// Paths served again under a second name: (canonical prefix, alias prefix, what is excluded).
pub const ALIASES: &[(&str, &str, &str)] = &[
    ("/v1/tenants", "/v1/workspaces", ""),
    ("/v1/keys", "/v1/api-keys", "/v1/keys/public"),
    ("/v1/events/stream", "/events/stream", ""),
    ("/v1/chat/completions", "/v1/ai/completions", ""),
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plinth API",
        description = "A self-hosted, multi-tenant API platform.\n\n\
Every route under `/v1` takes `Authorization: Bearer <credential>`: an API key (`plk_live_...`), \
an access token from `POST /v1/token`, a JWT signed with an uploaded public key, or the platform \
admin key (which may act on one tenant with `X-Tenant-ID`).\n\n\
Every response is an envelope: `{\"success\": true, \"data\": ..., \"request_id\": ...}` or \
`{\"success\": false, \"error\": {\"code\", \"message\", \"details\"}, \"request_id\": ...}`. \
`X-Request-Id` equals `request_id`.\n\n\
Error codes: `BAD_REQUEST` 400, `UNAUTHORIZED` 401, `INSUFFICIENT_SCOPE` and `FORBIDDEN` 403, \
`NOT_FOUND` 404 (also for another tenant's resources), `METHOD_NOT_ALLOWED` 405, `CONFLICT` and \
`IDEMPOTENCY_CONFLICT` 409, \
`PAYLOAD_TOO_LARGE` 413, `UNSUPPORTED_MEDIA_TYPE` 415, `VALIDATION_FAILED` 422, `RATE_LIMITED` 429, \
`INTERNAL` 500, `UPSTREAM_UNAVAILABLE` 503.\n\n\
Every answer to a credential (and to `POST /v1/token`, limited per client address) carries \
`X-RateLimit-Limit` (requests per minute), `X-RateLimit-Remaining` and `X-RateLimit-Reset` (unix \
seconds when the bucket is full again); a 429 adds `Retry-After`.\n\n\
Lists take `limit` (1-100, default 20) and `cursor`, and answer `{results, next_cursor, total}`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Contract),
    components(schemas(ErrorBody)),
    tags(
        (name = "Public", description = "Probes, the landing page and this reference. No authentication."),
        (name = "Tenants", description = "Tenants (workspaces), managed by the platform admin; `/v1/workspaces` is an alias."),
        (name = "API keys", description = "Scoped API keys with expiry, IP allowlists and rotation; `/v1/api-keys` is an alias."),
        (name = "Tokens", description = "Short-lived access tokens exchanged for an API key."),
        (name = "Public keys", description = "Tenant public keys: JWTs signed with the private half are accepted as credentials."),
        (name = "Object types", description = "A tenant's schema: object types, addressed by id or name."),
        (name = "Entitlements", description = "Feature limits per plan, per-tenant overrides and usage."),
        (name = "Governance", description = "A tenant's policies: audit retention, session and password limits, a tenant-wide IP allowlist."),
        (name = "Audit logs", description = "Who did what, from where, when: every mutation, refused credential and refused scope."),
        (name = "Properties", description = "The typed properties of an object type, with their indexes."),
        (name = "Objects", description = "A tenant's records, typed by their object type: CRUD, versions, trash, batches, queries, search."),
        (name = "Events", description = "The outbox: every change worth telling, and custom events."),
        (name = "Webhooks", description = "Endpoints that receive a tenant's events, signed (Standard Webhooks and `X-Plinth-Signature`), retried, logged."),
        (name = "Webhook Deliveries", description = "Every delivery of an event to an endpoint, with its attempts; retry by hand."),
        (name = "Inbound", description = "Webhooks from other services, verified by their signatures: a tenant's inbound sources, Stripe billing, Meta."),
        (name = "Realtime", description = "A tenant's events as they commit: WebSocket channels and Server-Sent Events with resume."),
        (name = "Credentials", description = "The credentials vault: a tenant's keys for third-party services, encrypted, shown only masked."),
        (name = "AI", description = "AI provider instances and the provider priority list."),
        (name = "DLQ", description = "The dead-letter queue: work that ran out of attempts, to retry or discard."),
        (name = "Roles", description = "End users' roles: permissions in the scope grammar, inheritance, denied properties, assignments."),
        (name = "Policies", description = "Row-level policies of an object type for end users, and their simulation."),
    )
)]
pub struct ApiDoc;

/// Adds what every route shares: the bearer scheme and the error answers of the envelope.
struct Contract;

/// An error answer of the envelope.
pub(crate) fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn add_missing(operation: &mut Operation, status: &str, description: &str) {
    operation.responses.responses.entry(status.to_string()).or_insert_with(|| error_response(description));
}

impl Modify for Contract {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key, access token, tenant-signed JWT or the platform admin key"))
                    .build(),
            ),
        );
    }
}

/// Completes every operation with the error answers the contract gives on every route.
fn idempotency_key_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "1 to 255 characters. The first answer is kept 24 hours and replayed to a retry with the same \
             key and request (`Idempotent-Replayed: true`); another request with the key is 409 \
             `IDEMPOTENCY_CONFLICT`.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                // Printable ASCII and tabs, not starting or ending with a space or tab (a header value's edges
                // are trimmed).
                .pattern(Some("^[!-~]([\\t -~]*[!-~])?$")),
        ))
        .build()
}

fn complete_operations(openapi: &mut OpenApiDoc) {
    for item in openapi.paths.paths.values_mut() {
        let writes = [&mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in writes.into_iter().flatten() {
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                operation.parameters.get_or_insert_with(Vec::new).push(idempotency_key_parameter());
                add_missing(
                    operation,
                    "400",
                    "Malformed request (`BAD_REQUEST`), such as an invalid `Idempotency-Key`",
                );
                add_missing(operation, "409", "Conflict (`CONFLICT`, or `IDEMPOTENCY_CONFLICT` for a reused key)");
            }
        }
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            if secured {
                add_missing(operation, "401", "Missing, invalid, expired or revoked credential (`UNAUTHORIZED`)");
                add_missing(operation, "403", "The credential lacks the scope (`INSUFFICIENT_SCOPE`)");
                add_missing(
                    operation,
                    "404",
                    "Not found (`NOT_FOUND`): the resource, or the tenant named by `X-Tenant-ID`",
                );
            }
            let names_tenant = operation
                .parameters
                .as_ref()
                .is_some_and(|p| p.iter().any(|p| p.name.eq_ignore_ascii_case("x-tenant-id")));
            if names_tenant {
                add_missing(operation, "404", "The tenant named by `X-Tenant-ID` does not exist (`NOT_FOUND`)");
            }
            if operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                add_missing(operation, "400", "Malformed parameter (`BAD_REQUEST`)");
                add_missing(operation, "422", "A parameter is invalid (`VALIDATION_FAILED`)");
            }
            if secured || operation.operation_id.as_deref() == Some("create_token") {
                add_missing(operation, "429", "Over the rate limit (`RATE_LIMITED`), with `Retry-After`");
            }
            // Webhooks from other services take their bodies as sent; the rest take JSON.
            let raw = operation.tags.as_ref().is_some_and(|tags| tags.iter().any(|t| t == "Inbound"));
            if operation.request_body.is_some() && !raw {
                add_missing(operation, "400", "Malformed JSON (`BAD_REQUEST`)");
                add_missing(operation, "413", "Body over the limit (`PAYLOAD_TOO_LARGE`)");
                add_missing(operation, "415", "Not `application/json` (`UNSUPPORTED_MEDIA_TYPE`)");
                add_missing(operation, "422", "A field is invalid (`VALIDATION_FAILED`)");
            }
            add_missing(
                operation,
                "400",
                "Malformed request (`BAD_REQUEST`), such as a NUL character in the path or query",
            );
            add_missing(operation, "500", "Internal error (`INTERNAL`), without internals");
            add_missing(operation, "503", "Unavailable (`UNAVAILABLE`, with `Retry-After`): the database is saturated");
            add_missing(operation, "504", "Not answered in time (`TIMEOUT`); nothing it began was kept");
        }
    }
}

/// Serves each aliased path under its second name too, with its own operation ids.
fn add_aliases(openapi: &mut OpenApiDoc) {
    let mut extra = Vec::new();
    for (path, item) in &openapi.paths.paths {
        for (canonical, alias, excluded) in ALIASES {
            let under = path == canonical || path.starts_with(&format!("{canonical}/"));
            if !under || (!excluded.is_empty() && path.starts_with(excluded)) {
                continue;
            }
            let mut item = item.clone();
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let via = alias.trim_start_matches("/v1").trim_start_matches('/').replace(['/', '-'], "_");
                operation.operation_id = operation.operation_id.as_ref().map(|id| format!("{id}_via_{via}"));
                let note = format!("Alias of `{canonical}`.");
                operation.description = Some(match operation.description.take() {
                    Some(text) => format!("{text}\n\n{note}"),
                    None => note,
                });
            }
            extra.push((format!("{alias}{}", &path[canonical.len()..]), item));
        }
    }
    openapi.paths.paths.extend(extra);
}

/// Lists that take `fields=` answer items holding only the fields asked for (and `id`): in the
/// page envelopes those lists answer with, an item requires `id` alone.
fn partial_list_items(openapi: OpenApiDoc) -> OpenApiDoc {
    let Ok(mut document) = serde_json::to_value(&openapi) else { return openapi };
    let mut partial = std::collections::BTreeSet::new();
    for item in document["paths"].as_object().into_iter().flat_map(|paths| paths.values()) {
        for operation in item.as_object().into_iter().flat_map(|item| item.values()) {
            let selects = operation["parameters"]
                .as_array()
                .is_some_and(|parameters| parameters.iter().any(|p| p["name"] == "fields" && p["in"] == "query"));
            let answer = &operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
            if let (true, Some(name)) = (selects, answer.as_str().and_then(|r| r.strip_prefix("#/components/schemas/")))
            {
                partial.insert(name.to_string());
            }
        }
    }
    for name in partial {
        let items = &mut document["components"]["schemas"][name.as_str()]["properties"]["data"]["properties"]
            ["results"]["items"];
        let Some(item) = items.as_object_mut() else { continue };
        let has_id = item.get("properties").is_some_and(|p| p.get("id").is_some());
        item.insert("required".into(), if has_id { serde_json::json!(["id"]) } else { serde_json::json!([]) });
        let note = "In a list, only `id` is sure to be present: `fields=` selects the others.";
        let description = match item.get("description").and_then(|d| d.as_str()) {
            Some(text) => format!("{text} {note}"),
            None => note.to_string(),
        };
        item.insert("description".into(), description.into());
    }
    serde_json::from_value(document).unwrap_or(openapi)
}

/// A comma-separated list of `choices`, each at most once and maybe behind `prefix`, or nothing.
/// Every order is spelled out for a few choices; past that, repeats are let through the pattern
/// (and refused by the server).
fn list_of(choices: &[&str], prefix: &str) -> String {
    fn orders(left: &[&str], taken: &mut Vec<String>, prefix: &str, out: &mut Vec<String>) {
        for (i, choice) in left.iter().enumerate() {
            taken.push(format!("{prefix}{choice}"));
            out.push(taken.join(","));
            let rest: Vec<&str> = left.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| *c).collect();
            orders(&rest, taken, prefix, out);
            taken.pop();
        }
    }
    if choices.len() <= 4 {
        let mut all = Vec::new();
        orders(choices, &mut Vec::new(), prefix, &mut all);
        return format!("^({})?$", all.join("|"));
    }
    let one = format!("{prefix}({})", choices.join("|"));
    format!("^({one}(,{one})*)?$")
}

/// Describes each list by what it offers: `sort` and `fields` name its own fields (a pattern of
/// them), and lists whose items have no `updated_at` take no `updated_after` or `updated_before`.
/// `lists` names each list's operation (its aliases follow).
pub fn describe_lists(openapi: &mut OpenApiDoc, lists: &[(&str, &ListSpec)]) {
    for item in openapi.paths.paths.values_mut() {
        let Some(operation) = item.get.as_mut() else { continue };
        let Some(id) = operation.operation_id.as_deref() else { continue };
        let own = id.split("_via_").next().unwrap_or(id);
        let Some((_, spec)) = lists.iter().find(|(name, _)| *name == own) else { continue };
        let Some(parameters) = operation.parameters.as_mut() else { continue };
        if !spec.updated_at {
            parameters.retain(|p| p.name != "updated_after" && p.name != "updated_before");
        }
        let sortable: Vec<&str> = spec.sortable.iter().map(|field| field.name).collect();
        for parameter in parameters.iter_mut() {
            let pattern = match parameter.name.as_str() {
                "sort" => list_of(&sortable, "-?"),
                "fields" => list_of(spec.fields, ""),
                _ => continue,
            };
            parameter.schema = Some(
                ObjectBuilder::new().schema_type(Type::String).max_length(Some(500)).pattern(Some(pattern)).into(),
            );
        }
    }
}

/// The finished document.
pub fn finish(mut openapi: OpenApiDoc) -> OpenApiDoc {
    complete_operations(&mut openapi);
    add_aliases(&mut openapi);
    partial_list_items(openapi)
}

/// The canonical path for an aliased one, if `path` is an alias.
pub fn canonical_path(path: &str) -> Option<String> {
    for (canonical, alias, excluded) in ALIASES {
        if let Some(rest) = path.strip_prefix(alias) {
            if rest.is_empty() || rest.starts_with('/') {
                let target = format!("{canonical}{rest}");
                if !excluded.is_empty() && target.starts_with(excluded) {
                    return None;
                }
                return Some(target);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{canonical_path, list_of};

    #[test]
    fn lists_name_each_choice_at_most_once() {
        assert_eq!(list_of(&["a", "b"], "-?"), "^(-?a|-?a,-?b|-?b|-?b,-?a)?$");
        let many = list_of(&["a", "b", "c", "d", "e"], "");
        assert_eq!(many, "^((a|b|c|d|e)(,(a|b|c|d|e))*)?$");
    }

    #[test]
    fn aliases_map_to_canonical_paths() {
        assert_eq!(canonical_path("/v1/workspaces").as_deref(), Some("/v1/tenants"));
        assert_eq!(canonical_path("/v1/api-keys/key_1/rotate").as_deref(), Some("/v1/keys/key_1/rotate"));
        assert_eq!(canonical_path("/v1/api-keys/public"), None);
        assert_eq!(canonical_path("/v1/api-keysx"), None);
        assert_eq!(canonical_path("/v1/keys"), None);
        assert_eq!(canonical_path("/events/stream").as_deref(), Some("/v1/events/stream"));
        assert_eq!(canonical_path("/v1/ai/completions").as_deref(), Some("/v1/chat/completions"));
    }
}
