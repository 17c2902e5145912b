//! The read-only SQL rewriter: parses one `SELECT` with `sqlparser`, refuses everything else
//! (writes, DDL, other tables, functions outside a short list of portable ones, casts to
//! catalogue types, table functions, locking clauses), and replaces each reference to an object
//! type by a subquery over the type's live objects that the caller may read. CTE names are
//! renamed to a prefix no table has, so that a reference a CTE does not cover in the database's
//! scoping fails instead of reaching a table.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    CastKind, Expr, Ident, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableAlias, TableFactor, Value,
    VisitMut, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The prefix CTE names are given: no table of the database starts with it.
pub const CTE_PREFIX: &str = "plinth_cte_";
/// Longest query, in characters.
pub const SQL_MAX_CHARS: usize = 10_000;
/// Most parameters.
pub const PARAMS_MAX: usize = 100;

/// Functions that mean the same on SQLite and PostgreSQL and read nothing but their arguments.
const FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "coalesce",
    "nullif",
    "lower",
    "upper",
    "length",
    "abs",
    "round",
    "trim",
    "ltrim",
    "rtrim",
    "replace",
    "substr",
    "row_number",
    "rank",
    "dense_rank",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "percent_rank",
    "cume_dist",
];

/// Types a `CAST` may name.
const CAST_TYPES: &[&str] =
    &["integer", "int", "bigint", "smallint", "text", "real", "double precision", "numeric", "decimal", "float"];

/// Bare words PostgreSQL reads as functions of the session, not columns.
const SESSION_WORDS: &[&str] =
    &["current_user", "session_user", "user", "current_role", "current_catalog", "current_schema", "system_user"];

/// A query that passed the checks, its object types still to be replaced.
#[derive(Debug)]
pub struct Checked {
    statement: Statement,
    /// The object type names it reads.
    pub types: BTreeSet<String>,
}

/// The name a table reference or an alias stands for: unquoted names compare lowercased.
fn name_of(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn single(name: &ObjectName) -> Result<&Ident, String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => Ok(ident),
        _ => Err(format!("`{name}`: name a table (an object type) without a schema")),
    }
}

fn check_set_expr(body: &SetExpr) -> Result<(), String> {
    match body {
        SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) => Ok(()),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        _ => Err("only `SELECT` queries run here".into()),
    }
}

struct Checker<'a> {
    params: usize,
    is_type: &'a dyn Fn(&str) -> bool,
    ctes: BTreeSet<String>,
    types: BTreeSet<String>,
}

impl VisitorMut for Checker<'_> {
    type Break = String;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<String> {
        let refuse = |why: &str| ControlFlow::Break(why.to_owned());
        if !query.locks.is_empty() || query.for_clause.is_some() {
            return refuse("locking clauses are not allowed: the query only reads");
        }
        if query.settings.is_some() || query.format_clause.is_some() || !query.pipe_operators.is_empty() {
            return refuse("only standard `SELECT` queries run here");
        }
        if let Err(why) = check_set_expr(&query.body) {
            return ControlFlow::Break(why);
        }
        if let Some(with) = &mut query.with {
            if with.recursive {
                return refuse("recursive CTEs are not allowed");
            }
            for cte in &mut with.cte_tables {
                let name = name_of(&cte.alias.name);
                if (self.is_type)(&name) {
                    return ControlFlow::Break(format!("the CTE `{name}` has the name of an object type: rename it"));
                }
                self.ctes.insert(name.clone());
                cte.alias.name = Ident::new(format!("{CTE_PREFIX}{name}"));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut sqlparser::ast::Select) -> ControlFlow<String> {
        if select.into.is_some() {
            return ControlFlow::Break("`SELECT INTO` is not allowed: the query only reads".into());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table { name, args, with_hints, version, sample, .. } => {
                if args.is_some() || !with_hints.is_empty() || version.is_some() || sample.is_some() {
                    return ControlFlow::Break(format!("`{name}`: table functions and hints are not allowed"));
                }
                let ident = match single(name) {
                    Ok(ident) => ident.clone(),
                    Err(why) => return ControlFlow::Break(why),
                };
                let table = name_of(&ident);
                if self.ctes.contains(&table) {
                    *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(format!("{CTE_PREFIX}{table}")))]);
                } else if (self.is_type)(&table) {
                    self.types.insert(table);
                } else {
                    return ControlFlow::Break(format!(
                        "there is no table `{table}`: the tables are your object types (and your CTEs)"
                    ));
                }
                ControlFlow::Continue(())
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => ControlFlow::Continue(()),
            _ => ControlFlow::Break("only object types, subqueries and joins may stand in `FROM`".into()),
        }
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<String> {
        match expr {
            Expr::Function(function) => {
                let name = match single(&function.name) {
                    Ok(ident) => name_of(ident),
                    Err(_) => return ControlFlow::Break(format!("`{}` is not an allowed function", function.name)),
                };
                if !FUNCTIONS.contains(&name.as_str()) {
                    return ControlFlow::Break(format!(
                        "`{name}` is not an allowed function; use one of: {}",
                        FUNCTIONS.join(", ")
                    ));
                }
            }
            Expr::Cast { kind, data_type, .. } => {
                if *kind != CastKind::Cast {
                    return ControlFlow::Break("write casts as `CAST(x AS type)`".into());
                }
                let target = data_type.to_string().to_lowercase();
                let base = target.split('(').next().unwrap_or_default().trim().to_owned();
                if !CAST_TYPES.contains(&base.as_str()) {
                    return ControlFlow::Break(format!(
                        "cannot cast to `{target}`; use one of: {}",
                        CAST_TYPES.join(", ")
                    ));
                }
            }
            Expr::Value(value) => {
                if let Value::Placeholder(text) = &value.value {
                    let index = text.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
                    match index {
                        Some(n) if (1..=self.params).contains(&n) => {}
                        _ => {
                            return ControlFlow::Break(format!(
                                "`{text}`: placeholders are `$1` to `${}`, one per value of `params`",
                                self.params
                            ))
                        }
                    }
                }
            }
            Expr::Identifier(ident) if ident.quote_style.is_none() => {
                let word = ident.value.to_lowercase();
                if SESSION_WORDS.contains(&word.as_str()) {
                    return ControlFlow::Break(format!("`{word}` is a reserved word: quote a column of that name"));
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() > 2 => {
                return ControlFlow::Break("name a column as `column` or `table.column`".into());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Parses and checks `sql`, which may use `$1` to `$<params>`; `is_type` tells an object type
/// name of the caller's tenant.
pub fn check(sql: &str, params: usize, is_type: &dyn Fn(&str) -> bool) -> Result<Checked, String> {
    if sql.chars().count() > SQL_MAX_CHARS {
        return Err(format!("at most {SQL_MAX_CHARS} characters"));
    }
    let mut statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(40)
        .try_with_sql(sql)
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|e| format!("cannot be read: {e}"))?;
    if statements.len() != 1 {
        return Err("send exactly one statement".into());
    }
    let mut statement = statements.remove(0);
    if !matches!(statement, Statement::Query(_)) {
        return Err("only `SELECT` queries run here: nothing that writes, changes the schema or sets options".into());
    }
    let mut checker = Checker { params, is_type, ctes: BTreeSet::new(), types: BTreeSet::new() };
    if let ControlFlow::Break(why) = statement.visit(&mut checker) {
        return Err(why);
    }
    Ok(Checked { statement, types: checker.types })
}

struct Replacer<'a> {
    tables: &'a dyn Fn(&str) -> Option<Query>,
    replaced: usize,
}

impl VisitorMut for Replacer<'_> {
    type Break = String;

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<String> {
        let TableFactor::Table { name, alias, .. } = factor else { return ControlFlow::Continue(()) };
        let Ok(ident) = single(name) else { return ControlFlow::Break(format!("`{name}`: unexpected")) };
        let table = name_of(ident);
        if table.starts_with(CTE_PREFIX) {
            return ControlFlow::Continue(());
        }
        let Some(subquery) = (self.tables)(&table) else {
            return ControlFlow::Break(format!("there is no table `{table}`"));
        };
        let alias = alias.clone().unwrap_or_else(|| TableAlias {
            explicit: true,
            name: Ident::with_quote('"', table.clone()),
            columns: Vec::new(),
            at: None,
        });
        *factor =
            TableFactor::Derived { lateral: false, subquery: Box::new(subquery), alias: Some(alias), sample: None };
        self.replaced += 1;
        ControlFlow::Continue(())
    }
}

impl Checked {
    /// The SQL to run: each object type replaced by the subquery `tables` gives for its name
    /// (SQL over the `objects` table), and how many were replaced.
    pub fn rewrite(mut self, tables: &dyn Fn(&str) -> Option<Query>) -> Result<(String, usize), String> {
        let mut replacer = Replacer { tables, replaced: 0 };
        if let ControlFlow::Break(why) = self.statement.visit(&mut replacer) {
            return Err(why);
        }
        Ok((self.statement.to_string(), replacer.replaced))
    }
}

/// Parses SQL the server wrote (a type's subquery).
pub fn parse_own(sql: &str) -> Result<Query, String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| format!("{e}: {sql}"))?;
    match statements.pop() {
        Some(Statement::Query(query)) => Ok(*query),
        _ => Err(format!("not a query: {sql}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sqlparser::ast::Visit;

    const TYPES: &[&str] = &["deals", "notes"];

    fn is_type(name: &str) -> bool {
        TYPES.contains(&name)
    }

    fn own(name: &str) -> Option<Query> {
        is_type(name).then(|| {
            parse_own(&format!(
                "SELECT id, amount FROM objects WHERE object_type_id = 'ot_{name}' AND tenant_id = 't1'"
            ))
            .unwrap()
        })
    }

    fn run(sql: &str) -> Result<String, String> {
        check(sql, 2, &is_type)?.rewrite(&own).map(|(sql, _)| sql)
    }

    /// Every table the rewritten SQL names.
    fn relations(sql: &str) -> Vec<String> {
        struct Names(Vec<String>);
        impl sqlparser::ast::Visitor for Names {
            type Break = ();
            fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
                self.0.push(relation.to_string());
                ControlFlow::Continue(())
            }
        }
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        let mut names = Names(Vec::new());
        let _ = statements.visit(&mut names);
        names.0
    }

    #[test]
    fn types_become_subqueries_and_the_rest_is_refused() {
        let sql =
            run("SELECT d.amount, COUNT(*) FROM deals d JOIN notes ON notes.id = d.id GROUP BY d.amount").unwrap();
        assert_eq!(relations(&sql), vec!["objects", "objects"]);
        assert!(sql.contains("'ot_deals'") && sql.contains("'ot_notes'"), "{sql}");
        let with = run("WITH big AS (SELECT * FROM deals WHERE amount > $1) SELECT * FROM big").unwrap();
        assert_eq!(relations(&with), vec!["objects", "plinth_cte_big"]);
        for refused in [
            "DELETE FROM deals",
            "INSERT INTO deals VALUES (1)",
            "UPDATE deals SET amount = 1",
            "DROP TABLE deals",
            "PRAGMA table_info(deals)",
            "SET statement_timeout = 0",
            "SELECT * FROM tenants",
            "SELECT * FROM objects",
            "SELECT * FROM pg_catalog.pg_class",
            "SELECT * FROM sqlite_master",
            "SELECT * FROM public.deals",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT load_extension('x')",
            "SELECT version()",
            "SELECT current_user",
            "SELECT CAST('tenants' AS regclass)",
            "SELECT 'deals'::regclass",
            "SELECT * FROM deals FOR UPDATE",
            "SELECT * INTO copy FROM deals",
            "SELECT * FROM generate_series(1, 3)",
            "WITH RECURSIVE r AS (SELECT 1 UNION SELECT 1 FROM r) SELECT * FROM r",
            "WITH deals AS (SELECT 1) SELECT * FROM deals",
            "SELECT $3",
            "SELECT ?",
            "SELECT 1; SELECT 2",
            "TABLE deals",
        ] {
            assert!(run(refused).is_err(), "{refused} was let through: {:?}", run(refused));
        }
    }

    #[test]
    fn a_cte_out_of_scope_reaches_no_table() {
        // `tenants` inside its own body, or before its declaration, is not the CTE in the
        // database: renamed, it names no table at all.
        let own_body = run("WITH tenants AS (SELECT * FROM tenants) SELECT * FROM tenants").unwrap();
        assert!(relations(&own_body).iter().all(|r| r.starts_with(CTE_PREFIX)), "{own_body}");
        let forward = run("WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS x) SELECT * FROM a").unwrap();
        assert!(relations(&forward).iter().all(|r| r.starts_with(CTE_PREFIX)), "{forward}");
    }

    fn fragment() -> impl Strategy<Value = String> {
        let tables = prop::sample::select(vec![
            "deals",
            "notes",
            "tenants",
            "objects",
            "api_keys",
            "pg_class",
            "sqlite_master",
            "big",
            "x",
            "DEALS",
            "\"deals\"",
            "main.deals",
            "pg_catalog.pg_user",
        ]);
        let exprs = prop::sample::select(vec![
            "1",
            "amount",
            "COUNT(*)",
            "$1",
            "$2",
            "$3",
            "current_user",
            "version()",
            "lower(id)",
            "CAST(id AS text)",
            "id::text",
            "(SELECT id FROM tenants)",
            "(SELECT id FROM deals)",
            "EXISTS (SELECT 1 FROM api_keys)",
            "pg_sleep(1)",
            "ROW_NUMBER() OVER (ORDER BY id)",
        ]);
        (tables.clone(), tables, exprs.clone(), exprs, 0..6u8).prop_map(|(t1, t2, e1, e2, shape)| match shape {
            0 => format!("SELECT {e1} FROM {t1}"),
            1 => format!("SELECT {e1}, {e2} FROM {t1} JOIN {t2} ON {e1} = {e2}"),
            2 => format!("WITH big AS (SELECT {e1} FROM {t1}) SELECT * FROM big, {t2}"),
            3 => format!("SELECT * FROM {t1} WHERE {e1} IN (SELECT {e2} FROM {t2})"),
            4 => format!("SELECT {e1} FROM (SELECT * FROM {t1}) s UNION SELECT {e2} FROM {t2}"),
            _ => format!("WITH {t2} AS (SELECT {e1} FROM {t1}) SELECT {e2} FROM {t2}"),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever comes in, what goes out reads only the tenant's objects (through the
        /// subqueries the server wrote, one per type reference) and CTEs under the prefix.
        #[test]
        fn no_input_reaches_another_table(sql in fragment()) {
            if let Ok(checked) = check(&sql, 2, &is_type) {
                let (out, replaced) = checked.rewrite(&own).unwrap();
                let names = relations(&out);
                let objects = names.iter().filter(|n| *n == "objects").count();
                prop_assert_eq!(objects, replaced, "{} -> {}", sql, out);
                for name in &names {
                    prop_assert!(name == "objects" || name.starts_with(CTE_PREFIX), "{} -> {}", sql, out);
                }
                prop_assert_eq!(out.matches("tenant_id = 't1'").count(), replaced);
            }
        }

        /// Arbitrary text never panics the checker.
        #[test]
        fn any_text_is_answered(sql in ".{0,200}") {
            let _ = check(&sql, 1, &is_type);
        }
    }
}
