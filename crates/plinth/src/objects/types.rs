//! The 22 property data types: strict validation of a JSON value and its one canonical stored
//! form. Pure functions, no database: references are checked for existence by the caller.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::id;

/// Longest `string` value, in characters.
pub const STRING_MAX_CHARS: usize = 1024;
/// Longest `text` or `rich_text` value, in characters.
pub const TEXT_MAX_CHARS: usize = 65_536;
/// Largest `json` value, serialised.
pub const JSON_MAX_BYTES: usize = 65_536;
/// Longest `decimal` (or currency amount) as written.
pub const DECIMAL_MAX_CHARS: usize = 100;
/// Longest `url`.
pub const URL_MAX_CHARS: usize = 2048;
/// Longest `email`.
pub const EMAIL_MAX_CHARS: usize = 254;

/// A property's data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    String,
    Text,
    RichText,
    Integer,
    Number,
    Decimal,
    Boolean,
    Date,
    Datetime,
    Time,
    Email,
    Url,
    Phone,
    Enum,
    MultiEnum,
    Json,
    Uuid,
    Currency,
    Percent,
    Color,
    File,
    Reference,
}

/// How a type's values compare in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text that orders by bytes (canonical forms are chosen so that this is the natural order).
    Text,
    /// A number (integers, floats, decimals, a currency's amount).
    Numeric,
    Boolean,
    /// An array of strings (`multi_enum`).
    Set,
    /// Any JSON (`json`): only presence is queryable.
    Opaque,
}

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Contains,
    StartsWith,
    Exists,
}

impl Op {
    pub const ALL: [Op; 10] =
        [Op::Eq, Op::Ne, Op::Gt, Op::Gte, Op::Lt, Op::Lte, Op::In, Op::Contains, Op::StartsWith, Op::Exists];

    pub fn parse(text: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::In => "in",
            Op::Contains => "contains",
            Op::StartsWith => "starts_with",
            Op::Exists => "exists",
        }
    }
}

impl DataType {
    pub const ALL: [DataType; 22] = [
        DataType::String,
        DataType::Text,
        DataType::RichText,
        DataType::Integer,
        DataType::Number,
        DataType::Decimal,
        DataType::Boolean,
        DataType::Date,
        DataType::Datetime,
        DataType::Time,
        DataType::Email,
        DataType::Url,
        DataType::Phone,
        DataType::Enum,
        DataType::MultiEnum,
        DataType::Json,
        DataType::Uuid,
        DataType::Currency,
        DataType::Percent,
        DataType::Color,
        DataType::File,
        DataType::Reference,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::Text => "text",
            DataType::RichText => "rich_text",
            DataType::Integer => "integer",
            DataType::Number => "number",
            DataType::Decimal => "decimal",
            DataType::Boolean => "boolean",
            DataType::Date => "date",
            DataType::Datetime => "datetime",
            DataType::Time => "time",
            DataType::Email => "email",
            DataType::Url => "url",
            DataType::Phone => "phone",
            DataType::Enum => "enum",
            DataType::MultiEnum => "multi_enum",
            DataType::Json => "json",
            DataType::Uuid => "uuid",
            DataType::Currency => "currency",
            DataType::Percent => "percent",
            DataType::Color => "color",
            DataType::File => "file",
            DataType::Reference => "reference",
        }
    }

    pub fn parse(text: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    pub fn kind(self) -> Kind {
        match self {
            DataType::Integer | DataType::Number | DataType::Decimal | DataType::Percent | DataType::Currency => {
                Kind::Numeric
            }
            DataType::Boolean => Kind::Boolean,
            DataType::MultiEnum => Kind::Set,
            DataType::Json => Kind::Opaque,
            _ => Kind::Text,
        }
    }

    /// The path under the property's value that filters, sorts and indexes read: a currency
    /// compares by its amount.
    pub fn sub_path(self) -> Option<&'static str> {
        (self == DataType::Currency).then_some("amount")
    }

    /// Whether the type may be indexed, sorted or unique: scalar values of bounded size.
    pub fn indexable(self) -> bool {
        !matches!(self, DataType::Text | DataType::RichText | DataType::Json | DataType::MultiEnum)
    }

    /// Whether a type's values feed full-text search.
    pub fn searchable(self) -> bool {
        matches!(self, DataType::String | DataType::Text | DataType::RichText | DataType::Email)
    }

    /// The filter operators the type supports.
    pub fn ops(self) -> &'static [Op] {
        use Op::*;
        match self {
            DataType::String | DataType::Email | DataType::Url | DataType::Phone => {
                &[Eq, Ne, Gt, Gte, Lt, Lte, In, Contains, StartsWith, Exists]
            }
            DataType::Text | DataType::RichText => &[Eq, Ne, Contains, StartsWith, Exists],
            DataType::Integer
            | DataType::Number
            | DataType::Decimal
            | DataType::Percent
            | DataType::Currency
            | DataType::Date
            | DataType::Datetime
            | DataType::Time
            | DataType::Uuid
            | DataType::Color => &[Eq, Ne, Gt, Gte, Lt, Lte, In, Exists],
            DataType::Boolean => &[Eq, Ne, Exists],
            DataType::Enum | DataType::File | DataType::Reference => &[Eq, Ne, In, Exists],
            DataType::MultiEnum => &[Contains, Exists],
            DataType::Json => &[Exists],
        }
    }

    /// Validates `value` and returns its canonical form, or what is wrong with it.
    /// `enum_values` are the allowed values of `enum` and `multi_enum`.
    pub fn canonical(self, value: &Value, enum_values: &[String]) -> Result<Value, String> {
        match self {
            DataType::String => bounded_string(value, STRING_MAX_CHARS),
            DataType::Text => bounded_string(value, TEXT_MAX_CHARS),
            DataType::RichText => {
                let html = as_str(value, "an HTML string")?;
                if html.chars().count() > TEXT_MAX_CHARS {
                    return Err(format!("must be at most {TEXT_MAX_CHARS} characters"));
                }
                Ok(Value::String(ammonia::clean(html)))
            }
            DataType::Integer => match value.as_i64() {
                Some(n) => Ok(Value::from(n)),
                None => Err("must be an integer between -9223372036854775808 and 9223372036854775807".into()),
            },
            DataType::Number | DataType::Percent => match value {
                Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(value.clone()),
                _ => Err("must be a finite number".into()),
            },
            DataType::Decimal => decimal(value).map(Value::String),
            DataType::Boolean => match value {
                Value::Bool(_) => Ok(value.clone()),
                _ => Err("must be true or false".into()),
            },
            DataType::Date => {
                let text = as_str(value, "a date `YYYY-MM-DD`")?;
                let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .filter(|d| d.format("%Y-%m-%d").to_string() == text)
                    .ok_or("must be a date `YYYY-MM-DD`")?;
                Ok(Value::String(date.format("%Y-%m-%d").to_string()))
            }
            DataType::Datetime => {
                let text = as_str(value, "an RFC 3339 date-time")?;
                let at = chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|_| "must be an RFC 3339 date-time such as `2026-01-15T12:00:00Z`")?
                    .with_timezone(&chrono::Utc);
                if at.timestamp_subsec_nanos() % 1_000_000 != 0 {
                    return Err("must have at most millisecond precision".into());
                }
                if !(1..=9999).contains(&chrono::Datelike::year(&at)) {
                    return Err("must be between years 1 and 9999".into());
                }
                Ok(Value::String(at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
            }
            DataType::Time => {
                let text = as_str(value, "a time `HH:MM:SS`")?;
                let time = chrono::NaiveTime::parse_from_str(text, "%H:%M:%S")
                    .or_else(|_| chrono::NaiveTime::parse_from_str(text, "%H:%M"))
                    .ok()
                    .filter(|_| text.len() == 8 || text.len() == 5)
                    .ok_or("must be a time `HH:MM:SS` or `HH:MM`")?;
                Ok(Value::String(time.format("%H:%M:%S").to_string()))
            }
            DataType::Email => {
                let text = as_str(value, "an email address")?.trim();
                if text.len() > EMAIL_MAX_CHARS {
                    return Err(format!("must be at most {EMAIL_MAX_CHARS} characters"));
                }
                let address = email_address::EmailAddress::from_str(text).map_err(|_| "must be an email address")?;
                if address.display_part() != "" || !address.domain().contains('.') {
                    return Err("must be a plain email address such as `ada@example.com`".into());
                }
                Ok(Value::String(address.email().to_lowercase()))
            }
            DataType::Url => {
                let text = as_str(value, "an http or https URL")?;
                if text.len() > URL_MAX_CHARS {
                    return Err(format!("must be at most {URL_MAX_CHARS} characters"));
                }
                let url = url::Url::parse(text).map_err(|_| "must be an absolute http or https URL")?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
                    return Err("must be an absolute http or https URL".into());
                }
                Ok(Value::String(url.to_string()))
            }
            DataType::Phone => {
                let text = as_str(value, "an E.164 phone number")?;
                let rest = text.strip_prefix('+').ok_or("must be an E.164 number starting with `+`")?;
                let digits: String = rest.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
                if !digits.bytes().all(|b| b.is_ascii_digit())
                    || !(7..=15).contains(&digits.len())
                    || digits.starts_with('0')
                {
                    return Err("must be an E.164 number: `+`, a country code, 7 to 15 digits in all".into());
                }
                Ok(Value::String(format!("+{digits}")))
            }
            DataType::Enum => {
                let text = as_str(value, "one of the enum values")?;
                if enum_values.iter().any(|v| v == text) {
                    Ok(value.clone())
                } else {
                    Err(format!("must be one of: {}", enum_values.join(", ")))
                }
            }
            DataType::MultiEnum => {
                let Value::Array(items) = value else { return Err("must be an array of enum values".into()) };
                let mut chosen = vec![false; enum_values.len()];
                for item in items {
                    let text = item.as_str().ok_or("must be an array of strings")?;
                    let index = enum_values
                        .iter()
                        .position(|v| v == text)
                        .ok_or_else(|| format!("`{text}` is not one of: {}", enum_values.join(", ")))?;
                    if std::mem::replace(&mut chosen[index], true) {
                        return Err(format!("`{text}` is named twice"));
                    }
                }
                // Canonical order: the order of `enum_values`.
                Ok(Value::Array(
                    enum_values.iter().zip(chosen).filter(|(_, c)| *c).map(|(v, _)| Value::String(v.clone())).collect(),
                ))
            }
            DataType::Json => {
                if has_nul(value) {
                    return Err("must not contain the NUL character".into());
                }
                let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
                if size > JSON_MAX_BYTES {
                    return Err(format!("must be at most {JSON_MAX_BYTES} bytes of JSON"));
                }
                Ok(value.clone())
            }
            DataType::Uuid => {
                let text = as_str(value, "a UUID")?;
                let uuid = uuid::Uuid::try_parse(text).map_err(|_| "must be a UUID")?;
                Ok(Value::String(uuid.hyphenated().to_string()))
            }
            DataType::Currency => {
                let Value::Object(fields) = value else {
                    return Err("must be an object `{\"amount\": \"12.50\", \"code\": \"EUR\"}`".into());
                };
                if let Some(other) = fields.keys().find(|k| *k != "amount" && *k != "code") {
                    return Err(format!("unknown field `{other}`: a currency has `amount` and `code`"));
                }
                let amount = decimal(fields.get("amount").ok_or("`amount` is required")?)
                    .map_err(|problem| format!("`amount` {problem}"))?;
                let code = fields.get("code").and_then(Value::as_str).ok_or("`code` is required")?;
                let code = code.to_ascii_uppercase();
                if !ISO_4217.contains(&code.as_str()) {
                    return Err(format!("`code` must be an ISO 4217 currency code, not `{code}`"));
                }
                let mut out = Map::new();
                out.insert("amount".into(), Value::String(amount));
                out.insert("code".into(), Value::String(code));
                Ok(Value::Object(out))
            }
            DataType::Color => {
                let text = as_str(value, "a color `#RRGGBB`")?;
                match text.strip_prefix('#') {
                    Some(hex) if hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        Ok(Value::String(format!("#{}", hex.to_ascii_uppercase())))
                    }
                    _ => Err("must be a color `#RRGGBB`".into()),
                }
            }
            DataType::File => {
                let text = as_str(value, "a file id")?;
                if id::is_valid(id::prefix::FILE, text) {
                    Ok(value.clone())
                } else {
                    Err("must be a file id (`file_...`)".into())
                }
            }
            DataType::Reference => {
                let text = as_str(value, "an object id")?;
                if id::is_valid(id::prefix::OBJECT, text) {
                    Ok(value.clone())
                } else {
                    Err("must be an object id (`obj_...`)".into())
                }
            }
        }
    }

    /// The text a value adds to full-text search.
    pub fn search_text(self, value: &Value) -> Option<String> {
        if !self.searchable() {
            return None;
        }
        let text = value.as_str()?;
        Some(match self {
            DataType::RichText => ammonia::Builder::empty().clean(text).to_string(),
            _ => text.to_owned(),
        })
    }
}

fn as_str<'a>(value: &'a Value, what: &str) -> Result<&'a str, String> {
    let text = value.as_str().ok_or_else(|| format!("must be {what}"))?;
    if text.contains('\0') {
        return Err("must not contain the NUL character".into());
    }
    Ok(text)
}

/// True when a string or key anywhere in `value` holds NUL, which PostgreSQL's text and jsonb
/// cannot store.
pub fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn bounded_string(value: &Value, max: usize) -> Result<Value, String> {
    let text = as_str(value, "a string")?;
    if text.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(value.clone())
}

/// A decimal number, from a string (or a JSON number), as plain digits with its scale kept:
/// `"1.50"` stays `"1.50"`, `"1e3"` becomes `"1000"`, `"-0"` becomes `"0"`.
fn decimal(value: &Value) -> Result<String, String> {
    let text = match value {
        Value::String(text) => text.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return Err("must be a decimal number as a string, such as `\"12.50\"`".into()),
    };
    if text.is_empty() || text.len() > DECIMAL_MAX_CHARS {
        return Err(format!("must be a decimal number of at most {DECIMAL_MAX_CHARS} characters"));
    }
    let number = BigDecimal::from_str(&text).map_err(|_| "must be a decimal number such as `\"12.50\"`")?;
    let (digits, scale) = number.as_bigint_and_exponent();
    // Bounded so that an exponent cannot ask for a billion zeros.
    if !(-(DECIMAL_MAX_CHARS as i64)..=DECIMAL_MAX_CHARS as i64).contains(&scale) {
        return Err(format!("must have at most {DECIMAL_MAX_CHARS} digits"));
    }
    let number = if scale < 0 { number.with_scale(0) } else { number };
    if digits.sign() == bigdecimal::num_bigint::Sign::NoSign {
        return Ok(if scale > 0 { format!("0.{}", "0".repeat(scale as usize)) } else { "0".into() });
    }
    let plain = number.to_plain_string();
    if plain.len() > DECIMAL_MAX_CHARS {
        return Err(format!("must be at most {DECIMAL_MAX_CHARS} characters written out"));
    }
    Ok(plain)
}

/// ISO 4217 currency codes in use.
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD", "BIF",
    "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY", "COP", "CRC",
    "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS",
    "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD",
    "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL",
    "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
    "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(t: DataType, input: Value, want: Value) {
        assert_eq!(t.canonical(&input, &[]).as_ref(), Ok(&want), "{t:?} {input}");
        // Canonical forms are fixed points.
        assert_eq!(t.canonical(&want, &[]).as_ref(), Ok(&want), "{t:?} {want} again");
    }

    fn bad(t: DataType, input: Value) {
        assert!(t.canonical(&input, &[]).is_err(), "{t:?} should refuse {input}");
    }

    #[test]
    fn every_type_has_a_name() {
        for t in DataType::ALL {
            assert_eq!(DataType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        assert_eq!(DataType::ALL.len(), 22);
    }

    #[test]
    fn strings_and_text() {
        ok(DataType::String, json!(""), json!(""));
        ok(DataType::String, json!("x".repeat(1024)), json!("x".repeat(1024)));
        bad(DataType::String, json!("x".repeat(1025)));
        bad(DataType::String, json!(5));
        bad(DataType::String, json!("a\u{0}b"));
        bad(DataType::Json, json!({ "k": ["a\u{0}"] }));
        ok(DataType::Text, json!("é".repeat(65_536)), json!("é".repeat(65_536)));
        bad(DataType::Text, json!("x".repeat(65_537)));
        ok(
            DataType::RichText,
            json!("<p>Hi <script>alert(1)</script><b>there</b></p>"),
            json!("<p>Hi <b>there</b></p>"),
        );
        ok(
            DataType::RichText,
            json!("<a href=\"javascript:x()\">l</a>"),
            json!("<a rel=\"noopener noreferrer\">l</a>"),
        );
    }

    #[test]
    fn numbers() {
        ok(DataType::Integer, json!(i64::MAX), json!(i64::MAX));
        ok(DataType::Integer, json!(i64::MIN), json!(i64::MIN));
        bad(DataType::Integer, json!(u64::MAX));
        bad(DataType::Integer, json!(1.5));
        bad(DataType::Integer, json!(1.0));
        bad(DataType::Integer, json!("1"));
        ok(DataType::Number, json!(1.5), json!(1.5));
        ok(DataType::Number, json!(-3), json!(-3));
        bad(DataType::Number, json!("1.5"));
        ok(DataType::Percent, json!(12.5), json!(12.5));
        ok(DataType::Decimal, json!("1.50"), json!("1.50"));
        ok(DataType::Decimal, json!("-0012.5"), json!("-12.5"));
        ok(DataType::Decimal, json!("1e3"), json!("1000"));
        ok(DataType::Decimal, json!("-0"), json!("0"));
        ok(DataType::Decimal, json!("0.00"), json!("0.00"));
        ok(DataType::Decimal, json!(2.25), json!("2.25"));
        ok(
            DataType::Decimal,
            json!("123456789012345678901234567890.123456789"),
            json!("123456789012345678901234567890.123456789"),
        );
        bad(DataType::Decimal, json!("1e1000000000"));
        bad(DataType::Decimal, json!("1e100"));
        bad(DataType::Decimal, json!("1e-99"));
        bad(DataType::Decimal, json!("abc"));
        bad(DataType::Decimal, json!(""));
        bad(DataType::Decimal, json!(true));
    }

    #[test]
    fn dates_and_times() {
        ok(DataType::Date, json!("2026-02-28"), json!("2026-02-28"));
        bad(DataType::Date, json!("2026-02-30"));
        bad(DataType::Date, json!("2026-2-3"));
        bad(DataType::Date, json!("2026-02-28T00:00:00Z"));
        ok(DataType::Datetime, json!("2026-01-15T13:00:00+01:00"), json!("2026-01-15T12:00:00.000Z"));
        ok(DataType::Datetime, json!("2026-01-15T12:00:00.120Z"), json!("2026-01-15T12:00:00.120Z"));
        bad(DataType::Datetime, json!("2026-01-15T12:00:00.1234Z"));
        bad(DataType::Datetime, json!("2026-01-15 12:00"));
        ok(DataType::Time, json!("09:30"), json!("09:30:00"));
        ok(DataType::Time, json!("23:59:59"), json!("23:59:59"));
        bad(DataType::Time, json!("24:00:00"));
        bad(DataType::Time, json!("9:30"));
    }

    #[test]
    fn addresses() {
        ok(DataType::Email, json!(" Ada@Example.COM "), json!("ada@example.com"));
        bad(DataType::Email, json!("ada"));
        bad(DataType::Email, json!("Ada <ada@example.com>"));
        bad(DataType::Email, json!("ada@localhost"));
        ok(DataType::Url, json!("https://example.com"), json!("https://example.com/"));
        ok(DataType::Url, json!("http://example.com/a?b=c"), json!("http://example.com/a?b=c"));
        bad(DataType::Url, json!("ftp://example.com"));
        bad(DataType::Url, json!("javascript:alert(1)"));
        bad(DataType::Url, json!("/relative"));
        ok(DataType::Phone, json!("+1 (415) 555-0123"), json!("+14155550123"));
        bad(DataType::Phone, json!("4155550123"));
        bad(DataType::Phone, json!("+0123456789"));
        bad(DataType::Phone, json!("+1234567890123456"));
        ok(
            DataType::Uuid,
            json!("67E55044-10B1-426F-9247-BB680E5FE0C8"),
            json!("67e55044-10b1-426f-9247-bb680e5fe0c8"),
        );
        bad(DataType::Uuid, json!("67e55044"));
        ok(DataType::Color, json!("#ff00aa"), json!("#FF00AA"));
        bad(DataType::Color, json!("#fff"));
        bad(DataType::Color, json!("red"));
    }

    #[test]
    fn choices() {
        let values = vec!["low".to_string(), "mid".to_string(), "high".to_string()];
        assert_eq!(DataType::Enum.canonical(&json!("mid"), &values), Ok(json!("mid")));
        assert!(DataType::Enum.canonical(&json!("MID"), &values).is_err());
        assert_eq!(DataType::MultiEnum.canonical(&json!(["high", "low"]), &values), Ok(json!(["low", "high"])));
        assert_eq!(DataType::MultiEnum.canonical(&json!([]), &values), Ok(json!([])));
        assert!(DataType::MultiEnum.canonical(&json!(["low", "low"]), &values).is_err());
        assert!(DataType::MultiEnum.canonical(&json!(["none"]), &values).is_err());
        assert!(DataType::MultiEnum.canonical(&json!("low"), &values).is_err());
    }

    #[test]
    fn structured() {
        ok(DataType::Json, json!({"a": [1, {"b": null}]}), json!({"a": [1, {"b": null}]}));
        bad(DataType::Json, json!("x".repeat(JSON_MAX_BYTES)));
        ok(DataType::Currency, json!({"amount": "12.50", "code": "eur"}), json!({"amount": "12.50", "code": "EUR"}));
        bad(DataType::Currency, json!({"amount": "12.50", "code": "XXX"}));
        bad(DataType::Currency, json!({"amount": "twelve", "code": "EUR"}));
        bad(DataType::Currency, json!({"amount": "1", "code": "EUR", "extra": 1}));
        bad(DataType::Currency, json!("12.50 EUR"));
        ok(DataType::Boolean, json!(false), json!(false));
        bad(DataType::Boolean, json!("true"));
        let file = id::new_id(id::prefix::FILE);
        ok(DataType::File, json!(file), json!(file));
        bad(DataType::File, json!("obj_123"));
        let object = id::new_id(id::prefix::OBJECT);
        ok(DataType::Reference, json!(object), json!(object));
        bad(DataType::Reference, json!(file));
    }
}
