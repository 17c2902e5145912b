//! `GET /metrics`: the server's metrics in Prometheus's text format, for a scraper that holds the
//! `--metrics-token`; off (404) when none is set. Requests by route template, method and status
//! with latency histograms are recorded as they are answered (`plinth_core::metrics::track`); the
//! database pool, jobs by kind and state with the oldest one's age, webhook deliveries by outcome,
//! AI calls, tokens and cost by provider, and this node's realtime connections are read when
//! scraped. No label carries a tenant's data: an AI provider instance (named by its tenant) is
//! counted as `instance`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::http::{ApiError, ApiResult, ErrorCode};
use crate::metrics::Gauges;
use crate::time;

/// Metrics (Prometheus)
///
/// The server's metrics in Prometheus's text format. Only with the server's `--metrics-token`
/// as the bearer (not an API key); 404 while no token is set.
#[utoipa::path(get, path = "/metrics", tag = "Health",
    responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text format 0.0.4"),
              (status = 401, body = crate::http::error::ErrorBody, description = "Not the metrics token (`UNAUTHORIZED`)"),
              (status = 404, body = crate::http::error::ErrorBody, description = "Metrics are off: no `--metrics-token` is set")))]
async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(token) = app.config.metrics_token.as_ref() else {
        return ApiError::new(ErrorCode::NotFound, "metrics are off: start the server with --metrics-token")
            .into_response();
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|given| crate::secrets::constant_time_eq(given.as_bytes(), token.expose().as_bytes())) {
        return ApiError::unauthorized("the metrics token is required").into_response();
    }
    match scrape(&app).await {
        Ok(text) => {
            let mut response = text.into_response();
            let kind = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
            response.headers_mut().insert(header::CONTENT_TYPE, kind);
            response
        }
        Err(error) => error.into_response(),
    }
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// What was recorded, then the gauges read now.
async fn scrape(app: &App) -> ApiResult<String> {
    let mut gauges = Gauges::default();
    let pool = app.db.pool();
    let (open, idle) = (f64::from(pool.size()), pool.num_idle() as f64);
    gauges
        .gauge("plinth_db_pool_connections", "Database connections open, by state")
        .sample("plinth_db_pool_connections", &[("state", "in_use")], open - idle)
        .sample("plinth_db_pool_connections", &[("state", "idle")], idle);
    gauges.gauge("plinth_db_pool_max_connections", "The most database connections the pool opens").sample(
        "plinth_db_pool_max_connections",
        &[],
        f64::from(app.config.storage.db_max_connections),
    );

    let jobs: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT kind, status, COUNT(*), MIN(created_at) FROM jobs GROUP BY kind, status ORDER BY kind, status",
    )
    .fetch_all(pool)
    .await?;
    gauges.gauge("plinth_jobs", "Jobs in the jobs table, by kind and state (`failed`: dead, kept for replay)");
    let now = time::now();
    let mut oldest: BTreeMap<&str, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for (kind, status, count, created) in &jobs {
        let state = if status == "dead" { "failed" } else { status.as_str() };
        gauges.sample("plinth_jobs", &[("kind", kind), ("state", state)], *count as f64);
        if status != "dead" {
            if let Ok(created) = time::from_db(created) {
                let first = oldest.entry(kind.as_str()).or_insert(created);
                *first = (*first).min(created);
            }
        }
    }
    gauges.gauge("plinth_jobs_oldest_age_seconds", "Age of the oldest job not yet done, by kind");
    for (kind, created) in oldest {
        let age = (now - created).num_milliseconds().max(0) as f64 / 1000.0;
        gauges.sample("plinth_jobs_oldest_age_seconds", &[("kind", kind)], age);
    }

    let deliveries: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status ORDER BY status")
            .fetch_all(pool)
            .await?;
    gauges.gauge("plinth_webhook_deliveries", "Webhook deliveries in the log, by outcome");
    for (status, count) in &deliveries {
        gauges.sample("plinth_webhook_deliveries", &[("outcome", status)], *count as f64);
    }

    let usage: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT provider, COUNT(*), CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) \
         FROM ai_usage GROUP BY provider",
    )
    .fetch_all(pool)
    .await?;
    let mut by_provider: BTreeMap<&str, [i64; 4]> = BTreeMap::new();
    for (provider, calls, input, output, cost) in &usage {
        let label = crate::ai::BUILT_IN.iter().find(|p| *p == provider).copied().unwrap_or("instance");
        let sums = by_provider.entry(label).or_default();
        for (sum, value) in sums.iter_mut().zip([calls, input, output, cost]) {
            *sum += value;
        }
    }
    gauges.gauge("plinth_ai_calls", "AI calls recorded in the usage log, by provider");
    for (provider, [calls, ..]) in &by_provider {
        gauges.sample("plinth_ai_calls", &[("provider", provider)], *calls as f64);
    }
    gauges.gauge("plinth_ai_tokens", "AI tokens recorded in the usage log, by provider and direction");
    for (provider, [_, input, output, _]) in &by_provider {
        gauges.sample("plinth_ai_tokens", &[("provider", provider), ("direction", "input")], *input as f64);
        gauges.sample("plinth_ai_tokens", &[("provider", provider), ("direction", "output")], *output as f64);
    }
    gauges.gauge("plinth_ai_cost_usd", "AI cost recorded in the usage log, by provider, in US dollars");
    for (provider, [.., cost]) in &by_provider {
        gauges.sample("plinth_ai_cost_usd", &[("provider", provider)], *cost as f64 / 1e9);
    }

    gauges.gauge("plinth_realtime_connections", "Realtime connections open on this node, by kind");
    for (kind, count) in app.realtime.counts() {
        gauges.sample("plinth_realtime_connections", &[("kind", kind)], count as f64);
    }
    Ok(app.metrics.render() + &gauges.into_text())
}
