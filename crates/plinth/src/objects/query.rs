//! Listing and searching objects: typed property filters (`filter[<property>][<op>]=<value>` on
//! a list, `and`/`or` groups in a search body), full-text `query`, sort by a sortable property
//! (or `created_at`, `updated_at`, `id`), `fields`, and signed keyset cursors. The SQL names the
//! type as a literal so that both databases use the per-property partial indexes.

use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::properties::Property;
use super::sql::{self, Binds};
use super::types::{DataType, Kind, Op};
use super::{Object, ObjectRow, Schema, COLUMNS};
use crate::app::App;
use crate::auth::Auth;
use crate::authz::{ObjectAction, ObjectGuard};
use crate::db::Backend;
use crate::http::error::FieldErrors;
use crate::http::list::{open, seal};
use crate::http::{ApiError, ApiResult, Data, Json, Page, Path};
use crate::id::TenantId;
use crate::limits::{LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT};
use crate::time;

/// Most conditions in one query, and how deep groups nest.
pub const CONDITIONS_MAX: usize = 50;
const DEPTH_MAX: usize = 5;
/// Most values of an `in` filter.
const IN_MAX: usize = 100;

/// The top-level fields of an object, for `fields`.
const OBJECT_FIELDS: &[&str] = &[
    "id",
    "object_type_id",
    "tenant_id",
    "properties",
    "created_at",
    "updated_at",
    "created_by",
    "version",
    "is_deleted",
    "deleted_at",
];

/// A condition over an object's properties (and, in row policies, its system fields).
#[derive(Debug, Clone)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Leaf {
        field: Field,
        op: Op,
        value: Operand,
    },
    /// Matches nothing: a policy whose caller-dependent value does not fit its property.
    Never,
}

/// What a condition compares: a property's value or one of the object's system fields.
#[derive(Debug, Clone)]
pub enum Field {
    Property(Box<Property>),
    System(SystemField),
}

/// The fields every object has, which row policies may name beside its properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemField {
    Id,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

impl SystemField {
    pub fn parse(name: &str) -> Option<SystemField> {
        match name {
            "id" => Some(SystemField::Id),
            "created_by" => Some(SystemField::CreatedBy),
            "created_at" => Some(SystemField::CreatedAt),
            "updated_at" => Some(SystemField::UpdatedAt),
            _ => None,
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            SystemField::Id => "id",
            SystemField::CreatedBy => "created_by",
            SystemField::CreatedAt => "created_at",
            SystemField::UpdatedAt => "updated_at",
        }
    }

    /// The type its values are written in.
    pub fn data_type(self) -> DataType {
        match self {
            SystemField::Id | SystemField::CreatedBy => DataType::String,
            SystemField::CreatedAt | SystemField::UpdatedAt => DataType::Datetime,
        }
    }

    fn ops(self) -> &'static [Op] {
        match self {
            SystemField::Id | SystemField::CreatedBy => &[Op::Eq, Op::Ne, Op::In, Op::Exists],
            SystemField::CreatedAt | SystemField::UpdatedAt => {
                &[Op::Eq, Op::Ne, Op::Gt, Op::Gte, Op::Lt, Op::Lte, Op::Exists]
            }
        }
    }

    /// A value in the stored form of the column: ids as text, times as stored timestamps.
    fn canonical(self, value: Value) -> Result<Value, String> {
        match self {
            SystemField::Id | SystemField::CreatedBy => match value {
                Value::String(text) if !text.is_empty() && text.len() <= 200 => Ok(Value::String(text)),
                _ => Err(format!("`{}` compares with a string of 1 to 200 characters", self.column())),
            },
            SystemField::CreatedAt | SystemField::UpdatedAt => {
                let at = value
                    .as_str()
                    .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
                    .ok_or_else(|| format!("`{}` compares with an RFC 3339 date-time", self.column()))?;
                Ok(Value::String(time::to_db(&at.with_timezone(&Utc))))
            }
        }
    }
}

impl Field {
    /// The field a condition names: a property of `schema`, or (where `system` allows) a system
    /// field.
    pub fn of(schema: &Schema, name: &str, system: bool) -> Result<Field, String> {
        if system {
            if let Some(field) = SystemField::parse(name) {
                return Ok(Field::System(field));
            }
        }
        schema
            .property(name)
            .map(|p| Field::Property(Box::new(p.clone())))
            .ok_or_else(|| format!("`{}` has no property `{name}`", schema.object_type.name))
    }

    pub fn name(&self) -> &str {
        match self {
            Field::Property(property) => &property.name,
            Field::System(field) => field.column(),
        }
    }

    pub fn data_type(&self) -> DataType {
        match self {
            Field::Property(property) => property.data_type,
            Field::System(field) => field.data_type(),
        }
    }

    fn ops(&self) -> &'static [Op] {
        match self {
            Field::Property(property) => property.data_type.ops(),
            Field::System(field) => field.ops(),
        }
    }

    /// `value` in the form this field compares in.
    pub fn scalar(&self, value: Value) -> Result<Value, String> {
        match self {
            Field::Property(property) => scalar(property, value),
            Field::System(field) => field.canonical(value),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Operand {
    One(Value),
    Many(Vec<Value>),
    Flag(bool),
    Text(String),
}

#[derive(Debug, Clone)]
pub enum SortKey {
    Id,
    Column(&'static str),
    Property(Property),
}

/// A whole query: what to match, in what order, which page.
#[derive(Debug, Clone)]
pub struct ObjectQuery {
    pub filter: Option<Cond>,
    pub text: Option<String>,
    pub sort: SortKey,
    pub descending: bool,
    /// The sort as asked, which a cursor is bound to.
    pub sort_text: String,
    pub limit: u32,
    pub cursor: Option<String>,
    /// Items to skip instead of a cursor.
    pub offset: u32,
    pub trash: bool,
    pub ranges: Vec<(&'static str, &'static str, DateTime<Utc>)>,
    pub fields: Option<Vec<String>>,
    /// The rows the caller's policies admit (none: every row).
    pub rows: Option<Cond>,
    /// `associated_with`: only objects linked (either way) to this one.
    pub associated: Option<Associated>,
    /// `include`: association types whose linked objects each result embeds.
    pub include: Vec<String>,
}

impl ObjectQuery {
    /// The live objects meeting `filter` and the caller's `rows`, in id order: what reports and
    /// exports read.
    pub fn matching(filter: Option<Cond>, rows: Option<Cond>) -> ObjectQuery {
        ObjectQuery {
            filter,
            text: None,
            sort: SortKey::Id,
            descending: false,
            sort_text: String::new(),
            limit: 1,
            cursor: None,
            offset: 0,
            trash: false,
            ranges: Vec::new(),
            fields: None,
            rows,
            associated: None,
            include: Vec::new(),
        }
    }
}

/// `associated_with=<type>:<id>[:<association_type>]`: the objects linked to one object.
#[derive(Debug, Clone)]
pub struct Associated {
    pub type_ref: String,
    pub object_id: String,
    pub association_type: Option<String>,
}

impl Associated {
    fn parse(text: &str) -> Result<Associated, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let usage = "is `<type>:<object id>` or `<type>:<object id>:<association type>`";
        let (type_ref, object_id, association_type) = match parts.as_slice() {
            [type_ref, id] => (*type_ref, *id, None),
            [type_ref, id, kind] => (*type_ref, *id, Some(*kind)),
            _ => return Err(usage.into()),
        };
        if type_ref.is_empty() || type_ref.len() > 200 || !crate::id::is_valid(crate::id::prefix::OBJECT, object_id) {
            return Err(usage.into());
        }
        if let Some(kind) = association_type {
            super::associations::check_type_name(kind)?;
        }
        Ok(Associated {
            type_ref: type_ref.to_owned(),
            object_id: object_id.to_owned(),
            association_type: association_type.map(str::to_owned),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    sort: String,
    trash: bool,
    value: Option<Value>,
    id: String,
    /// The first page's total, repeated on later pages instead of counting again.
    total: i64,
    /// Whether the pages gather their matches before ordering them (see `gathers_first`).
    #[serde(default)]
    gather: bool,
}

/// Whether a page on PostgreSQL should gather every match first and then order them, rather
/// than walk the sort's order until the page is full: when the matches are few beside the type.
/// A walk reads about `(offset + limit + 1) * objects / matches` rows if the matches are spread
/// evenly along the order, testing each row's properties or words; gathering reads the matches,
/// through the filter's index when it has one (at worst as the count just did). PostgreSQL's
/// planner prices those tests as nearly free and walks. Matches are seldom spread evenly: over
/// 40,000 objects a page of `qty < 10` (400 matches) walked 7,098 rows in 23.7 ms, and of the
/// words `charlie delta` (3,316 matches) 5,400 rows in 31.8 ms, where gathering took 1.2 and
/// 13.8 ms. Gathering costs about 4 µs a match whatever their spread, a walk as much a row read
/// however far the matches lie: up to `GATHERED_ALWAYS` matches (about 20 ms) the page gathers,
/// and beyond while the matches are fewer than ten evenly spread walks.
fn gathers_first(matches: i64, objects: i64, offset: u32, limit: u32) -> bool {
    let walked = (i64::from(offset) + i64::from(limit) + 1).saturating_mul(objects);
    matches <= GATHERED_ALWAYS || matches.saturating_mul(matches) <= walked.saturating_mul(10)
}

/// Matches a page gathers however many objects the type holds.
const GATHERED_ALWAYS: i64 = 5_000;

/// The type a property's filter values are written in: a currency compares by its amount.
fn operand_type(data_type: DataType) -> DataType {
    match data_type {
        DataType::Currency => DataType::Decimal,
        other => other,
    }
}

/// A string from a query string, read as the property's type where it is not a string.
fn coerce(data_type: DataType, value: Value) -> Value {
    let Value::String(text) = &value else { return value };
    match data_type {
        DataType::Integer => text.parse::<i64>().map(Value::from).unwrap_or(value),
        DataType::Number | DataType::Percent => {
            text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number).unwrap_or(value)
        }
        DataType::Boolean => match text.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => value,
        },
        _ => value,
    }
}

fn scalar(property: &Property, value: Value) -> Result<Value, String> {
    let data_type = operand_type(property.data_type);
    data_type.canonical(&coerce(data_type, value), property.enum_values())
}

/// Checks one condition and reads its value in the property's type.
pub fn leaf(schema: &Schema, name: &str, op: Op, value: Value) -> Result<Cond, String> {
    field_leaf(Field::of(schema, name, false)?, op, value)
}

/// Checks that `op` applies to `field`.
pub fn check_op(field: &Field, op: Op) -> Result<(), String> {
    if field.ops().contains(&op) {
        return Ok(());
    }
    let ops: Vec<&str> = field.ops().iter().map(|o| o.as_str()).collect();
    Err(format!(
        "`{}` does not apply to `{}` ({}); use one of: {}",
        op.as_str(),
        field.name(),
        field.data_type().as_str(),
        ops.join(", ")
    ))
}

/// One condition on `field`, its value read in the field's type.
pub fn field_leaf(field: Field, op: Op, value: Value) -> Result<Cond, String> {
    check_op(&field, op)?;
    let data_type = field.data_type();
    let enum_values: Vec<String> = match &field {
        Field::Property(property) => property.enum_values().to_vec(),
        Field::System(_) => Vec::new(),
    };
    let operand = match op {
        Op::Exists => match coerce(DataType::Boolean, value) {
            Value::Bool(flag) => Operand::Flag(flag),
            _ => return Err("`exists` takes true or false".into()),
        },
        Op::In => {
            let items = match value {
                Value::Array(items) => items,
                Value::String(text) => text.split(',').map(|s| Value::String(s.to_owned())).collect(),
                other => vec![other],
            };
            if items.is_empty() || items.len() > IN_MAX {
                return Err(format!("`in` takes 1 to {IN_MAX} values"));
            }
            Operand::Many(items.into_iter().map(|item| field.scalar(item)).collect::<Result<_, _>>()?)
        }
        Op::Contains if data_type.kind() == Kind::Set => {
            let text = value.as_str().ok_or("`contains` takes one enum value")?;
            if !enum_values.iter().any(|v| v == text) {
                return Err(format!("must be one of: {}", enum_values.join(", ")));
            }
            Operand::Text(text.to_owned())
        }
        Op::Contains | Op::StartsWith => match value {
            Value::String(text) if !text.is_empty() && text.chars().count() <= 1024 => Operand::Text(text),
            _ => return Err(format!("`{}` takes a string of 1 to 1024 characters", op.as_str())),
        },
        _ => Operand::One(field.scalar(value)?),
    };
    Ok(Cond::Leaf { field, op, value: operand })
}

/// The SQL of a condition, its values bound in `binds`.
pub fn cond_sql(backend: Backend, cond: &Cond, binds: &mut Binds) -> String {
    match cond {
        // An empty AND holds; an empty OR does not (a policy of `{"or": []}` admits nothing).
        Cond::All(items) if items.is_empty() => "1 = 1".into(),
        Cond::Any(items) if items.is_empty() => "1 = 0".into(),
        Cond::All(items) => {
            let parts: Vec<String> = items.iter().map(|c| cond_sql(backend, c, binds)).collect();
            format!("({})", parts.join(" AND "))
        }
        Cond::Any(items) => {
            let parts: Vec<String> = items.iter().map(|c| cond_sql(backend, c, binds)).collect();
            format!("({})", parts.join(" OR "))
        }
        Cond::Never => "1 = 0".into(),
        Cond::Leaf { field, op, value } => {
            let name = field.name();
            let data_type = operand_type(field.data_type());
            let (expr, exists) = match field {
                Field::Property(property) => {
                    (sql::value_expr(backend, name, property.data_type), sql::exists_expr(backend, name))
                }
                Field::System(system) => (sql::system_expr(backend, *system), format!("{name} IS NOT NULL")),
            };
            let mut bind = |value: &Value| binds.push(sql::bind_for(backend, data_type, value));
            match (op, value) {
                (Op::Exists, Operand::Flag(true)) => exists,
                (Op::Exists, _) => format!("NOT ({exists})"),
                (Op::In, Operand::Many(items)) => {
                    let placeholders: Vec<String> = items.iter().map(&mut bind).collect();
                    format!("{expr} IN ({})", placeholders.join(", "))
                }
                (Op::Contains, Operand::Text(text)) if field.data_type().kind() == Kind::Set => {
                    let p = binds.text(text.clone());
                    sql::set_contains(backend, name, &p)
                }
                (Op::Contains, Operand::Text(text)) => {
                    let p = binds.text(text.clone());
                    sql::contains(backend, &expr, &p)
                }
                (Op::StartsWith, Operand::Text(text)) => {
                    let p = binds.text(text.clone());
                    sql::starts_with(backend, &expr, &p)
                }
                (op, Operand::One(value)) => {
                    let p = bind(value);
                    match op {
                        Op::Ne => format!("({expr} IS NULL OR {expr} <> {p})"),
                        Op::Gt => format!("{expr} > {p}"),
                        Op::Gte => format!("{expr} >= {p}"),
                        Op::Lt => format!("{expr} < {p}"),
                        Op::Lte => format!("{expr} <= {p}"),
                        _ => format!("{expr} = {p}"),
                    }
                }
                // `leaf` pairs each operator with its operand.
                _ => "1 = 0".into(),
            }
        }
    }
}

pub fn count_leaves(cond: &Cond, depth: usize) -> Result<usize, String> {
    if depth > DEPTH_MAX {
        return Err(format!("groups nest at most {DEPTH_MAX} deep"));
    }
    match cond {
        // An empty group counts as a condition: otherwise any number of them would pass the limit.
        Cond::All(items) | Cond::Any(items) if items.is_empty() => Ok(1),
        Cond::All(items) | Cond::Any(items) => {
            items.iter().map(|c| count_leaves(c, depth + 1)).sum::<Result<usize, String>>()
        }
        Cond::Leaf { .. } | Cond::Never => Ok(1),
    }
}

/// A search body's `filters`: a condition `{property, op, value}`, a group `{"and": [...]}` or
/// `{"or": [...]}`, or an array (all of them).
pub fn parse_filters(schema: &Schema, value: Value, depth: usize) -> Result<Cond, String> {
    parse_filters_with(value, depth, &mut |property, op, value| leaf(schema, property, op, value))
}

/// The filter language's structure, each condition built by `leaf` from its property, operator
/// and value: searches and row policies share it.
pub fn parse_filters_with(
    value: Value,
    depth: usize,
    leaf: &mut dyn FnMut(&str, Op, Value) -> Result<Cond, String>,
) -> Result<Cond, String> {
    if depth > DEPTH_MAX {
        return Err(format!("groups nest at most {DEPTH_MAX} deep"));
    }
    match value {
        Value::Array(items) => Ok(Cond::All(
            items.into_iter().map(|item| parse_filters_with(item, depth + 1, leaf)).collect::<Result<_, _>>()?,
        )),
        Value::Object(mut fields) => {
            if fields.len() == 1 && (fields.contains_key("and") || fields.contains_key("or")) {
                let Some((key, items)) = fields.into_iter().next() else { return Err("an empty group".into()) };
                let Value::Array(items) = items else { return Err(format!("`{key}` takes an array")) };
                let items = items
                    .into_iter()
                    .map(|item| parse_filters_with(item, depth + 1, leaf))
                    .collect::<Result<_, _>>()?;
                return Ok(if key == "and" { Cond::All(items) } else { Cond::Any(items) });
            }
            let property = fields.remove("property").and_then(|v| v.as_str().map(str::to_owned));
            let op = fields.remove("op").and_then(|v| v.as_str().map(str::to_owned));
            let value = fields.remove("value");
            if let Some(other) = fields.keys().next() {
                return Err(format!("unknown field `{other}` in a condition"));
            }
            let (Some(property), Some(op)) = (property, op) else {
                return Err("a condition is `{\"property\", \"op\", \"value\"}`, a group `{\"and\": [...]}` or `{\"or\": [...]}`".into());
            };
            let op = Op::parse(&op).ok_or_else(|| format!("unknown operator `{op}`"))?;
            let value = value.unwrap_or(Value::Bool(true));
            leaf(&property, op, value)
        }
        _ => Err("filters are a condition, a group or an array".into()),
    }
}

/// Reads `sort` (`-price`, `created_at`, ...) and `order` (`asc`/`desc`).
pub fn parse_sort(schema: &Schema, sort: Option<&str>, order: Option<&str>) -> Result<(SortKey, bool, String), String> {
    let text = sort.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("-id");
    let (name, mut descending) = match text.strip_prefix('-') {
        Some(name) => (name, true),
        None => (text.strip_prefix('+').unwrap_or(text), false),
    };
    match order {
        Some("asc") => descending = false,
        Some("desc") => descending = true,
        Some(other) => return Err(format!("`order` is `asc` or `desc`, not `{other}`")),
        None => {}
    }
    let key = match name {
        "id" => SortKey::Id,
        "created_at" => SortKey::Column("created_at"),
        "updated_at" => SortKey::Column("updated_at"),
        _ => match schema.property(name) {
            Some(property) if property.is_sortable => SortKey::Property(property.clone()),
            Some(_) => return Err(format!("`{name}` is not sortable: set `is_sortable` on the property")),
            None => {
                return Err(format!("cannot sort by `{name}`: use id, created_at, updated_at or a sortable property"))
            }
        },
    };
    let canonical = format!("{}{name}", if descending { "-" } else { "" });
    Ok((key, descending, canonical))
}

fn parse_fields(schema: &Schema, fields: &[String], errors: &mut FieldErrors) -> Option<Vec<String>> {
    parse_fields_list(schema, fields, "fields", errors);
    (!fields.is_empty()).then(|| fields.to_vec())
}

/// Checks that each of `fields` is an object field or a property of `schema`.
pub fn parse_fields_list(schema: &Schema, fields: &[String], name: &str, errors: &mut FieldErrors) {
    for field in fields {
        if !OBJECT_FIELDS.contains(&field.as_str()) && schema.property(field).is_none() {
            errors.add(name, format!("unknown field `{field}`: name object fields or properties"));
        }
    }
}

fn project(object: Object, fields: &Option<Vec<String>>) -> ApiResult<Value> {
    let value = serde_json::to_value(object)?;
    let Some(fields) = fields else { return Ok(value) };
    let Value::Object(mut top) = value else { return Ok(value) };
    let wanted_properties: Vec<&String> = fields.iter().filter(|f| !OBJECT_FIELDS.contains(&f.as_str())).collect();
    if !wanted_properties.is_empty() && !fields.iter().any(|f| f == "properties") {
        if let Some(Value::Object(properties)) = top.get_mut("properties") {
            properties.retain(|k, _| wanted_properties.contains(&k));
        }
    }
    top.retain(|k, _| {
        k == "id"
            || k == "included"
            || fields.iter().any(|f| f == k)
            || (k == "properties" && !wanted_properties.is_empty())
    });
    Ok(Value::Object(top))
}

fn sort_value(object: &Object, key: &SortKey) -> Option<Value> {
    match key {
        SortKey::Id => None,
        SortKey::Column("created_at") => Some(Value::String(time::to_db(&object.created_at))),
        SortKey::Column(_) => Some(Value::String(time::to_db(&object.updated_at))),
        SortKey::Property(property) => object.properties.get(&property.name).cloned(),
    }
}

/// The SQL of a query: `(where, order by)`, with its values in `binds`.
pub fn build(
    backend: Backend,
    counting: bool,
    type_id: &str,
    q: &ObjectQuery,
    cursor: Option<&Value>,
    cursor_id: Option<&str>,
    binds: &mut Binds,
) -> (String, String, String) {
    // The type was found in the tenant, and type ids are unique: the type scopes the query to
    // the tenant, and the indexes cover it, counts included.
    // Counting a full-text query with no property filter, SQLite should start from the words'
    // matches (by rowid), not walk the type's whole index: `+` keeps these two terms from
    // choosing an index (measured: 52 -> 15 ms over 100,000 objects). A page is better served
    // walking the index in order until it is full; with a filter, the filter's index is the
    // better start for both.
    let plus = if counting && q.text.is_some() && q.filter.is_none() && backend == Backend::Sqlite { "+" } else { "" };
    let mut conditions = vec![
        format!("{plus}object_type_id = {}", sql::literal(type_id)),
        if q.trash { format!("{plus}deleted_at IS NOT NULL") } else { format!("{plus}deleted_at IS NULL") },
    ];
    if let Some(filter) = &q.filter {
        conditions.push(cond_sql(backend, filter, binds));
    }
    if let Some(rows) = &q.rows {
        conditions.push(cond_sql(backend, rows, binds));
    }
    if let Some(text) = &q.text {
        conditions.push(sql::full_text(backend, text, binds).unwrap_or_else(|| "1 = 0".into()));
    }
    if let Some(associated) = &q.associated {
        let anchor = binds.text(associated.object_id.clone());
        let kind = match &associated.association_type {
            Some(kind) => format!(" AND association_type = {}", binds.text(kind.clone())),
            None => String::new(),
        };
        conditions.push(format!(
            "id IN (SELECT to_id FROM associations WHERE from_id = {anchor}{kind} \
             UNION SELECT from_id FROM associations WHERE to_id = {anchor}{kind})"
        ));
    }
    for (column, op, at) in &q.ranges {
        let p = binds.text(time::to_db(at));
        conditions.push(format!("{column} {op} {p}"));
    }
    let where_all = conditions.join(" AND ");
    let dir = if q.descending { "DESC" } else { "ASC" };
    let id_op = if q.descending { "<" } else { ">" };
    let mut keyset = String::new();
    if let Some(id) = cursor_id {
        let pid = binds.text(id);
        keyset = match &q.sort {
            SortKey::Id => format!("id {id_op} {pid}"),
            SortKey::Column(column) => {
                let value = cursor.and_then(Value::as_str).unwrap_or_default().to_owned();
                let pv = binds.text(value);
                format!("(({column} = {pv} AND id {id_op} {pid}) OR {column} {id_op} {pv})")
            }
            SortKey::Property(property) => {
                let expr = sql::value_expr(backend, &property.name, property.data_type);
                match (cursor, q.descending) {
                    (None, false) => format!("(({expr} IS NULL AND id > {pid}) OR {expr} IS NOT NULL)"),
                    (None, true) => format!("({expr} IS NULL AND id < {pid})"),
                    (Some(value), descending) => {
                        let pv = binds.push(sql::bind_for(backend, property.data_type, value));
                        if descending {
                            format!("(({expr} = {pv} AND id < {pid}) OR {expr} < {pv} OR {expr} IS NULL)")
                        } else {
                            format!("(({expr} = {pv} AND id > {pid}) OR {expr} > {pv})")
                        }
                    }
                }
            }
        };
    }
    let order = match &q.sort {
        SortKey::Id => format!("id {dir}"),
        SortKey::Column(column) => format!("{column} {dir}, id {dir}"),
        SortKey::Property(property) => {
            let expr = sql::value_expr(backend, &property.name, property.data_type);
            // Absent values sort as the smallest on both databases.
            let nulls = crate::db::dialect::nulls_smallest(backend, q.descending);
            format!("{expr} {dir}{nulls}, id {dir}")
        }
    };
    (where_all, keyset, order)
}

/// Runs `q` over the type's objects: one page and the total, without what `guard` hides.
pub async fn run(
    app: &App,
    auth: &Auth,
    schema: &Schema,
    q: &ObjectQuery,
    guard: &ObjectGuard,
) -> ApiResult<Page<Value>> {
    let tenant = auth.tenant()?;
    // The queries below are scoped by the type alone: it must be the caller's.
    if schema.object_type.tenant_id != tenant.as_str() {
        return Err(ApiError::not_found("object type"));
    }
    let backend = app.db.backend();
    let cursor: Option<Cursor> = q.cursor.as_deref().map(|text| open(&app.cursor_key, text)).transpose()?;
    if let Some(cursor) = &cursor {
        if cursor.sort != q.sort_text || cursor.trash != q.trash {
            return Err(ApiError::bad_request("this cursor belongs to another sort or list: keep the first page's"));
        }
    }
    // A filter's or words' statements are not kept prepared: each is planned for its own values
    // (PostgreSQL plans a kept one once for any value from its sixth run on, and a filter on an
    // expression index then reads the type's every row: a filtered count went 4.7 -> 14 ms).
    // (SQLite plans each statement once, whatever its values: keeping it saves the preparing.)
    let values_shape_the_plan = backend == Backend::Postgres && (q.filter.is_some() || q.text.is_some());
    let mut gather = cursor.as_ref().is_some_and(|c| c.gather);
    let total = match &cursor {
        Some(cursor) => cursor.total,
        // Every live (or trashed) object of the type: the count the database keeps.
        None if q.filter.is_none()
            && q.rows.is_none()
            && q.text.is_none()
            && q.ranges.is_empty()
            && q.associated.is_none() =>
        {
            let column = if q.trash { "trashed" } else { "live" };
            let kept: Option<(i64,)> =
                sqlx::query_as(&format!("SELECT {column} FROM object_counts WHERE object_type_id = $1"))
                    .bind(&schema.object_type.id)
                    .fetch_optional(app.db.pool())
                    .await?;
            kept.map_or(0, |(n,)| n)
        }
        None => {
            let mut count_binds = Binds::new(backend);
            let (where_all, _, _) = build(backend, true, &schema.object_type.id, q, None, None, &mut count_binds);
            // With the type's own count beside it, to choose how to read the pages.
            let column = if q.trash { "trashed" } else { "live" };
            let (total, objects): (i64, i64) = sqlx::query_as_with(
                &format!(
                    "SELECT COUNT(*), COALESCE((SELECT {column} FROM object_counts WHERE object_type_id = {}), 0) \
                     FROM objects WHERE {where_all}",
                    sql::literal(&schema.object_type.id)
                ),
                count_binds.arguments()?,
            )
            .persistent(!values_shape_the_plan)
            .fetch_one(app.db.pool())
            .await?;
            // Only a filter or words test each row's properties or text; a row policy's columns
            // (the owner) have indexes in the page's own order.
            gather = values_shape_the_plan && gathers_first(total, objects, q.offset, q.limit);
            total
        }
    };

    let mut binds = Binds::new(backend);
    let (where_all, keyset, order) = build(
        backend,
        false,
        &schema.object_type.id,
        q,
        cursor.as_ref().and_then(|c| c.value.as_ref()),
        cursor.as_ref().map(|c| c.id.as_str()),
        &mut binds,
    );
    let keyset = if keyset.is_empty() { keyset } else { format!(" AND {keyset}") };
    let matches = format!("SELECT {COLUMNS} FROM objects WHERE {where_all}{keyset}");
    let page = format!("ORDER BY {order} LIMIT {} OFFSET {}", q.limit + 1, q.offset);
    let sql = if gather {
        format!("WITH matches AS MATERIALIZED ({matches}) SELECT {COLUMNS} FROM matches {page}")
    } else {
        format!("{matches} {page}")
    };
    let rows: Vec<ObjectRow> = sqlx::query_as_with(&sql, binds.arguments()?)
        .persistent(!values_shape_the_plan)
        .fetch_all(app.db.pool())
        .await?;
    let more = rows.len() > q.limit as usize;
    let mut objects: Vec<Object> =
        rows.into_iter().take(q.limit as usize).map(Object::try_from).collect::<ApiResult<_>>()?;
    let next_cursor = match objects.last() {
        Some(last) if more => Some(seal(
            &app.cursor_key,
            &Cursor {
                sort: q.sort_text.clone(),
                trash: q.trash,
                value: sort_value(last, &q.sort),
                id: last.id.clone(),
                total,
                gather,
            },
        )),
        _ => None,
    };
    if !q.include.is_empty() {
        let mut conn = app.db.pool().acquire().await?;
        super::associations::embed(app, &mut conn, auth, &mut objects, &q.include).await?;
    }
    let results = objects.into_iter().map(|o| project(guard.redact_object(o), &q.fields)).collect::<ApiResult<_>>()?;
    Ok(Page { results, next_cursor, total })
}

fn parse_limit(limit: Option<&str>, errors: &mut FieldErrors) -> u32 {
    match limit.map(str::parse::<u32>) {
        None => LIST_DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=LIST_MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            errors.add("limit", format!("must be between 1 and {LIST_MAX_LIMIT}"));
            LIST_DEFAULT_LIMIT
        }
    }
}

/// A list's query string: the common list parameters and `filter[<property>][<op>]=<value>`.
pub fn from_query_string(schema: &Schema, raw: &str, trash: bool) -> ApiResult<ObjectQuery> {
    from_query_string_with(schema, raw, trash, None)
}

/// The `view=<id>` a list's query string names, if any.
pub fn view_of(raw: &str) -> Option<String> {
    url::form_urlencoded::parse(raw.as_bytes()).find(|(key, _)| key == "view").map(|(_, value)| value.into_owned())
}

/// A list's query string over a saved view: the view's filters hold beside the query's, its
/// sort and columns apply where the query names none.
pub fn from_query_string_with(
    schema: &Schema,
    raw: &str,
    trash: bool,
    view: Option<&super::views::View>,
) -> ApiResult<ObjectQuery> {
    let mut errors = FieldErrors::default();
    let mut conditions = Vec::new();
    let (mut limit, mut cursor, mut sort, mut order, mut fields, mut text) = (None, None, None, None, None, None);
    let mut offset = 0;
    let mut ranges = Vec::new();
    let (mut associated, mut include) = (None, Vec::new());
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        let value = value.into_owned();
        if let Some(rest) = key.strip_prefix("filter[") {
            let parts: Vec<&str> = rest.trim_end_matches(']').split("][").collect();
            let (name, op) = match parts.as_slice() {
                [name] => (*name, Some(Op::Eq)),
                [name, op] => (*name, Op::parse(op)),
                _ => (rest, None),
            };
            let field = format!("filter[{name}]");
            let Some(op) = op else {
                let ops: Vec<&str> = Op::ALL.iter().map(|o| o.as_str()).collect();
                errors.add(&field, format!("unknown operator; use one of: {}", ops.join(", ")));
                continue;
            };
            match leaf(schema, name, op, Value::String(value)) {
                Ok(cond) => conditions.push(cond),
                Err(problem) => errors.add(&field, problem),
            }
            continue;
        }
        match key.as_ref() {
            "limit" => limit = Some(value),
            "offset" => match value.parse::<u32>() {
                Ok(n) if n <= crate::http::list::OFFSET_MAX => offset = n,
                _ => errors.add("offset", format!("must be 0 to {}", crate::http::list::OFFSET_MAX)),
            },
            "cursor" => cursor = Some(value).filter(|c| !c.is_empty()),
            "sort" => sort = Some(value),
            "order" => order = Some(value),
            "fields" => fields = Some(value),
            "q" | "query" => text = Some(value),
            "view" => {}
            "associated_with" => match Associated::parse(&value) {
                Ok(found) => associated = Some(found),
                Err(problem) => errors.add("associated_with", problem),
            },
            "include" => match super::associations::parse_include(&value) {
                Ok(kinds) => include = kinds,
                Err(error) => errors.add("include", error.message),
            },
            "created_after" | "created_before" | "updated_after" | "updated_before" => {
                match DateTime::parse_from_rfc3339(&value) {
                    Ok(at) => {
                        let column = if key.starts_with("created") { "created_at" } else { "updated_at" };
                        let op = if key.ends_with("after") { ">=" } else { "<" };
                        ranges.push((column, op, at.with_timezone(&Utc)));
                    }
                    Err(_) => errors.add(&key, "must be an RFC 3339 date-time"),
                }
            }
            other => errors.add(other, "unknown parameter: filter with `filter[<property>][<op>]=<value>`"),
        }
    }
    if conditions.len() > CONDITIONS_MAX {
        errors.add("filter", format!("at most {CONDITIONS_MAX} conditions"));
    }
    if let Some(view) = view {
        if let Some(cond) = view.condition(schema)? {
            conditions.push(cond);
        }
        if sort.is_none() && order.is_none() {
            sort = view.sort.as_ref().map(|s| s.as_param());
        }
        if fields.is_none() && !view.columns.is_empty() {
            // Columns the caller may not read are left out, not refused: the view is shared.
            let readable: Vec<&str> = view
                .columns
                .iter()
                .filter(|c| OBJECT_FIELDS.contains(&c.as_str()) || schema.property(c).is_some())
                .map(String::as_str)
                .collect();
            fields = Some(if readable.is_empty() { "id".to_owned() } else { readable.join(",") });
        }
    }
    let limit = parse_limit(limit.as_deref(), &mut errors);
    let (sort, descending, sort_text) = match parse_sort(schema, sort.as_deref(), order.as_deref()) {
        Ok(parsed) => parsed,
        Err(problem) => {
            errors.add("sort", problem);
            (SortKey::Id, true, String::new())
        }
    };
    let fields: Vec<String> =
        fields.unwrap_or_default().split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned).collect();
    let fields = parse_fields(schema, &fields, &mut errors);
    errors.finish()?;
    Ok(ObjectQuery {
        filter: (!conditions.is_empty()).then_some(Cond::All(conditions)),
        text,
        sort,
        descending,
        sort_text,
        limit,
        cursor,
        offset,
        trash,
        ranges,
        fields,
        rows: None,
        associated,
        include,
    })
}

/// A search.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// A condition `{"property": "age", "op": "gte", "value": 18}`, a group `{"and": [...]}` or
    /// `{"or": [...]}`, or an array of them (all must hold). Groups nest up to 5 deep, 50
    /// conditions in all.
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Value>,
    /// Full-text search over string, text, rich text and email properties: every word must appear.
    pub query: Option<String>,
    /// `-price`, `created_at`, ...: a sortable property, `id`, `created_at` or `updated_at`.
    pub sort: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Object fields or property names to return.
    pub fields: Option<Vec<String>>,
}

impl SearchBody {
    fn into_query(self, schema: &Schema) -> ApiResult<ObjectQuery> {
        let mut errors = FieldErrors::default();
        let filter = match self.filters {
            Some(value) => match parse_filters(schema, value, 0).and_then(|c| count_leaves(&c, 0).map(|n| (c, n))) {
                Ok((_, n)) if n > CONDITIONS_MAX => {
                    errors.add("filters", format!("at most {CONDITIONS_MAX} conditions"));
                    None
                }
                Ok((cond, _)) => Some(cond),
                Err(problem) => {
                    errors.add("filters", problem);
                    None
                }
            },
            None => None,
        };
        if let Some(query) = &self.query {
            if query.chars().count() > 1024 {
                errors.add("query", "must be at most 1024 characters");
            }
        }
        let limit = parse_limit(self.limit.map(|l| l.to_string()).as_deref(), &mut errors);
        let (sort, descending, sort_text) = match parse_sort(schema, self.sort.as_deref(), None) {
            Ok(parsed) => parsed,
            Err(problem) => {
                errors.add("sort", problem);
                (SortKey::Id, true, String::new())
            }
        };
        let fields = parse_fields(schema, &self.fields.unwrap_or_default(), &mut errors);
        errors.finish()?;
        Ok(ObjectQuery {
            filter,
            text: self.query.filter(|q| !q.trim().is_empty()),
            sort,
            descending,
            sort_text,
            limit,
            cursor: self.cursor.filter(|c| !c.is_empty()),
            offset: 0,
            trash: false,
            ranges: Vec::new(),
            fields,
            rows: None,
            associated: None,
            include: Vec::new(),
        })
    }
}

/// The query parameters of a list, as documented (they are read from the raw query string).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ObjectListParams {
    /// 1 to 100, default 20.
    limit: Option<u32>,
    /// `next_cursor` of the previous page (same sort).
    cursor: Option<String>,
    /// Objects to skip, 0 to 10,000, instead of a cursor.
    offset: Option<u32>,
    /// `id`, `created_at`, `updated_at` or a sortable property; `-` for descending. Default `-id`
    /// (newest first). Objects without the property sort as the smallest.
    sort: Option<String>,
    /// `asc` or `desc`: overrides the sort's direction.
    order: Option<String>,
    /// Comma-separated object fields or property names.
    fields: Option<String>,
    /// Full-text search: every word must appear in a string, text, rich text or email property.
    q: Option<String>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    updated_after: Option<DateTime<Utc>>,
    updated_before: Option<DateTime<Utc>>,
    /// `filter[<property>][<op>]=<value>`, repeatable; ops `eq ne gt gte lt lte in contains
    /// starts_with exists` as the property's type allows; `in` takes comma-separated values.
    #[param(rename = "filter[<property>][<op>]")]
    filter: Option<String>,
    /// `<type>:<object id>` or `<type>:<object id>:<association type>`: only objects linked to
    /// that object (either way), which the caller must be able to read.
    associated_with: Option<String>,
    /// Comma-separated association types: each result embeds, under `included`, the objects
    /// linked to it by each (either way) that the caller may read, at most 100 per type.
    include: Option<String>,
    /// A saved view of the type: its filters hold beside these, its sort and columns apply
    /// where `sort` and `fields` are not given.
    view: Option<String>,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_objects)).routes(routes!(list_trash)).routes(routes!(search_objects))
}

async fn list(
    auth: Auth,
    app: App,
    type_ref: String,
    raw: Option<String>,
    trash: bool,
) -> ApiResult<Data<Page<Value>>> {
    let (type_access, guard) = readable(&app, &auth, &type_ref).await?;
    let schema = &type_access.schema;
    let raw = raw.unwrap_or_default();
    let view = match view_of(&raw) {
        Some(view_id) => {
            let mut conn = app.db.pool().acquire().await?;
            Some(super::views::load(&mut conn, schema, &view_id).await?)
        }
        None => None,
    };
    let mut query = from_query_string_with(&guard.readable_schema(schema), &raw, trash, view.as_ref())?;
    guard.check_text_search(schema, query.text.as_ref())?;
    query.rows = guard.rows(schema, ObjectAction::Select);
    if let Some(associated) = &mut query.associated {
        // The object the list is anchored on must be one the caller may read.
        let mut conn = app.db.pool().acquire().await?;
        let (anchor_type, anchor_guard) =
            crate::authz::access::readable(&app, &mut conn, &auth, &associated.type_ref, ObjectAction::Select).await?;
        let anchor_schema = &anchor_type.schema;
        let rows = anchor_guard.rows(anchor_schema, ObjectAction::Select);
        let anchor =
            super::store::fetch_visible(&mut conn, app.db.backend(), anchor_schema, &associated.object_id, rows)
                .await?;
        associated.object_id = anchor.id;
    }
    Ok(Data(run(&app, &auth, schema, &query, &guard).await?))
}

/// The type, and what the caller may read of it.
async fn readable(
    app: &App,
    auth: &Auth,
    type_ref: &str,
) -> ApiResult<(std::sync::Arc<crate::authz::access::TypeAccess>, ObjectGuard)> {
    let mut conn = app.db.pool().acquire().await?;
    crate::authz::access::readable(app, &mut conn, auth, type_ref, ObjectAction::Select).await
}

/// List objects
///
/// Live objects of the type, filtered by `filter[<property>][<op>]=<value>` (typed by the
/// property: a date compares as a date, a decimal as a number), sorted, paged by cursor.
#[utoipa::path(get, path = "/v1/objects/{object_type_id}/list", tag = "Objects", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"), ObjectListParams),
    responses((status = 200, body = crate::http::response::Envelope<Page<Object>>),
              (status = 400, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn list_objects(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Data<Page<Value>>> {
    list(auth, app, type_ref, raw, false).await
}

/// List trashed objects
///
/// Objects in the trash, restorable with `POST .../restore`; the same parameters as the list.
#[utoipa::path(get, path = "/v1/objects/{object_type_id}/trash", tag = "Objects", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name"), ObjectListParams),
    responses((status = 200, body = crate::http::response::Envelope<Page<Object>>)))]
async fn list_trash(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Data<Page<Value>>> {
    list(auth, app, type_ref, raw, true).await
}

/// Search objects
///
/// Filters with `and`/`or` groups, full-text `query`, `sort`, `limit` and `cursor` in a body.
#[utoipa::path(post, path = "/v1/objects/{object_type_id}/search", tag = "Objects", security(("bearer" = [])),
    params(("object_type_id" = String, Path, description = "The type's id or name")),
    request_body = SearchBody,
    responses((status = 200, body = crate::http::response::Envelope<Page<Object>>),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn search_objects(
    auth: Auth,
    State(app): State<App>,
    Path(type_ref): Path<String>,
    Json(body): Json<SearchBody>,
) -> ApiResult<Data<Page<Value>>> {
    let (type_access, guard) = readable(&app, &auth, &type_ref).await?;
    let schema = &type_access.schema;
    let mut query = body.into_query(&guard.readable_schema(schema))?;
    guard.check_text_search(schema, query.text.as_ref())?;
    query.rows = guard.rows(schema, ObjectAction::Select);
    Ok(Data(run(&app, &auth, schema, &query, &guard).await?))
}

/// The database's plan for a list of `type_ref` with `raw` as its query string: how the
/// per-property indexes serve filters and sorts. For tests and operators; never served.
pub async fn explain(app: &App, tenant: &TenantId, type_ref: &str, raw: &str) -> ApiResult<String> {
    let backend = app.db.backend();
    let mut conn = app.db.pool().acquire().await?;
    let schema = Schema::load(&mut conn, tenant, type_ref).await?;
    let q = from_query_string(&schema, raw, false)?;
    let mut binds = Binds::new(backend);
    let (where_all, _, order) = build(backend, false, &schema.object_type.id, &q, None, None, &mut binds);
    let sql = format!("SELECT {COLUMNS} FROM objects WHERE {where_all} ORDER BY {order} LIMIT {}", q.limit + 1);
    let plan = crate::db::dialect::explain(&mut conn, backend, &sql, binds.arguments()?).await?;
    Ok(plan.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::gathers_first;

    #[test]
    fn few_matches_are_gathered_and_many_walked() {
        assert!(gathers_first(400, 40_000, 0, 20));
        assert!(gathers_first(5_000, 40_000, 0, 20));
        assert!(!gathers_first(5_001, 40_000, 0, 20));
        assert!(!gathers_first(40_000, 40_000, 0, 20));
        // 400,000 objects, a page of 20: up to sqrt(10 * 21 * 400,000) = 9,165 matches.
        assert!(gathers_first(9_165, 400_000, 0, 20));
        assert!(!gathers_first(9_166, 400_000, 0, 20));
        // Deeper pages walk further, so gather more.
        assert!(gathers_first(10_000, 40_000, 500, 20));
        assert!(gathers_first(0, 0, 0, 20));
    }
}
