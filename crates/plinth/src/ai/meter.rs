//! What AI calls spend, kept in memory and written in batches: a call is checked against its
//! tenant's monthly budget and `ai_tokens` and its estimate reserved without a database trip, and
//! its `ai_usage` row is written with others a few tens of milliseconds after it ended, in one
//! transaction that also counts the tokens.
//!
//! A node knows each tenant's written spend and token count (read at most once a second, so that
//! other nodes' calls count within a second), what it settled and has not written yet, and what
//! its calls in flight reserved; a call goes out only while the three stay under the budget and
//! the limit, so concurrent calls on one node never pass either by more than one call. A crash
//! loses the rows of the last `FLUSH_AFTER` and of the calls in flight, never more.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::db::Db;
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::app::App;
use crate::entitlements::{self, Entitlement};
use crate::http::{ApiError, ApiResult, ErrorCode};
use crate::id::TenantId;

/// How long a settled call's row waits in memory, gathering others, before it is written.
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// How long a tenant's written spend and limits are trusted before they are read again.
const LOADED_FOR: Duration = Duration::from_secs(1);

/// The most rows kept when writing keeps failing; older ones are dropped (and logged) past it.
const PENDING_MAX: usize = 100_000;

/// A call's `ai_usage` row, settled and waiting to be written.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub tenant: String,
    pub key_id: Option<String>,
    pub provider: String,
    pub model: String,
    pub operation: &'static str,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nano_usd: i64,
    pub latency_ms: i64,
    pub status: i64,
    pub created_at: String,
}

/// What a call holds while in flight: its estimate, given back when it settles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hold {
    pub cost: i64,
    pub tokens: i64,
}

/// A tenant's written figures, as read from the database.
#[derive(Debug, Clone)]
struct Written {
    at: Instant,
    month: String,
    /// The budget as set (dollars, a decimal string) and in nano-dollars.
    budget: Option<(String, i64)>,
    spent: i64,
    token_limit: Option<i64>,
    tokens: i64,
}

/// What one node knows of a tenant's spend.
#[derive(Debug, Default)]
struct Ledger {
    written: Option<Written>,
    /// Settled on this node, not yet written.
    unwritten: Hold,
    /// Reserved by this node's calls in flight.
    reserved: Hold,
}

impl Ledger {
    fn fresh(&self, month: &str) -> Option<&Written> {
        self.written.as_ref().filter(|w| w.at.elapsed() < LOADED_FOR && w.month == month)
    }
}

#[derive(Debug, Default)]
pub struct Meter {
    ledgers: Mutex<HashMap<String, Ledger>>,
    pending: Mutex<Vec<Row>>,
    /// Held for a whole write, and while a tenant's figures are read, so that what has left
    /// memory is either counted as written or as unwritten, never both or neither.
    writing: tokio::sync::Mutex<()>,
    wake: Notify,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn this_month() -> String {
    crate::time::today()[..7].to_string()
}

impl Meter {
    /// Refuses a call of `tenant` when its budget or `ai_tokens` are used up (403
    /// `BUDGET_EXCEEDED`, `FEATURE_LIMIT_REACHED`); reserves nothing.
    pub async fn check(&self, app: &App, tenant: &TenantId) -> ApiResult<()> {
        self.reserve(app, tenant, Hold::default()).await
    }

    /// Checks as `check` does and reserves `hold` for a call in flight, in one step.
    pub async fn reserve(&self, app: &App, tenant: &TenantId, hold: Hold) -> ApiResult<()> {
        let month = this_month();
        let mut read = false;
        loop {
            {
                let mut ledgers = locked(&self.ledgers);
                let ledger = ledgers.entry(tenant.to_string()).or_default();
                // Once read for this call, the figures stand even if they age meanwhile; they
                // are taken under the same lock as what this node holds, so that a write moving
                // rows from one to the other is seen whole.
                let usable = if read { ledger.written.clone() } else { ledger.fresh(&month).cloned() };
                if let Some(written) = usable {
                    return Self::hold(ledger, app, &written, hold);
                }
            }
            // Not read yet, stale, or forgotten by a change since it was read.
            self.load(app, tenant, &month).await?;
            read = true;
        }
    }

    /// Refuses, or reserves `hold` against `written` and what this node holds.
    fn hold(ledger: &mut Ledger, app: &App, written: &Written, hold: Hold) -> ApiResult<()> {
        let spent = written.spent + ledger.unwritten.cost + ledger.reserved.cost;
        if let Some((budget, nano)) = &written.budget {
            if spent >= *nano {
                return Err(over_budget(budget, spent));
            }
        }
        if let Some(limit) = written.token_limit {
            let used = written.tokens + ledger.unwritten.tokens + ledger.reserved.tokens;
            if used >= limit {
                return Err(entitlements::limit_reached(app, Entitlement::AiTokens.feature(), used, limit));
            }
        }
        ledger.reserved.cost += hold.cost;
        ledger.reserved.tokens += hold.tokens;
        Ok(())
    }

    /// Reads a tenant's written figures, unless another call just did.
    async fn load(&self, app: &App, tenant: &TenantId, month: &str) -> ApiResult<()> {
        let _consistent = self.writing.lock().await;
        if locked(&self.ledgers).get(tenant.as_str()).is_some_and(|l| l.fresh(month).is_some()) {
            return Ok(());
        }
        let mut conn = app.db.pool().acquire().await?;
        let budget = super::usage::budget_of(&mut conn, tenant).await?;
        let budget = budget.and_then(|text| super::usage::nano(&text).map(|nano| (text, nano)));
        let spent = super::usage::spent_this_month(&mut conn, tenant).await?;
        let token_limit = entitlements::limit(&mut conn, app, tenant, Entitlement::AiTokens).await?;
        let tokens = entitlements::used_now(&mut conn, tenant, Entitlement::AiTokens).await?;
        let written = Written { at: Instant::now(), month: month.to_string(), budget, spent, token_limit, tokens };
        locked(&self.ledgers).entry(tenant.to_string()).or_default().written = Some(written);
        Ok(())
    }

    /// Settles a call: its hold is given back and its row waits to be written.
    pub fn settle(&self, hold: Hold, row: Row) {
        {
            let mut ledgers = locked(&self.ledgers);
            let ledger = ledgers.entry(row.tenant.clone()).or_default();
            ledger.reserved.cost -= hold.cost;
            ledger.reserved.tokens -= hold.tokens;
            ledger.unwritten.cost += row.cost_nano_usd;
            ledger.unwritten.tokens += row.input_tokens + row.output_tokens;
        }
        locked(&self.pending).push(row);
        self.wake.notify_one();
    }

    /// Forgets the written figures of `tenant` (its budget changed), or of every tenant (a
    /// limit or tier changed), so that they are read again before the next call.
    pub fn forget(&self, tenant: Option<&TenantId>) {
        let mut ledgers = locked(&self.ledgers);
        match tenant {
            Some(tenant) => {
                if let Some(ledger) = ledgers.get_mut(tenant.as_str()) {
                    ledger.written = None;
                }
            }
            None => ledgers.values_mut().for_each(|ledger| ledger.written = None),
        }
    }

    /// Writes every settled row in one transaction, counting their tokens; on failure they are
    /// kept for the next write. Readers of `ai_usage` call it first, to see every call answered.
    pub async fn flush(&self, db: &Db) -> Result<(), sqlx::Error> {
        let _exclusive = self.writing.lock().await;
        let rows = std::mem::take(&mut *locked(&self.pending));
        if rows.is_empty() {
            return Ok(());
        }
        match write(db, &rows).await {
            Ok(()) => {
                let mut ledgers = locked(&self.ledgers);
                for row in &rows {
                    let Some(ledger) = ledgers.get_mut(&row.tenant) else { continue };
                    let tokens = row.input_tokens + row.output_tokens;
                    ledger.unwritten.cost -= row.cost_nano_usd;
                    ledger.unwritten.tokens -= tokens;
                    if let Some(written) = ledger.written.as_mut() {
                        written.spent += row.cost_nano_usd;
                        written.tokens += tokens;
                    }
                }
                Ok(())
            }
            Err(error) => {
                let mut pending = locked(&self.pending);
                let mut kept = rows;
                kept.append(&mut pending);
                if kept.len() > PENDING_MAX {
                    let dropped = kept.len() - PENDING_MAX;
                    tracing::error!(dropped, "AI usage rows dropped: writing them keeps failing");
                    kept.drain(..dropped);
                }
                *pending = kept;
                Err(error)
            }
        }
    }

    /// Writes settled rows as they come, `FLUSH_AFTER` after the first of each batch, until
    /// `stop`; the last rows are written at shutdown.
    pub async fn run(app: App, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = app.ai_meter.wake.notified() => {}
                _ = stop.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_AFTER) => {}
                _ = stop.changed() => return,
            }
            if let Err(error) = app.ai_meter.flush(&app.db).await {
                tracing::warn!(%error, "writing AI usage failed; will retry");
                app.ai_meter.wake.notify_one();
            }
        }
    }
}

fn over_budget(budget: &str, spent: i64) -> ApiError {
    let mut error = ApiError::new(
        ErrorCode::BudgetExceeded,
        format!(
            "this month's AI budget of ${budget} is spent (${}): raise it with PUT /v1/ai/budget",
            super::usage::dollars(spent)
        ),
    );
    error.extra.insert("budget_usd".into(), json!(budget));
    error.extra.insert("spent_usd".into(), json!(super::usage::dollars(spent)));
    error
}

/// How many rows one statement writes: as many of the largest as fit, then of the next. Each
/// shape is prepared once.
const SHAPES: [usize; 3] = [16, 4, 1];
const COLUMNS: usize = 12;

/// The insert of `rows` rows, skipping those whose tenant is gone meanwhile.
fn insert(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=COLUMNS).map(|column| format!("${}", row * COLUMNS + column)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO ai_usage (id, tenant_id, key_id, provider, model, operation, input_tokens, output_tokens, \
         cost_nano_usd, latency_ms, status, created_at) SELECT * FROM (VALUES {}) AS v \
         WHERE EXISTS (SELECT 1 FROM tenants WHERE id = v.column2)",
        values.join(", ")
    )
}

fn insert_sql(shape: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[String; SHAPES.len()]> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| SHAPES.map(insert));
    let index = SHAPES.iter().position(|n| *n == shape).unwrap_or(SHAPES.len() - 1);
    &all[index]
}

/// `rows` cut into statements of the shapes.
fn statements(mut rows: &[Row]) -> Vec<&[Row]> {
    let mut out = Vec::new();
    for shape in SHAPES {
        while rows.len() >= shape {
            let (head, rest) = rows.split_at(shape);
            out.push(head);
            rows = rest;
        }
    }
    out
}

async fn write(db: &Db, rows: &[Row]) -> Result<(), sqlx::Error> {
    let mut tokens: HashMap<&str, i64> = HashMap::new();
    for row in rows {
        *tokens.entry(&row.tenant).or_default() += row.input_tokens + row.output_tokens;
    }
    let mut tx = db.begin_write().await?;
    for chunk in statements(rows) {
        let mut query = sqlx::query(insert_sql(chunk.len()));
        for row in chunk {
            query = query
                .bind(&row.id)
                .bind(&row.tenant)
                .bind(&row.key_id)
                .bind(&row.provider)
                .bind(&row.model)
                .bind(row.operation)
                .bind(row.input_tokens)
                .bind(row.output_tokens)
                .bind(row.cost_nano_usd)
                .bind(row.latency_ms)
                .bind(row.status)
                .bind(&row.created_at);
        }
        query.execute(&mut *tx).await?;
    }
    // In tenant order, so that nodes writing the same counters lock them in the same order.
    let mut tokens: Vec<_> = tokens.into_iter().filter(|(_, n)| *n > 0).collect();
    tokens.sort();
    for (tenant, n) in tokens {
        entitlements::add_if_tenant(&mut tx, tenant, Entitlement::AiTokens, n).await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize) -> Row {
        Row {
            id: format!("aiu_{n}"),
            tenant: "tn_1".into(),
            key_id: None,
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            operation: "chat",
            input_tokens: 1,
            output_tokens: 1,
            cost_nano_usd: 1,
            latency_ms: 1,
            status: 200,
            created_at: String::new(),
        }
    }

    #[test]
    fn rows_go_in_few_prepared_shapes() {
        let rows: Vec<Row> = (0..39).map(row).collect();
        let sizes: Vec<usize> = statements(&rows).iter().map(|s| s.len()).collect();
        assert_eq!(sizes, [16, 16, 4, 1, 1, 1]);
        assert!(statements(&[]).is_empty());
        assert!(insert_sql(4).contains("($37, $38, $39, $40, $41, $42, $43, $44, $45, $46, $47, $48)"));
        assert!(!insert_sql(1).contains("$13"));
    }
}
