//! Public routes: health and readiness probes, the landing page and the API reference.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::http::{ApiError, ApiResult, Data, ErrorCode};
use crate::time;

const SWAGGER_JS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui.css");
const LANDING: &str = include_str!("../assets/landing.html");
const DOCS: &str = include_str!("../assets/docs.html");

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(landing))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(docs))
        .routes(routes!(openapi_json))
        .routes(routes!(docs_script))
        .routes(routes!(docs_stylesheet))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub service: String,
    pub version: String,
    pub region: String,
    /// Time since start, such as `3h 12m 5s`.
    pub uptime: String,
    pub uptime_seconds: u64,
    pub timestamp: DateTime<Utc>,
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// Health check
///
/// Service status, version, region and uptime. Does not touch the database.
#[utoipa::path(get, path = "/health", tag = "Public",
    responses((status = 200, body = crate::http::response::Envelope<Health>)))]
async fn health(State(app): State<App>) -> Data<Health> {
    let uptime_seconds = app.started_at.elapsed().as_secs();
    Data(Health {
        status: "ok".into(),
        service: "plinth".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        region: app.config.region.clone(),
        uptime: human_duration(uptime_seconds),
        uptime_seconds,
        timestamp: time::now(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    pub status: String,
    pub service: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    pub timestamp: DateTime<Utc>,
}

/// Readiness probe
///
/// 200 when the database answers, 503 `UPSTREAM_UNAVAILABLE` when it does not.
#[utoipa::path(get, path = "/ready", tag = "Public",
    responses((status = 200, body = crate::http::response::Envelope<Ready>),
              (status = 503, body = crate::http::error::ErrorBody)))]
async fn ready(State(app): State<App>) -> ApiResult<Data<Ready>> {
    if let Err(error) = app.db.ping().await {
        tracing::warn!(%error, "readiness check failed");
        return Err(ApiError::new(ErrorCode::UpstreamUnavailable, "the database is not reachable"));
    }
    let database = match app.db.backend() {
        crate::db::Backend::Sqlite => "sqlite",
        crate::db::Backend::Postgres => "postgres",
    };
    Ok(Data(Ready {
        status: "ready".into(),
        service: "plinth".into(),
        database: database.into(),
        timestamp: time::now(),
    }))
}

/// Landing page
#[utoipa::path(get, path = "/", tag = "Public", responses((status = 200, content_type = "text/html", body = String)))]
async fn landing() -> Html<&'static str> {
    Html(LANDING)
}

/// API reference
///
/// The interactive API reference. Its assets are embedded in the binary.
#[utoipa::path(get, path = "/docs", tag = "Public", responses((status = 200, content_type = "text/html", body = String)))]
async fn docs() -> Html<&'static str> {
    Html(DOCS)
}

/// OpenAPI document
///
/// This document: OpenAPI 3.1, generated from the code that serves the routes.
#[utoipa::path(get, path = "/docs/openapi.json", tag = "Public",
    responses((status = 200, content_type = "application/json", body = Object)))]
async fn openapi_json(State(app): State<App>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], app.openapi_json.clone()).into_response()
}

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
        ],
        bytes,
    )
        .into_response()
}

/// API reference script
#[utoipa::path(get, path = "/docs/assets/swagger-ui-bundle.js", tag = "Public",
    responses((status = 200, content_type = "text/javascript", body = String)))]
async fn docs_script() -> Response {
    asset("text/javascript; charset=utf-8", SWAGGER_JS)
}

/// API reference stylesheet
#[utoipa::path(get, path = "/docs/assets/swagger-ui.css", tag = "Public",
    responses((status = 200, content_type = "text/css", body = String)))]
async fn docs_stylesheet() -> Response {
    asset("text/css; charset=utf-8", SWAGGER_CSS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_naturally() {
        assert_eq!(super::human_duration(5), "5s");
        assert_eq!(super::human_duration(65), "1m 5s");
        assert_eq!(super::human_duration(3_725), "1h 2m 5s");
        assert_eq!(super::human_duration(90_061), "1d 1h 1m 1s");
    }
}
