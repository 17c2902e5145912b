//! Timestamps: RFC 3339 in UTC. Stored as fixed-width text so that text order is time order
//! on both databases.

use chrono::{DateTime, SecondsFormat, Utc};

pub type Timestamp = DateTime<Utc>;

/// The current time, truncated to microseconds (what the database keeps).
pub fn now() -> Timestamp {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The stored form: `2026-11-23T05:13:21.123456Z`.
pub fn to_db(at: &Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads a stored timestamp; a value that does not parse is a bug in the data, reported as such.
pub fn from_db(text: &str) -> Result<Timestamp, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|at| at.with_timezone(&Utc))
}

/// Reads an optional stored timestamp.
pub fn from_db_opt(text: Option<String>) -> Result<Option<Timestamp>, chrono::ParseError> {
    text.as_deref().map(from_db).transpose()
}

/// The current UTC day, `YYYY-MM-DD`.
pub fn today() -> String {
    Utc::now().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_is_fixed_width_and_round_trips() {
        let at = now();
        let text = to_db(&at);
        assert_eq!(text.len(), "2026-11-23T05:13:21.123456Z".len());
        assert_eq!(from_db(&text).unwrap(), at);
    }
}
