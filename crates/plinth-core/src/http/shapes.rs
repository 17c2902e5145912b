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

/// The blank characters (`crate::names::is_blank`): white space and control characters.
pub const BLANK_CLASS: &str = "\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
/// The control characters (`char::is_control`).
pub const CONTROL_CLASS: &str = "\\x00-\\x1f\\x7f-\\x9f";
/// `crate::names::is_event_name`, with `maxLength` 100.
pub const EVENT_NAME_PATTERN: &str = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)+$";
/// A dotted name of one word or more (a replayed event's type), with `maxLength` 100.
pub const EVENT_TYPE_PATTERN: &str = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$";
/// `crate::names::is_event_pattern_of_any_length`.
pub const EVENT_PATTERN_PATTERN: &str = "^(\\*|[a-z0-9_-]+(\\.[a-z0-9_-]+)*(\\.\\*)?)$";
/// 1 to 50 event patterns, comma-separated.
pub const EVENT_PATTERNS_PATTERN: &str =
    "^(\\*|[a-z0-9_-]+(\\.[a-z0-9_-]+)*(\\.\\*)?)(,(\\*|[a-z0-9_-]+(\\.[a-z0-9_-]+)*(\\.\\*)?)){0,49}$";
/// An `https://` URL to a named public host (a subset of what the webhook check takes).
pub const WEBHOOK_URL_PATTERN: &str = "^https://([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,8}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(\\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$";
/// Canonical, padded base64 (what `base64::engine::general_purpose::STANDARD` decodes).
pub const BASE64_PATTERN: &str = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
/// `whsec_` and the base64 (canonical, padded) of 24 to 64 bytes.
pub const WEBHOOK_SECRET_PATTERN: &str = "^whsec_(([A-Za-z0-9+/]{4}){8,21}|([A-Za-z0-9+/]{4}){8,21}[A-Za-z0-9+/][AQgw]==|([A-Za-z0-9+/]{4}){8,20}[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)$";
/// `crate::names::is_amount`.
pub const AMOUNT_PATTERN: &str = "^[0-9]{1,9}(\\.[0-9]{1,18})?$";

/// `crate::names::label(text, max)`: blanks around, then 1 to `max` characters that start and
/// end with one that is not blank, none of them a control character.
pub fn label_pattern(max: usize) -> String {
    let (b, c) = (BLANK_CLASS, CONTROL_CLASS);
    format!("^[{b}]*[^{b}]([^{c}]{{0,{}}}[^{b}])?[{b}]*$", max.saturating_sub(2))
}

/// `crate::names::has_text` (unanchored: one character that is not blank, anywhere).
pub fn text_pattern() -> String {
    format!("[^{BLANK_CLASS}]")
}

/// An IPv4 or IPv6 address, or a network of either in CIDR notation (`10.0.0.0/8`,
/// `2001:db8::/32`), as `std` and `ipnet` read them.
pub fn ip_network_pattern() -> String {
    let octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    let v4 = format!("{octet}(\\.{octet}){{3}}");
    let h16 = "[0-9A-Fa-f]{1,4}";
    let ls32 = format!("({h16}:{h16}|{v4})");
    // RFC 3986's IPv6address, one alternative per place of the `::`.
    let mut forms = vec![format!("({h16}:){{6}}{ls32}"), format!("::({h16}:){{5}}{ls32}")];
    for before in 0..=6usize {
        let head = if before == 0 { format!("({h16})?") } else { format!("(({h16}:){{0,{before}}}{h16})?") };
        let tail = match 4i32 - before as i32 {
            n if n >= 1 => format!("({h16}:){{{n}}}{ls32}"),
            0 => ls32.clone(),
            -1 => h16.to_string(),
            _ => String::new(),
        };
        if before <= 6 {
            forms.push(format!("{head}::{tail}"));
        }
    }
    let v6 = forms.join("|");
    format!("^({v4}(/(3[0-2]|[12]?[0-9]))?|({v6})(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$")
}

fn text(description: &str, pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).description(Some(description)).pattern(Some(pattern)).into()
}

/// Text of at most `max` characters that matches `pattern`.
fn bounded(description: &str, max: usize, pattern: impl Into<String>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .into()
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
    /// A label: 1 to 255 characters once trimmed, none of them a control character.
    Label,
    text("1 to 255 characters (blanks around are trimmed), no control characters", &label_pattern(255))
);
shape!(
    /// A description: at most 2,000 characters, not blank.
    Description,
    bounded("At most 2,000 characters, not blank", 2000, text_pattern())
);
shape!(
    /// Text that is not blank.
    Prose,
    text("Not blank", &text_pattern())
);
shape!(
    /// A new password: 8 to 1,024 characters, not blank (a tenant's policy may ask more).
    Password,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "8 to 1,024 characters, not blank, not one of the most common passwords; the tenant's policy may ask for more"
        ))
        .min_length(Some(8))
        .max_length(Some(1024))
        .pattern(Some(text_pattern()))
        .into()
);
shape!(
    /// A model's name: 1 to 200 characters, not blank.
    ModelName,
    bounded("A model's name, such as `gpt-4o-mini`: at most 200 characters, not blank", 200, text_pattern())
);
shape!(
    /// An event name: dotted lowercase words, such as `checkout.completed`.
    EventName,
    bounded("Dotted lowercase words (`a-z`, `0-9`, `_`, `-`), such as `checkout.completed`", 100, EVENT_NAME_PATTERN)
);
shape!(
    /// An event type of one dotted word or more, such as `order.paid`.
    EventType,
    bounded("Dotted lowercase words (`a-z`, `0-9`, `_`, `-`), such as `order.paid`", 100, EVENT_TYPE_PATTERN)
);
shape!(
    /// An event name or pattern: `object.created`, `object.*`, `*`.
    EventPattern,
    bounded("An event name or pattern: `object.created`, `object.*`, `*`", 100, EVENT_PATTERN_PATTERN)
);
shape!(
    /// 1 to 50 event names or patterns, comma-separated (`object.*,inbound.*`).
    EventPatterns,
    text("1 to 50 event names or patterns, comma-separated (`object.*,inbound.*`)", EVENT_PATTERNS_PATTERN)
);
shape!(
    /// An amount as a decimal string, such as `25.00`.
    Amount,
    text("A decimal string, such as `25.00`: up to 9 digits, then up to 18 after the point", AMOUNT_PATTERN)
);
shape!(
    /// A webhook endpoint's URL.
    WebhookUrl,
    bounded("An `https://` URL of a public host (plain HTTP and private addresses only where the server allows them)", 2048, WEBHOOK_URL_PATTERN)
);
shape!(
    /// A webhook signing secret.
    WebhookSecret,
    text("`whsec_` and the base64 of 24 to 64 bytes", WEBHOOK_SECRET_PATTERN)
);
shape!(
    /// An IP address or CIDR network.
    IpNetwork,
    text("An IPv4 or IPv6 address, or a network in CIDR notation (`10.0.0.0/8`)", &ip_network_pattern())
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

    fn label_rule(text: &str) -> bool {
        crate::names::label(text, 255).is_ok()
    }

    /// Strings near labels and texts: letters, blanks, controls and the odd wide character.
    fn near_text() -> impl Strategy<Value = String> {
        string_regex("[a -~\\t\\n\\x00-\\x1f\\x7f-\\xa0\\u{1680}\\u{2000}-\\u{200b}\\u{3000}\\u{feff}é]{0,20}").unwrap()
    }

    #[test]
    fn the_ip_pattern_holds_the_forms_people_write() {
        let ip = pattern(&ip_network_pattern());
        for good in [
            "10.0.0.0/8",
            "127.0.0.1",
            "::1",
            "::",
            "2001:db8::/32",
            "fe80::1:2",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:7:8",
            "1::",
            "0.0.0.0/0",
        ] {
            assert!(ip.is_match(good), "{good}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "01.2.3.4",
            "1.2.3",
            "::1/129",
            "1:2:3:4:5:6:7:8:9",
            "1::2::3",
            " 10.0.0.1",
            "fe80::1%eth0",
        ] {
            assert!(!ip.is_match(bad), "{bad}");
        }
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
        fn labels_match_their_pattern_exactly(made in string_regex(&label_pattern(40)[1..label_pattern(40).len() - 1]).unwrap(), any in near_text()) {
            prop_assert!(crate::names::label(&made, 40).is_ok(), "{:?}", made);
            prop_assert_eq!(pattern(&label_pattern(255)).is_match(&any), label_rule(&any), "{:?}", any);
        }

        #[test]
        fn texts_match_their_pattern_exactly(any in near_text()) {
            prop_assert_eq!(pattern(&text_pattern()).is_match(&any), crate::names::has_text(&any), "{:?}", any);
        }

        #[test]
        fn event_shapes_match_their_patterns_exactly(made in string_regex("[a-z0-9_*.-]{1,12}(,[a-z0-9_*.-]{0,8}){0,2}").unwrap()) {
            prop_assert_eq!(pattern(EVENT_NAME_PATTERN).is_match(&made), crate::names::is_event_name(&made), "{}", made);
            prop_assert_eq!(pattern(EVENT_PATTERN_PATTERN).is_match(&made), crate::names::is_event_pattern_of_any_length(&made), "{}", made);
            let list = made.split(',').all(crate::names::is_event_pattern_of_any_length);
            prop_assert_eq!(pattern(EVENT_PATTERNS_PATTERN).is_match(&made), list, "{}", made);
        }

        #[test]
        fn base64_matches_its_pattern_exactly(any in string_regex("[A-Za-z0-9+/=]{0,12}").unwrap()) {
            use base64::Engine;
            let decodes = base64::engine::general_purpose::STANDARD.decode(&any).is_ok();
            prop_assert_eq!(pattern(BASE64_PATTERN).is_match(&any), decodes, "{}", any);
        }

        #[test]
        fn webhook_secrets_match_their_pattern_exactly(bytes in proptest::collection::vec(any::<u8>(), 20..70)) {
            use base64::Engine;
            let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&bytes));
            prop_assert_eq!(pattern(WEBHOOK_SECRET_PATTERN).is_match(&secret), (24..=64).contains(&bytes.len()), "{}", secret);
        }

        #[test]
        fn amounts_match_their_pattern_exactly(any in string_regex("[0-9.+_e-]{0,25}").unwrap()) {
            prop_assert_eq!(pattern(AMOUNT_PATTERN).is_match(&any), crate::names::is_amount(&any), "{}", any);
        }

        #[test]
        fn slugs_match_their_pattern_exactly(made in string_regex("[a-z0-9_-]{1,50}").unwrap(), any in near()) {
            prop_assert!(crate::names::is_slug(&made), "{made}");
            prop_assert_eq!(pattern(SLUG_PATTERN).is_match(&any), crate::names::is_slug(&any), "{}", any);
        }
    }
}
