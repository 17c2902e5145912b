"""schemathesis hooks for scripts/schemathesis.sh.

A request the document calls valid may still be refused for what the tenant holds at that
moment, which no schema can state: a reference to a row that does not exist, a policy another
request of the same run has just changed, a time that has passed. Each refusal tolerated below
names the field, the server's message and the reason; a refusal with any other field or message
still fails the run. Tolerations keyed on the message only match the contract's envelope
(`error.code` VALIDATION_FAILED, `error.details`), or OpenAI's error shape on the routes that
answer it.
"""

import re

import schemathesis

# (path regex, field regex, message regex, why)
TOLERATED = [
    (r".*", r"expires_at", r"must be in the future", "a time in the past, by the clock when it arrives"),
    (r"^/v1/keys/public$", r"pem", r".", "a PEM document is checked by what it holds: a real public key"),
    (r"^/v1/roles", r"denied_properties\[\d+\]|parent_role_id|permissions", r"^no (object type|role)|unknown",
     "a reference to an object type or role the tenant does not have"),
    (r"^/v1/policies", r"object_type_id|policy\.object_type_id", r"^no object type|not found",
     "a reference to an object type the tenant does not have"),
    (r"^/v1/ai", r"provider", r"no AI provider is configured|is neither a provider|not one of your provider instances|"
     r"has no (embeddings|images)|makes no images|has credentials and", "the tenant's AI providers and priority list, which the run changes"),
    (r"^/v1/ai/provider-priority$", r"providers", r"is neither a provider",
     "a reference to a provider instance the tenant does not have"),
    (r".*", r"password", r"must be at least \d+ characters|is one of the most common passwords",
     "the tenant's password policy (the run changes it) and the list of common passwords"),
    (r"^/v1/auth/", r"redirect_to", r"is not in the tenant's redirect allowlist",
     "the tenant's redirect allowlist (auth settings the run changes)"),
    (r"^/v1/(api-)?keys", r"rate_limit", r"is above the tier's", "only the platform admin may raise a key past its tier"),
    (r"^/v1/ai-providers", r"api_key|base_url|config_json", r"is required|required for|URL|private|must point|host",
     "a provider type's own needs, and the SSRF guard on a base URL"),
    (r"^/v1/inbound-sources", r"secret|verify_token", r"must be `whsec_`|is required for|must be 8 to (256|512)|scheme only",
     "each signing scheme's own secret and verify token"),
    (r"^/v1/credentials/", r".*", r"is required|unknown field|must be|is not a field of", "each service's own credential fields"),
    (r".*", r"confirm_token", r"is not valid for this resource",
     "a deletion's confirmation token: only one the server issued, for that resource, is good"),
    (r"^/v1/ai/(vision|describe)$", r"upload_id|file_id", r"no such (upload|file)|not ready|must be a PNG|is over",
     "a reference to an upload or an image file the tenant does not have"),
    (r".*", r".+", r"must not contain the NUL character",
     "JSON holding the NUL character anywhere, which PostgreSQL cannot store: refused alike on both databases"),
    (r"^/v1/auth-config$", r"smtp_url|site_url|redirect_allowlist|branding\.logo_url|turnstile_verify_url|email_from",
     r".", "an SMTP server is checked by resolving it, URLs and addresses by their parsers"),
    (r"^/v1/files", r"file_ids|object_id|file_id", r"not found|no live object|no such file",
     "a reference to a file or an object the tenant does not have"),
    (r"^/v1/files/\{file_id\}/variants/", r"w|file", r"a `custom` variant needs|variants are made of|the image",
     "a `custom` variant's size, and a variant's source: an image within the limits, which only the file's bytes show"),
    (r"^/v1/files/upload$", r"file", r"the bytes are|the image|is empty|has no pixels",
     "a file's type and an image's size, which only its bytes show"),
    (r"^/v1/files", r"folder", r"no `\.` or `\.\.` segments", "a folder path never climbs: its segments are names"),
    (r"^/v1/data/import$", r"file|data|object_type_id|format|mode|dry_run",
     r"is not JSON|cannot be read|rows|is an array|is the CSV text|not a JSON object|is required|is `",
     "the rows' content, which only the file's bytes show"),
    (r"^/v1/data/(import|export)$", r"mapping|upsert_by|filters", r".",
     "a mapping, an upsert property and filters name the type's properties"),
    (r"^/v1/reports/", r".+", r"IANA|RFC 3339|before|periods|has no property|not a number|cannot group|not a date|"
     r"no hours|at most|conditions|operator|is required|takes|must be|unknown|group|values",
     "a report names the type's properties, a time zone of the database and a range of periods"),
    (r"^/v1/sql$", r"sql|params", r".", "a query is read by the SQL parser and checked against the tenant's types"),
    (r"^/v1/object-types/\{object_type_id\}/views", r".+", r"has no property|unknown|sortable|cannot sort|at most|"
     r"must be|operator|condition|group|takes|array", "a view's filters, sort and columns name the type's properties"),
    (r"^/v1/object-types/\{object_type_id\}/workflows", r".+", r"no (role|user|key)|earlier stage|must be|name 1 to|stages",
     "a stage's approvers are roles, users and keys of the tenant"),
    (r"^/v1/objects/\{object_type_id\}/\{object_id\}/comments", r"body|parent_id", r"some text|is not a comment|was deleted|at most",
     "a comment's text once sanitised, and its parent, a comment of the same object"),
    (r"^/v1/objects/\{object_type_id\}/\{object_id\}/associations", r"association_type|meta", r"lowercase letter|10 KB",
     "an association type's name and its metadata's size"),
    (r"^/v1/objects/\{object_type_id\}/list$", r"associated_with|include|view", r".",
     "a list's associations and views name the tenant's objects, association types and views"),
    (r"^/v1/errors/report$", r"message|stack|metadata|path|source", r"at most|must be",
     "a report's sizes, counted in characters and bytes"),
    (r"^/v1/files", r"object_id|object_type_id", r"go together",
     "a file's attachment names an object by its type and id: a form may not give one without the other"),
    (r"^/v1/files/\{file_id\}/upload-(put|complete)$", r"body|sha256", r"the slot was opened for|SHA-256|the bytes are",
     "a presigned slot's announced size, checksum and type, which only the bytes that come can meet"),
    (r"^/v1/analytics", r"period|from|to|group_by|metric|object_type|action|event_type|status|webhook_id|model|provider|operation",
     r"give either|is required with|must not be after|at most|is not a grouping|may name|is not a filter|must not be empty|must be one of|must be a date",
     "a period is `period` or both `from` and `to` (1970 to 9999), in order; a metric's groupings and filters are its own"),
    (r"^/v1/auth-config$", r"email_templates\.[a-z_]+\.(subject|body)", r"\{\{link\}\}|1 to 200 characters|1 byte to 32 KB",
     "a template's placeholders: the body needs `{{link}}` or `{{token}}`, the subject may hold neither"),
]

# OpenAI-shaped refusals of the routes that answer OpenAI's wire format: the message says why.
TOLERATED_OPENAI = [
    (r"^/v1/(chat/completions|ai/completions|embeddings)$", r"no AI provider|no provider|credentials|not configured",
     "the tenant's AI providers: none is configured in this run"),
]


def _tolerated_envelope(path: str, error: dict) -> bool:
    if error.get("code") != "VALIDATION_FAILED":
        return False
    details = error.get("details") or {}
    if not details:
        return False
    for field, messages in details.items():
        for message in messages if isinstance(messages, list) else [messages]:
            if not any(
                re.search(p, path) and re.fullmatch(f, field) and re.search(m, str(message))
                for p, f, m, _ in TOLERATED
            ):
                return False
    return True


# Refusals outside VALIDATION_FAILED that depend on what the request's bytes turn out to be:
# (path regex, error code, message regex, why).
TOLERATED_OTHER = [
    (r"^/v1/files/\{file_id\}/upload-put$", "PAYLOAD_TOO_LARGE", r"the slot was opened for",
     "more bytes than the presigned slot announced"),
    (r"^/v1/(files|ai|data)/(upload|import)$", "BAD_REQUEST", r"the form cannot be read",
     "a multipart form whose part names are not text the parser reads"),
    (r".*", "BAD_REQUEST", r"^invalid cursor", "a cursor is the server's own sealed token: only one it issued pages"),
]


def _tolerated_other(path: str, error: dict) -> bool:
    message = str(error.get("message", ""))
    return any(
        re.search(p, path) and error.get("code") == c and re.search(m, message) for p, c, m, _ in TOLERATED_OTHER
    )


def _tolerated_nul(error: dict) -> bool:
    """Text holding the NUL character that reached PostgreSQL, which cannot store it: 400 on every
    operation, as the contract documents (SQLite stores it; a lookup then finds nothing)."""
    return error.get("code") == "BAD_REQUEST" and "may not hold the NUL character" in str(error.get("message", ""))


def _tolerated_openai(path: str, error: dict) -> bool:
    message = str(error.get("message", ""))
    return any(re.search(p, path) and re.search(m, message) for p, m, _ in TOLERATED_OPENAI)


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if getattr(failure, "code", None) != "ST202":
        return True
    try:
        body = response.json()
    except Exception:
        return True
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return True
    path = case.operation.path
    if "success" in body:
        return not (_tolerated_envelope(path, error) or _tolerated_nul(error) or _tolerated_other(path, error))
    return not _tolerated_openai(path, error)


@schemathesis.hook
def map_body(context, body):
    """A tenant-wide IP allowlist that leaves out loopback would lock this run out of its tenant."""
    operation = context.operation
    if operation is None or operation.path != "/v1/governance" or operation.method.upper() != "PATCH":
        return body
    if isinstance(body, dict) and isinstance(body.get("ip_allowlist"), list) and body["ip_allowlist"]:
        body["ip_allowlist"] = body["ip_allowlist"][:98] + ["127.0.0.0/8", "::1"]
    return body
