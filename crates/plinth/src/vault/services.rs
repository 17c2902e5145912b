//! The services the vault knows (seed 000's tables) and their fields, and `custom:<name>`
//! services whose string fields are free.

use serde_json::{Map, Value};

use super::hint;
use crate::http::error::FieldErrors;
use crate::object_types::is_slug;

/// Largest value of one field.
const VALUE_MAX: usize = 8 * 1024;
/// Most fields of a custom service.
const CUSTOM_FIELDS_MAX: usize = 50;

/// One field of a service.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub required: bool,
    /// Shown only as a masked hint.
    pub secret: bool,
    /// Stored when the field is absent.
    pub default: Option<&'static str>,
}

const fn secret(name: &'static str) -> Field {
    Field { name, required: true, secret: true, default: None }
}

const fn optional(name: &'static str) -> Field {
    Field { name, required: false, secret: false, default: None }
}

const fn plain(name: &'static str) -> Field {
    Field { name, required: true, secret: false, default: None }
}

const fn optional_secret(name: &'static str) -> Field {
    Field { name, required: false, secret: true, default: None }
}

/// A known service.
#[derive(Debug)]
pub struct Known {
    pub name: &'static str,
    pub fields: &'static [Field],
    /// An AI provider: credentials for it join the provider priority list.
    pub ai: bool,
}

pub const SERVICES: &[Known] = &[
    Known { name: "openai", fields: &[secret("api_key"), optional("organization")], ai: true },
    Known { name: "anthropic", fields: &[secret("api_key")], ai: true },
    Known { name: "openrouter", fields: &[secret("api_key"), optional("referer"), optional("app_title")], ai: true },
    Known { name: "claude-cli", fields: &[secret("oauth_token")], ai: true },
    Known { name: "openai-cli", fields: &[secret("api_key")], ai: true },
    Known { name: "stripe", fields: &[secret("api_key"), optional_secret("webhook_secret")], ai: false },
    Known {
        name: "dinero",
        fields: &[plain("client_id"), secret("client_secret"), plain("organization_id")],
        ai: false,
    },
    Known { name: "economic", fields: &[secret("app_secret"), secret("agreement_grant")], ai: false },
    Known { name: "mailchimp", fields: &[secret("api_key"), optional("list_id")], ai: false },
    Known { name: "ipregistry", fields: &[secret("api_key")], ai: false },
    Known { name: "clearhaus", fields: &[secret("api_key")], ai: false },
    Known {
        name: "meta-ads",
        fields: &[
            secret("access_token"),
            plain("app_id"),
            secret("app_secret"),
            optional("business_id"),
            Field { name: "api_version", required: false, secret: false, default: Some("v24.0") },
        ],
        ai: false,
    },
    Known { name: "missive", fields: &[secret("api_key")], ai: false },
    Known {
        name: "google",
        fields: &[plain("client_id"), secret("client_secret"), secret("refresh_token")],
        ai: false,
    },
    Known {
        name: "microsoft-graph",
        fields: &[plain("tenant_id"), plain("client_id"), secret("client_secret"), secret("refresh_token")],
        ai: false,
    },
];

/// A service of the vault: a known one, or `custom:<name>`.
#[derive(Debug)]
pub enum Service {
    Known(&'static Known),
    Custom,
}

fn check_value(field: &str, value: &Value, errors: &mut FieldErrors) -> Option<String> {
    match value {
        Value::String(text) if text.trim().is_empty() => errors.add(field, "must not be empty"),
        Value::String(text) if text.len() > VALUE_MAX => {
            errors.add(field, format!("must be at most {VALUE_MAX} bytes"))
        }
        Value::String(text) if text.chars().any(char::is_control) => {
            errors.add(field, "must not contain control characters")
        }
        Value::String(text) => return Some(text.clone()),
        _ => errors.add(field, "must be a string"),
    }
    None
}

impl Service {
    pub fn named(name: &str) -> Option<Service> {
        if let Some(custom) = name.strip_prefix("custom:") {
            return is_slug(custom).then_some(Service::Custom);
        }
        SERVICES.iter().find(|s| s.name == name).map(Service::Known)
    }

    pub fn is_custom(&self) -> bool {
        matches!(self, Service::Custom)
    }

    pub fn is_ai_provider(&self) -> bool {
        matches!(self, Service::Known(known) if known.ai)
    }

    /// Checks the given fields: the values to store and the view to show (secrets masked).
    pub fn check(
        &self,
        given: Map<String, Value>,
        errors: &mut FieldErrors,
    ) -> (Map<String, Value>, Map<String, Value>) {
        let mut fields = Map::new();
        let mut shown = Map::new();
        match self {
            Service::Custom => {
                if given.is_empty() || given.len() > CUSTOM_FIELDS_MAX {
                    errors.add("body", format!("must hold 1 to {CUSTOM_FIELDS_MAX} fields"));
                }
                for (name, value) in given {
                    if !is_slug(&name) {
                        errors.add(&name, "field names are lowercase letters, digits, `-` and `_`");
                        continue;
                    }
                    if let Some(text) = check_value(&name, &value, errors) {
                        shown.insert(name.clone(), Value::String(hint(&text)));
                        fields.insert(name, Value::String(text));
                    }
                }
            }
            Service::Known(known) => {
                for name in given.keys() {
                    if !known.fields.iter().any(|f| f.name == name) {
                        let names: Vec<&str> = known.fields.iter().map(|f| f.name).collect();
                        errors.add(
                            name,
                            format!("is not a field of `{}` (its fields: {})", known.name, names.join(", ")),
                        );
                    }
                }
                for field in known.fields {
                    let text = match given.get(field.name) {
                        Some(value) => check_value(field.name, value, errors),
                        None if field.required => {
                            errors.add(field.name, "is required");
                            None
                        }
                        None => field.default.map(str::to_string),
                    };
                    if let Some(text) = text {
                        if known.name == "mailchimp" && field.name == "api_key" && !text.contains('-') {
                            errors.add("api_key", "must end with the data centre suffix, such as `-us21`");
                        }
                        let view = if field.secret { hint(&text) } else { text.clone() };
                        shown.insert(field.name.into(), Value::String(view));
                        fields.insert(field.name.into(), Value::String(text));
                    }
                }
            }
        }
        (fields, shown)
    }
}
