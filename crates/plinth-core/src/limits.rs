//! The contract's limits, in one place.

/// Default largest JSON body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default page size of every list.
pub const LIST_DEFAULT_LIMIT: u32 = 20;
/// Largest page size of every list.
pub const LIST_MAX_LIMIT: u32 = 100;
/// Longest name or label.
pub const NAME_MAX_CHARS: usize = 255;
/// Longest slug.
pub const SLUG_MAX_CHARS: usize = 63;
/// Most scopes on one credential.
pub const SCOPES_MAX: usize = 64;
/// Most CIDRs in one IP allowlist.
pub const IP_ALLOWLIST_MAX: usize = 100;
/// Shortest platform admin key.
pub const ADMIN_KEY_MIN_CHARS: usize = 32;
/// Longest client-supplied `X-Request-Id`.
pub const REQUEST_ID_MAX_CHARS: usize = 128;
/// Longest grace period when rotating an API key (30 days).
pub const ROTATION_GRACE_MAX_HOURS: u32 = 720;
/// Most public keys one tenant may upload.
pub const PUBLIC_KEYS_MAX: i64 = 10;
/// Longest accepted PEM document.
pub const PEM_MAX_BYTES: usize = 16 * 1024;
/// Smallest accepted RSA modulus.
pub const RSA_MIN_BITS: u64 = 2048;
/// How far ahead a tenant-signed JWT may set `exp`.
pub const TENANT_JWT_MAX_LIFETIME_SECS: i64 = 3600;

/// Largest file `POST /v1/ai/upload` takes: 20 MiB.
pub const AI_UPLOAD_MAX_BYTES: usize = 20 * 1024 * 1024;

/// Largest direct file upload (`POST /v1/files/upload`): 25 MiB.
pub const FILE_UPLOAD_MAX_BYTES: usize = 25 * 1024 * 1024;
/// Largest file a presigned slot takes: 5 GiB (the tenant's storage quota may hold it lower).
pub const FILE_PRESIGNED_MAX_BYTES: i64 = 5 * 1024 * 1024 * 1024;
/// How long the routes that move a file's bytes may take at least.
pub const FILE_TRANSFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Most of an AI provider's whole (not streamed) answer that is read.
pub const UPSTREAM_BODY_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Most of a small service's answer (a bot check, an SMS provider) that is read.
pub const SERVICE_BODY_MAX_BYTES: usize = 64 * 1024;
/// Most of one provider's stream that is passed on.
pub const STREAM_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Longest line of a provider's stream (one event) that is held.
pub const STREAM_FRAME_MAX_BYTES: usize = 1024 * 1024;

/// Largest import (`POST /v1/data/import`): 32 MiB.
pub const DATA_IMPORT_MAX_BYTES: usize = 32 * 1024 * 1024;

/// The largest body a route takes: the configured limit, or more where a route takes files.
pub fn body_limit(path: &str, configured: usize) -> usize {
    if path == "/v1/data/import" {
        configured.max(DATA_IMPORT_MAX_BYTES)
    } else if path == "/v1/ai/upload" {
        configured.max(AI_UPLOAD_MAX_BYTES + 64 * 1024)
    } else if path == "/v1/files/upload" {
        configured.max(FILE_UPLOAD_MAX_BYTES + 64 * 1024)
    } else if is_file_slot(path) {
        usize::try_from(FILE_PRESIGNED_MAX_BYTES).unwrap_or(usize::MAX)
    } else {
        configured
    }
}

/// Routes whose body is streamed, never held whole (a presigned slot's bytes, up to 5 GiB):
/// nothing may buffer it, idempotent replay included (sending a slot's bytes again is itself
/// idempotent).
pub fn streams_body(path: &str) -> bool {
    is_file_slot(path)
}

/// `/v1/files/{id}/upload-put`: a presigned slot's bytes.
fn is_file_slot(path: &str) -> bool {
    path.starts_with("/v1/files/") && path.ends_with("/upload-put")
}

/// The longest a route may take to answer: the configured limit, or for the routes that wait on
/// an AI provider at least as long as an AI call may take.
pub fn request_timeout(path: &str, configured: std::time::Duration) -> std::time::Duration {
    let waits_on_ai = path.starts_with("/v1/ai/") || path == "/v1/chat/completions" || path == "/v1/embeddings";
    let moves_bytes = path == "/v1/files/upload" || is_file_slot(path) || path.ends_with("/content");
    if moves_bytes && path.starts_with("/v1/files/") {
        configured.max(FILE_TRANSFER_TIMEOUT)
    } else if waits_on_ai {
        configured.max(crate::outbound::AI_CALL_MAX)
    } else {
        configured
    }
}
