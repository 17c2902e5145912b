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

    /// Largest number of pooled database connections.
    #[arg(long, env = "PLINTH_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
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
}

impl Config {
    /// A configuration for tests and embedding: SQLite in `data_dir`, a random port.
    pub fn for_data_dir(data_dir: PathBuf) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage: StorageArgs { data_dir, database_url: None, db_max_connections: 10 },
            admin_key: None,
            master_key: None,
            token_ttl_secs: 3600,
            max_body_bytes: limits::DEFAULT_MAX_BODY_BYTES,
            trusted_proxies: Vec::new(),
            upgrade_url: None,
            plans_file: None,
            region: "local".into(),
            log_format: "text".into(),
            outbound_allow_private: false,
        }
    }
}
