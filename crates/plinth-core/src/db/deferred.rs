//! Writes a transaction does not wait for: the rows that go with a change (its version, its
//! event, its audit record) are held and sent together in one round trip before the commit, instead
//! of one round trip each. On SQLite the statements go as one multi-statement string (its `$N`
//! parameters number the whole string); on PostgreSQL as one statement, the earlier inserts as
//! data-modifying `WITH` clauses of the last, which PostgreSQL runs to completion whether or not
//! they are read.
//!
//! A deferred row is not visible to the transaction's own statements until `WriteTx::flush` (or
//! the commit): defer only rows nothing in the transaction reads or references afterwards.

use sqlx::any::AnyArguments;
use sqlx::Arguments;

use super::Backend;

/// The most statements sent in one round trip.
const STATEMENTS_PER_FLUSH: usize = 64;

/// One value bound to a deferred statement.
#[derive(Debug, Clone)]
enum Bound {
    Text(Option<String>),
    Int(Option<i64>),
}

/// An `INSERT` (or other write) to send later, with its values; its parameters are `$1`, `$2`, ...
/// in the order the values are added, and it holds no other `$`.
#[derive(Debug, Clone)]
pub struct Deferred {
    sql: &'static str,
    values: Vec<Bound>,
}

impl Deferred {
    pub fn new(sql: &'static str) -> Deferred {
        debug_assert!(!sql.contains('\''), "a deferred statement takes its values as parameters");
        Deferred { sql, values: Vec::new() }
    }

    /// Binds the next parameter to text, or `NULL`.
    pub fn text<'a>(mut self, value: impl Into<Option<&'a str>>) -> Deferred {
        self.values.push(Bound::Text(value.into().map(str::to_owned)));
        self
    }

    /// Binds the next parameter to owned text, or `NULL`.
    pub fn string(mut self, value: Option<String>) -> Deferred {
        self.values.push(Bound::Text(value));
        self
    }

    /// Binds the next parameter to an integer, or `NULL`.
    pub fn int(mut self, value: impl Into<Option<i64>>) -> Deferred {
        self.values.push(Bound::Int(value.into()));
        self
    }
}

/// The statements held by one transaction.
#[derive(Debug, Default)]
pub(crate) struct Held {
    statements: Vec<Deferred>,
}

impl Held {
    pub(crate) fn push(&mut self, statement: Deferred) {
        self.statements.push(statement);
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// The held statements as round trips: the SQL of each and its arguments, in order. Empties
    /// the holder.
    pub(crate) fn take(&mut self, backend: Backend) -> Result<Vec<(String, AnyArguments<'static>)>, sqlx::Error> {
        let statements = std::mem::take(&mut self.statements);
        statements.chunks(STATEMENTS_PER_FLUSH).map(|chunk| combined(backend, chunk)).collect()
    }
}

/// One round trip's SQL and arguments for `statements`.
fn combined(backend: Backend, statements: &[Deferred]) -> Result<(String, AnyArguments<'static>), sqlx::Error> {
    let mut arguments = AnyArguments::default();
    let mut parts = Vec::with_capacity(statements.len());
    let mut offset = 0;
    for statement in statements {
        parts.push(renumbered(statement.sql, offset));
        offset += statement.values.len();
        for value in &statement.values {
            let added = match value.clone() {
                Bound::Text(text) => arguments.add(text),
                Bound::Int(int) => arguments.add(int),
            };
            added.map_err(sqlx::Error::Encode)?;
        }
    }
    let sql = match backend {
        Backend::Sqlite => parts.join(";\n"),
        Backend::Postgres => {
            let last = parts.pop().unwrap_or_default();
            if parts.is_empty() {
                last
            } else {
                let clauses: Vec<String> =
                    parts.iter().enumerate().map(|(i, part)| format!("deferred_{i} AS ({part})")).collect();
                format!("WITH {} {last}", clauses.join(", "))
            }
        }
    };
    Ok((sql, arguments))
}

/// `sql` with each `$N` made `$(N + offset)`.
fn renumbered(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut digits = String::new();
        while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
            digits.push(d);
            chars.next();
        }
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&digits),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_across_the_statements() {
        assert_eq!(
            renumbered("INSERT INTO t (a, b) VALUES ($1, $2), ($10, $2)", 3),
            "INSERT INTO t (a, b) VALUES ($4, $5), ($13, $5)"
        );
        assert_eq!(renumbered("VALUES ($1)", 0), "VALUES ($1)");
        let statements = [
            Deferred::new("INSERT INTO a (x, y) VALUES ($1, $2)").text("one").int(2),
            Deferred::new("INSERT INTO b (z) VALUES ($1)").text(None),
        ];
        let (sqlite, _) = combined(Backend::Sqlite, &statements).unwrap();
        assert_eq!(sqlite, "INSERT INTO a (x, y) VALUES ($1, $2);\nINSERT INTO b (z) VALUES ($3)");
        let (postgres, _) = combined(Backend::Postgres, &statements).unwrap();
        assert_eq!(postgres, "WITH deferred_0 AS (INSERT INTO a (x, y) VALUES ($1, $2)) INSERT INTO b (z) VALUES ($3)");
    }

    #[test]
    fn many_statements_go_in_bounded_round_trips() {
        let mut held = Held::default();
        for n in 0..(STATEMENTS_PER_FLUSH * 2 + 1) {
            held.push(Deferred::new("INSERT INTO a (x) VALUES ($1)").int(n as i64));
        }
        let trips = held.take(Backend::Sqlite).unwrap();
        assert_eq!(trips.len(), 3);
        assert!(held.is_empty());
        assert!(
            trips[1].0.ends_with(&format!("VALUES (${STATEMENTS_PER_FLUSH})")),
            "each round trip numbers its own: {}",
            trips[1].0
        );
    }
}
