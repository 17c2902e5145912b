//! One `Config` for the server, built from flags and `PLINTH_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use ipnet::IpNet;

use crate::limits;

/// A configured secret: never shown by `Debug`, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Where the data lives: the embedded SQLite default or a PostgreSQL URL.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Folder for the embedded database and the master key file.
    #[arg(long, env = "PLINTH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// PostgreSQL URL (postgres://...). When absent, the embedded SQLite database is used.
    #[arg(long, env = "PLINTH_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Folder for stored files; `<data-dir>/files` when unset (and no `--files-url`).
    #[arg(long, env = "PLINTH_FILES_DIR")]
    pub files_dir: Option<PathBuf>,

    /// An S3-compatible bucket for stored files, `s3://bucket/prefix`, shared by every node:
    /// credentials, region and endpoint from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION` and `AWS_ENDPOINT_URL`. A local folder when unset.
    #[arg(long, env = "PLINTH_FILES_URL")]
    pub files_url: Option<String>,

    /// Days a file stays in the trash before it is purged.
    #[arg(long, env = "PLINTH_FILES_TRASH_DAYS", default_value_t = 30,
          value_parser = clap::builder::RangedI64ValueParser::<i64>::new().range(1..=3650))]
    pub files_trash_days: i64,

    /// Largest number of pooled database connections.
    #[arg(long, env = "PLINTH_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// How long a request waits for a free database connection before it is answered 503
    /// `UNAVAILABLE` with `Retry-After`, in milliseconds.
    #[arg(long, env = "PLINTH_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=600_000))]
    pub db_acquire_timeout_ms: u64,

    /// Longest one PostgreSQL statement may run, in milliseconds (`statement_timeout`): past it,
    /// 503 `UNAVAILABLE` with `Retry-After`.
    #[arg(long, env = "PLINTH_DB_STATEMENT_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=3_600_000))]
    pub db_statement_timeout_ms: u64,

    /// What a write survives once it is answered: `process` (a killed process loses nothing; a
    /// power loss may lose the last moments' writes) or `power-loss` (the embedded database's
    /// log is synced to disk before a write is answered, one sync shared by the writers waiting
    /// at the same time). PostgreSQL syncs its own commits in both.
    #[arg(long, env = "PLINTH_DURABILITY", default_value = "process")]
    pub durability: crate::db::Durability,
}

impl StorageArgs {
    /// The database URL to connect to: the PostgreSQL URL, or the SQLite file in the data folder.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.clone(),
            _ => format!("sqlite://{}?mode=rwc", self.data_dir.join("plinth.db").display()),
        }
    }
}

/// Everything `plinth serve` needs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "PLINTH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// The platform admin credential (at least 32 characters). When unset, one is
    /// generated on the first start, printed once and stored only as a hash.
    #[arg(long, env = "PLINTH_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<Secret>,

    /// The master key (base64 of 32 bytes). When unset, `<data-dir>/master.key` is used,
    /// created with mode 0600 on the first start.
    #[arg(long, env = "PLINTH_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<Secret>,

    /// Lifetime of access tokens issued by `POST /v1/token`, in seconds.
    #[arg(long, env = "PLINTH_TOKEN_TTL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub token_ttl_secs: u64,

    /// How long a request under an `Idempotency-Key` holds the key before a retry may take it
    /// over, should its process die; renewed while the request runs.
    #[arg(long, env = "PLINTH_IDEMPOTENCY_LOCK_SECS", default_value_t = 60,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=3600))]
    pub idempotency_lock_secs: u64,

    /// Longest a request may take to be answered (its body may stream on): past it, 504
    /// `TIMEOUT`. AI calls get up to 15 minutes whatever it is.
    #[arg(long, env = "PLINTH_REQUEST_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Largest accepted JSON body, in bytes.
    #[arg(long, env = "PLINTH_MAX_BODY_BYTES", default_value_t = limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Proxies (CIDRs, comma-separated) whose `X-Forwarded-For` is believed for the client address.
    #[arg(long, env = "PLINTH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,

    /// A JSON file of plan limits over the defaults:
    /// `{"free": {"api_calls": 5000, "webhooks": "unlimited"}}`.
    #[arg(long, env = "PLINTH_PLANS_FILE")]
    pub plans_file: Option<PathBuf>,

    /// Where a tenant upgrades its plan: named in `FEATURE_LIMIT_REACHED` answers.
    #[arg(long, env = "PLINTH_UPGRADE_URL")]
    pub upgrade_url: Option<String>,

    /// Where clients reach this server (`https://api.example.com`), for the links it hands out
    /// (signed upload URLs, emailed links); the address it listens on when unset. Set it behind a
    /// proxy.
    #[arg(long, env = "PLINTH_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Deployment region reported by `GET /health`.
    #[arg(long, env = "PLINTH_REGION", default_value = "local")]
    pub region: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "PLINTH_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Let outbound calls (webhooks) reach private, loopback and link-local addresses, and plain
    /// `http://` URLs. Off by default: for tests and closed networks.
    #[arg(long, env = "PLINTH_OUTBOUND_ALLOW_PRIVATE", default_value_t = false)]
    pub outbound_allow_private: bool,

    /// The bearer token `GET /metrics` asks for (at least 32 characters); metrics are off (404)
    /// without one.
    #[arg(long = "metrics-token", env = "PLINTH_METRICS_TOKEN")]
    pub metrics_token: Option<Secret>,

    #[command(flatten)]
    pub webhooks: WebhookArgs,

    #[command(flatten)]
    pub inbound: InboundArgs,

    #[command(flatten)]
    pub ai: AiArgs,

    #[command(flatten)]
    pub email: EmailArgs,

    #[command(flatten)]
    pub sms: SmsArgs,

    /// Events a realtime listener may fall behind before it is disconnected (it then
    /// reconnects; an SSE client resumes from the outbox). Bounds the memory slow listeners hold.
    #[arg(long, env = "PLINTH_REALTIME_BUFFER", default_value_t = crate::db::OUTBOX_EVENTS_BUFFER,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(8..=1_000_000))]
    pub realtime_buffer: usize,
}

/// Where the AI providers are, written as their official SDKs write them.
#[derive(Debug, Clone, Args)]
pub struct AiArgs {
    #[arg(long = "openai-base-url", env = "PLINTH_OPENAI_BASE_URL", default_value = "https://api.openai.com/v1")]
    pub openai_base_url: String,
    #[arg(long = "anthropic-base-url", env = "PLINTH_ANTHROPIC_BASE_URL", default_value = "https://api.anthropic.com")]
    pub anthropic_base_url: String,
    #[arg(
        long = "openrouter-base-url",
        env = "PLINTH_OPENROUTER_BASE_URL",
        default_value = "https://openrouter.ai/api/v1"
    )]
    pub openrouter_base_url: String,

    /// A JSON file of model prices over the built-in ones:
    /// `{"gpt-4o-mini": {"input_per_mtok": "0.15", "output_per_mtok": "0.60"}}` (US dollars).
    #[arg(long = "ai-prices-file", env = "PLINTH_AI_PRICES_FILE")]
    pub prices_file: Option<PathBuf>,
}

impl Default for AiArgs {
    fn default() -> Self {
        AiArgs {
            openai_base_url: "https://api.openai.com/v1".into(),
            anthropic_base_url: "https://api.anthropic.com".into(),
            openrouter_base_url: "https://openrouter.ai/api/v1".into(),
            prices_file: None,
        }
    }
}

/// How end users' emails leave the server.
#[derive(Debug, Clone, Args)]
pub struct EmailArgs {
    /// The SMTP server: `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://...:465`
    /// (TLS), or `smtp://host:25` (plain, for a local relay). Without it, emails are written to
    /// the server log (the `log` transport, for development).
    #[arg(long, env = "PLINTH_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<Secret>,

    /// The sender of end users' emails.
    #[arg(long, env = "PLINTH_EMAIL_FROM", default_value = "Plinth <no-reply@localhost>")]
    pub email_from: String,

    /// For development only: without an SMTP server or an SMS provider, write the emails and texts
    /// that are not sent (their links and codes included) to the log. Off, the log says only that
    /// one was not sent, to whom.
    #[arg(long, env = "PLINTH_DEV_SHOW_MESSAGES")]
    pub dev_show_messages: bool,
}

impl Default for EmailArgs {
    fn default() -> Self {
        EmailArgs { smtp_url: None, email_from: "Plinth <no-reply@localhost>".into(), dev_show_messages: false }
    }
}

/// How end users' text messages leave the server: Twilio's Messages API, or a provider that
/// speaks it. Without an account, messages are written to the server log.
#[derive(Debug, Clone, Args)]
pub struct SmsArgs {
    /// The provider's API base URL.
    #[arg(long, env = "PLINTH_SMS_BASE_URL", default_value = "https://api.twilio.com")]
    pub sms_base_url: String,

    /// The account (Twilio's Account SID).
    #[arg(long, env = "PLINTH_SMS_ACCOUNT_SID")]
    pub sms_account_sid: Option<String>,

    /// The account's auth token.
    #[arg(long, env = "PLINTH_SMS_AUTH_TOKEN", hide_env_values = true)]
    pub sms_auth_token: Option<Secret>,

    /// The sending number (E.164) or sender id.
    #[arg(long, env = "PLINTH_SMS_FROM")]
    pub sms_from: Option<String>,
}

impl Default for SmsArgs {
    fn default() -> Self {
        SmsArgs {
            sms_base_url: "https://api.twilio.com".into(),
            sms_account_sid: None,
            sms_auth_token: None,
            sms_from: None,
        }
    }
}

/// Secrets of the webhooks sent to the platform itself.
#[derive(Debug, Clone, Default, Args)]
pub struct InboundArgs {
    /// The token Meta echoes in the subscription handshake at `/v1/webhooks/inbound/meta-ads`.
    #[arg(long = "meta-webhook-verify-token", env = "META_WEBHOOK_VERIFY_TOKEN", hide_env_values = true)]
    pub meta_verify_token: Option<Secret>,

    /// The Meta app secret that signs `X-Hub-Signature-256` on `/v1/webhooks/inbound/meta-ads`.
    #[arg(long = "meta-app-secret", env = "META_APP_SECRET", hide_env_values = true)]
    pub meta_app_secret: Option<Secret>,

    /// The Stripe endpoint secret (`whsec_...`) that signs `/webhooks/stripe` (plan changes).
    #[arg(long = "stripe-webhook-secret", env = "PLINTH_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<Secret>,
}

/// How webhooks are delivered.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Waits before each retry of a failed delivery, comma-separated (`5s,5m,30m,2h`); a
    /// delivery is tried once plus once per entry, then goes to the dead-letter queue.
    #[arg(
        long = "webhook-retry-schedule",
        env = "PLINTH_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub retry_schedule: RetrySchedule,

    /// How long one delivery attempt may take, in seconds.
    #[arg(long = "webhook-timeout-secs", env = "PLINTH_WEBHOOK_TIMEOUT_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=120))]
    pub timeout_secs: u64,

    /// Disable an endpoint after this many failed attempts in a row (0: never).
    #[arg(long = "webhook-disable-after", env = "PLINTH_WEBHOOK_DISABLE_AFTER", default_value_t = 50)]
    pub disable_after: u32,

    /// Deliveries in flight at once on this node.
    #[arg(long = "webhook-concurrency", env = "PLINTH_WEBHOOK_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
}

impl Default for WebhookArgs {
    fn default() -> Self {
        WebhookArgs { retry_schedule: RetrySchedule::default(), timeout_secs: 15, disable_after: 50, concurrency: 64 }
    }
}

/// The waits between delivery attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<std::time::Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        let minutes = |m: u64| std::time::Duration::from_secs(60 * m);
        RetrySchedule(vec![
            std::time::Duration::from_secs(5),
            minutes(5),
            minutes(30),
            minutes(120),
            minutes(300),
            minutes(600),
            minutes(600),
        ])
    }
}

impl std::str::FromStr for RetrySchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let waits = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| humantime::parse_duration(part).map_err(|e| format!("`{part}`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if waits.len() > 20 {
            return Err("at most 20 retries".into());
        }
        if let Some(long) = waits.iter().find(|w| w.as_secs() > 7 * 24 * 3600) {
            return Err(format!("{long:?} is longer than a week"));
        }
        Ok(RetrySchedule(waits))
    }
}

impl Config {
    /// A configuration for tests and embedding: SQLite in `data_dir`, a random port.
    pub fn for_data_dir(data_dir: PathBuf) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage: StorageArgs {
                data_dir,
                database_url: None,
                files_dir: None,
                files_url: None,
                files_trash_days: 30,
                db_max_connections: 10,
                db_acquire_timeout_ms: 10_000,
                db_statement_timeout_ms: 30_000,
                durability: crate::db::Durability::default(),
            },
            admin_key: None,
            master_key: None,
            token_ttl_secs: 3600,
            max_body_bytes: limits::DEFAULT_MAX_BODY_BYTES,
            idempotency_lock_secs: 60,
            request_timeout_secs: 60,
            trusted_proxies: Vec::new(),
            upgrade_url: None,
            plans_file: None,
            public_url: None,
            region: "local".into(),
            log_format: "text".into(),
            outbound_allow_private: false,
            metrics_token: None,
            webhooks: WebhookArgs::default(),
            inbound: InboundArgs::default(),
            ai: AiArgs::default(),
            email: EmailArgs::default(),
            sms: SmsArgs::default(),
            realtime_buffer: crate::db::OUTBOX_EVENTS_BUFFER,
        }
    }
}
