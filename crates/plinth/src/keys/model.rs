//! API key types and their validation.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::http::error::FieldErrors;
use crate::http::ApiResult;
use crate::limits::{IP_ALLOWLIST_MAX, ROTATION_GRACE_MAX_HOURS};
use crate::scopes;
use crate::tenants::model::{validate_name, Tier};
use crate::time;

/// `live` keys start `plk_live_`, `test` keys `plk_test_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    #[default]
    Live,
    Test,
}

impl KeyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::Live => "live",
            KeyMode::Test => "test",
        }
    }
}

/// Whether a key can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    /// Rotated: works until `expires_at`, then stops.
    Rotating,
    Expired,
}

/// An API key. The secret is never part of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    #[schema(example = "key_01jd8x3k4m5n6p7q8r9s0t1v2w")]
    pub id: String,
    pub tenant_id: String,
    pub label: String,
    /// The first characters of the secret, to recognise it.
    #[schema(example = "plk_live_Ab3d")]
    pub prefix: String,
    pub mode: KeyMode,
    pub scopes: Vec<String>,
    /// CIDRs the key accepts requests from; empty means anywhere.
    pub ip_allowlist: Vec<String>,
    pub rate_limit_tier: Option<Tier>,
    /// Requests per minute, overriding the tier.
    pub rate_limit: Option<i64>,
    pub status: KeyStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key that replaced this one by rotation.
    pub replaced_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new key and its secret, shown only now.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    pub key: ApiKey,
    /// The secret: send it as `Authorization: Bearer <token>`. It is not shown again.
    pub token: String,
}

/// The outcome of a rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRotated {
    pub old_key: ApiKey,
    pub new_key: ApiKey,
    /// The new secret. It is not shown again.
    pub token: String,
    /// When the old key stops working.
    pub grace_period_ends_at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A name for people (seed 001 calls it `name`). Default `API key`.
    #[serde(alias = "name")]
    #[schema(value_type = Option<crate::http::shapes::Label>)]
    pub label: Option<String>,
    /// Default `["read", "write"]`. A key cannot grant what its creator lacks.
    #[schema(value_type = Option<Vec<crate::http::shapes::Scope>>, min_items = 1, max_items = 64)]
    pub scopes: Option<Vec<String>>,
    /// CIDRs or addresses; empty or absent means anywhere.
    #[schema(value_type = Option<Vec<crate::http::shapes::IpNetwork>>, max_items = 100)]
    pub ip_allowlist: Option<Vec<String>>,
    /// When the key stops working; in the future.
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit_tier: Option<Tier>,
    /// Requests per minute, overriding the tier.
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub rate_limit: Option<u32>,
    /// Default `live`.
    pub mode: Option<KeyMode>,
}

/// Changes to a key: absent fields keep their value; `null` clears an optional one.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(alias = "name")]
    #[schema(value_type = Option<crate::http::shapes::Label>)]
    pub label: Option<String>,
    #[schema(value_type = Option<Vec<crate::http::shapes::Scope>>, min_items = 1, max_items = 64)]
    pub scopes: Option<Vec<String>>,
    #[schema(value_type = Option<Vec<crate::http::shapes::IpNetwork>>, max_items = 100)]
    pub ip_allowlist: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<Tier>)]
    pub rate_limit_tier: Option<Option<Tier>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10_000_000)]
    pub rate_limit: Option<Option<u32>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Hours the old key keeps working, 0 to 720. Default 24.
    #[schema(maximum = 720)]
    pub grace_period_hours: Option<u32>,
    /// A label for the new key; default the old key's.
    #[serde(alias = "name")]
    #[schema(value_type = Option<crate::http::shapes::Label>)]
    pub label: Option<String>,
    /// Scopes for the new key; default the old key's.
    #[schema(value_type = Option<Vec<crate::http::shapes::Scope>>, min_items = 1, max_items = 64)]
    pub scopes: Option<Vec<String>>,
}

/// A validated key to create.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub label: String,
    pub scopes: Vec<String>,
    pub ip_allowlist: Vec<IpNet>,
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit_tier: Option<Tier>,
    pub rate_limit: Option<i64>,
    pub mode: KeyMode,
}

impl NewKey {
    /// The first key of a new tenant: every scope, no limits.
    pub fn first(label: &str) -> NewKey {
        NewKey {
            label: label.to_string(),
            scopes: vec!["*".to_string()],
            ip_allowlist: Vec::new(),
            expires_at: None,
            rate_limit_tier: None,
            rate_limit: None,
            mode: KeyMode::Live,
        }
    }
}

/// An address, or a network in CIDR notation (`10.0.0.0/8`; host bits are dropped): the address
/// as `std` reads it, the prefix in plain digits. The document's `shapes::IpNetwork`.
fn parse_network(entry: &str) -> Option<IpNet> {
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry, None),
    };
    let address: std::net::IpAddr = address.parse().ok()?;
    let Some(prefix) = prefix else { return Some(IpNet::from(address)) };
    let plain = !prefix.is_empty() && prefix.len() <= 3 && prefix.bytes().all(|b| b.is_ascii_digit());
    if !plain || (prefix.len() > 1 && prefix.starts_with('0')) {
        return None;
    }
    IpNet::new(address, prefix.parse().ok()?).ok().map(|net| net.trunc())
}

pub fn parse_allowlist(field: &str, entries: &[String], errors: &mut FieldErrors) -> Vec<IpNet> {
    if entries.len() > IP_ALLOWLIST_MAX {
        errors.add(field, format!("at most {IP_ALLOWLIST_MAX} entries"));
    }
    let mut nets = Vec::with_capacity(entries.len());
    for entry in entries {
        let parsed = parse_network(entry).ok_or(());
        match parsed {
            Ok(net) if !nets.contains(&net) => nets.push(net),
            Ok(_) => {}
            Err(_) => errors.add(field, format!("`{entry}` is not an IP address or CIDR")),
        }
    }
    nets
}

/// Checks requested scopes: valid names, and none wider than the creator's own.
pub fn validate_scopes(field: &str, requested: &[String], creator: &Auth, errors: &mut FieldErrors) -> Vec<String> {
    let scopes = scopes::normalise(field, requested, errors);
    if !creator.is_admin() {
        for scope in &scopes {
            if !scopes::covers(creator.scopes(), scope) {
                errors.add(field, format!("`{scope}` is wider than the scopes of the credential creating it"));
            }
        }
    }
    scopes
}

fn validate_rate_limit(limit: u32, errors: &mut FieldErrors) -> i64 {
    if !(1..=10_000_000).contains(&limit) {
        errors.add("rate_limit", "must be between 1 and 10000000 requests per minute");
    }
    i64::from(limit)
}

impl CreateKey {
    pub fn validate(self, creator: &Auth) -> ApiResult<NewKey> {
        let mut errors = FieldErrors::default();
        let label = validate_name("label", self.label.as_deref().unwrap_or("API key"), &mut errors);
        let requested = self.scopes.unwrap_or_else(|| vec!["read".into(), "write".into()]);
        let scopes = validate_scopes("scopes", &requested, creator, &mut errors);
        let ip_allowlist = parse_allowlist("ip_allowlist", &self.ip_allowlist.unwrap_or_default(), &mut errors);
        if self.expires_at.is_some_and(|at| at <= time::now()) {
            errors.add("expires_at", "must be in the future");
        }
        let rate_limit = self.rate_limit.map(|l| validate_rate_limit(l, &mut errors));
        errors.finish()?;
        Ok(NewKey {
            label,
            scopes,
            ip_allowlist,
            expires_at: self.expires_at,
            rate_limit_tier: self.rate_limit_tier,
            rate_limit,
            mode: self.mode.unwrap_or_default(),
        })
    }
}

/// A validated change to a key.
#[derive(Debug, Default)]
pub struct KeyChanges {
    pub label: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub ip_allowlist: Option<Vec<IpNet>>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub rate_limit_tier: Option<Option<Tier>>,
    pub rate_limit: Option<Option<i64>>,
}

impl UpdateKey {
    pub fn validate(self, creator: &Auth) -> ApiResult<KeyChanges> {
        let mut errors = FieldErrors::default();
        let label = self.label.map(|l| validate_name("label", &l, &mut errors));
        let scopes = self.scopes.map(|s| validate_scopes("scopes", &s, creator, &mut errors));
        let ip_allowlist = self.ip_allowlist.map(|l| parse_allowlist("ip_allowlist", &l, &mut errors));
        if let Some(Some(at)) = self.expires_at {
            if at <= time::now() {
                errors.add("expires_at", "must be in the future");
            }
        }
        let rate_limit = self.rate_limit.map(|l| l.map(|l| validate_rate_limit(l, &mut errors)));
        errors.finish()?;
        Ok(KeyChanges {
            label,
            scopes,
            ip_allowlist,
            expires_at: self.expires_at,
            rate_limit_tier: self.rate_limit_tier,
            rate_limit,
        })
    }
}

/// A validated rotation.
#[derive(Debug)]
pub struct Rotation {
    pub grace_hours: u32,
    pub label: Option<String>,
    pub scopes: Option<Vec<String>>,
}

impl RotateKey {
    pub fn validate(self, creator: &Auth) -> ApiResult<Rotation> {
        let mut errors = FieldErrors::default();
        let grace_hours = self.grace_period_hours.unwrap_or(24);
        if grace_hours > ROTATION_GRACE_MAX_HOURS {
            errors.add("grace_period_hours", format!("must be between 0 and {ROTATION_GRACE_MAX_HOURS}"));
        }
        let label = self.label.map(|l| validate_name("label", &l, &mut errors));
        let scopes = self.scopes.map(|s| validate_scopes("scopes", &s, creator, &mut errors));
        errors.finish()?;
        Ok(Rotation { grace_hours, label, scopes })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::string::string_regex;

    use super::*;

    fn accepted(entry: &str) -> bool {
        let mut errors = FieldErrors::default();
        parse_allowlist("ip_allowlist", &[entry.to_string()], &mut errors);
        errors.is_empty()
    }

    proptest! {
        /// The document's IP network pattern is exactly what the allowlist accepts.
        #[test]
        fn ip_networks_match_their_pattern_exactly(
            v4 in string_regex("[0-9]{1,3}(\\.[0-9]{1,3}){0,4}(/[0-9]{1,3})?").unwrap(),
            v6 in string_regex("[0-9a-fA-F:.]{0,30}(/[0-9]{1,3})?").unwrap(),
        ) {
            let pattern = regex::Regex::new(&crate::http::shapes::ip_network_pattern()).unwrap();
            for entry in [v4, v6] {
                prop_assert_eq!(pattern.is_match(&entry), accepted(&entry), "{}", entry);
            }
        }
    }
}
