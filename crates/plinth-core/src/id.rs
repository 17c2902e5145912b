//! Prefixed, time-sortable identifiers in the TypeID format:
//! `<prefix>_<UUIDv7 as 26 characters of Crockford base32>`.
//! Lexical order of the suffix is creation order, which keyset pagination relies on.

use uuid::Uuid;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const SUFFIX_LEN: usize = 26;

/// Prefixes of every kind of identifier.
pub mod prefix {
    pub const TENANT: &str = "tn";
    pub const API_KEY: &str = "key";
    pub const PUBLIC_KEY: &str = "pubkey";
    pub const TOKEN: &str = "jti";
    pub const REQUEST: &str = "req";
    pub const AUDIT: &str = "aud";
    pub const USAGE_EVENT: &str = "use";
    pub const OBJECT_TYPE: &str = "ot";
    pub const PROPERTY: &str = "prop";
    pub const OBJECT: &str = "obj";
    pub const FILE: &str = "file";
    pub const EVENT: &str = "evt";
    pub const WEBHOOK: &str = "wh";
    pub const DELIVERY: &str = "msg";
    pub const ATTEMPT: &str = "atmpt";
    pub const DLQ_MESSAGE: &str = "dlq";
    pub const INBOUND_SOURCE: &str = "src";
    pub const INBOUND_MESSAGE: &str = "inmsg";
    pub const PLATFORM_EVENT: &str = "pwe";
    pub const AI_PROVIDER: &str = "aip";
    pub const AI_USAGE: &str = "aiu";
    pub const CONVERSATION: &str = "conv";
    pub const AI_MESSAGE: &str = "aimsg";
    pub const AI_UPLOAD: &str = "aiup";
    pub const USER: &str = "usr";
    pub const SESSION: &str = "sess";
    pub const MESSAGE: &str = "omsg";
    pub const AUTH_CODE: &str = "code";
    pub const MFA_FACTOR: &str = "mfa";
    pub const RECOVERY_CODE: &str = "rcv";
    pub const ROLE: &str = "role";
    pub const POLICY: &str = "pol";
    pub const JOB: &str = "job";
}

/// A new identifier with `prefix`, time-ordered.
pub fn new_id(prefix: &str) -> String {
    encode(prefix, Uuid::now_v7())
}

/// The smallest id with `prefix` made at `unix_millis`: ids at or above it were made then or
/// later.
pub fn lower_bound(prefix: &str, unix_millis: u64) -> String {
    encode(prefix, uuid::Builder::from_unix_timestamp_millis(unix_millis, &[0; 10]).into_uuid())
}

/// Renders `uuid` as a TypeID with `prefix`.
pub fn encode(prefix: &str, uuid: Uuid) -> String {
    let mut value = uuid.as_u128();
    let mut suffix = [0u8; SUFFIX_LEN];
    for slot in suffix.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    let mut out = String::with_capacity(prefix.len() + 1 + SUFFIX_LEN);
    out.push_str(prefix);
    out.push('_');
    // The alphabet is ASCII, so every byte is a char.
    out.extend(suffix.iter().map(|&b| b as char));
    out
}

/// Parses a TypeID that must carry `expected_prefix`; `None` for anything else.
pub fn decode(expected_prefix: &str, id: &str) -> Option<Uuid> {
    let suffix = id.strip_prefix(expected_prefix)?.strip_prefix('_')?;
    if suffix.len() != SUFFIX_LEN {
        return None;
    }
    let bytes = suffix.as_bytes();
    // 26 characters hold 130 bits: the first may carry only the top 3 bits.
    if bytes[0] > b'7' {
        return None;
    }
    let mut value: u128 = 0;
    for &b in bytes {
        let digit = ALPHABET.iter().position(|&a| a == b)? as u128;
        value = (value << 5) | digit;
    }
    Some(Uuid::from_u128(value))
}

/// The pattern of a well-formed identifier with `prefix` (what `is_valid` accepts).
pub fn pattern(prefix: &str) -> String {
    let alphabet = std::str::from_utf8(ALPHABET).unwrap_or_default();
    format!("^{prefix}_[0-7][{alphabet}]{{{}}}$", SUFFIX_LEN - 1)
}

/// True when `id` is a well-formed identifier with `expected_prefix`.
pub fn is_valid(expected_prefix: &str, id: &str) -> bool {
    decode(expected_prefix, id).is_some()
}

/// The tenant a request acts on. Built only from an authenticated credential (or, for the
/// platform admin, from a tenant that exists), or read back from the database; never from a
/// request body. Binds and decodes as text.
///
/// Every function that acts for a tenant takes a `&TenantId`; a plain `&str` tenant is input not
/// yet checked (a path, a header, a command-line argument) or the wire form of a response.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Wraps an id that came from the database or a verified credential.
    pub fn trusted(id: impl Into<String>) -> Self {
        TenantId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl sqlx::Type<sqlx::Any> for TenantId {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }
}

/// Read back from the database: a stored tenant id is trusted.
impl<'r> sqlx::Decode<'r, sqlx::Any> for TenantId {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        <String as sqlx::Decode<'r, sqlx::Any>>::decode(value).map(TenantId)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Any> for TenantId {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer<'q>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<'q, sqlx::Any>>::encode_by_ref(&self.0, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_what_is_valid() {
        let pattern = regex::Regex::new(&pattern("evt")).unwrap();
        for _ in 0..100 {
            assert!(pattern.is_match(&new_id("evt")));
        }
        let made = new_id("evt");
        for other in
            [made.replace("evt_", "tn_"), format!("{made}0"), made[..made.len() - 1].to_string(), made.to_uppercase()]
        {
            assert_eq!(pattern.is_match(&other), is_valid("evt", &other), "{other}");
        }
        let top = format!("evt_8{}", &made[5..]);
        assert!(!pattern.is_match(&top) && !is_valid("evt", &top));
    }

    #[test]
    fn round_trips_and_sorts_by_time() {
        let a = new_id("tn");
        let b = new_id("tn");
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.len(), 3 + SUFFIX_LEN);
        let uuid = decode("tn", &a).expect("decodes");
        assert_eq!(encode("tn", uuid), a);
    }

    #[test]
    fn matches_the_typeid_spec_vectors() {
        let nil = Uuid::nil();
        assert_eq!(encode("x", nil), "x_00000000000000000000000000");
        let max = Uuid::from_u128(u128::MAX);
        assert_eq!(encode("x", max), "x_7zzzzzzzzzzzzzzzzzzzzzzzzz");
        let uuid = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        assert_eq!(encode("prefix", uuid), "prefix_01h455vb4pex5vsknk084sn02q");
    }

    #[test]
    fn rejects_malformed_ids() {
        assert!(decode("tn", "key_01h455vb4pex5vsknk084sn02q").is_none());
        assert!(decode("tn", "tn_01h455vb4pex5vsknk084sn02").is_none());
        assert!(decode("tn", "tn_81h455vb4pex5vsknk084sn02q").is_none());
        assert!(decode("tn", "tn_01h455vb4pex5vsknk084sn0uq").is_none());
        assert!(decode("tn", "tn01h455vb4pex5vsknk084sn02q").is_none());
    }

    #[tokio::test]
    async fn tenant_ids_bind_decode_and_serialize_as_text() {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect("sqlite::memory:").await.unwrap();
        let (text,): (String,) =
            sqlx::query_as("SELECT $1").bind(TenantId::trusted("tn_1")).fetch_one(&pool).await.unwrap();
        assert_eq!(text, "tn_1");
        let (read,): (TenantId,) = sqlx::query_as("SELECT 'tn_3'").fetch_one(&pool).await.unwrap();
        assert_eq!(read, TenantId::trusted("tn_3"));
        assert_eq!(TenantId::trusted("tn_2").to_string(), "tn_2");
        assert_eq!(serde_json::to_value(TenantId::trusted("tn_4")).unwrap(), serde_json::json!("tn_4"));
        assert_eq!(String::from(TenantId::trusted("tn_5")), "tn_5");
    }
}
