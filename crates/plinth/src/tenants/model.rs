//! Tenant types and their validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::FieldErrors;
use crate::limits::{NAME_MAX_CHARS, SLUG_MAX_CHARS};

/// A plan tier: it sets rate limits and entitlements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Free,
    Starter,
    Pro,
    Agency,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Starter => "starter",
            Tier::Pro => "pro",
            Tier::Agency => "agency",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(text: &str) -> Option<Tier> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }
}

/// Per-tenant settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantSettings {
    /// IANA time zone, such as `Europe/London`.
    pub timezone: String,
    /// Locale, such as `en_GB` or `en-GB`.
    pub locale: String,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings { timezone: "UTC".into(), locale: "en".into() }
    }
}

/// A tenant (seed 001 calls it a workspace).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    #[schema(example = "tn_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub name: String,
    pub slug: String,
    pub tier: Tier,
    pub settings: TenantSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new tenant, with its first API key (every scope), shown only now.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    #[serde(flatten)]
    pub tenant: Tenant,
    /// The first API key's secret. It is not shown again.
    pub api_key: String,
    pub api_key_id: String,
}

/// Changes to settings: absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub timezone: Option<String>,
    pub locale: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1 to 255 characters.
    pub name: String,
    /// Lowercase letters, digits and single hyphens; generated from the name when absent.
    pub slug: Option<String>,
    /// Default `free`.
    pub tier: Option<Tier>,
    pub settings: Option<SettingsPatch>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub tier: Option<Tier>,
    pub settings: Option<SettingsPatch>,
}

/// Checks a name or label: trimmed of blanks, 1 to 255 characters, no control characters
/// (`plinth_core::names::label`; the document's `shapes::Label`).
pub fn validate_name(field: &str, name: &str, errors: &mut FieldErrors) -> String {
    use plinth_core::names::{label, LabelError};
    match label(name, NAME_MAX_CHARS) {
        Ok(name) => return name.to_string(),
        Err(LabelError::Empty) => errors.add(field, "must not be empty"),
        Err(LabelError::TooLong) => errors.add(field, format!("must be at most {NAME_MAX_CHARS} characters")),
        Err(LabelError::Control) => errors.add(field, "must not contain control characters"),
    }
    name.to_string()
}

/// Checks a slug: `[a-z0-9]+(-[a-z0-9]+)*`, at most 63 characters.
pub fn validate_slug(slug: &str, errors: &mut FieldErrors) {
    let well_formed = !slug.is_empty()
        && slug.len() <= SLUG_MAX_CHARS
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && !slug.contains("--");
    if !well_formed {
        errors.add(
            "slug",
            format!("must be lowercase letters, digits and single hyphens, at most {SLUG_MAX_CHARS} characters"),
        );
    }
}

/// A slug made from a name: `Acme Corp!` becomes `acme-corp`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut slug: String = slug.trim_end_matches('-').chars().take(SLUG_MAX_CHARS - 5).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        slug.push_str("tenant");
    }
    slug
}

fn valid_locale(locale: &str) -> bool {
    let mut parts = locale.split(['-', '_']);
    let language = parts.next().unwrap_or_default();
    let language_ok = (2..=3).contains(&language.len()) && language.bytes().all(|b| b.is_ascii_lowercase());
    let rest_ok = parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    language_ok && rest_ok && locale.len() <= 35
}

impl SettingsPatch {
    /// Applies the patch to `settings`, recording problems in `errors`.
    pub fn apply(self, settings: &mut TenantSettings, errors: &mut FieldErrors) {
        if let Some(timezone) = self.timezone {
            if timezone.parse::<chrono_tz::Tz>().is_err() {
                errors.add("settings.timezone", "must be an IANA time zone such as `Europe/London`");
            }
            settings.timezone = timezone;
        }
        if let Some(locale) = self.locale {
            if !valid_locale(&locale) {
                errors.add("settings.locale", "must be a locale such as `en`, `en_GB` or `pt-BR`");
            }
            settings.locale = locale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_makes_valid_slugs() {
        for (name, slug) in [("Acme Corp!", "acme-corp"), ("  --Ünïcode  ", "n-code"), ("!!!", "tenant")] {
            assert_eq!(slugify(name), slug);
            let mut errors = FieldErrors::default();
            validate_slug(&slugify(name), &mut errors);
            assert!(errors.is_empty(), "{name}");
        }
        let long = slugify(&"a".repeat(200));
        assert!(long.len() <= SLUG_MAX_CHARS - 5);
    }

    #[test]
    fn settings_are_validated() {
        let mut settings = TenantSettings::default();
        let mut errors = FieldErrors::default();
        SettingsPatch { timezone: Some("Europe/London".into()), locale: Some("en_GB".into()) }
            .apply(&mut settings, &mut errors);
        assert!(errors.is_empty());
        SettingsPatch { timezone: Some("Europe/Lodnon".into()), locale: Some("english!".into()) }
            .apply(&mut settings, &mut errors);
        assert!(!errors.is_empty());
    }
}
