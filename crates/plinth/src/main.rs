//! The `plinth` command: serve, migrate, print the OpenAPI document, create tenants and keys.

use anyhow::Context;
use clap::{Parser, Subcommand};
use plinth::config::{Config, StorageArgs};
use plinth::keys::model::KeyMode;
use plinth::tenants::model::Tier;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "plinth", version, about = "A self-hosted, multi-tenant API platform in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and serve the API until SIGTERM or Ctrl-C.
    Serve(Box<Config>),
    /// Apply pending database migrations and exit.
    Migrate(StorageArgs),
    /// Print the OpenAPI 3.1 document.
    Openapi,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Copy the embedded database and files, consistently, into a new folder (with a manifest of
    /// checksums). The master key is left out unless `--include-master-key`.
    Backup {
        /// The new (or empty) folder to write the backup into.
        #[arg(long)]
        to: std::path::PathBuf,
        /// Put the master key file in the backup too: whoever holds the backup then opens every
        /// stored secret.
        #[arg(long)]
        include_master_key: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Restore a backup into a new data folder, after checking it against its manifest.
    Restore {
        /// The backup folder.
        #[arg(long)]
        from: std::path::PathBuf,
        /// The new (or empty) data folder.
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print it with its first API key (every scope).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: Option<String>,
        #[arg(long, value_parser = parse_tier)]
        tier: Option<Tier>,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key for a tenant and print it with its secret.
    Create {
        /// The tenant id (`tn_...`).
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes (default `read,write`).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long)]
        label: Option<String>,
        /// Create a test key (`plk_test_...`).
        #[arg(long)]
        test: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

fn parse_tier(text: &str) -> Result<Tier, String> {
    Tier::parse(text).ok_or_else(|| "one of free, starter, pro, agency, enterprise".to_string())
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("PLINTH_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed at once, before the server
/// listens, so that a signal arriving during start-up is not lost.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing in-flight requests");
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            init_logging(config.log_format == "json");
            let shutdown = shutdown_signal().context("installing the signal handlers")?;
            let server = plinth::Server::start(*config).await.context("starting the server")?;
            if let Some(key) = &server.generated_admin_key {
                eprintln!(
                    "\n  Platform admin key (shown once, stored only as a hash):\n\n    {key}\n\n  \
                     Keep it safe. Set PLINTH_ADMIN_KEY to choose your own.\n"
                );
            }
            let addr = server.local_addr()?;
            tracing::info!(%addr, "plinth listening");
            server.run(shutdown).await?;
            tracing::info!("stopped");
        }
        Command::Migrate(storage) => {
            plinth::cli::migrate(&storage).await?;
            eprintln!("migrations applied");
        }
        Command::Openapi => print_json(&plinth::app::openapi_document())?,
        Command::Tenant(TenantCommand::Create { name, slug, tier, storage }) => {
            print_json(&plinth::cli::create_tenant(&storage, name, slug, tier).await?)?;
        }
        Command::Key(KeyCommand::Create { tenant, scopes, label, test, storage }) => {
            let mode = if test { KeyMode::Test } else { KeyMode::Live };
            print_json(&plinth::cli::create_key(&storage, &tenant, label, scopes, mode).await?)?;
        }
        Command::Backup { to, include_master_key, storage } => {
            let manifest = plinth::backup::backup(&storage, &to, include_master_key).await?;
            eprintln!(
                "backed up {} files into {}{}",
                manifest.files.len(),
                to.display(),
                if include_master_key { ", with the master key: keep it as safe as the key" } else { "" }
            );
        }
        Command::Restore { from, data_dir } => {
            let manifest = plinth::backup::restore(&from, &data_dir)?;
            eprintln!("restored {} files into {}", manifest.files.len(), data_dir.display());
            if !manifest.master_key_included {
                eprintln!(
                    "the backup holds no master key: start with the original one (PLINTH_MASTER_KEY, or its \
                     master.key copied into {}), or stored secrets will not open",
                    data_dir.display()
                );
            }
        }
    }
    Ok(())
}
