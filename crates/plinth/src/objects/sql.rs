//! Where the two databases differ for the data store: reading one property out of an object's
//! JSON, comparing it with a typed value, full-text search, and the per-property indexes.
//!
//! Property names are identifiers (`[a-z][a-z0-9_]*`) and type ids are TypeIDs, so both are
//! written into SQL as literals: the per-property indexes are partial indexes on the type, and a
//! query names the type as a literal so that both planners can match them.

use sqlx::any::AnyArguments;
use sqlx::Arguments;

use super::types::{DataType, Kind};
use crate::db::Backend;
use crate::http::{ApiError, ApiResult};

/// A value bound to a query, with the type the comparison needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Bind {
    Text(String),
    Int(i64),
    Real(f64),
    /// A number written as text, compared exactly on PostgreSQL.
    Numeric(String),
}

/// Binds values in order and renders their placeholders for one backend.
#[derive(Debug)]
pub struct Binds {
    backend: Backend,
    values: Vec<Bind>,
}

impl Binds {
    pub fn new(backend: Backend) -> Self {
        Binds { backend, values: Vec::new() }
    }

    /// Binds that hold `values` already, as `values()` gave them.
    pub fn with_values(backend: Backend, values: Vec<Bind>) -> Self {
        Binds { backend, values }
    }

    /// Adds `value` and returns its placeholder.
    pub fn push(&mut self, value: Bind) -> String {
        let cast = matches!((&value, self.backend), (Bind::Numeric(_), Backend::Postgres));
        let value = match (value, self.backend) {
            // SQLite compares numbers by value: a decimal binds as a float there.
            (Bind::Numeric(text), Backend::Sqlite) => Bind::Real(text.parse().unwrap_or(f64::NAN)),
            (value, _) => value,
        };
        self.values.push(value);
        let n = self.values.len();
        if cast {
            format!("CAST(${n} AS numeric)")
        } else {
            format!("${n}")
        }
    }

    pub fn text(&mut self, value: impl Into<String>) -> String {
        self.push(Bind::Text(value.into()))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The values bound so far, in order.
    pub fn values(&self) -> &[Bind] {
        &self.values
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn arguments(&self) -> ApiResult<AnyArguments<'_>> {
        let mut args = AnyArguments::default();
        for value in &self.values {
            let added = match value {
                Bind::Text(text) | Bind::Numeric(text) => args.add(text.as_str()),
                Bind::Int(n) => args.add(*n),
                Bind::Real(x) => args.add(*x),
            };
            added.map_err(|e| ApiError::internal(format!("binding a query value: {e}")))?;
        }
        Ok(args)
    }
}

/// A quoted SQL string literal of a value known to be an identifier or a TypeID.
pub fn literal(text: &str) -> String {
    debug_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    format!("'{}'", text.replace('\'', "''"))
}

/// The JSON path of a property (and a currency's amount).
fn path(name: &str, data_type: DataType) -> (String, Option<&'static str>) {
    (name.to_owned(), data_type.sub_path())
}

/// The SQL expression of one property's value, in the form its type compares in.
pub fn value_expr(backend: Backend, name: &str, data_type: DataType) -> String {
    let (name, sub) = path(name, data_type);
    match backend {
        Backend::Sqlite => {
            let json_path = match sub {
                Some(sub) => format!("'$.{name}.{sub}'"),
                None => format!("'$.{name}'"),
            };
            let extract = format!("json_extract(properties, {json_path})");
            match data_type {
                DataType::Decimal | DataType::Currency => format!("CAST({extract} AS REAL)"),
                _ => extract,
            }
        }
        Backend::Postgres => {
            let text = match sub {
                Some(sub) => format!("(properties::jsonb -> '{name}' ->> '{sub}')"),
                None => format!("(properties::jsonb ->> '{name}')"),
            };
            match data_type.kind() {
                Kind::Numeric => format!("CAST({text} AS numeric)"),
                // Byte order, as on SQLite, whatever the database's collation.
                Kind::Text => format!("({text} COLLATE \"C\")"),
                _ => text,
            }
        }
    }
}

/// The SQL expression of an object's system field: the column itself, so that its indexes serve
/// (ids compare by equality only; times are fixed-width text in one format, which every
/// collation orders alike).
pub fn system_expr(backend: Backend, field: super::query::SystemField) -> String {
    let _ = backend;
    field.column().to_string()
}

/// True when the object has a value for the property.
pub fn exists_expr(backend: Backend, name: &str) -> String {
    match backend {
        Backend::Sqlite => format!("json_type(properties, '$.{name}') IS NOT NULL"),
        Backend::Postgres => format!("(properties::jsonb -> '{name}') IS NOT NULL"),
    }
}

/// True when the `multi_enum` property holds `placeholder`'s value.
pub fn set_contains(backend: Backend, name: &str, placeholder: &str) -> String {
    match backend {
        Backend::Sqlite => {
            format!("EXISTS (SELECT 1 FROM json_each(properties, '$.{name}') WHERE json_each.value = {placeholder})")
        }
        Backend::Postgres => {
            format!("(properties::jsonb -> '{name}') @> jsonb_build_array(CAST({placeholder} AS text))")
        }
    }
}

/// Case-insensitive substring test.
pub fn contains(backend: Backend, expr: &str, placeholder: &str) -> String {
    match backend {
        Backend::Sqlite => format!("instr(lower({expr}), lower({placeholder})) > 0"),
        Backend::Postgres => format!("strpos(lower({expr}), lower(CAST({placeholder} AS text) COLLATE \"C\")) > 0"),
    }
}

/// Case-sensitive prefix test.
pub fn starts_with(backend: Backend, expr: &str, placeholder: &str) -> String {
    match backend {
        Backend::Sqlite => format!("substr({expr}, 1, length({placeholder})) = {placeholder}"),
        Backend::Postgres => {
            format!("substr({expr}, 1, length(CAST({placeholder} AS text))) = CAST({placeholder} AS text)")
        }
    }
}

/// The value a filter compares with, typed for the property and the backend.
pub fn bind_for(backend: Backend, data_type: DataType, canonical: &serde_json::Value) -> Bind {
    use serde_json::Value;
    let _ = backend;
    match (data_type, canonical) {
        (DataType::Integer, Value::Number(n)) => match n.as_i64() {
            Some(i) => Bind::Int(i),
            None => Bind::Numeric(n.to_string()),
        },
        (DataType::Number | DataType::Percent, Value::Number(n)) => Bind::Numeric(n.to_string()),
        (DataType::Decimal, Value::String(text)) => Bind::Numeric(text.clone()),
        (DataType::Currency, Value::Object(fields)) => {
            Bind::Numeric(fields.get("amount").and_then(Value::as_str).unwrap_or("0").to_owned())
        }
        (DataType::Boolean, Value::Bool(b)) => match backend {
            // json_extract reads JSON booleans as 1 and 0; `->>` as `true` and `false`.
            Backend::Sqlite => Bind::Int(i64::from(*b)),
            Backend::Postgres => Bind::Text(b.to_string()),
        },
        (_, Value::String(text)) => Bind::Text(text.clone()),
        (_, other) => Bind::Text(other.to_string()),
    }
}

/// Full-text condition on `search_text` for `query`, or `None` when it has no words.
pub fn full_text(backend: Backend, query: &str, binds: &mut Binds) -> Option<String> {
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| w.to_lowercase())
        .collect();
    if words.is_empty() {
        return None;
    }
    Some(match backend {
        Backend::Sqlite => {
            // Every word, each quoted: FTS5's query syntax is never taken from the client.
            let fts: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            let p = binds.text(fts.join(" "));
            format!("pk IN (SELECT rowid FROM objects_fts WHERE objects_fts MATCH {p})")
        }
        Backend::Postgres => {
            let p = binds.text(words.join(" "));
            format!("to_tsvector('simple', search_text) @@ plainto_tsquery('simple', {p})")
        }
    })
}

/// Index names of a property.
pub fn index_name(property_id: &str) -> String {
    format!("objidx_{property_id}")
}

pub fn unique_index_name(property_id: &str) -> String {
    format!("objuniq_{property_id}")
}

/// The statements creating a property's lookup and sort index, run by the `property.index` job
/// outside any request (on PostgreSQL `CONCURRENTLY`, outside any transaction, so that writes to
/// `objects` go on while it builds). On SQLite it leads with the type,
/// so that the planner sees one index serve the type's equality and the property's order. On
/// PostgreSQL the type is left to the partial predicate (which the planner drops from the index
/// conditions, so a leading type column would cost every seek a full scan), and extended
/// statistics on the expression give the planner the value distribution that partial indexes
/// do not collect.
pub fn create_index(
    backend: Backend,
    property_id: &str,
    type_id: &str,
    name: &str,
    data_type: DataType,
) -> Vec<String> {
    let expr = value_expr(backend, name, data_type);
    let index = index_name(property_id);
    let partial = format!("WHERE object_type_id = {} AND deleted_at IS NULL", literal(type_id));
    match backend {
        Backend::Sqlite => {
            vec![format!("CREATE INDEX IF NOT EXISTS {index} ON objects (object_type_id, ({expr}), id) {partial}")]
        }
        Backend::Postgres => vec![
            format!("CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON objects (({expr}) NULLS FIRST, id) {partial}"),
            format!("CREATE STATISTICS IF NOT EXISTS {} ON ({expr}) FROM objects", statistics_name(property_id)),
        ],
    }
}

/// The statements dropping a property's lookup index (and its statistics), as the job runs them
/// (see `create_index`).
pub fn drop_lookup_index(backend: Backend, property_id: &str) -> Vec<String> {
    let mut statements = vec![drop_index(backend, &index_name(property_id))];
    if backend == Backend::Postgres {
        statements.push(format!("DROP STATISTICS IF EXISTS {}", statistics_name(property_id)));
    }
    statements
}

fn statistics_name(property_id: &str) -> String {
    format!("objstat_{property_id}")
}

/// The statement creating a property's unique index over the type's live objects, run by the
/// `property.index` job like `create_index`; until the job records it ready, writers check the
/// value themselves.
pub fn create_unique_index(
    backend: Backend,
    property_id: &str,
    type_id: &str,
    name: &str,
    data_type: DataType,
) -> String {
    let exprs: Vec<String> = unique_exprs(backend, name, data_type).iter().map(|e| format!("({e})")).collect();
    let concurrently = if backend == Backend::Postgres { " CONCURRENTLY" } else { "" };
    format!(
        "CREATE UNIQUE INDEX{concurrently} IF NOT EXISTS {} ON objects ({}) WHERE object_type_id = {} AND deleted_at IS NULL",
        unique_index_name(property_id),
        exprs.join(", "),
        literal(type_id)
    )
}

/// What makes two values the same for `is_unique`: the value, and a currency's code with its amount.
pub fn unique_exprs(backend: Backend, name: &str, data_type: DataType) -> Vec<String> {
    let mut exprs = vec![value_expr(backend, name, data_type)];
    if data_type == DataType::Currency {
        exprs.push(match backend {
            Backend::Sqlite => format!("json_extract(properties, '$.{name}.code')"),
            Backend::Postgres => format!("(properties::jsonb -> '{name}' ->> 'code')"),
        });
    }
    exprs
}

/// Drops an index, on PostgreSQL `CONCURRENTLY` (outside any transaction).
pub fn drop_index(backend: Backend, name: &str) -> String {
    match backend {
        Backend::Sqlite => format!("DROP INDEX IF EXISTS {name}"),
        Backend::Postgres => format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_match_their_indexes() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let expr = value_expr(backend, "price", DataType::Decimal);
            assert!(create_index(backend, "prop_1", "ot_1", "price", DataType::Decimal)[0].contains(&expr));
            assert!(create_unique_index(backend, "prop_1", "ot_1", "price", DataType::Decimal).contains(&expr));
        }
        assert_eq!(value_expr(Backend::Sqlite, "email", DataType::Email), "json_extract(properties, '$.email')");
        assert_eq!(
            value_expr(Backend::Postgres, "total", DataType::Currency),
            "CAST((properties::jsonb -> 'total' ->> 'amount') AS numeric)"
        );
    }

    #[test]
    fn postgres_builds_and_drops_without_blocking_writes() {
        let built = create_index(Backend::Postgres, "prop_1", "ot_1", "qty", DataType::Integer);
        assert!(built[0].starts_with("CREATE INDEX CONCURRENTLY IF NOT EXISTS objidx_prop_1 ON objects"), "{built:?}");
        assert!(built[1].starts_with("CREATE STATISTICS"), "{built:?}");
        let dropped = drop_lookup_index(Backend::Postgres, "prop_1");
        assert_eq!(dropped[0], "DROP INDEX CONCURRENTLY IF EXISTS objidx_prop_1");
        assert_eq!(drop_lookup_index(Backend::Sqlite, "prop_1"), ["DROP INDEX IF EXISTS objidx_prop_1"]);
    }

    #[test]
    fn numeric_binds_are_cast_on_postgres_only() {
        let mut pg = Binds::new(Backend::Postgres);
        assert_eq!(pg.push(Bind::Numeric("1.5".into())), "CAST($1 AS numeric)");
        assert_eq!(pg.text("x"), "$2");
        let mut lite = Binds::new(Backend::Sqlite);
        assert_eq!(lite.push(Bind::Numeric("1.5".into())), "$1");
        assert_eq!(lite.values[0], Bind::Real(1.5));
    }

    #[test]
    fn search_words_are_quoted() {
        let mut binds = Binds::new(Backend::Sqlite);
        let sql = full_text(Backend::Sqlite, "Acme* OR \"corp\" NEAR(x)", &mut binds).unwrap();
        assert!(sql.contains("MATCH $1"));
        assert_eq!(binds.values[0], Bind::Text("\"acme\" \"or\" \"corp\" \"near\" \"x\"".into()));
        assert!(full_text(Backend::Sqlite, " *** ", &mut binds).is_none());
    }
}
