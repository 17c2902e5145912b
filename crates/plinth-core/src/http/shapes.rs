//! The shapes of values as the OpenAPI document states them, each from the same rule the server
//! checks with: a field takes one with `#[schema(value_type = shapes::Scope)]` and keeps its own
//! Rust type. The tests hold each pattern to its check, both ways.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// `crate::scopes::is_valid`: a broad scope, or `<resource>:<action>`.
pub const SCOPE_PATTERN: &str = "^(read|write|schema|files|auth|ai|admin|\\*|([a-z][a-z0-9_-]{0,63}|objects\\.[a-z][a-z0-9_]{0,62}):(\\*|[a-z][a-z0-9_-]{0,63}))$";
/// `crate::names::is_identifier`.
pub const IDENTIFIER_PATTERN: &str = "^[a-z][a-z0-9_]{0,62}$";
/// `crate::scopes::is_name`: a role's name, a scope's resource or action.
pub const NAME_PATTERN: &str = "^[a-z][a-z0-9_-]{0,63}$";
/// An E.164 number as the server reads it: `+`, then 8 to 15 digits not starting with `0`, with
/// spaces, dashes, dots and parentheses anywhere (dropped).
pub const PHONE_PATTERN: &str = "^[ ().-]*\\+[ ().-]*[1-9]([ ().-]*[0-9]){7,14}[ ().-]*$";
/// `crate::names::is_slug`.
pub const SLUG_PATTERN: &str = "^[a-z0-9_-]{1,50}$";

fn text(description: &str, pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).description(Some(description)).pattern(Some(pattern)).into()
}

macro_rules! shape {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

shape!(
    /// A scope: `read`, `write`, `schema`, `files`, `auth`, `ai`, `admin`, `*`, or
    /// `<resource>:<action>` (`webhooks:read`, `objects.orders:write`, `api-keys:*`).
    Scope,
    text(
        "A broad scope (`read`, `write`, `schema`, `files`, `auth`, `ai`, `admin`, `*`) or `<resource>:<action>`",
        SCOPE_PATTERN
    )
);
shape!(
    /// A lowercase identifier: a letter, then letters, digits or `_`, at most 63 characters.
    Identifier,
    text("A letter, then lowercase letters, digits or `_`; at most 63 characters", IDENTIFIER_PATTERN)
);
shape!(
    /// A name: a letter, then lowercase letters, digits, `_` or `-`, at most 64 characters.
    Name,
    text("A letter, then lowercase letters, digits, `_` or `-`; at most 64 characters", NAME_PATTERN)
);
shape!(
    /// A short name: 1 to 50 lowercase letters, digits, `-` or `_`.
    Slug,
    text("1 to 50 lowercase letters, digits, `-` or `_`", SLUG_PATTERN)
);
shape!(
    /// A phone number: E.164, such as `+15551234567` (spaces, dashes, dots and parentheses are
    /// dropped).
    Phone,
    text("E.164, such as `+15551234567`; spaces, dashes, dots and parentheses are dropped", PHONE_PATTERN)
);
shape!(
    /// An email address (at most 254 characters; stored lowercased).
    Email,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(254))
        .into()
);
shape!(
    /// Bytes as they are sent: a body of its own media type.
    Binary,
    ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary))).into()
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::string::string_regex;

    use super::*;

    fn pattern(source: &str) -> regex::Regex {
        regex::Regex::new(source).unwrap()
    }

    /// Strings near the shapes: the characters they use and a few they do not.
    fn near() -> impl Strategy<Value = String> {
        string_regex("[a-z0-9_.:*A -]{0,70}").unwrap()
    }

    proptest! {
        #[test]
        fn scopes_match_their_pattern_exactly(made in string_regex(&SCOPE_PATTERN[1..SCOPE_PATTERN.len() - 1]).unwrap(), any in near()) {
            prop_assert!(crate::scopes::is_valid(&made), "{made}");
            prop_assert_eq!(pattern(SCOPE_PATTERN).is_match(&any), crate::scopes::is_valid(&any), "{}", any);
        }

        #[test]
        fn identifiers_match_their_pattern_exactly(made in string_regex("[a-z][a-z0-9_]{0,62}").unwrap(), any in near()) {
            prop_assert!(crate::names::is_identifier(&made), "{made}");
            prop_assert_eq!(pattern(IDENTIFIER_PATTERN).is_match(&any), crate::names::is_identifier(&any), "{}", any);
        }

        #[test]
        fn names_match_their_pattern_exactly(made in string_regex("[a-z][a-z0-9_-]{0,63}").unwrap(), any in near()) {
            prop_assert!(crate::scopes::is_name(&made), "{made}");
            prop_assert_eq!(pattern(NAME_PATTERN).is_match(&any), crate::scopes::is_name(&any), "{}", any);
        }

        #[test]
        fn slugs_match_their_pattern_exactly(made in string_regex("[a-z0-9_-]{1,50}").unwrap(), any in near()) {
            prop_assert!(crate::names::is_slug(&made), "{made}");
            prop_assert_eq!(pattern(SLUG_PATTERN).is_match(&any), crate::names::is_slug(&any), "{}", any);
        }
    }
}
