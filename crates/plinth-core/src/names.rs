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

/// A blank character: white space or a control character. Labels are trimmed of them, and a
/// text made only of them is empty.
pub fn is_blank(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// True when `text` holds a character that is not blank.
pub fn has_text(text: &str) -> bool {
    text.chars().any(|c| !is_blank(c))
}

/// Why a label was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelError {
    Empty,
    TooLong,
    Control,
}

/// A label, a name or a display name: trimmed of blank characters, then 1 to `max` characters,
/// none of them a control character.
pub fn label(text: &str, max: usize) -> Result<&str, LabelError> {
    let text = text.trim_matches(is_blank);
    if text.is_empty() {
        Err(LabelError::Empty)
    } else if text.chars().count() > max {
        Err(LabelError::TooLong)
    } else if text.chars().any(char::is_control) {
        Err(LabelError::Control)
    } else {
        Ok(text)
    }
}

/// True for an event name: dotted words of `[a-z0-9_-]`, at least two (`checkout.completed`), at
/// most 100 characters.
pub fn is_event_name(name: &str) -> bool {
    name.contains('.') && name.len() <= 100 && is_dotted(name)
}

/// True for an event pattern without the length bound: `*`, a dotted name, or `<name>.*`.
pub fn is_event_pattern_of_any_length(pattern: &str) -> bool {
    pattern == "*" || is_dotted(pattern.strip_suffix(".*").unwrap_or(pattern))
}

fn is_dotted(name: &str) -> bool {
    name.split('.').all(|part| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    })
}

/// True for an amount of money as a decimal string: 1 to 9 digits, then optionally `.` and 1 to
/// 18 digits (`25`, `25.00`).
pub fn is_amount(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole, 9) && fraction.is_none_or(|f| digits(f, 18))
}
