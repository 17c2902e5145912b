//! The application: shared state, the router with the contract's middleware, and the server
//! with its background maintenance and graceful shutdown.

use std::any::Any as PanicPayload;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::cache::CredentialCache;
use crate::config::{Config, Secret};
use crate::db::Db;
use crate::http::{openapi, request_id, ApiError, ErrorCode};
use crate::ratelimit::Limiter;
use crate::secrets::{self, MasterKey};
use crate::tokens::TokenKeys;
use crate::usage::UsageRecorder;
use crate::{audit, health, keys, public_keys, tenants, time, tokens};

/// How often pending usage is written.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Everything a handler may need. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppState>);

pub struct AppState {
    pub db: Db,
    pub config: Config,
    /// Hex SHA-256 of the platform admin key.
    pub admin_key_hash: String,
    pub token_keys: TokenKeys,
    /// Signs end users' access tokens.
    pub user_tokens: crate::users::sessions::UserTokenKeys,
    pub usage: UsageRecorder,
    /// What AI calls spend: budgets checked in memory, usage rows written in batches.
    pub ai_meter: crate::ai::meter::Meter,
    /// Verified credentials, so that a request needs no database round trip to authenticate.
    pub credentials: CredentialCache,
    /// When this node last wrote each session's activity.
    pub session_activity: crate::users::sessions::ActivityMarks,
    /// End users' live sessions with the roles they hold, for the same reason.
    pub sessions: crate::auth::cache::Cache<crate::users::sessions::LiveSession>,
    /// Object types with their properties and policies, for end users' requests.
    pub schemas: crate::auth::cache::Cache<crate::authz::access::TypeAccess>,
    /// Tenants' opened service credentials (`<tenant> <service>`), and their AI provider
    /// instances opened (`<tenant> <name>`), so that a gateway call needs no database trip to
    /// reach its provider. Kept like the caches above.
    pub vault_opened: crate::auth::cache::Cache<Option<serde_json::Map<String, serde_json::Value>>>,
    pub providers_opened: crate::auth::cache::Cache<Option<crate::ai::providers::Opened>>,
    /// Told of every change to credentials on this node, after every cache above has dropped
    /// it: long-lived streams check their credential again then.
    pub credential_changes: tokio::sync::watch::Sender<u64>,
    /// Rate-limit buckets: in memory, or shared through PostgreSQL.
    pub limiter: Limiter,
    /// Feature limits per plan tier.
    pub plans: crate::entitlements::Plans,
    /// Signs list cursors, so that a client cannot forge one.
    pub cursor_key: [u8; 32],
    /// Encrypts kept idempotent answers (a new key's secret may be in one).
    pub answer_key: [u8; 32],
    /// Wraps the tenants' data keys.
    pub wrap_key: [u8; 32],
    /// Calls to URLs that tenants give (webhooks): no redirects, SSRF-guarded.
    pub outbound: reqwest::Client,
    /// Calls to AI providers at the server's configured base URLs, and at tenants' own.
    pub ai_trusted: reqwest::Client,
    pub ai_guarded: reqwest::Client,
    /// Model prices, for the cost of AI calls.
    pub ai_prices: crate::ai::usage::Prices,
    /// Providers' model lists, kept five minutes.
    pub ai_models: crate::ai::calls::ModelCache,
    /// Where clients reach this server: `PLINTH_PUBLIC_URL`, or the listening address.
    pub public_url: String,
    /// How end users' emails leave.
    pub mailer: crate::messages::Mailer,
    /// Calls to services the operator configured (the SMS provider).
    pub services: reqwest::Client,
    /// Keys the hashes of one-time codes.
    pub code_key: [u8; 32],
    /// Stored file bytes.
    pub files: crate::files::Files,
    /// Signs the public links of uploads.
    pub link_key: [u8; 32],
    /// This node's realtime connections.
    pub realtime: crate::realtime::Hub,
    /// What this server recorded, for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Background work that requests start and that must finish before shutdown.
    pub tasks: crate::tasks::Tasks,
    pub started_at: Instant,
    pub openapi_json: axum::body::Bytes,
}

impl App {
    /// Call after a change to keys, tokens or tenants has committed: cached credentials are
    /// dropped, so the change holds from the next request on, and other nodes are told (on
    /// PostgreSQL), so that their open streams check their credentials again at once.
    pub fn credentials_changed(&self) {
        self.forget_credentials();
        if self.db.backend() == crate::db::Backend::Postgres {
            let app = self.clone();
            self.tasks.spawn("telling other nodes of a credential change", async move {
                if let Err(error) = crate::realtime::notify::credentials_changed(&app).await {
                    tracing::warn!(%error, "telling other nodes of a credential change failed");
                }
            });
        }
    }

    /// What `credentials_changed` does on this node alone: for a change another node made.
    pub fn forget_credentials(&self) {
        self.credentials.clear();
        self.sessions.clear();
        self.schemas.clear();
        self.vault_opened.clear();
        self.providers_opened.clear();
        self.usage.forget_quotas();
        self.ai_meter.forget(None);
        // Last: a stream that wakes on this must read nothing stale.
        self.credential_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Take before committing a change to object types or properties: until it drops (after
    /// the commit), cached schemas are not used; when it drops they are forgotten.
    #[must_use]
    pub fn schemas_changing(&self) -> SchemasChanging {
        self.schemas.begin_change();
        SchemasChanging(self.clone())
    }

    /// Take before committing a change to credentials: until it drops (after the commit, or
    /// when the request is abandoned mid-commit) nothing cached is used; when it drops, cached
    /// credentials are forgotten and open streams check theirs again.
    #[must_use]
    pub fn credentials_changing(&self) -> CredentialsChanging {
        self.credentials.begin_change();
        self.sessions.begin_change();
        self.schemas.begin_change();
        CredentialsChanging(self.clone())
    }
}

/// Drops cached schemas when it goes out of scope.
pub struct SchemasChanging(App);

impl Drop for SchemasChanging {
    fn drop(&mut self) {
        self.0.schemas.end_change();
    }
}

/// Drops cached credentials when it goes out of scope.
pub struct CredentialsChanging(App);

impl Drop for CredentialsChanging {
    fn drop(&mut self) {
        self.0.credentials.end_change();
        self.0.sessions.end_change();
        self.0.schemas.end_change();
        self.0.credentials_changed();
    }
}

impl axum::extract::FromRef<App> for crate::http::CursorKey {
    fn from_ref(app: &App) -> Self {
        crate::http::CursorKey(app.cursor_key)
    }
}

impl Deref for App {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    MasterKey(#[from] crate::secrets::MasterKeyError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("PLINTH_ADMIN_KEY must be at least {} characters", crate::limits::ADMIN_KEY_MIN_CHARS)]
    AdminKeyTooShort,
    #[error("PLINTH_METRICS_TOKEN must be at least {} characters", crate::limits::ADMIN_KEY_MIN_CHARS)]
    MetricsTokenTooShort,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Plans(String),
    #[error("creating the built-in roles: {0}")]
    Roles(String),
    #[error("the outbound HTTP client: {0}")]
    Outbound(#[from] reqwest::Error),
}

/// Every route, with its OpenAPI description.
fn api_routes() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::routes())
        .merge(tenants::routes())
        .merge(keys::routes())
        .merge(public_keys::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(crate::governance::routes())
        .merge(crate::entitlements::routes())
        .merge(crate::object_types::routes())
        .merge(crate::objects::properties::routes())
        .merge(crate::objects::routes())
        .merge(crate::webhooks::routes())
        .merge(crate::events::routes())
        .merge(crate::errors_report::routes())
        .merge(crate::analytics::routes())
        .merge(crate::dlq::routes())
        .merge(crate::inbound::routes())
        .merge(crate::realtime::routes())
        .merge(crate::vault::routes())
        .merge(crate::ai::routes())
        .merge(crate::files::routes())
        .merge(crate::users::routes())
        .merge(crate::authz::routes())
}

/// The lists that page with `ListParams`, by their operation's id.
const LISTS: &[(&str, &crate::http::list::ListSpec)] = &[
    ("list_providers", &crate::ai::providers::LIST),
    ("list_conversations", &crate::ai::conversations::LIST),
    ("list_audit_logs", &crate::audit::LIST),
    ("list_dlq_messages", &crate::dlq::LIST),
    ("list_events", &crate::events::routes_impl::LIST),
    ("list_sources", &crate::inbound::LIST),
    ("list_inbound_messages", &crate::inbound::MESSAGES),
    ("list_keys", &crate::keys::store::LIST),
    ("list_public_keys", &crate::public_keys::LIST),
    ("list_object_types", &crate::object_types::LIST),
    ("list_roles", &crate::authz::roles::LIST),
    ("list_tenants", &crate::tenants::store::LIST),
    ("list_users", &crate::users::admin::LIST),
    ("list_deliveries", &crate::webhooks::log::LIST),
    ("list_webhook_deliveries", &crate::webhooks::log::LIST),
    ("list_webhooks", &crate::webhooks::LIST),
];

/// The OpenAPI document of every route.
pub fn openapi_document() -> serde_json::Value {
    let (_, doc) = api_routes().merge(crate::scrape::routes()).split_for_parts();
    let mut doc = openapi::finish(doc);
    crate::ai::upstream::document_errors(&mut doc);
    openapi::describe_lists(&mut doc, LISTS);
    let Ok(mut document) = serde_json::to_value(&doc) else { return serde_json::Value::Null };
    crate::contract::apply(&mut document);
    document
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not accept that method")
}

fn panic_response(_payload: Box<dyn PanicPayload + Send + 'static>) -> Response {
    ApiError::internal("a handler panicked").into_response()
}

/// Refuses a declared body over the limit before reading it, naming the limit; and a path or
/// query holding a NUL character (`%00`), which PostgreSQL cannot store or compare with.
async fn limit_body(State(max): State<usize>, request: Request, next: Next) -> Response {
    let uri = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or_default();
    if uri.as_bytes().windows(3).any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0') {
        return ApiError::bad_request("the path or query may not hold the NUL character (`%00`)").into_response();
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let max = crate::limits::body_limit(request.uri().path(), max);
    if declared.is_some_and(|len| len > max) {
        return ApiError::new(ErrorCode::PayloadTooLarge, format!("request body exceeds the limit of {max} bytes"))
            .into_response();
    }
    next.run(request).await
}

/// Serves seed 001's names (`/v1/workspaces`, `/v1/api-keys`) by the canonical routes.
fn rewrite_aliases(mut request: Request) -> Request {
    if let Some(path) = openapi::canonical_path(request.uri().path()) {
        let target = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        if let Ok(uri) = target.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// The contract's answers for what no handler answers (unknown route, wrong method, body over
/// the limit, a panic), and request ids on everything.
fn with_contract<S: Clone + Send + Sync + 'static>(routes: Router<S>, max_body: usize, timeout: Duration) -> Router<S> {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(max_body, limit_body))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(timeout, bound_time))
        .layer(middleware::from_fn(request_id::assign))
}

/// Answers 504 `TIMEOUT` when a request is not answered in time (its body may stream on after).
/// The handler is dropped, and with it any transaction it held, which rolls back.
async fn bound_time(State(configured): State<Duration>, request: Request, next: Next) -> Response {
    let limit = crate::limits::request_timeout(request.uri().path(), configured);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let message =
                format!("the request was not answered within {} s; nothing it began was kept", limit.as_secs());
            ApiError::new(ErrorCode::Timeout, message).into_response()
        }
    }
}

/// Answers a request that may have written (any method but `GET`, `HEAD` and `OPTIONS`) only
/// after what it wrote is on disk: a 503 when the sync fails, since the write may not survive.
async fn synced(State(app): State<App>, request: Request, next: Next) -> Response {
    let may_write = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let response = next.run(request).await;
    if may_write {
        if let Err(error) = app.db.sync().await {
            tracing::error!(%error, "syncing the database log failed");
            let message = "the write was committed but could not be synced to disk; check its outcome before retrying";
            return ApiError::new(ErrorCode::Internal, message).into_response();
        }
    }
    response
}

/// The router with the contract's middleware, ready to serve.
pub fn router(app: App) -> Router {
    let max_body = app.config.max_body_bytes;
    let (routes, _) = api_routes().split_for_parts();
    // Outermost last: identify the caller, record refusals, draw from its rate limit, meter its
    // API calls, run a keyed write once, then the handler.
    let routes = routes
        .layer(middleware::from_fn_with_state(app.clone(), crate::idempotency::enforce))
        .layer(middleware::from_fn_with_state(app.clone(), crate::entitlements::meter_api_calls))
        .layer(middleware::from_fn_with_state(app.clone(), crate::ratelimit::enforce))
        .layer(middleware::from_fn_with_state(app.clone(), audit::record_refusals))
        .layer(middleware::from_fn_with_state(app.clone(), crate::auth::identify));
    // Outside every layer that writes: in `power-loss` mode a write is answered once it is on disk.
    let routes = if app.config.storage.durability == crate::db::Durability::PowerLoss {
        routes.layer(middleware::from_fn_with_state(app.clone(), synced))
    } else {
        routes
    };
    let timeout = Duration::from_secs(app.config.request_timeout_secs);
    // Counted outside everything else, so that every answer is counted as it was sent; the
    // metrics route stands outside the API's middleware but for request ids (its token is not a
    // credential).
    let (scrape, _) = crate::scrape::routes().split_for_parts();
    with_contract(routes, max_body, timeout)
        .layer(middleware::from_fn_with_state(app.metrics.clone(), crate::metrics::track))
        .merge(scrape.layer(middleware::from_fn(request_id::assign)))
        .with_state(app)
}

/// Resolves the platform admin credential: the configured one, the stored hash, or a new one
/// (returned so that it can be shown once).
async fn admin_key(db: &Db, configured: Option<&str>) -> Result<(String, Option<String>), StartupError> {
    if let Some(key) = configured.filter(|k| !k.is_empty()) {
        if key.chars().count() < crate::limits::ADMIN_KEY_MIN_CHARS {
            return Err(StartupError::AdminKeyTooShort);
        }
        return Ok((secrets::sha256_hex(key), None));
    }
    let stored = |db: Db| async move {
        sqlx::query_as::<_, (String,)>("SELECT value FROM platform_settings WHERE name = 'admin_key_hash'")
            .fetch_optional(db.pool())
            .await
    };
    if let Some((hash,)) = stored(db.clone()).await? {
        return Ok((hash, None));
    }
    let key = format!("plk_admin_{}", secrets::random_alphanumeric(43));
    let hash = secrets::sha256_hex(&key);
    sqlx::query(
        "INSERT INTO platform_settings (name, value, updated_at) VALUES ('admin_key_hash', $1, $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&hash)
    .bind(time::to_db(&time::now()))
    .execute(db.pool())
    .await?;
    // Another node may have won the race: only the stored key is valid.
    let (winner,) = stored(db.clone()).await?.unwrap_or((hash.clone(),));
    Ok(if winner == hash { (hash, Some(key)) } else { (winner, None) })
}

/// Connects to the database and applies migrations.
pub async fn open_database(config: &crate::config::StorageArgs) -> Result<Db, StartupError> {
    if config.database_url.as_deref().is_none_or(|u| u.trim().is_empty()) {
        std::fs::create_dir_all(&config.data_dir)?;
    }
    let settings = crate::db::PoolSettings {
        max_connections: config.db_max_connections,
        acquire_timeout: Duration::from_millis(config.db_acquire_timeout_ms),
        statement_timeout: Duration::from_millis(config.db_statement_timeout_ms),
        durability: config.durability,
    };
    let db = Db::connect_with(&config.database_url(), settings).await?;
    db.migrate().await?;
    crate::authz::roles::backfill_built_ins(&db).await.map_err(|e| StartupError::Roles(e.message))?;
    Ok(db)
}

/// A started server: migrated, listening, not yet serving.
pub struct Server {
    app: App,
    listener: TcpListener,
    /// The platform admin key, when this start generated it. Show it once.
    pub generated_admin_key: Option<String>,
}

impl Server {
    pub async fn start(config: Config) -> Result<Server, StartupError> {
        let master = MasterKey::load(config.master_key.as_ref().map(Secret::expose), &config.storage.data_dir)?;
        let db = open_database(&config.storage).await?.with_events_buffer(config.realtime_buffer);
        crate::outbox::subscribe(&db, Arc::new(crate::webhooks::delivery::FanOut));
        if db.backend() == crate::db::Backend::Postgres {
            crate::outbox::subscribe(&db, Arc::new(crate::realtime::notify::TellOtherNodes));
        }
        if db.backend() == crate::db::Backend::Postgres && config.master_key.is_none() {
            tracing::warn!(
                "PostgreSQL without PLINTH_MASTER_KEY: this node uses its own master.key, so tokens and \
                 cursors from other nodes will not verify here; set the same PLINTH_MASTER_KEY on every node"
            );
        }
        // Only in the embedded mode does this process see every change to credentials.
        let db_is_embedded = db.backend() == crate::db::Backend::Sqlite;
        let limiter = Limiter::for_backend(&db);
        let plans = match &config.plans_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)?;
                crate::entitlements::Plans::from_json(&text).map_err(StartupError::Plans)?
            }
            None => crate::entitlements::Plans::defaults(),
        };
        let (admin_key_hash, generated_admin_key) =
            admin_key(&db, config.admin_key.as_ref().map(Secret::expose)).await?;
        if config
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.expose().chars().count() < crate::limits::ADMIN_KEY_MIN_CHARS)
        {
            return Err(StartupError::MetricsTokenTooShort);
        }
        let openapi_json = serde_json::to_vec(&openapi_document()).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(config.listen).await?;
        let allow_private = config.outbound_allow_private;
        let prices_text = match &config.ai.prices_file {
            Some(path) => Some(std::fs::read_to_string(path)?),
            None => None,
        };
        let ai_prices = crate::ai::usage::Prices::load(prices_text.as_deref()).map_err(StartupError::Plans)?;
        let outbound = crate::outbound::client(
            config.outbound_allow_private,
            std::time::Duration::from_secs(config.webhooks.timeout_secs),
        )?;
        let files_dir = config.storage.files_dir.clone().unwrap_or_else(|| config.storage.data_dir.join("files"));
        let files = match config.storage.files_url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(url) => crate::files::Files::s3(url).map_err(StartupError::Plans)?,
            None => crate::files::Files::local(&files_dir)?,
        };
        let mailer = crate::messages::Mailer::from_config(config.email.smtp_url.as_ref().map(Secret::expose))
            .map_err(StartupError::Plans)?;
        let public_url = match &config.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", listener.local_addr()?),
        };
        if config.email.smtp_url.is_none() {
            tracing::warn!("PLINTH_SMTP_URL is not set: end users' emails are not sent, only noted in the log (PLINTH_DEV_SHOW_MESSAGES=true writes them there, for development)");
        }
        let app = App(Arc::new(AppState {
            db,
            token_keys: TokenKeys::new(&master, config.token_ttl_secs),
            user_tokens: crate::users::sessions::UserTokenKeys::new(&master, config.token_ttl_secs),
            config,
            admin_key_hash,
            usage: UsageRecorder::default(),
            ai_meter: Default::default(),
            credentials: if db_is_embedded {
                CredentialCache::new(true)
            } else {
                CredentialCache::told_by_other_nodes()
            },
            sessions: crate::auth::cache::Cache::new(db_is_embedded),
            session_activity: Default::default(),
            schemas: crate::auth::cache::Cache::new(db_is_embedded),
            vault_opened: crate::auth::cache::Cache::new(db_is_embedded),
            providers_opened: crate::auth::cache::Cache::new(db_is_embedded),
            credential_changes: tokio::sync::watch::channel(0).0,
            limiter,
            cursor_key: master.derive("list-cursor"),
            answer_key: master.derive("idempotent-answers"),
            wrap_key: master.derive("tenant-data-keys"),
            plans,
            outbound,
            ai_trusted: crate::outbound::ai_client(allow_private, true)?,
            ai_guarded: crate::outbound::ai_client(allow_private, false)?,
            ai_prices,
            ai_models: Default::default(),
            public_url,
            mailer,
            services: crate::outbound::service_client()?,
            code_key: master.derive("one-time-codes"),
            files,
            link_key: master.derive("upload-links"),
            realtime: crate::realtime::Hub::default(),
            metrics: Arc::default(),
            tasks: Default::default(),
            started_at: Instant::now(),
            openapi_json: openapi_json.into(),
        }));
        Ok(Server { app, listener, generated_admin_key })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn app(&self) -> App {
        self.app.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes in-flight requests,
    /// writes pending usage and closes the database.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let app = self.app.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut kinds = crate::jobs::Registry::new();
        kinds.register(crate::webhooks::delivery::Deliver(app.clone()));
        kinds.register(crate::messages::Send(app.clone()));
        kinds.register(crate::objects::indexes::Reconcile(app.clone()));
        kinds.register(crate::objects::fill::Fill(app.clone()));
        kinds.register(crate::files::purge::Purge(app.clone()));
        kinds.register(crate::objects::export::MakeExport(app.clone()));
        kinds.register(crate::objects::imports::RunImport(app.clone()));
        let workers = crate::tasks::Tasks::default();
        workers.spawn("jobs", crate::jobs::run(app.db.clone(), kinds, stop_rx.clone()));
        if let (Some(url), crate::db::Backend::Postgres) = (&app.config.storage.database_url, app.db.backend()) {
            workers.spawn("notifications", crate::realtime::notify::listen(app.clone(), url.clone(), stop_rx.clone()));
        }
        workers.spawn("AI usage", crate::ai::meter::Meter::run(app.clone(), stop_rx.clone()));
        workers.spawn("maintenance", maintain(app.clone(), stop_rx));

        let router = router(app.clone());
        let service = tower::util::MapRequestLayer::new(rewrite_aliases).layer(router);
        // What starting took (the OpenAPI document built, migrations read) goes back.
        crate::memory::give_back();
        // Answers leave as they are written: small ones are never held back for an ACK.
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set");
            }
        });
        let served = axum::serve(
            listener,
            axum::ServiceExt::<Request<Body>>::into_make_service_with_connect_info::<SocketAddr>(service),
        )
        .with_graceful_shutdown(shutdown)
        .await;

        let _ = stop_tx.send(true);
        // The workers finish what they hold (the jobs engine gives its jobs a few seconds);
        // then the tasks requests started (usage of streamed AI calls) are joined.
        workers.join(Duration::from_secs(30)).await;
        app.tasks.join(Duration::from_secs(10)).await;
        if let Err(error) = app.usage.flush(&app.db).await {
            tracing::error!(%error, "writing usage at shutdown failed");
        }
        if let Err(error) = app.ai_meter.flush(&app.db).await {
            tracing::error!(%error, "writing AI usage at shutdown failed");
        }
        app.db.close().await;
        served
    }
}

/// Background upkeep: writes pending usage and purges long-expired token records.
async fn maintain(app: App, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FLUSH_EVERY, FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        ticks += 1;
        if let Err(error) = app.usage.flush(&app.db).await {
            tracing::warn!(%error, "writing usage failed; will retry");
        }
        if ticks % 12 == 0 {
            // Every minute, what a load peak freed goes back to the system.
            crate::memory::give_back();
        }
        if ticks % 60 == 0 {
            if let Err(error) = audit::prune(&app).await {
                tracing::warn!(%error, "pruning the audit log failed");
            }
            if let Err(error) = app.limiter.forget_idle().await {
                tracing::warn!(%error, "forgetting idle rate-limit buckets failed");
            }
            if let Err(error) = crate::deletion::purge_expired(app.db.pool()).await {
                tracing::warn!(%error, "purging expired confirm tokens failed");
            }
            if let Err(error) = crate::webhooks::delivery::prune(&app).await {
                tracing::warn!(%error, "pruning the webhook delivery log failed");
            }
            if let Err(error) = crate::jobs::prune(&app.db).await {
                tracing::warn!(%error, "forgetting old dead jobs failed");
            }
            if let Err(error) = crate::users::purge_expired(&app).await {
                tracing::warn!(%error, "purging expired end-user codes and sessions failed");
            }
            // Every hour, bytes that no file names are looked for too.
            let orphans = (ticks % 720 == 0).then(|| chrono::Duration::hours(crate::files::purge::ORPHAN_GRACE_HOURS));
            if let Err(error) = crate::files::purge::sweep(&app, app.config.storage.files_trash_days, orphans).await {
                tracing::warn!(message = %error.message, "sweeping files failed");
            }
            if let Err(error) = crate::objects::export::sweep(&app).await {
                tracing::warn!(message = %error.message, "removing expired exports failed");
            }
            if let Err(error) = crate::objects::imports::sweep(&app).await {
                tracing::warn!(message = %error.message, "removing ended imports failed");
            }
            if let Err(error) = crate::idempotency::purge_expired(&app).await {
                tracing::warn!(%error, "purging expired idempotent answers failed");
            }
            if let Err(error) = crate::public_keys::purge_used_tokens(&app).await {
                tracing::warn!(%error, "forgetting used tenant-signed token ids failed");
            }
            let cutoff = time::to_db(&(time::now() - chrono::Duration::hours(1)));
            if let Err(error) =
                sqlx::query("DELETE FROM issued_tokens WHERE expires_at < $1").bind(cutoff).execute(app.db.pool()).await
            {
                tracing::warn!(%error, "purging expired tokens failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_envelope_without_internals() {
        async fn explode() -> &'static str {
            panic!("secret detail: connection string postgres://user:pass@db");
        }
        let router = with_contract(Router::new().route("/explode", get(explode)), 1024, Duration::from_secs(60));
        let response = router
            .oneshot(Request::get("/explode").header("x-request-id", "trace-1").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-request-id"], "trace-1");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "INTERNAL");
        assert_eq!(body["request_id"], "trace-1");
        assert!(!String::from_utf8_lossy(&bytes).contains("secret"));
    }
}
