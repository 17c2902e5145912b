//! What AI calls use and cost: one `ai_usage` row per call (tenant, credential, provider,
//! model, tokens, cost, latency, status), the `ai_tokens` entitlement counted, and the tenant's
//! monthly budget (`ai_budget_usd`) checked before a call goes out. Prices are US dollars per
//! million tokens: built-in for common models, `PLINTH_AI_PRICES_FILE` over them, a provider
//! instance's `config_json.prices` over both.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Instant;

use axum::extract::State;
use chrono::Datelike;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::meter::{Hold, Row};
use crate::app::App;
use crate::audit::{self, Entry, Who};
use crate::auth::{Auth, TenantId};
use crate::http::error::FieldErrors;
use crate::http::{ApiError, ApiResult, Data, Json, Query};
use crate::id::{self, prefix};
use crate::scopes::required::{AI_BUDGET_READ, AI_BUDGET_WRITE, AI_USAGE_READ};
use crate::time;

/// Built-in prices: (model, input, output) in US dollars per million tokens.
const BUILT_IN: &[(&str, &str, &str)] = &[
    ("gpt-4o-mini", "0.15", "0.60"),
    ("gpt-4o", "2.50", "10.00"),
    ("o3-mini", "1.10", "4.40"),
    ("text-embedding-3-small", "0.02", "0"),
    ("text-embedding-3-large", "0.13", "0"),
    ("claude-sonnet-4-6", "3.00", "15.00"),
    ("claude-3-5-haiku", "0.80", "4.00"),
    ("claude-opus-4-1", "15.00", "75.00"),
];

/// Prices per million tokens: (input, output), in nano-dollars.
#[derive(Debug, Clone, Default)]
pub struct Prices(HashMap<String, (i64, i64)>);

pub(super) fn nano(dollars: &str) -> Option<i64> {
    let value = Decimal::from_str(dollars.trim()).ok()?;
    if value.is_sign_negative() {
        return None;
    }
    (value * Decimal::from(1_000_000_000i64)).trunc().to_string().parse().ok()
}

fn price_pair(entry: &Value) -> Option<(i64, i64)> {
    let field = |name: &str| match &entry[name] {
        Value::String(text) => nano(text),
        Value::Number(number) => nano(&number.to_string()),
        Value::Null => Some(0),
        _ => None,
    };
    Some((field("input_per_mtok")?, field("output_per_mtok")?))
}

impl Prices {
    /// The built-in prices, with `file` (JSON `{"<model>": {"input_per_mtok": "0.15",
    /// "output_per_mtok": "0.60"}}`) over them.
    pub fn load(file: Option<&str>) -> Result<Prices, String> {
        let mut prices: HashMap<String, (i64, i64)> = BUILT_IN
            .iter()
            .map(|(model, input, output)| ((*model).to_string(), (nano(input).unwrap_or(0), nano(output).unwrap_or(0))))
            .collect();
        if let Some(text) = file {
            let given: Value = serde_json::from_str(text).map_err(|e| format!("the prices file is not JSON: {e}"))?;
            let given = given.as_object().ok_or("the prices file must be a JSON object of models")?;
            for (model, entry) in given {
                let pair = price_pair(entry).ok_or_else(|| format!("prices of `{model}` must be decimal strings"))?;
                prices.insert(model.clone(), pair);
            }
        }
        Ok(Prices(prices))
    }

    /// The cost in nano-dollars of a call to `model`, an instance's own prices first.
    pub fn cost(&self, instance: Option<&Value>, model: &str, input: u64, output: u64) -> i64 {
        let own = instance.and_then(|config| price_pair(&config["prices"][model]).filter(|p| *p != (0, 0)));
        let Some((input_price, output_price)) = own.or_else(|| self.0.get(model).copied()) else { return 0 };
        let per = |tokens: u64, price: i64| (i128::from(tokens) * i128::from(price) / 1_000_000) as i64;
        per(input, input_price) + per(output, output_price)
    }
}

/// Nano-dollars as a decimal string of dollars (`0.000123`).
pub fn dollars(nano: i64) -> String {
    Decimal::new(nano, 9).normalize().to_string()
}

/// What a call is expected to use: reserved against the budget and `ai_tokens` before it goes
/// out, settled with what it used after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub input: u64,
    pub output: u64,
}

/// Output tokens reserved for an answer that sets no `max_tokens`, and the most reserved.
const ANSWER_ESTIMATE: u64 = 1024;
const ANSWER_ESTIMATE_MAX: u64 = 4096;

impl Estimate {
    /// For text sent: about four characters a token.
    pub fn of_text(chars: usize) -> u64 {
        (chars as u64).div_ceil(4)
    }

    /// For an OpenAI-format chat body: its messages' text, and `max_tokens` (or
    /// `max_completion_tokens`) for the answer, 1,024 when unset, at most 4,096.
    pub fn chat(body: &Value) -> Estimate {
        let asked = body["max_tokens"].as_u64().or_else(|| body["max_completion_tokens"].as_u64());
        Estimate {
            input: Estimate::of_text(body["messages"].to_string().len()),
            output: asked.unwrap_or(ANSWER_ESTIMATE).min(ANSWER_ESTIMATE_MAX),
        }
    }
}

/// One AI call being made: its estimate is reserved when it starts and it is settled once, when
/// `record` is called or, if it never is (the client went away, an early return), when it is
/// dropped: then the estimate stands, with status 499. Its `ai_usage` row is written by the
/// meter shortly after.
pub struct Call {
    pub tenant: TenantId,
    pub key_id: Option<String>,
    pub provider: String,
    pub model: String,
    pub operation: &'static str,
    pub started: Instant,
    /// The provider instance's configuration, for its prices.
    pub instance: Option<Value>,
    app: App,
    created_at: String,
    estimate: Estimate,
    /// What the call reserved; taken when it settles.
    hold: Option<Hold>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("tenant", &self.tenant)
            .field("provider", &self.provider)
            .field("model", &self.model)
            .finish()
    }
}

/// The status a call is recorded with when its client went away before it ended.
pub const CLIENT_GONE: u16 = 499;

impl Call {
    /// Starts a call: reserves `estimate` for it, so that concurrent calls never pass the budget
    /// or `ai_tokens` by more than one call. 403 `BUDGET_EXCEEDED` or `FEATURE_LIMIT_REACHED`
    /// when nothing is left.
    pub async fn start(app: &App, base: CallBase, estimate: Estimate) -> ApiResult<Call> {
        let cost = app.ai_prices.cost(base.instance.as_ref(), &base.model, estimate.input, estimate.output);
        let tokens = (estimate.input + estimate.output) as i64;
        let hold = Hold { cost, tokens };
        app.ai_meter.reserve(app, &base.tenant, hold).await?;
        Ok(Call {
            tenant: base.tenant,
            key_id: base.key_id,
            provider: base.provider,
            model: base.model,
            operation: base.operation,
            started: Instant::now(),
            instance: base.instance,
            app: app.clone(),
            created_at: time::to_db(&time::now()),
            estimate,
            hold: Some(hold),
        })
    }

    /// The input tokens reserved: what stands for a stream whose provider never said.
    pub fn reserved_input(&self) -> u64 {
        self.estimate.input
    }

    /// Records what the call used, once.
    /// A successful answer that reports no usage at all leaves the estimate standing: a
    /// provider that does not count is not free.
    pub fn record(&mut self, status: u16, input: u64, output: u64) {
        let reported = input > 0 || output > 0 || !(200..300).contains(&status);
        self.settle(reported.then_some((input, output)), status);
    }

    /// Records what the call used (`None`: the estimate stands), once, and ends it.
    pub fn record_used(mut self, status: u16, used: Option<(u64, u64)>) {
        self.settle(used, status);
    }

    /// Gives the reservation back and hands the call's row to the meter: what was used (`None`:
    /// the estimate), its cost, its latency and its status.
    fn settle(&mut self, used: Option<(u64, u64)>, status: u16) {
        let Some(hold) = self.hold.take() else { return };
        let (input, output) = used.unwrap_or((self.estimate.input, self.estimate.output));
        let row = Row {
            id: id::new_id(prefix::AI_USAGE),
            tenant: self.tenant.to_string(),
            key_id: self.key_id.clone(),
            provider: self.provider.clone(),
            model: self.model.clone(),
            operation: self.operation,
            input_tokens: input as i64,
            output_tokens: output as i64,
            cost_nano_usd: self.app.ai_prices.cost(self.instance.as_ref(), &self.model, input, output),
            latency_ms: self.started.elapsed().as_millis() as i64,
            status: i64::from(status),
            created_at: std::mem::take(&mut self.created_at),
        };
        self.app.ai_meter.settle(hold, row);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Never settled: the client went away mid-call, or a path returned early. The
        // reservation stands as what it used.
        self.settle(None, CLIENT_GONE);
    }
}

/// What a call is before it starts: who makes it, to which provider and model.
#[derive(Debug, Clone)]
pub struct CallBase {
    pub tenant: TenantId,
    pub key_id: Option<String>,
    pub provider: String,
    pub model: String,
    pub operation: &'static str,
    pub instance: Option<Value>,
}

fn month_start() -> String {
    let now = time::now();
    format!("{:04}-{:02}-01T00:00:00.000000Z", now.year(), now.month())
}

pub(super) async fn spent_this_month(conn: &mut sqlx::AnyConnection, tenant: &TenantId) -> ApiResult<i64> {
    let (spent,): (Option<i64>,) = sqlx::query_as(
        "SELECT CAST(SUM(cost_nano_usd) AS BIGINT) FROM ai_usage WHERE tenant_id = $1 AND created_at >= $2",
    )
    .bind(tenant)
    .bind(month_start())
    .fetch_one(&mut *conn)
    .await?;
    Ok(spent.unwrap_or(0))
}

pub(super) async fn budget_of(conn: &mut sqlx::AnyConnection, tenant: &TenantId) -> ApiResult<Option<String>> {
    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT ai_budget_usd FROM ai_settings WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.and_then(|(budget,)| budget))
}

/// The monthly budget.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// US dollars per calendar month (UTC) as a decimal string, or `null` for none.
    #[schema(value_type = Option<crate::http::shapes::Amount>)]
    pub ai_budget_usd: Option<String>,
}

/// The budget with this month's spend.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetView {
    pub ai_budget_usd: Option<String>,
    pub spent_usd: String,
    pub remaining_usd: Option<String>,
    /// `YYYY-MM`.
    pub period: String,
}

async fn budget_view(conn: &mut sqlx::AnyConnection, tenant: &TenantId) -> ApiResult<BudgetView> {
    let budget = budget_of(conn, tenant).await?;
    let spent = spent_this_month(conn, tenant).await?;
    let remaining = budget.as_deref().and_then(nano).map(|b| dollars((b - spent).max(0)));
    Ok(BudgetView {
        ai_budget_usd: budget,
        spent_usd: dollars(spent),
        remaining_usd: remaining,
        period: month_start()[..7].to_string(),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// `summary` for the spend breakdown; the daily breakdown when absent.
    #[param(pattern = "^summary$")]
    pub view: Option<String>,
    /// First day (`YYYY-MM-DD`, UTC); the first of this month by default.
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last day, included; today by default.
    #[param(format = Date)]
    pub to: Option<String>,
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(usage)).routes(routes!(get_budget, put_budget))
}

type Group = (String, String, String, i64, i64, i64, i64);

/// AI usage
///
/// Calls, tokens and cost by day, provider and model (`from`/`to`, this month by default);
/// `?view=summary` answers the spend breakdown: totals, by provider, by model, and the budget.
#[utoipa::path(get, path = "/v1/ai-usage", tag = "AI", security(("bearer" = [])),
    params(UsageQuery),
    responses((status = 200, body = crate::http::response::Envelope<Object>)))]
async fn usage(auth: Auth, State(app): State<App>, Query(query): Query<UsageQuery>) -> ApiResult<Data<Value>> {
    auth.require(AI_USAGE_READ)?;
    let tenant = auth.tenant()?;
    let mut errors = FieldErrors::default();
    let day = |field: &str, text: &Option<String>, errors: &mut FieldErrors| {
        text.as_deref().map(|t| {
            chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").map(|d| d.to_string()).unwrap_or_else(|_| {
                errors.add(field, "must be a date, `YYYY-MM-DD`");
                String::new()
            })
        })
    };
    let from = day("from", &query.from, &mut errors).unwrap_or_else(|| month_start()[..10].to_string());
    let to = day("to", &query.to, &mut errors).unwrap_or_else(|| time::now().date_naive().to_string());
    if query.view.as_deref().is_some_and(|v| v != "summary") {
        errors.add("view", "must be `summary` or absent");
    }
    errors.finish()?;
    let (start, end) = (format!("{from}T00:00:00.000000Z"), format!("{to}T23:59:59.999999Z"));
    // Calls answered a moment ago are counted.
    app.ai_meter.flush(&app.db).await?;
    let mut conn = app.db.pool().acquire().await?;
    let rows: Vec<Group> = sqlx::query_as(
        "SELECT SUBSTR(created_at, 1, 10) AS day, provider, model, COUNT(*) AS calls, \
         CAST(SUM(input_tokens) AS BIGINT) AS input, CAST(SUM(output_tokens) AS BIGINT) AS output, \
         CAST(SUM(cost_nano_usd) AS BIGINT) AS cost FROM ai_usage \
         WHERE tenant_id = $1 AND created_at >= $2 AND created_at <= $3 \
         GROUP BY SUBSTR(created_at, 1, 10), provider, model ORDER BY day, provider, model",
    )
    .bind(tenant)
    .bind(&start)
    .bind(&end)
    .fetch_all(&mut *conn)
    .await?;
    let entry = |calls: i64, input: i64, output: i64, cost: i64| json!({ "calls": calls, "input_tokens": input, "output_tokens": output, "total_tokens": input + output, "cost_usd": dollars(cost) });
    if query.view.is_none() {
        let days: Vec<Value> = rows
            .iter()
            .map(|(day, provider, model, calls, input, output, cost)| {
                let mut row = entry(*calls, *input, *output, *cost);
                row["day"] = json!(day);
                row["provider"] = json!(provider);
                row["model"] = json!(model);
                row
            })
            .collect();
        return Ok(Data(json!({ "from": from, "to": to, "usage": days })));
    }
    let mut by_provider: std::collections::BTreeMap<&str, (i64, i64, i64, i64)> = Default::default();
    let mut by_model: std::collections::BTreeMap<(&str, &str), (i64, i64, i64, i64)> = Default::default();
    let mut total = (0, 0, 0, 0);
    for (_, provider, model, calls, input, output, cost) in &rows {
        for sum in
            [by_provider.entry(provider).or_default(), by_model.entry((provider, model)).or_default(), &mut total]
        {
            sum.0 += calls;
            sum.1 += input;
            sum.2 += output;
            sum.3 += cost;
        }
    }
    let providers: Vec<Value> = by_provider
        .iter()
        .map(|(provider, s)| {
            let mut row = entry(s.0, s.1, s.2, s.3);
            row["provider"] = json!(provider);
            row
        })
        .collect();
    let models: Vec<Value> = by_model
        .iter()
        .map(|((provider, model), s)| {
            let mut row = entry(s.0, s.1, s.2, s.3);
            row["provider"] = json!(provider);
            row["model"] = json!(model);
            row
        })
        .collect();
    let budget = budget_view(&mut conn, tenant).await?;
    Ok(Data(json!({
        "from": from,
        "to": to,
        "total": entry(total.0, total.1, total.2, total.3),
        "by_provider": providers,
        "by_model": models,
        "budget": budget,
    })))
}

/// Get the AI budget
#[utoipa::path(get, path = "/v1/ai/budget", tag = "AI", security(("bearer" = [])),
    responses((status = 200, body = crate::http::response::Envelope<BudgetView>)))]
async fn get_budget(auth: Auth, State(app): State<App>) -> ApiResult<Data<BudgetView>> {
    auth.require(AI_BUDGET_READ)?;
    app.ai_meter.flush(&app.db).await?;
    let mut conn = app.db.pool().acquire().await?;
    Ok(Data(budget_view(&mut conn, auth.tenant()?).await?))
}

/// Set the AI budget
///
/// US dollars per calendar month (UTC); once this month's spend reaches it, AI calls answer 403
/// `BUDGET_EXCEEDED` without reaching a provider. `null` removes it.
#[utoipa::path(put, path = "/v1/ai/budget", tag = "AI", security(("bearer" = [])),
    request_body = Budget,
    responses((status = 200, body = crate::http::response::Envelope<BudgetView>),
              (status = 422, body = crate::http::error::ErrorBody)))]
async fn put_budget(auth: Auth, State(app): State<App>, Json(body): Json<Budget>) -> ApiResult<Data<BudgetView>> {
    auth.require(AI_BUDGET_WRITE)?;
    let tenant = auth.tenant()?;
    let budget = match body.ai_budget_usd.as_deref() {
        None => None,
        Some(text) => match Decimal::from_str(text) {
            Ok(value) if crate::names::is_amount(text) => Some(value.normalize().to_string()),
            _ => {
                return Err(ApiError::invalid(
                    "ai_budget_usd",
                    "must be a non-negative decimal string, such as `25.00`",
                ))
            }
        },
    };
    // Before the write: the spend shown counts calls answered a moment ago.
    app.ai_meter.flush(&app.db).await?;
    let mut tx = app.db.begin_write().await?;
    sqlx::query(
        "INSERT INTO ai_settings (tenant_id, provider_priority, ai_budget_usd, updated_at) VALUES ($1, '[]', $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET ai_budget_usd = excluded.ai_budget_usd, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(&budget)
    .bind(time::to_db(&time::now()))
    .execute(&mut *tx)
    .await?;
    let entry = Entry {
        action: "ai.budget_set",
        resource_type: "ai_settings",
        resource_id: tenant.as_str(),
        changes: json!({ "ai_budget_usd": budget }),
    };
    audit::record(&mut *tx, &Who::from(&auth), None, entry).await?;
    let view = budget_view(&mut tx, tenant).await?;
    tx.commit().await?;
    app.ai_meter.forget(Some(tenant));
    Ok(Data(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_costs() {
        let prices = Prices::load(Some(r#"{"my-model": {"input_per_mtok": "1.5", "output_per_mtok": 2}}"#)).unwrap();
        // 1,000 input and 500 output tokens of gpt-4o-mini: 0.00015 + 0.0003 dollars.
        assert_eq!(prices.cost(None, "gpt-4o-mini", 1_000, 500), 450_000);
        assert_eq!(dollars(450_000), "0.00045");
        assert_eq!(dollars(287_310), "0.00028731");
        assert_eq!(prices.cost(None, "my-model", 1_000_000, 1_000_000), 3_500_000_000);
        assert_eq!(prices.cost(None, "unknown", 1_000, 1_000), 0);
        let own = json!({ "prices": { "gpt-4o-mini": { "input_per_mtok": "10", "output_per_mtok": "0" } } });
        assert_eq!(prices.cost(Some(&own), "gpt-4o-mini", 1_000, 1_000), 10_000_000);
        assert!(Prices::load(Some("[1]")).is_err());
        assert!(Prices::load(Some(r#"{"m": {"input_per_mtok": "-1", "output_per_mtok": "1"}}"#)).is_err());
    }
}
