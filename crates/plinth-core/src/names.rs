//! The shapes of names the platform accepts: identifiers and slugs.

/// True for `[a-z][a-z0-9_]{0,62}`.
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// True for a short name of `[a-z0-9_-]{1,50}`: inbound sources, provider instances, custom
/// vault services and their fields.
pub fn is_slug(name: &str) -> bool {
    (1..=50).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
